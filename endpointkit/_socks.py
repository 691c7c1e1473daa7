"""
Sans-I/O SOCKS4/4a and SOCKS5 client handshakes, and the errors of SOCKS.

A handshake takes bytes and returns events (L{SendData}, L{TunnelReady});
it never touches a socket or a clock.  socksio encodes the requests and
decodes the replies; this module frames the replies (socksio's decoders want
exactly one whole message), checks them strictly and turns every failure into
a specific L{ProxyError} at the first byte that proves it.
"""

from __future__ import annotations

import ipaddress

from socksio.socks4 import (
    SOCKS4ARequest,
    SOCKS4Command,
    SOCKS4Reply,
    SOCKS4ReplyCode,
    SOCKS4Request,
)
from socksio.socks5 import (
    SOCKS5AType,
    SOCKS5AuthMethod,
    SOCKS5AuthMethodsRequest,
    SOCKS5Command,
    SOCKS5CommandRequest,
    SOCKS5Reply,
    SOCKS5UsernamePasswordRequest,
)

from endpointkit._handshake import (
    Event,
    MalformedProxyReply,
    ProxyError,
    ProxyRefused,
    SendData,
    TunnelReady,
    WrongProxyVersion,
    _Handshake,
)

# The errors of SOCKS.


class GeneralSOCKSFailure(ProxyRefused):
    """SOCKS5 reply 0x01: general SOCKS server failure."""

    description = "general SOCKS server failure"


class ConnectionNotAllowedByRuleset(ProxyRefused):
    """SOCKS5 reply 0x02: connection not allowed by ruleset."""

    description = "connection not allowed by ruleset"


class NetworkUnreachable(ProxyRefused):
    """SOCKS5 reply 0x03: network unreachable."""

    description = "network unreachable"


class HostUnreachable(ProxyRefused):
    """SOCKS5 reply 0x04: host unreachable."""

    description = "host unreachable"


class ConnectionRefused(ProxyRefused):
    """SOCKS5 reply 0x05: the target refused the connection."""

    description = "connection refused"


class TTLExpired(ProxyRefused):
    """SOCKS5 reply 0x06: TTL expired."""

    description = "TTL expired"


class CommandNotSupported(ProxyRefused):
    """SOCKS5 reply 0x07: command not supported."""

    description = "command not supported"


class AddressTypeNotSupported(ProxyRefused):
    """SOCKS5 reply 0x08: address type not supported."""

    description = "address type not supported"


class UnassignedSOCKSReply(ProxyRefused):
    """A SOCKS5 reply code that RFC 1928 does not assign (0x09-0xff)."""

    description = "unassigned reply code"


class SOCKS4Rejected(ProxyRefused):
    """SOCKS4 reply 91 (0x5b): request rejected or failed."""

    description = "request rejected or failed"


class SOCKS4IdentdUnreachable(ProxyRefused):
    """SOCKS4 reply 92 (0x5c): the proxy cannot reach identd on the client."""

    description = "request rejected: the proxy cannot connect to identd on the client"


class SOCKS4IdentdMismatch(ProxyRefused):
    """SOCKS4 reply 93 (0x5d): identd reports a different user id."""

    description = "request rejected: identd reports a different user id"


class ProxyAuthenticationFailed(ProxyError):
    """
    The proxy rejected the username and password (RFC 1929), or accepts none
    of the authentication methods offered.
    """


SOCKS5_REPLY_ERRORS: dict[int, type[ProxyRefused]] = {
    0x01: GeneralSOCKSFailure,
    0x02: ConnectionNotAllowedByRuleset,
    0x03: NetworkUnreachable,
    0x04: HostUnreachable,
    0x05: ConnectionRefused,
    0x06: TTLExpired,
    0x07: CommandNotSupported,
    0x08: AddressTypeNotSupported,
}

SOCKS4_REPLY_ERRORS: dict[int, type[ProxyRefused]] = {
    0x5B: SOCKS4Rejected,
    0x5C: SOCKS4IdentdUnreachable,
    0x5D: SOCKS4IdentdMismatch,
}



def _addressType(host: str) -> str:
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return "name"
    return "ipv4" if address.version == 4 else "ipv6"


