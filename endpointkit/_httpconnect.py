"""
Sans-I/O HTTP CONNECT client handshake (RFC 9110 section 9.3.6), on h11.

h11 writes the request and reads the reply, with its cap on an incomplete
event bounding the reply header; a 2xx reply to CONNECT switches protocols,
and whatever followed the header (h11's C{trailing_data}) is the tunnel's
first bytes.  The errors particular to HTTP CONNECT (L{HTTPProxyRefused},
L{HTTPProxyAuthenticationRequired}) live here; the shared ones in
L{endpointkit._handshake}.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import h11

from endpointkit._handshake import (
    Event,
    MalformedProxyReply,
    ProxyError,
    ProxyRefused,
    ProxyReplyTooLarge,
    SendData,
    TunnelReady,
    WrongProxyVersion,
    _Handshake,
)

DEFAULT_MAX_REPLY_HEADER = 16384
"""
The longest CONNECT reply header accepted, in bytes.
"""

_MAX_INFORMATIONAL = 8


def authority(host: str, port: int) -> str:
    """
    The request target and C{Host} of a CONNECT: C{host:port}, an IPv6
    address in brackets.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def basicCredentials(username: str, password: str) -> bytes:
    """
    The value of a C{Proxy-Authorization} header for Basic authentication
    (RFC 7617), UTF-8 encoded.
    """
    token = base64.b64encode(f"{username}:{password}".encode())
    return b"Basic " + token


# The errors of HTTP CONNECT.


class HTTPProxyRefused(ProxyRefused):
    """
    An HTTP proxy answered CONNECT with a status other than 2xx.

    @ivar statusLine: the status line, like C{"HTTP/1.1 403 Forbidden"}.
    """

    def __init__(self, protocol: str, code: int, statusLine: str,
                 proxy: str | None = None) -> None:
        self.statusLine = statusLine
        ProxyRefused.__init__(self, protocol, code, proxy, f"refused: {statusLine}")


class HTTPProxyAuthenticationRequired(HTTPProxyRefused):
    """
    An HTTP proxy answered CONNECT with 407 (or 401, as tinyproxy does):
    no or wrong credentials.
    """


class HTTPConnectHandshake(_Handshake):
    """
    The client side of C{CONNECT host:port HTTP/1.1}.

    @param headers: extra request headers, as (name, value) pairs.
    @param maxReplyHeader: the cap on the reply header, in bytes.
    """

    protocol = "httpconnect"

    def __init__(self, host: str, port: int, username: str | None = None,
                 password: str | None = None,
                 headers: Sequence[tuple[str, str]] = (),
                 maxReplyHeader: int = DEFAULT_MAX_REPLY_HEADER) -> None:
        self.host = host
        self.port = port
        target = authority(host.encode("idna").decode("ascii")
                           if ":" not in host else host, port)
        requestHeaders: list[tuple[bytes, bytes]] = [(b"Host", target.encode("ascii"))]
        if username is not None:
            requestHeaders.append(
                (b"Proxy-Authorization", basicCredentials(username, password or "")))
        requestHeaders += [(name.encode("ascii"), value.encode("utf-8"))
                           for name, value in headers]
        self._connection = h11.Connection(
            our_role=h11.CLIENT, max_incomplete_event_size=maxReplyHeader)
        self._request = h11.Request(method=b"CONNECT", target=target.encode("ascii"),
                                    headers=requestHeaders)
        _Handshake.__init__(self)
        self._maxReplyHeader = maxReplyHeader
        self._received = 0
        self._head = b""
        self._informational = 0

    def __repr__(self) -> str:
        return f"<HTTPConnectHandshake to {authority(self.host, self.port)}>"

    def initiate(self) -> list[Event]:
        data = self._connection.send(self._request) or b""
        data += self._connection.send(h11.EndOfMessage()) or b""
        return [SendData(data)]

    def receiveData(self, data: bytes) -> list[Event]:
        if self._done or self._failed:
            raise RuntimeError("the handshake is over")
        self._checkStart(data)
        self._received += len(data)
        self._connection.receive_data(data)
        while True:
            try:
                event = self._connection.next_event()
            except h11.RemoteProtocolError as e:
                raise self._protocolError(e) from None
            if event is h11.NEED_DATA:
                return []
            if isinstance(event, h11.InformationalResponse):
                self._informational += 1
                if self._informational > _MAX_INFORMATIONAL:
                    raise self._error(
                        ProxyReplyTooLarge,
                        f"sent more than {_MAX_INFORMATIONAL} informational (1xx) replies")
                continue
            if isinstance(event, h11.Response):
                statusLine = (f"HTTP/{event.http_version.decode('ascii', 'replace')} "
                              f"{event.status_code} "
                              f"{event.reason.decode('latin-1')}").rstrip()
                if 200 <= event.status_code < 300:
                    if self._connection.their_state is not h11.SWITCHED_PROTOCOL:
                        raise self._error(MalformedProxyReply,
                                          f"sent {statusLine!r} without switching protocols")
                    trailing, _ = self._connection.trailing_data
                    self._done = True
                    return [TunnelReady(bytes(trailing))]
                self._failed = True
                if event.status_code in (401, 407):
                    raise HTTPProxyAuthenticationRequired(self.protocol, event.status_code,
                                                          statusLine)
                raise HTTPProxyRefused(self.protocol, event.status_code, statusLine)
            raise self._error(MalformedProxyReply,
                              f"sent an unexpected {type(event).__name__}")

    def _protocolError(self, error: h11.RemoteProtocolError) -> ProxyError:
        if error.error_status_hint == 431:
            return self._error(
                ProxyReplyTooLarge,
                f"sent a reply header longer than {self._maxReplyHeader} bytes")
        return self._error(MalformedProxyReply, f"sent a malformed reply ({error})")

    def _checkStart(self, data: bytes) -> None:
        """
        Reject a reply that is not HTTP/1.x from its first bytes, rather than
        after a whole header's worth of garbage.
        """
        if len(self._head) >= 9:
            return
        self._head += data[: 9 - len(self._head)]
        head = self._head
        if not b"HTTP/"[: len(head)] == head[:5]:
            raise self._error(MalformedProxyReply,
                              "sent a reply that is not HTTP; is it an HTTP proxy?")
        if len(head) >= 9 and (head[5:9] not in (b"1.0 ", b"1.1 ")):
            version = head[5:9].decode("ascii", "replace").strip()
            raise self._error(WrongProxyVersion,
                              f"sent a reply of HTTP version {version!r} (expected 1.0 or 1.1)")

    def _partialReply(self) -> int:
        return self._received
