"""
The sans-I/O HTTP CONNECT handshake, with plain bytes.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from endpointkit import (
    HTTPProxyAuthenticationRequired,
    HTTPProxyRefused,
    MalformedProxyReply,
    ProxyClosedConnection,
    ProxyReplyTooLarge,
    TruncatedProxyReply,
    WrongProxyVersion,
)
from endpointkit._handshake import (
    SendData,
    TunnelReady,
)
from endpointkit._httpconnect import HTTPConnectHandshake, authority, basicCredentials


def _started(host: str = "example.com", port: int = 443, **kw: object) -> HTTPConnectHandshake:
    handshake = HTTPConnectHandshake(host, port, **kw)  # type: ignore[arg-type]
    handshake.initiate()
    return handshake


def _request(handshake: HTTPConnectHandshake) -> bytes:
    return b"".join(e.data for e in handshake.initiate() if isinstance(e, SendData))


class RequestTests(SynchronousTestCase):
    """
    What the client sends.
    """

    def test_plain(self) -> None:
        self.assertEqual(_request(HTTPConnectHandshake("example.com", 443)),
                         b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")

    def test_ipv6(self) -> None:
        self.assertTrue(_request(HTTPConnectHandshake("::1", 8443)).startswith(
            b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n"))

    def test_idna(self) -> None:
        self.assertIn(b"CONNECT xn--bcher-kva.example:80 ",
                      _request(HTTPConnectHandshake("bücher.example", 80)))

    def test_basicAuthAndHeaders(self) -> None:
        request = _request(HTTPConnectHandshake(
            "h", 1, "Aladdin", "open sesame", [("User-Agent", "ek/1"), ("X-Trace", "a b")]))
        self.assertIn(b"\r\nProxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n", request)
        self.assertIn(b"\r\nUser-Agent: ek/1\r\nX-Trace: a b\r\n", request)

    def test_helpers(self) -> None:
        self.assertEqual(authority("::1", 1), "[::1]:1")
        self.assertEqual(authority("a.b", 2), "a.b:2")
        self.assertEqual(basicCredentials("u", "p"), b"Basic dTpw")

    def test_reprHasNoPassword(self) -> None:
        self.assertNotIn("s3cret", repr(HTTPConnectHandshake("h", 1, "u", "s3cret")))


class ReplyTests(SynchronousTestCase):
    """
    How the client reads the reply.
    """

    def test_established(self) -> None:
        handshake = _started()
        [ready] = handshake.receiveData(
            b"HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\n\r\n")
        assert isinstance(ready, TunnelReady)
        self.assertEqual(ready.trailing, b"")
        self.assertTrue(handshake.done)

    def test_trailingBytesKept(self) -> None:
        """
        Bytes after the reply header are the tunnel's, in the same segment.
        """
        [ready] = _started().receiveData(
            b"HTTP/1.0 200 OK\r\n\r\nSSH-2.0-server\r\n\x00\x01")
        assert isinstance(ready, TunnelReady)
        self.assertEqual(ready.trailing, b"SSH-2.0-server\r\n\x00\x01")

    def test_byteByByte(self) -> None:
        handshake = _started()
        events: list[SendData | TunnelReady] = []
        for byte in b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n":
            events += handshake.receiveData(bytes([byte]))
        self.assertEqual(events, [TunnelReady(b"")])

    def test_anyTwoHundred(self) -> None:
        [ready] = _started().receiveData(b"HTTP/1.1 204 Fine\r\n\r\nx")
        self.assertEqual(ready, TunnelReady(b"x"))

    def test_informationalSkipped(self) -> None:
        [ready] = _started().receiveData(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\ndata")
        self.assertEqual(ready, TunnelReady(b"data"))

    def test_tooManyInformational(self) -> None:
        self.assertRaises(ProxyReplyTooLarge, _started().receiveData,
                          b"HTTP/1.1 100 Continue\r\n\r\n" * 20)

    def test_refused(self) -> None:
        error = self.assertRaises(
            HTTPProxyRefused, _started().receiveData,
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nno!!!")
        self.assertEqual(error.code, 403)
        self.assertEqual(error.statusLine, "HTTP/1.1 403 Forbidden")
        error.proxy = "tcp:127.0.0.1:3128"
        self.assertEqual(str(error),
                         "httpconnect proxy at tcp:127.0.0.1:3128 refused: HTTP/1.1 403 Forbidden")

    def test_refusedEveryClass(self) -> None:
        for code in (301, 400, 404, 500, 502, 503):
            error = self.assertRaises(HTTPProxyRefused, _started().receiveData,
                                      f"HTTP/1.1 {code} X\r\n\r\n".encode())
            self.assertEqual(error.code, code)

    def test_authRequired(self) -> None:
        error = self.assertRaises(
            HTTPProxyAuthenticationRequired, _started().receiveData,
            b'HTTP/1.1 407 Proxy Authentication Required\r\n'
            b'Proxy-Authenticate: Basic realm="p"\r\n\r\n')
        self.assertIn("407 Proxy Authentication Required", str(error))

    def test_oversizedHeader(self) -> None:
        handshake = _started(maxReplyHeader=1024)
        error = self.assertRaises(ProxyReplyTooLarge, handshake.receiveData,
                                  b"HTTP/1.1 200 OK\r\nX: " + b"a" * 2000)
        self.assertIn("1024 bytes", str(error))

    def test_oversizedHeaderInPieces(self) -> None:
        handshake = _started(maxReplyHeader=1024)
        handshake.receiveData(b"HTTP/1.1 200 OK\r\n")

        def feed() -> None:
            for _ in range(100):
                handshake.receiveData(b"X-Filler: " + b"a" * 50 + b"\r\n")

        self.assertRaises(ProxyReplyTooLarge, feed)

    def test_garbage(self) -> None:
        error = self.assertRaises(MalformedProxyReply, _started().receiveData, b"\x05\x00")
        self.assertIn("not HTTP", str(error))
        self.assertRaises(MalformedProxyReply, _started().receiveData, b"SSH-2.0-x\r\n")

    def test_malformedStatusLine(self) -> None:
        self.assertRaises(MalformedProxyReply, _started().receiveData,
                          b"HTTP/1.1 2000 OK\r\n\r\n")
        self.assertRaises(MalformedProxyReply, _started().receiveData,
                          b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n")

    def test_wrongVersion(self) -> None:
        error = self.assertRaises(WrongProxyVersion, _started().receiveData,
                                  b"HTTP/2.0 200 OK\r\n\r\n")
        self.assertIn("'2.0'", str(error))
        self.assertRaises(WrongProxyVersion, _started().receiveData, b"HTTP/0.9 200 OK\r\n\r\n")

    def test_closedBeforeReply(self) -> None:
        error = _started().connectionClosed()
        self.assertIsInstance(error, ProxyClosedConnection)
        self.assertNotIsInstance(error, TruncatedProxyReply)

    def test_truncated(self) -> None:
        handshake = _started()
        self.assertEqual(handshake.receiveData(b"HTTP/1.1 200 Conn"), [])
        error = handshake.connectionClosed()
        self.assertIsInstance(error, TruncatedProxyReply)
        self.assertIn("17 bytes", str(error))