class SOCKS5Handshake(_Handshake):
    """
    The client side of a SOCKS5 CONNECT (RFC 1928), with username/password
    authentication (RFC 1929) when a username is given.

    @param host: the target: an IPv4 or IPv6 address, or a name the proxy
        resolves.
    """

    protocol = "socks5"

    _METHODS, _AUTH, _REPLY_HEAD, _REPLY_REST = range(4)

    def __init__(self, host: str, port: int, username: str | None = None,
                 password: str | None = None) -> None:
        _Handshake.__init__(self)
        self.host = host
        self.port = port
        self._username = None if username is None else username.encode("utf-8")
        self._password = (password or "").encode("utf-8")
        if self._username is not None and (
                len(self._username) > 255 or len(self._password) > 255):
            raise ValueError("socks5 usernames and passwords are at most 255 bytes")
        kind = _addressType(host)
        if kind == "name":
            encoded = host.encode("idna")
            if len(encoded) > 255:
                raise ValueError("socks5 host names are at most 255 bytes")
            self._request = SOCKS5CommandRequest(
                SOCKS5Command.CONNECT, SOCKS5AType.DOMAIN_NAME, encoded, port)
        else:
            self._request = SOCKS5CommandRequest.from_address(
                SOCKS5Command.CONNECT, (host.partition("%")[0], port))
        self._state = self._METHODS
        self._replyLength = 0

    def __repr__(self) -> str:
        auth = " with username" if self._username is not None else ""
        return f"<SOCKS5Handshake to {self.host}:{self.port}{auth}>"

    def initiate(self) -> list[Event]:
        methods = [SOCKS5AuthMethod.NO_AUTH_REQUIRED]
        if self._username is not None:
            methods = [SOCKS5AuthMethod.USERNAME_PASSWORD, *methods]
        return [SendData(SOCKS5AuthMethodsRequest(methods).dumps())]

    def receiveData(self, data: bytes) -> list[Event]:
        if self._done or self._failed:
            raise RuntimeError("the handshake is over")
        self._buffer += data
        events: list[Event] = []
        while True:
            if self._state == self._METHODS:
                if self._buffer:
                    self._checkVersion(self._buffer[0], 0x05)
                reply = self._take(2)
                if reply is None:
                    break
                self._checkVersion(reply[0], 0x05)
                method = reply[1]
                self._noMore("method selection")
                if method == 0x00:
                    events.append(SendData(self._request.dumps()))
                    self._state = self._REPLY_HEAD
                elif method == 0x02 and self._username is not None:
                    events.append(SendData(SOCKS5UsernamePasswordRequest(
                        self._username, self._password).dumps()))
                    self._state = self._AUTH
                elif method == 0xFF:
                    offered = ("username/password or no authentication"
                               if self._username is not None else "no authentication")
                    raise self._error(
                        ProxyAuthenticationFailed,
                        f"accepts none of the authentication methods offered ({offered})")
                else:
                    raise self._error(
                        MalformedProxyReply,
                        f"chose authentication method 0x{method:02x}, which was not offered")
            elif self._state == self._AUTH:
                reply = self._take(2)
                if reply is None:
                    break
                if reply[0] != 0x01:
                    raise self._error(
                        WrongProxyVersion,
                        f"sent a username/password reply of version 0x{reply[0]:02x} "
                        "(expected 0x01)")
                self._noMore("authentication reply")
                if reply[1] != 0x00:
                    raise self._error(
                        ProxyAuthenticationFailed,
                        f"rejected the username and password (status 0x{reply[1]:02x})")
                events.append(SendData(self._request.dumps()))
                self._state = self._REPLY_HEAD
            elif self._state == self._REPLY_HEAD:
                head = self._buffer
                if head:
                    self._checkVersion(head[0], 0x05)
                if len(head) >= 2 and head[1] != 0x00:
                    code = head[1]
                    kind = SOCKS5_REPLY_ERRORS.get(code, UnassignedSOCKSReply)
                    self._failed = True
                    raise kind(self.protocol, code)
                if len(head) < 5:
                    break
                if head[2] != 0x00:
                    raise self._error(
                        MalformedProxyReply,
                        f"sent a reply with a non-zero reserved byte 0x{head[2]:02x}")
                atype = head[3]
                if atype == 0x01:
                    self._replyLength = 4 + 4 + 2
                elif atype == 0x04:
                    self._replyLength = 4 + 16 + 2
                elif atype == 0x03:
                    if head[4] == 0:
                        raise self._error(MalformedProxyReply,
                                          "sent a reply with an empty bound address")
                    self._replyLength = 4 + 1 + head[4] + 2
                else:
                    raise self._error(
                        MalformedProxyReply,
                        f"sent a reply with unknown address type 0x{atype:02x}")
                self._state = self._REPLY_REST
            else:
                reply = self._take(self._replyLength)
                if reply is None:
                    break
                if reply[3] == 0x03:
                    # socksio keeps a domain's length byte in the address.
                    try:
                        bound = reply[5:-2].decode("idna")
                    except UnicodeError:
                        raise self._error(MalformedProxyReply,
                                          "sent a reply with an undecodable bound address"
                                          ) from None
                else:
                    bound = SOCKS5Reply.loads(reply).addr
                self._done = True
                trailing, self._buffer = self._buffer, b""
                events.append(TunnelReady(trailing, bound, int.from_bytes(reply[-2:], "big")))
                break
        return events

    def _checkVersion(self, version: int, expected: int) -> None:
        if version != expected:
            raise self._error(
                WrongProxyVersion,
                f"sent a reply of version 0x{version:02x} (expected 0x{expected:02x}); "
                "is it a SOCKS5 proxy?")


