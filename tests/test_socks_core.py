"""
The sans-I/O SOCKS4/4a and SOCKS5 handshakes, with plain bytes.
"""

from __future__ import annotations

from twisted.internet.error import ConnectError, TimeoutError
from twisted.trial.unittest import SynchronousTestCase

from endpointkit import (
    AddressTypeNotSupported,
    CommandNotSupported,
    ConnectionNotAllowedByRuleset,
    ConnectionRefused,
    GeneralSOCKSFailure,
    HostUnreachable,
    MalformedProxyReply,
    NetworkUnreachable,
    ProxyAuthenticationFailed,
    ProxyClosedConnection,
    ProxyError,
    ProxyHandshakeTimeout,
    ProxyRefused,
    ProxyReplyTooLarge,
    SOCKS4IdentdMismatch,
    SOCKS4IdentdUnreachable,
    SOCKS4Rejected,
    TruncatedProxyReply,
    TTLExpired,
    UnassignedSOCKSReply,
    WrongProxyVersion,
)
from endpointkit._handshake import (
    SendData,
    TunnelReady,
)
from endpointkit._socks import (
    SOCKS4_REPLY_ERRORS,
    SOCKS5_REPLY_ERRORS,
    SOCKS4Handshake,
    SOCKS5Handshake,
)

IPV4_OK = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"


def _sent(events: list[SendData | TunnelReady]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, SendData))


def _socks5(host: str = "example.com", port: int = 443, user: str | None = None,
            password: str | None = None) -> SOCKS5Handshake:
    handshake = SOCKS5Handshake(host, port, user, password)
    handshake.initiate()
    return handshake


def _afterMethods(**kw: str) -> SOCKS5Handshake:
    handshake = _socks5(**kw)
    handshake.receiveData(b"\x05\x00")
    return handshake


class SOCKS5RequestTests(SynchronousTestCase):
    """
    What the SOCKS5 client sends.
    """

    def test_noAuthGreeting(self) -> None:
        self.assertEqual(_sent(SOCKS5Handshake("example.com", 443).initiate()), b"\x05\x01\x00")

    def test_userPasswordGreeting(self) -> None:
        events = SOCKS5Handshake("example.com", 443, "bob", "pw").initiate()
        self.assertEqual(_sent(events), b"\x05\x02\x02\x00")

    def test_domainRequest(self) -> None:
        events = _socks5("example.com", 443).receiveData(b"\x05\x00")
        self.assertEqual(_sent(events), b"\x05\x01\x00\x03\x0bexample.com\x01\xbb")

    def test_ipv4Request(self) -> None:
        events = _socks5("192.0.2.7", 80).receiveData(b"\x05\x00")
        self.assertEqual(_sent(events), b"\x05\x01\x00\x01\xc0\x00\x02\x07\x00\x50")

    def test_ipv6Request(self) -> None:
        events = _socks5("::1", 80).receiveData(b"\x05\x00")
        self.assertEqual(_sent(events), b"\x05\x01\x00\x04" + b"\0" * 15 + b"\x01\x00\x50")

    def test_idnaRequest(self) -> None:
        events = _socks5("bücher.example", 80).receiveData(b"\x05\x00")
        self.assertIn(b"xn--bcher-kva.example", _sent(events))

    def test_usernamePassword(self) -> None:
        handshake = _socks5(user="bob", password="s3cret")
        events = handshake.receiveData(b"\x05\x02")
        self.assertEqual(_sent(events), b"\x01\x03bob\x06s3cret")
        events = handshake.receiveData(b"\x01\x00")
        self.assertEqual(_sent(events), b"\x05\x01\x00\x03\x0bexample.com\x01\xbb")

    def test_tooLong(self) -> None:
        self.assertRaises(ValueError, SOCKS5Handshake, "a" * 256, 80)
        self.assertRaises(ValueError, SOCKS5Handshake, "h", 80, "u" * 256, "p")

    def test_reprHasNoPassword(self) -> None:
        self.assertNotIn("s3cret", repr(SOCKS5Handshake("h", 80, "bob", "s3cret")))


