"""
What every sans-I/O proxy handshake shares (SOCKS in L{endpointkit._socks},
HTTP CONNECT in L{endpointkit._httpconnect}): the base of their errors,
L{ProxyError}, with the errors any proxy protocol can end in; the events a
handshake returns (L{SendData}, L{TunnelReady}); and the base class that
buffers a reply.  Each protocol's own errors live in its module; all of them
are importable from C{endpointkit}.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.error import ConnectError, TimeoutError

# Errors every proxy protocol can end in.


class ProxyError(ConnectError):
    """
    A proxy did not open the tunnel.  The message names the protocol, the
    proxy (its client description, secrets masked) and what went wrong.

    @ivar protocol: C{"socks5"}, C{"socks4a"} or C{"httpconnect"}.
    @ivar proxy: the proxy's description, or L{None} when not known.
    @ivar reason: what went wrong, without the protocol and the proxy.
    """

    def __init__(self, protocol: str, reason: str, proxy: str | None = None) -> None:
        Exception.__init__(self, reason)
        self.osError = None
        self.protocol = protocol
        self.reason = reason
        self.proxy = proxy

    @property
    def message(self) -> str:
        where = f" at {self.proxy}" if self.proxy else ""
        return f"{self.protocol} proxy{where} {self.reason}"

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ProxyRefused(ProxyError):
    """
    The proxy answered the connect request with a refusal.

    @ivar code: the reply code (SOCKS) or status code (HTTP).
    """

    description = "the request"

    def __init__(self, protocol: str, code: int, proxy: str | None = None,
                 reason: str | None = None) -> None:
        self.code = code
        ProxyError.__init__(
            self, protocol,
            reason or f"refused: {self.description} (reply 0x{code:02x})", proxy)


class MalformedProxyReply(ProxyError):
    """
    The proxy sent bytes that are not a reply of its protocol.
    """


class WrongProxyVersion(MalformedProxyReply):
    """
    The proxy's reply carries the wrong protocol version.
    """


class ProxyReplyTooLarge(MalformedProxyReply):
    """
    The proxy's reply is longer than a reply can be (or than the cap on an
    HTTP reply header), or the proxy sent data it had no reason to send.
    """


class ProxyClosedConnection(ProxyError):
    """
    The proxy closed the connection before the tunnel was open.
    """


class TruncatedProxyReply(ProxyClosedConnection, MalformedProxyReply):
    """
    The proxy closed the connection in the middle of a reply.
    """


class ProxyHandshakeTimeout(ProxyError, TimeoutError):
    """
    The tunnel was not open within the handshake deadline.
    """

    def __init__(self, protocol: str, reason: str, proxy: str | None = None) -> None:
        ProxyError.__init__(self, protocol, reason, proxy)


# Events.


@dataclass(frozen=True)
class SendData:
    """
    Bytes to write to the proxy.
    """

    data: bytes


@dataclass(frozen=True)
class TunnelReady:
    """
    The tunnel is open.  C{trailing} holds the bytes that followed the reply:
    they are the tunnelled protocol's first bytes.

    @ivar boundHost: the address the proxy reports it connected from
        (SOCKS), or L{None}.
    """

    trailing: bytes
    boundHost: str | None = None
    boundPort: int | None = None


Event = SendData | TunnelReady


class _Handshake:
    """
    What every handshake shares: a buffer bounded by the reply being read,
    and the state that says whether it is done.
    """

    protocol = "proxy"

    def __init__(self) -> None:
        self._buffer = b""
        self._done = False
        self._failed = False

    @property
    def done(self) -> bool:
        return self._done

    def initiate(self) -> list[Event]:
        """
        The first bytes to send, when the connection to the proxy is open.
        """
        raise NotImplementedError()

    def receiveData(self, data: bytes) -> list[Event]:
        """
        Take bytes from the proxy; return what to do, or raise a
        L{ProxyError}.
        """
        raise NotImplementedError()

    def _error(self, kind: type[ProxyError], reason: str) -> ProxyError:
        self._failed = True
        return kind(self.protocol, reason)

    def _partialReply(self) -> int:
        """
        How many bytes of a reply not yet complete have arrived.
        """
        return len(self._buffer)

    def connectionClosed(self) -> ProxyError:
        """
        The proxy closed the connection: the error to report.
        """
        partial = self._partialReply()
        if partial:
            return self._error(
                TruncatedProxyReply,
                f"closed the connection in the middle of its reply "
                f"({partial} byte{'s' if partial != 1 else ''} received)")
        return self._error(ProxyClosedConnection,
                           "closed the connection during the handshake")

    def _take(self, size: int) -> bytes | None:
        """
        The next C{size} bytes of the buffer, or L{None} while incomplete.
        """
        if len(self._buffer) < size:
            return None
        taken, self._buffer = self._buffer[:size], self._buffer[size:]
        return taken

    def _noMore(self, what: str) -> None:
        """
        The proxy must now wait for the client; anything else it sent is a
        protocol error, not something to buffer.
        """
        if self._buffer:
            raise self._error(
                ProxyReplyTooLarge,
                f"sent {len(self._buffer)} unexpected byte"
                f"{'s' if len(self._buffer) != 1 else ''} after its {what}")