class SOCKS4Handshake(_Handshake):
    """
    The client side of a SOCKS4 CONNECT, or SOCKS4a when the target is a
    name for the proxy to resolve.

    @param host: an IPv4 address (SOCKS4) or a host name (SOCKS4a).
    """

    protocol = "socks4a"

    def __init__(self, host: str, port: int, userId: str = "") -> None:
        _Handshake.__init__(self)
        self.host = host
        self.port = port
        user = userId.encode("utf-8")
        if b"\0" in user:
            raise ValueError("a socks4 user id cannot contain NUL")
        kind = _addressType(host)
        if kind == "ipv6":
            raise ValueError("socks4a cannot carry an IPv6 target; use socks5")
        if kind == "ipv4":
            self._request: SOCKS4Request | SOCKS4ARequest = SOCKS4Request.from_address(
                SOCKS4Command.CONNECT, (host, port), user)
        else:
            encoded = host.encode("idna")
            if b"\0" in encoded:
                raise ValueError("a socks4a host name cannot contain NUL")
            self._request = SOCKS4ARequest(SOCKS4Command.CONNECT, port, encoded, user)
        self._user = user

    def __repr__(self) -> str:
        return f"<SOCKS4Handshake to {self.host}:{self.port}>"

    def initiate(self) -> list[Event]:
        return [SendData(self._request.dumps(self._user))]

    def receiveData(self, data: bytes) -> list[Event]:
        if self._done or self._failed:
            raise RuntimeError("the handshake is over")
        self._buffer += data
        if self._buffer[:1] not in (b"", b"\x00", b"\x04"):
            raise self._error(
                WrongProxyVersion,
                f"sent a reply of version 0x{self._buffer[0]:02x} (expected 0x00); "
                "is it a SOCKS4 proxy?")
        if len(self._buffer) >= 2:
            code = self._buffer[1]
            if code in SOCKS4_REPLY_ERRORS:
                self._failed = True
                raise SOCKS4_REPLY_ERRORS[code](self.protocol, code)
            if code != 0x5A:
                raise self._error(MalformedProxyReply,
                                  f"sent a reply with unknown code 0x{code:02x}")
        reply = self._take(8)
        if reply is None:
            return []
        parsed = SOCKS4Reply.loads(b"\x00" + reply[1:])
        assert parsed.reply_code == SOCKS4ReplyCode.REQUEST_GRANTED
        self._done = True
        trailing, self._buffer = self._buffer, b""
        return [TunnelReady(trailing, parsed.addr, parsed.port)]