class SOCKS5ReplyTests(SynchronousTestCase):
    """
    How the SOCKS5 client reads replies, whole or byte by byte.
    """

    def test_success(self) -> None:
        handshake = _afterMethods()
        [ready] = handshake.receiveData(IPV4_OK + b"first bytes")
        assert isinstance(ready, TunnelReady)
        self.assertEqual((ready.trailing, ready.boundHost, ready.boundPort),
                         (b"first bytes", "127.0.0.1", 1080))
        self.assertTrue(handshake.done)

    def test_successByteByByte(self) -> None:
        handshake = _socks5()
        events: list[SendData | TunnelReady] = []
        for byte in b"\x05\x00" + IPV4_OK:
            events += handshake.receiveData(bytes([byte]))
        self.assertIsInstance(events[-1], TunnelReady)
        self.assertEqual(sum(isinstance(e, TunnelReady) for e in events), 1)

    def test_successIPv6AndDomainBound(self) -> None:
        [ready] = _afterMethods().receiveData(
            b"\x05\x00\x00\x04" + b"\0" * 15 + b"\x01\x00\x50")
        assert isinstance(ready, TunnelReady)
        self.assertEqual(ready.boundHost, "::1")
        [ready] = _afterMethods().receiveData(b"\x05\x00\x00\x03\x04host\x00\x50xy")
        assert isinstance(ready, TunnelReady)
        self.assertEqual((ready.boundHost, ready.trailing), ("host", b"xy"))

    def test_everyReplyCode(self) -> None:
        expected = {
            0x01: (GeneralSOCKSFailure, "general SOCKS server failure"),
            0x02: (ConnectionNotAllowedByRuleset, "connection not allowed by ruleset"),
            0x03: (NetworkUnreachable, "network unreachable"),
            0x04: (HostUnreachable, "host unreachable"),
            0x05: (ConnectionRefused, "connection refused"),
            0x06: (TTLExpired, "TTL expired"),
            0x07: (CommandNotSupported, "command not supported"),
            0x08: (AddressTypeNotSupported, "address type not supported"),
        }
        self.assertEqual(set(expected), set(SOCKS5_REPLY_ERRORS))
        for code, (kind, text) in expected.items():
            handshake = _afterMethods()
            error = self.assertRaises(
                kind, handshake.receiveData, bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
            self.assertIsInstance(error, ProxyRefused)
            self.assertIsInstance(error, ConnectError)
            self.assertEqual(error.code, code)
            self.assertEqual(str(error), f"socks5 proxy refused: {text} (reply 0x{code:02x})")

    def test_refusalAtOnce(self) -> None:
        """
        A refusal is reported from its first two bytes, not after a whole reply.
        """
        self.assertRaises(ConnectionNotAllowedByRuleset,
                          _afterMethods().receiveData, b"\x05\x02")

    def test_unassignedCode(self) -> None:
        error = self.assertRaises(UnassignedSOCKSReply, _afterMethods().receiveData, b"\x05\x09")
        self.assertIn("0x09", str(error))

    def test_messageNamesProxy(self) -> None:
        error = self.assertRaises(ProxyRefused, _afterMethods().receiveData, b"\x05\x02")
        error.proxy = "tcp:127.0.0.1:1080"
        self.assertEqual(
            str(error), "socks5 proxy at tcp:127.0.0.1:1080 refused: "
            "connection not allowed by ruleset (reply 0x02)")

    def test_wrongVersionGreeting(self) -> None:
        error = self.assertRaises(WrongProxyVersion, _socks5().receiveData, b"\x04\x00")
        self.assertIn("version 0x04", str(error))

    def test_wrongVersionAtFirstByte(self) -> None:
        self.assertRaises(WrongProxyVersion, _socks5().receiveData, b"H")

    def test_wrongVersionReply(self) -> None:
        self.assertRaises(WrongProxyVersion, _afterMethods().receiveData, b"\x04\x00\x00\x01")

    def test_garbage(self) -> None:
        self.assertRaises(WrongProxyVersion, _socks5().receiveData, b"HTTP/1.1 400 Bad\r\n")
        self.assertRaises(MalformedProxyReply, _afterMethods().receiveData,
                          b"\x05\x00\x00\x07\x00\x00")
        self.assertRaises(MalformedProxyReply, _afterMethods().receiveData,
                          b"\x05\x00\x01\x01\x00\x00")
        self.assertRaises(MalformedProxyReply, _afterMethods().receiveData,
                          b"\x05\x00\x00\x03\x00\x00\x00")
        self.assertRaises(MalformedProxyReply, _afterMethods().receiveData,
                          b"\x05\x00\x00\x03\x02\xff\xfe\x00\x00")

    def test_methodNotOffered(self) -> None:
        error = self.assertRaises(MalformedProxyReply, _socks5().receiveData, b"\x05\x02")
        self.assertIn("not offered", str(error))
        self.assertRaises(MalformedProxyReply, _socks5().receiveData, b"\x05\x01")

    def test_noAcceptableMethods(self) -> None:
        error = self.assertRaises(ProxyAuthenticationFailed, _socks5().receiveData, b"\x05\xff")
        self.assertIn("no authentication", str(error))

    def test_authRejected(self) -> None:
        handshake = _socks5(user="bob", password="s3cret")
        handshake.receiveData(b"\x05\x02")
        error = self.assertRaises(ProxyAuthenticationFailed, handshake.receiveData, b"\x01\x01")
        self.assertEqual(str(error),
                         "socks5 proxy rejected the username and password (status 0x01)")
        self.assertNotIn("s3cret", repr(error))

    def test_authWrongVersion(self) -> None:
        handshake = _socks5(user="bob", password="pw")
        handshake.receiveData(b"\x05\x02")
        self.assertRaises(WrongProxyVersion, handshake.receiveData, b"\x05\x00")

    def test_unexpectedBytesAfterGreeting(self) -> None:
        """
        A proxy may not talk before the client asks; extra bytes are not buffered.
        """
        self.assertRaises(ProxyReplyTooLarge, _socks5().receiveData, b"\x05\x00" + b"x" * 5000)
        handshake = _socks5(user="bob", password="pw")
        handshake.receiveData(b"\x05\x02")
        self.assertRaises(ProxyReplyTooLarge, handshake.receiveData, b"\x01\x00extra")

    def test_closedBeforeReply(self) -> None:
        error = _socks5().connectionClosed()
        self.assertIsInstance(error, ProxyClosedConnection)
        self.assertNotIsInstance(error, TruncatedProxyReply)
        self.assertEqual(str(error), "socks5 proxy closed the connection during the handshake")

    def test_truncated(self) -> None:
        handshake = _afterMethods()
        self.assertEqual(handshake.receiveData(IPV4_OK[:7]), [])
        error = handshake.connectionClosed()
        self.assertIsInstance(error, TruncatedProxyReply)
        self.assertIsInstance(error, MalformedProxyReply)
        self.assertIn("7 bytes received", str(error))

    def test_overAfterFailure(self) -> None:
        handshake = _socks5()
        self.assertRaises(WrongProxyVersion, handshake.receiveData, b"\x04\x00")
        self.assertRaises(RuntimeError, handshake.receiveData, b"\x05")


class SOCKS4Tests(SynchronousTestCase):
    """
    SOCKS4 (an IPv4 target) and SOCKS4a (a name the proxy resolves).
    """

    def test_socks4Request(self) -> None:
        events = SOCKS4Handshake("192.0.2.7", 80, "me").initiate()
        self.assertEqual(_sent(events), b"\x04\x01\x00\x50\xc0\x00\x02\x07me\x00")

    def test_socks4aRequest(self) -> None:
        events = SOCKS4Handshake("example.com", 443).initiate()
        self.assertEqual(_sent(events), b"\x04\x01\x01\xbb\x00\x00\x00\xff\x00example.com\x00")

    def test_ipv6Refused(self) -> None:
        self.assertRaises(ValueError, SOCKS4Handshake, "::1", 80)
        self.assertRaises(ValueError, SOCKS4Handshake, "h", 80, "a\0b")

    def test_granted(self) -> None:
        handshake = SOCKS4Handshake("example.com", 443)
        handshake.initiate()
        self.assertEqual(handshake.receiveData(b"\x00\x5a\x00"), [])
        [ready] = handshake.receiveData(b"\x00\x7f\x00\x00\x01tail")
        assert isinstance(ready, TunnelReady)
        self.assertEqual((ready.trailing, ready.boundHost), (b"tail", "127.0.0.1"))

    def test_grantedVersion4(self) -> None:
        """
        Some proxies put 4 in the reply's version byte; it is accepted.
        """
        handshake = SOCKS4Handshake("example.com", 443)
        [ready] = handshake.receiveData(b"\x04\x5a\x00\x00\x00\x00\x00\x00")
        self.assertIsInstance(ready, TunnelReady)

    def test_everyRejection(self) -> None:
        expected = {0x5B: SOCKS4Rejected, 0x5C: SOCKS4IdentdUnreachable,
                    0x5D: SOCKS4IdentdMismatch}
        self.assertEqual(expected, SOCKS4_REPLY_ERRORS)
        for code, kind in expected.items():
            handshake = SOCKS4Handshake("example.com", 443)
            error = self.assertRaises(kind, handshake.receiveData, bytes([0, code]))
            self.assertEqual(error.code, code)
            self.assertTrue(str(error).startswith("socks4a proxy refused: "), str(error))

    def test_wrongVersion(self) -> None:
        self.assertRaises(WrongProxyVersion, SOCKS4Handshake("h", 1).receiveData, b"\x05\x00")

    def test_garbageCode(self) -> None:
        self.assertRaises(MalformedProxyReply, SOCKS4Handshake("h", 1).receiveData, b"\x00\x00")

    def test_truncated(self) -> None:
        handshake = SOCKS4Handshake("h", 1)
        handshake.receiveData(b"\x00\x5a\x00")
        self.assertIsInstance(handshake.connectionClosed(), TruncatedProxyReply)


class ErrorTests(SynchronousTestCase):
    """
    The error hierarchy.
    """

    def test_timeoutIsTwistedTimeout(self) -> None:
        error = ProxyHandshakeTimeout("socks5", "did not open the tunnel within 1 s", "tcp:h:1")
        self.assertIsInstance(error, TimeoutError)
        self.assertIsInstance(error, ProxyError)
        self.assertEqual(str(error), "socks5 proxy at tcp:h:1 did not open the tunnel within 1 s")
        self.assertIn("ProxyHandshakeTimeout", repr(error))
