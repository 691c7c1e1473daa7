"""
The proxy client endpoints: descriptions, the Twisted layer, real proxies
(microsocks, tinyproxy) and a hand-written malicious proxy on loopback.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, connectProtocol
from twisted.internet.endpoints import clientFromString as twistedClientFromString
from twisted.internet.endpoints import serverFromString as twistedServerFromString
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from endpointkit import (
    ConnectionNotAllowedByRuleset,
    ConnectionRefused,
    HTTPConnectClientEndpoint,
    HTTPProxyAuthenticationRequired,
    HTTPProxyRefused,
    MalformedProxyReply,
    ProxyAuthenticationFailed,
    ProxyClosedConnection,
    ProxyHandshakeTimeout,
    ProxyReplyTooLarge,
    SOCKS4aClientEndpoint,
    SOCKS4Rejected,
    SOCKS5ClientEndpoint,
    TruncatedProxyReply,
    TunnelTransport,
    WrongProxyVersion,
    clientFromString,
    parseDescription,
)
from endpointkit._grammar import DescriptionError, buildDescription
from endpointkit.proxy import (
    _HandshakeFactory,
    httpconnectType,
    socks4aType,
    socks5Type,
)
from tests._support import (
    freePort,
    requirePeer,
    selfSignedCertificate,
    startMicrosocks,
    startPeer,
    startTinyproxy,
)

WAIT = 20.0
"""
The longest any one network wait in these tests may take.
"""


def bounded(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    """
    C{d}, cancelled if it has not fired within C{seconds}.
    """
    timer = reactor.callLater(seconds, d.cancel)  # type: ignore[attr-defined]

    def done(result: object) -> object:
        if timer.active():
            timer.cancel()
        return result

    return d.addBoth(done)


def escaped(description: str) -> str:
    return description.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


# Targets.


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """
    Echoes; on a half-close, says C{bye} and closes.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self.transport.write(b"bye")  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


class Collect(Protocol):
    """
    A client that collects what it receives and says when it has enough or
    the connection is gone.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = bytearray()
        self.enough: Deferred[bytes] = Deferred()
        self.lost: Deferred[BaseException] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.enough.called:
            self.enough.callback(bytes(self.received))

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        if not self.enough.called:
            self.enough.callback(bytes(self.received))
        self.lost.callback(reason.value)


@implementer(IHalfCloseableProtocol)
class HalfCloser(Collect):
    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


class Servers:
    """
    Listening ports that a test closes at cleanup.
    """

    def __init__(self, test: TestCase) -> None:
        self.test = test

    @defer.inlineCallbacks
    def listen(self, factory: Factory, host: str = "127.0.0.1") -> Any:
        endpoint = (TCP6ServerEndpoint(reactor, 0, interface=host) if ":" in host
                    else TCP4ServerEndpoint(reactor, 0, interface=host))
        port = yield endpoint.listen(factory)
        self.test.addCleanup(port.stopListening)
        return port.getHost().port

    def echo(self, host: str = "127.0.0.1") -> Deferred[int]:
        return self.listen(Factory.forProtocol(Echo), host)  # type: ignore[no-any-return]


# A scripted (malicious or good) proxy.


class Scripted(Protocol):
    """
    Reads each client message (a byte count, or up to a delimiter), answers
    with the script's reply, then does the script's ending: C{echo} (acts
    as the target), C{close}, C{hang} or C{abort}.
    """

    def __init__(self, steps: list[tuple[int | bytes, bytes]], ending: str,
                 seen: list[bytes]) -> None:
        self.steps = list(steps)
        self.ending = ending
        self.buffer = b""
        self.seen = seen
        self.tunnel = False

    def connectionMade(self) -> None:
        self._advance()

    def dataReceived(self, data: bytes) -> None:
        if self.tunnel:
            self.transport.write(data)  # type: ignore[union-attr]
            return
        self.buffer += data
        self._advance()

    def _advance(self) -> None:
        while self.steps:
            until, reply = self.steps[0]
            if isinstance(until, int):
                if len(self.buffer) < until:
                    return
                message, self.buffer = self.buffer[:until], self.buffer[until:]
            else:
                end = self.buffer.find(until)
                if end < 0:
                    return
                message, self.buffer = self.buffer[: end + len(until)], \
                    self.buffer[end + len(until):]
            self.seen.append(message)
            self.steps.pop(0)
            if reply:
                self.transport.write(reply)  # type: ignore[union-attr]
        if self.ending == "close":
            self.transport.loseConnection()  # type: ignore[union-attr]
        elif self.ending == "abort":
            self.transport.abortConnection()  # type: ignore[union-attr]
        elif self.ending == "echo":
            self.tunnel = True
            if self.buffer:
                self.transport.write(self.buffer)  # type: ignore[union-attr]
                self.buffer = b""


def scripted(servers: Servers, steps: list[tuple[int | bytes, bytes]],
             ending: str = "hang") -> tuple[Deferred[int], list[bytes]]:
    seen: list[bytes] = []
    factory = Factory.forProtocol(lambda: Scripted(steps, ending, seen))
    return servers.listen(factory), seen


SOCKS5_OK = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x50"
SOCKS5_REQUEST_IPV4 = 10  # the request's length for an IPv4 target


def socks5To(port: int, proxyPort: int, **kw: object) -> str:
    return buildDescription("socks5", "127.0.0.1", port,
                            endpoint=buildDescription("tcp", "127.0.0.1", proxyPort), **kw)


def httpTo(port: int, proxyPort: int, **kw: object) -> str:
    return buildDescription("httpconnect", "127.0.0.1", port,
                            endpoint=buildDescription("tcp", "127.0.0.1", proxyPort), **kw)


# Descriptions.


class DescriptionTests(SynchronousTestCase):
    """
    The three types parse, build and complain like every endpointkit type.
    """

    def test_socks5(self) -> None:
        endpoint = clientFromString(
            reactor, r"socks5:example.com:443:endpoint=tcp\:127.0.0.1\:1080:user=bob:"
            r"password=s3cret:resolve=local:handshakeTimeout=2.5")
        assert isinstance(endpoint, SOCKS5ClientEndpoint)
        self.assertEqual((endpoint.host, endpoint.port, endpoint.user, endpoint.resolve,
                          endpoint.handshakeTimeout), ("example.com", 443, "bob", "local", 2.5))
        self.assertEqual(endpoint.proxyDescription, "tcp:127.0.0.1:1080")
        self.assertNotIn("s3cret", repr(endpoint))

    def test_defaults(self) -> None:
        endpoint = clientFromString(reactor, r"socks5:[::1]:443:endpoint=tcp\:h\:1080")
        assert isinstance(endpoint, SOCKS5ClientEndpoint)
        self.assertEqual((endpoint.host, endpoint.resolve, endpoint.handshakeTimeout),
                         ("::1", "proxy", 30.0))

    def test_twistedClientFromString(self) -> None:
        for description, kind in [
            (r"socks5:example.com:443:endpoint=tcp\:127.0.0.1\:1080", SOCKS5ClientEndpoint),
            (r"socks4a:example.com:443:endpoint=tcp\:127.0.0.1\:1080:user=me",
             SOCKS4aClientEndpoint),
            (r"httpconnect:example.com:443:endpoint=tcp\:127.0.0.1\:3128:headers=X-A=1",
             HTTPConnectClientEndpoint),
            (r"socks5:[::1]:443:endpoint=unix\:/run/tor/socks", SOCKS5ClientEndpoint),
        ]:
            self.assertIsInstance(twistedClientFromString(reactor, description), kind)
            self.assertIsInstance(clientFromString(reactor, description), kind)

    def test_secretMasked(self) -> None:
        for description in [
            r"socks5:h:1:endpoint=tcp\:p\:2:user=bob:password=s3cret",
            r"httpconnect:h:1:endpoint=tcp\:p\:2:user=bob:password=s3cret",
            buildDescription("socks5", "h", 1, endpoint=buildDescription(
                "socks5", "p", 2, endpoint="tcp:q:3", user="a", password="s3cret")),
        ]:
            parsed = parseDescription(description, "client")
            self.assertNotIn("s3cret", repr(parsed))
            self.assertNotIn("s3cret", str(parsed))
            self.assertIn("s3cret", parsed.description())
            self.assertNotIn("s3cret", repr(parsed.build(reactor)))

    def test_nestedProxyDescriptionMasked(self) -> None:
        endpoint = clientFromString(
            reactor, buildDescription("socks5", "h", 1, endpoint=buildDescription(
                "httpconnect", "p", 2, endpoint="tcp:q:3", user="u", password="s3cret")))
        assert isinstance(endpoint, SOCKS5ClientEndpoint)
        self.assertNotIn("s3cret", endpoint.proxyDescription or "")
        self.assertIn("***", endpoint.proxyDescription or "")

    def test_errors(self) -> None:
        cases = {
            r"socks5:h:https:endpoint=tcp\:p\:1":
                "socks5: argument 'port' must be a TCP port number 1-65535, got 'https'",
            r"socks5:h:1":
                "missing required argument 'endpoint'",
            r"socks5:h:1:endpoint=tcp\:p\:1:password=s3cret":
                "socks5: argument 'password' is given without 'user'",
            r"socks5:h:1:endpoint=tcp\:p\:1:resolve=remote":
                "argument 'resolve' must be one of proxy, local",
            r"socks5:h:1:endpoint=tcp\:p\:1:handshakeTimeout=0":
                "argument 'handshakeTimeout' must be a positive number of seconds",
            r"socks4a:[::1]:1:endpoint=tcp\:p\:1":
                "socks4a: argument 'host' is an IPv6 address",
            r"httpconnect:h:1:endpoint=tcp\:p\:1:user=a\:b:password=x":
                "httpconnect: argument 'user' cannot contain ':'",
            r"httpconnect:h:1:endpoint=tcp\:p\:1:headers=Host\: x":
                "Host is set by the endpoint itself",
            r"httpconnect:h:1:endpoint=tcp\:p\:1:headers=bad name\: x":
                "'bad name' is not a header name",
            r"httpconnect:h:1:endpoint=tcp\:p\:1:headers=novalue":
                "has no ':'",
            r"socks5:h:1:endpoint=nosuch\:p":
                "socks5: argument 'endpoint'",
        }
        for description, message in cases.items():
            error = self.assertRaises(DescriptionError, clientFromString, reactor, description)
            self.assertIn(message, str(error), description)

    def test_longPasswordNotShown(self) -> None:
        error = self.assertRaises(
            DescriptionError, clientFromString, reactor,
            "socks5:h:1:endpoint=tcp\\:p\\:1:user=u:password=" + "s3cret" * 50)
        self.assertNotIn("s3cret", str(error))

    def test_headers(self) -> None:
        endpoint = clientFromString(
            reactor, r"httpconnect:h:1:endpoint=tcp\:p\:1:headers=User-Agent\: ek/1|X-B=2")
        assert isinstance(endpoint, HTTPConnectClientEndpoint)
        self.assertEqual(endpoint.headers, (("User-Agent", "ek/1"), ("X-B", "2")))
        parsed = parseDescription(endpoint and
                                  r"httpconnect:h:1:endpoint=tcp\:p\:1:headers=X-B=2", "client")
        self.assertEqual(parseDescription(parsed.description(), "client").values["headers"],
                         (("X-B", "2"),))

    def test_declaredTypes(self) -> None:
        self.assertEqual([t.prefix for t in (socks5Type, socks4aType, httpconnectType)],
                         ["socks5", "socks4a", "httpconnect"])
        for etype in (socks5Type, socks4aType, httpconnectType):
            self.assertEqual(etype.side, "client")
            self.assertIn("endpoint", etype.byName)
            self.assertIn("handshakeTimeout", etype.byName)


# The Twisted layer, deterministically.


class NeverConnects:
    def __init__(self) -> None:
        self.attempts: list[Deferred[Any]] = []
        self.cancelled = 0

    def connect(self, factory: Any) -> Deferred[Any]:
        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1

        d: Deferred[Any] = Deferred(cancel)
        self.attempts.append(d)
        return d


class ConnectsTo:
    """
    A proxy endpoint that connects at once to an in-memory transport.
    """

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.protocol: Any = None

    def connect(self, factory: Any) -> Deferred[Any]:
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return defer.succeed(self.protocol)


class LayerTests(SynchronousTestCase):
    """
    The attempt, the deadline, cancellation and the hand-over, with a clock
    and in-memory transports.
    """

    def test_timeoutWhileConnecting(self) -> None:
        clock, proxy = Clock(), NeverConnects()
        endpoint = SOCKS5ClientEndpoint(clock, "h", 1, proxy, handshakeTimeout=5,
                                        proxyDescription="tcp:p:1")
        d = endpoint.connect(Factory.forProtocol(Protocol))
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        error = self.failureResultOf(d, ProxyHandshakeTimeout).value
        self.assertEqual(str(error), "socks5 proxy at tcp:p:1 did not open the tunnel to h:1 "
                         "within 5 s (handshakeTimeout)")
        self.assertEqual(proxy.cancelled, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_timeoutDuringHandshake(self) -> None:
        clock, proxy = Clock(), ConnectsTo()
        endpoint = HTTPConnectClientEndpoint(clock, "h", 1, proxy, handshakeTimeout=2)
        d = endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(proxy.transport.value(), b"CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\n\r\n")
        clock.advance(2)
        self.failureResultOf(d, ProxyHandshakeTimeout)
        self.assertTrue(proxy.transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        clock, proxy = Clock(), ConnectsTo()
        d = SOCKS5ClientEndpoint(clock, "h", 1, proxy).connect(Factory.forProtocol(Protocol))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(proxy.transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_proxyUnreachable(self) -> None:
        clock, proxy = Clock(), NeverConnects()
        d = SOCKS5ClientEndpoint(clock, "h", 1, proxy).connect(Factory.forProtocol(Protocol))
        proxy.attempts[0].errback(ConnectionRefusedError())
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_handOver(self) -> None:
        """
        The user's protocol gets a transport whose peer is the target, and
        the bytes that came with the reply.
        """
        clock, proxy = Clock(), ConnectsTo()
        d = SOCKS5ClientEndpoint(clock, "example.com", 443, proxy).connect(
            Factory.forProtocol(lambda: Collect(5)))
        proxy.protocol.dataReceived(b"\x05\x00")
        proxy.protocol.dataReceived(SOCKS5_OK + b"hello")
        user = self.successResultOf(d)
        self.assertEqual(user.received, b"hello")
        self.assertIsInstance(user.transport, TunnelTransport)
        self.assertEqual(user.transport.getPeer(), HostnameAddress(b"example.com", 443))
        self.assertEqual(user.transport.getHost(), proxy.transport.getHost())
        self.assertEqual(clock.getDelayedCalls(), [])
        proxy.protocol.dataReceived(b" world")
        self.assertEqual(user.received, b"hello world")
        user.transport.write(b"x")
        user.transport.writeSequence([b"y", b"z"])
        self.assertTrue(proxy.transport.value().endswith(b"xyz"))

    def test_flowControlPassesThrough(self) -> None:
        clock, proxy = Clock(), ConnectsTo()
        d = SOCKS4aClientEndpoint(clock, "192.0.2.1", 80, proxy).connect(
            Factory.forProtocol(Protocol))
        proxy.protocol.dataReceived(b"\x00\x5a" + b"\x00" * 6)
        transport = self.successResultOf(d).transport
        self.assertEqual(transport.getPeer(), IPv4Address("TCP", "192.0.2.1", 80))

        @implementer(IPushProducer)
        class Producer:
            def pauseProducing(self) -> None: ...
            def resumeProducing(self) -> None: ...
            def stopProducing(self) -> None: ...

        producer = Producer()
        transport.registerProducer(producer, True)
        self.assertIs(proxy.transport.producer, producer)
        transport.unregisterProducer()
        self.assertIsNone(proxy.transport.producer)
        transport.pauseProducing()
        self.assertEqual(proxy.transport.producerState, "paused")
        transport.resumeProducing()
        self.assertEqual(proxy.transport.producerState, "producing")
        transport.loseConnection()
        self.assertTrue(proxy.transport.disconnecting)

    def test_userProtocolSeesConnectionLost(self) -> None:
        clock, proxy = Clock(), ConnectsTo()
        d = HTTPConnectClientEndpoint(clock, "::1", 1, proxy).connect(
            Factory.forProtocol(lambda: Collect(1)))
        proxy.protocol.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
        user = self.successResultOf(d)
        self.assertEqual(user.transport.getPeer(), IPv6Address("TCP", "::1", 1))
        proxy.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIsInstance(self.successResultOf(user.lost), ConnectionDone)

    def test_connectionMadeRaises(self) -> None:
        class Broken(Protocol):
            def connectionMade(self) -> None:
                raise ZeroDivisionError()

        clock, proxy = Clock(), ConnectsTo()
        d = SOCKS5ClientEndpoint(clock, "h", 1, proxy).connect(Factory.forProtocol(Broken))
        proxy.protocol.dataReceived(b"\x05\x00")
        proxy.protocol.dataReceived(SOCKS5_OK)
        self.failureResultOf(d, ZeroDivisionError)
        self.assertTrue(proxy.transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_buildProtocolNone(self) -> None:
        clock, proxy = Clock(), ConnectsTo()
        factory = Factory()
        factory.buildProtocol = lambda addr: None  # type: ignore[method-assign,assignment,return-value]
        d = SOCKS5ClientEndpoint(clock, "h", 1, proxy).connect(factory)
        proxy.protocol.dataReceived(b"\x05\x00" + SOCKS5_OK)
        self.failureResultOf(d)
        self.assertTrue(proxy.transport.disconnecting)

    def test_errorAbortsConnection(self) -> None:
        clock, proxy = Clock(), ConnectsTo()
        d = SOCKS5ClientEndpoint(clock, "h", 1, proxy, proxyDescription="tcp:p:9").connect(
            Factory.forProtocol(Protocol))
        proxy.protocol.dataReceived(b"\x05\x00")
        proxy.protocol.dataReceived(b"\x05\x02")
        error = self.failureResultOf(d, ConnectionNotAllowedByRuleset).value
        self.assertEqual(str(error), "socks5 proxy at tcp:p:9 refused: "
                         "connection not allowed by ruleset (reply 0x02)")
        self.assertTrue(proxy.transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])


# Real proxies.


class RealProxyTestCase(TestCase):
    """
    What the tests against real proxy programs share: one exchange of bytes
    through a tunnel, checked, then closed.
    """

    @defer.inlineCallbacks
    def exchange(self, description: str, payload: bytes = b"ping",
                 parse: Callable[[Any, str], Any] = clientFromString) -> Any:
        client = Collect(len(payload))
        yield bounded(connectProtocol(parse(reactor, description), client))
        client.transport.write(payload)  # type: ignore[union-attr]
        received = yield bounded(client.enough)
        self.assertEqual(received, payload)
        client.transport.loseConnection()  # type: ignore[union-attr]
        yield bounded(client.lost)
        return client


class MicrosocksTests(RealProxyTestCase):
    """
    socks5: through microsocks, with and without a password.
    """

    def startMicrosocks(self, *extra: str) -> int:
        return startMicrosocks(self, *extra)

    @defer.inlineCallbacks
    def test_noAuth(self) -> Any:
        proxy = self.startMicrosocks()
        target = yield Servers(self).echo()
        for parse in (clientFromString, twistedClientFromString):
            client = yield self.exchange(socks5To(target, proxy), parse=parse)
            self.assertEqual(client.transport.getPeer(), IPv4Address("TCP", "127.0.0.1", target))

    @defer.inlineCallbacks
    def test_remoteNameAndIPv6(self) -> Any:
        proxy = self.startMicrosocks()
        target4 = yield Servers(self).echo()
        target6 = yield Servers(self).echo("::1")
        proxyTCP = buildDescription("tcp", "127.0.0.1", proxy)
        client = yield self.exchange(buildDescription(
            "socks5", "[::1]", target6, endpoint=proxyTCP))
        self.assertEqual(client.transport.getPeer(), IPv6Address("TCP", "::1", target6))
        client = yield self.exchange(f"socks5:[::1]:{target6}:endpoint={escaped(proxyTCP)}",
                                     parse=twistedClientFromString)
        client = yield self.exchange(buildDescription(
            "socks5", "127.0.0.1", target4, endpoint=proxyTCP))
        self.assertIsInstance(client.transport.getPeer(), IPv4Address)

    @defer.inlineCallbacks
    def test_bulkBothWays(self) -> Any:
        proxy = self.startMicrosocks()
        target = yield Servers(self).echo()
        payload = os.urandom(4 * 1024 * 1024)
        client = Collect(len(payload))
        yield bounded(connectProtocol(clientFromString(reactor, socks5To(target, proxy)),
                                      client))
        client.transport.write(payload)  # type: ignore[union-attr]
        received = yield bounded(client.enough)
        self.assertEqual(hashlib.sha256(received).digest(), hashlib.sha256(payload).digest())
        client.transport.loseConnection()  # type: ignore[union-attr]
        yield bounded(client.lost)

    @defer.inlineCallbacks
    def test_password(self) -> Any:
        proxy = self.startMicrosocks("-u", "bob", "-P", "s3cret")
        target = yield Servers(self).echo()
        yield self.exchange(socks5To(target, proxy, user="bob", password="s3cret"))
        error = yield self.assertFailure(
            bounded(clientFromString(reactor, socks5To(target, proxy, user="bob",
                                                       password="wrong")).connect(
                Factory.forProtocol(Protocol))), ProxyAuthenticationFailed)
        self.assertTrue(str(error).startswith(
            f"socks5 proxy at tcp:127.0.0.1:{proxy} rejected the username and password "
            "(status 0x"), str(error))
        self.assertNotIn("wrong", repr(error))
        error = yield self.assertFailure(
            bounded(clientFromString(reactor, socks5To(target, proxy)).connect(
                Factory.forProtocol(Protocol))), ProxyAuthenticationFailed)
        self.assertIn("accepts none of the authentication methods", str(error))

    @defer.inlineCallbacks
    def test_targetRefuses(self) -> Any:
        proxy = self.startMicrosocks()
        error = yield self.assertFailure(
            bounded(clientFromString(reactor, socks5To(freePort(), proxy)).connect(
                Factory.forProtocol(Protocol))), ConnectionRefused)
        self.assertEqual(error.code, 5)
        self.assertIn(f"socks5 proxy at tcp:127.0.0.1:{proxy} refused: connection refused",
                      str(error))

    @defer.inlineCallbacks
    def test_tlsOverTunnel(self) -> Any:
        """
        Twisted's C{tls:} over C{socks5:}: the certificate is verified for
        the host name given to C{tls:}, through the tunnel.
        """
        proxy = self.startMicrosocks()
        directory = self.mktemp()
        os.makedirs(os.path.join(directory, "roots"))
        keyPath, certPath = _selfSigned(directory, "localhost")
        roots = os.path.join(directory, "roots")
        os.rename(certPath, os.path.join(roots, "cert.pem"))
        certPath = os.path.join(roots, "cert.pem")
        server = twistedServerFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={escaped(keyPath)}:"
            f"certKey={escaped(certPath)}")
        port = yield server.listen(Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        target = port.getHost().port
        tunnel = socks5To(target, proxy)
        client = yield self.exchange(buildDescription(
            "tls", "localhost", target, trustRoots=roots, endpoint=tunnel), b"secret ping")
        self.assertEqual(client.transport.getPeer().port, target)
        client = yield self.exchange(
            f"tls:localhost:{target}:trustRoots={escaped(roots)}:endpoint={escaped(tunnel)}",
            parse=twistedClientFromString)
        wrong = Collect(1)
        connected = yield bounded(connectProtocol(clientFromString(reactor, buildDescription(
            "tls", "example.com", target, trustRoots=roots, endpoint=tunnel)), wrong))
        self.assertIs(connected, wrong)
        reason = yield bounded(wrong.lost)
        self.assertIn("example.com", str(reason) + repr(reason))


class TinyproxyTests(RealProxyTestCase):
    """
    httpconnect: through tinyproxy, with and without Basic authentication.
    """

    def startTinyproxy(self, *lines: str) -> int:
        return startTinyproxy(self, *lines)

    @defer.inlineCallbacks
    def test_noAuth(self) -> Any:
        proxy = self.startTinyproxy()
        target = yield Servers(self).echo()
        for parse in (clientFromString, twistedClientFromString):
            client = yield self.exchange(httpTo(target, proxy, headers="User-Agent: ek"),
                                         parse=parse)
            self.assertEqual(client.transport.getPeer(), IPv4Address("TCP", "127.0.0.1", target))
        payload = os.urandom(1024 * 1024)
        yield self.exchange(httpTo(target, proxy), payload)

    @defer.inlineCallbacks
    def test_basicAuth(self) -> Any:
        proxy = self.startTinyproxy("BasicAuth bob s3cret")
        target = yield Servers(self).echo()
        yield self.exchange(httpTo(target, proxy, user="bob", password="s3cret"))
        for kw in ({"user": "bob", "password": "wrong"}, {}):
            error = yield self.assertFailure(
                bounded(clientFromString(reactor, httpTo(target, proxy, **kw)).connect(
                    Factory.forProtocol(Protocol))), HTTPProxyAuthenticationRequired)
            self.assertIn(error.code, (401, 407))
            self.assertIn(f"httpconnect proxy at tcp:127.0.0.1:{proxy} refused: HTTP/1.", str(error))
            self.assertNotIn("wrong", str(error))

    @defer.inlineCallbacks
    def test_forbiddenPort(self) -> Any:
        proxy = self.startTinyproxy("ConnectPort 443")
        target = yield Servers(self).echo()
        error = yield self.assertFailure(
            bounded(clientFromString(reactor, httpTo(target, proxy)).connect(
                Factory.forProtocol(Protocol))), HTTPProxyRefused)
        self.assertEqual(error.code, 403)
        self.assertIn("403", error.statusLine)

    @defer.inlineCallbacks
    def test_socks5OverHTTPConnect(self) -> Any:
        """
        One proxy reached through another: socks5: whose endpoint is an
        httpconnect: tunnel to microsocks.
        """
        http = self.startTinyproxy()
        socksPort = freePort()
        startPeer(self, [requirePeer("microsocks"), "-i", "127.0.0.1", "-p", str(socksPort)],
                  socksPort)
        target = yield Servers(self).echo()
        description = buildDescription("socks5", "127.0.0.1", target,
                                       endpoint=httpTo(socksPort, http))
        client = yield self.exchange(description, b"nested")
        self.assertEqual(client.transport.getPeer(), IPv4Address("TCP", "127.0.0.1", target))


# The hand-written proxy: good and bad.


class ScriptedProxyTests(TestCase):
    """
    Every bad reply fails at once with its own error; good scripted proxies
    show the details real proxies do not (SOCKS4a, half-close, trailing
    bytes).
    """

    @defer.inlineCallbacks
    def fails(self, steps: list[tuple[int | bytes, bytes]], ending: str, kind: type,
              description: Callable[[int], str] | None = None) -> Any:
        servers = Servers(self)
        listening, _ = scripted(servers, steps, ending)
        port = yield listening
        text = (description or (lambda p: socks5To(80, p, handshakeTimeout=10)))(port)
        error = yield self.assertFailure(
            bounded(clientFromString(reactor, text).connect(Factory.forProtocol(Protocol))),
            kind)
        self.assertIn(f"at tcp:127.0.0.1:{port} ", str(error))
        return error

    def test_socks5Truncated(self) -> Any:
        return self.fails([(3, b"\x05\x00"), (SOCKS5_REQUEST_IPV4, SOCKS5_OK[:6])], "close",
                          TruncatedProxyReply)

    def test_socks5WrongVersion(self) -> Any:
        return self.fails([(3, b"\x04\x00")], "hang", WrongProxyVersion)

    def test_socks5Garbage(self) -> Any:
        return self.fails([(3, b"HTTP/1.1 400 Bad Request\r\n\r\n")], "hang", WrongProxyVersion)

    def test_socks5GarbageReply(self) -> Any:
        return self.fails([(3, b"\x05\x00"), (SOCKS5_REQUEST_IPV4, b"\x05\x00\x00\x09" + b"x" * 9)],
                          "hang", MalformedProxyReply)

    def test_socks5Oversized(self) -> Any:
        return self.fails([(3, b"\x05\x00" + b"\x00" * 100000)], "hang", ProxyReplyTooLarge)

    def test_socks5ClosesMidHandshake(self) -> Any:
        return self.fails([(3, b"")], "close", ProxyClosedConnection)

    def test_socks5ClosesAtOnce(self) -> Any:
        return self.fails([], "abort", ProxyClosedConnection)

    def test_socks5Refuses(self) -> Any:
        return self.fails([(3, b"\x05\x00"), (SOCKS5_REQUEST_IPV4, b"\x05\x02\x00\x01" + b"\0" * 6)],
                          "hang", ConnectionNotAllowedByRuleset)

    @defer.inlineCallbacks
    def test_socks5NeverAnswers(self) -> Any:
        error = yield self.fails([], "hang", ProxyHandshakeTimeout,
                                 lambda p: socks5To(80, p, handshakeTimeout=0.3))
        self.assertIn("within 0.3 s", str(error))

    @defer.inlineCallbacks
    def test_httpNeverAnswers(self) -> Any:
        yield self.fails([], "hang", ProxyHandshakeTimeout,
                         lambda p: httpTo(80, p, handshakeTimeout=0.3))

    def test_httpOversized(self) -> Any:
        return self.fails([(b"\r\n\r\n", b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 200000)],
                          "hang", ProxyReplyTooLarge, lambda p: httpTo(80, p))

    def test_httpTruncated(self) -> Any:
        return self.fails([(b"\r\n\r\n", b"HTTP/1.1 200 Connection est")], "close",
                          TruncatedProxyReply, lambda p: httpTo(80, p))

    def test_httpGarbage(self) -> Any:
        return self.fails([(b"\r\n\r\n", b"\x05\xff")], "hang", MalformedProxyReply,
                          lambda p: httpTo(80, p))

    def test_httpWrongVersion(self) -> Any:
        return self.fails([(b"\r\n\r\n", b"HTTP/2.0 200 OK\r\n\r\n")], "hang",
                          WrongProxyVersion, lambda p: httpTo(80, p))

    def test_httpClosesMidHandshake(self) -> Any:
        return self.fails([(b"\r\n\r\n", b"")], "close", ProxyClosedConnection,
                          lambda p: httpTo(80, p))

    @defer.inlineCallbacks
    def test_httpRefusedCarriesStatusLine(self) -> Any:
        error = yield self.fails(
            [(b"\r\n\r\n", b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")],
            "hang", HTTPProxyRefused, lambda p: httpTo(80, p))
        self.assertEqual(error.statusLine, "HTTP/1.1 502 Bad Gateway")

    def test_socks4Rejected(self) -> Any:
        return self.fails([(9, b"\x00\x5b" + b"\0" * 6)], "hang", SOCKS4Rejected,
                          lambda p: buildDescription("socks4a", "192.0.2.1", 80,
                                                     endpoint=f"tcp:127.0.0.1:{p}"))

    def test_socks4WrongVersion(self) -> Any:
        return self.fails([(9, b"\x05\x00")], "hang", WrongProxyVersion,
                          lambda p: buildDescription("socks4a", "192.0.2.1", 80,
                                                     endpoint=f"tcp:127.0.0.1:{p}"))

    @defer.inlineCallbacks
    def test_httpTrailingBytesKept(self) -> Any:
        """
        A greeting the target sent in the same segment as the proxy's reply
        reaches the user's protocol.
        """
        listening, seen = scripted(
            Servers(self), [(b"\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\nSSH-2.0-x\r\n")], "echo")
        port = yield listening
        client = Collect(len(b"SSH-2.0-x\r\n"))
        yield bounded(connectProtocol(clientFromString(reactor, httpTo(
            443, port, user="u", password="p", headers="X-A: 1")), client))
        self.assertEqual((yield bounded(client.enough)), b"SSH-2.0-x\r\n")
        self.assertEqual(seen[0], b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n"
                         b"Proxy-Authorization: Basic dTpw\r\nX-A: 1\r\n\r\n")
        client.transport.loseConnection()  # type: ignore[union-attr]
        yield bounded(client.lost)

    @defer.inlineCallbacks
    def test_socks4aGoodAndHalfClose(self) -> Any:
        """
        A SOCKS4a tunnel; the user's half-close reaches the far end, whose
        reply and close come back.
        """
        listening, seen = scripted(
            Servers(self), [(26, b"\x00\x5a" + b"\0" * 6)], "echo")
        port = yield listening
        client = HalfCloser(len(b"ping"))
        yield bounded(connectProtocol(clientFromString(reactor, buildDescription(
            "socks4a", "target.example", 8080, endpoint=f"tcp:127.0.0.1:{port}",
            user="me")), client))
        self.assertEqual(b"".join(seen),
                         b"\x04\x01\x1f\x90\x00\x00\x00\xffme\x00target.example\x00")
        self.assertEqual(client.transport.getPeer(),  # type: ignore[union-attr]
                         HostnameAddress(b"target.example", 8080))
        client.transport.write(b"ping")  # type: ignore[union-attr]
        self.assertEqual((yield bounded(client.enough)), b"ping")
        client.transport.loseWriteConnection()  # type: ignore[union-attr]
        yield bounded(client.lost)
        self.assertEqual(bytes(client.received), b"ping")

    @defer.inlineCallbacks
    def test_quietFactories(self) -> Any:
        """
        A proxied connection logs no "Starting factory" / "Stopping factory"
        lines: the factories the proxy endpoint makes are not noisy.
        """
        listening, _ = scripted(
            Servers(self), [(3, b"\x05\x00"), (SOCKS5_REQUEST_IPV4, SOCKS5_OK)], "echo")
        port = yield listening
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        class Quiet(Factory):
            noisy = False
            protocol = Collect

            def buildProtocol(self, addr: Any) -> Any:
                return Collect(len(b"ping"))

        protocol = yield bounded(clientFromString(reactor, socks5To(80, port)).connect(Quiet()))
        protocol.transport.write(b"ping")
        self.assertEqual((yield bounded(protocol.enough)), b"ping")
        protocol.transport.loseConnection()
        yield bounded(protocol.lost)
        texts = [formatEvent(event) for event in events]
        self.assertEqual([t for t in texts if "factory" in t.lower()], [])

    @defer.inlineCallbacks
    def test_proxyOverUnixAndTimeout(self) -> Any:
        """
        The proxy is reached through any client description: a UNIX socket
        (as Tor's SOCKS port can be), or a deadline around TCP.
        """
        path = self.mktemp()
        seen: list[bytes] = []
        steps = [(3, b"\x05\x00"), (SOCKS5_REQUEST_IPV4, SOCKS5_OK)]
        port = yield twistedServerFromString(reactor, f"unix:{escaped(path)}").listen(
            Factory.forProtocol(lambda: Scripted(steps, "echo", seen)))
        self.addCleanup(port.stopListening)
        for proxy in (buildDescription("unix", path),
                      buildDescription("timeout", 5, endpoint=buildDescription("unix", path))):
            client = Collect(4)
            yield bounded(connectProtocol(clientFromString(reactor, buildDescription(
                "socks5", "127.0.0.1", 80, endpoint=proxy)), client))
            client.transport.write(b"ping")  # type: ignore[union-attr]
            self.assertEqual((yield bounded(client.enough)), b"ping")
            client.transport.loseConnection()  # type: ignore[union-attr]
            yield bounded(client.lost)

    @defer.inlineCallbacks
    def test_resolveLocally(self) -> Any:
        """
        With resolve=local the proxy is sent an address, never the name.
        """
        listening, seen = scripted(Servers(self), [(3, b"\x05\x00"), (10, b"")], "hang")
        port = yield listening
        endpoint = clientFromString(reactor, buildDescription(
            "socks5", "localhost", 80, endpoint=f"tcp:127.0.0.1:{port}", resolve="local",
            handshakeTimeout=1))
        error = yield self.assertFailure(
            bounded(endpoint.connect(Factory.forProtocol(Protocol))), ProxyHandshakeTimeout)
        self.assertIn("localhost:80", str(error))
        self.assertEqual(seen[0], b"\x05\x01\x00")
        self.assertIn(seen[1][3], (1, 4))
        self.assertNotIn(b"localhost", b"".join(seen))

    @defer.inlineCallbacks
    def test_resolveLocallySOCKS4(self) -> Any:
        """
        socks4a: with resolve=local sends plain SOCKS4 with an IPv4 address.
        """
        listening, seen = scripted(Servers(self), [(9, b"\x00\x5a" + b"\0" * 6)], "echo")
        port = yield listening
        client = Collect(2)
        yield bounded(connectProtocol(clientFromString(reactor, buildDescription(
            "socks4a", "localhost", 80, endpoint=f"tcp:127.0.0.1:{port}", resolve="local")),
            client))
        [request] = seen
        self.assertEqual((request[:5], request[8:]), (b"\x04\x01\x00\x50\x7f", b"\x00"))
        self.assertEqual(client.transport.getPeer(),  # type: ignore[union-attr]
                         HostnameAddress(b"localhost", 80))
        client.transport.loseConnection()  # type: ignore[union-attr]
        yield bounded(client.lost)

    @defer.inlineCallbacks
    def test_cancelDuringHandshake(self) -> Any:
        listening, seen = scripted(Servers(self), [(3, b"")], "hang")
        port = yield listening
        d = clientFromString(reactor, socks5To(80, port)).connect(Factory.forProtocol(Protocol))
        while not seen:
            yield deferLater(reactor, 0.01)
        d.cancel()
        yield self.assertFailure(d, CancelledError)


def _selfSigned(directory: str, name: str) -> tuple[str, str]:
    """
    A self-signed CA certificate for C{name} and its key, as PEM files.
    """
    certificate, key = selfSignedCertificate(name)
    keyPath = os.path.join(directory, "key.pem")
    certPath = os.path.join(directory, "cert.pem")
    with open(keyPath, "wb") as f:
        f.write(key)
    with open(certPath, "wb") as f:
        f.write(certificate)
    return keyPath, certPath


class QuietFactoryTests(SynchronousTestCase):
    """
    No factory class of the package logs "Starting factory" per connection.
    """

    def test_everyFactoryQuiet(self) -> None:
        import importlib
        import pkgutil

        import endpointkit

        found = []
        for module in pkgutil.iter_modules(endpointkit.__path__, "endpointkit."):
            if module.name == "endpointkit.__main__":
                continue
            loaded = importlib.import_module(module.name)
            for value in vars(loaded).values():
                if (isinstance(value, type) and issubclass(value, Factory)
                        and value.__module__ == loaded.__name__):
                    found.append(value)
        self.assertIn(_HandshakeFactory, found)
        self.assertEqual([f for f in found if f.noisy], [])


class PublicNamesTests(SynchronousTestCase):
    """
    Every error lives in the module of its family, and each public name is
    written once, in the C{TYPE_CHECKING} block of C{endpointkit/__init__.py}.
    """

    def test_errorFamilies(self) -> None:
        import endpointkit
        from endpointkit import _handshake, _httpconnect, _socks

        errors = {name: getattr(endpointkit, name) for name in endpointkit.__all__
                  if isinstance(getattr(endpointkit, name), type)
                  and issubclass(getattr(endpointkit, name), endpointkit.ProxyError)}
        self.assertEqual(len(errors), 23)
        self.assertEqual(errors["HTTPProxyRefused"].__module__, _httpconnect.__name__)
        self.assertEqual(errors["HTTPProxyAuthenticationRequired"].__module__,
                         _httpconnect.__name__)
        for name in ("GeneralSOCKSFailure", "SOCKS4Rejected", "ProxyAuthenticationFailed",
                     "UnassignedSOCKSReply", "TTLExpired"):
            self.assertEqual(errors[name].__module__, _socks.__name__, name)
        for name in ("ProxyError", "ProxyRefused", "MalformedProxyReply",
                     "ProxyHandshakeTimeout", "TruncatedProxyReply"):
            self.assertEqual(errors[name].__module__, _handshake.__name__, name)
        # The SOCKS module knows nothing of HTTP.
        self.assertNotIn("HTTPProxyRefused", vars(_socks))

    def test_everyProxyErrorIsPublic(self) -> None:
        """
        A new error class in a proxy module cannot be forgotten in the
        public names.
        """
        import endpointkit
        from endpointkit import _handshake, _httpconnect, _socks

        defined = {name for module in (_handshake, _httpconnect, _socks)
                   for name, value in vars(module).items()
                   if isinstance(value, type) and issubclass(value, endpointkit.ProxyError)
                   and value.__module__ == module.__name__}
        self.assertEqual(defined - set(endpointkit.__all__), set())

    def test_eachNameOnce(self) -> None:
        """
        The public names are the imports of the C{TYPE_CHECKING} block,
        each written once, and each resolves to the object its module has.
        """
        import ast
        import importlib

        import endpointkit

        with open(endpointkit.__file__, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        written = [alias.asname for node in tree.body if isinstance(node, ast.If)
                   for statement in node.body if isinstance(statement, ast.ImportFrom)
                   for alias in statement.names]
        self.assertEqual(len(written), len(set(written)))
        self.assertEqual(sorted(written), endpointkit.__all__)
        for name, module in endpointkit._publicNames().items():
            self.assertIs(getattr(endpointkit, name),
                          getattr(importlib.import_module(module), name), name)
        self.assertIn("ProxyError", dir(endpointkit))
        with self.assertRaises(AttributeError):
            endpointkit.NoSuchName  # noqa: B018

    def test_lazy(self) -> None:
        """
        Importing the package imports none of its modules and reads none of
        its names; a star import gets every public name.
        """
        import subprocess
        import sys

        code = ("import sys, endpointkit\n"
                "print(endpointkit._API is None,"
                " sorted(m for m in sys.modules if m.startswith('endpointkit')))\n"
                "from endpointkit import *\n"
                "print(ProxyError.__name__, pump.__module__)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, check=True).stdout.splitlines()
        self.assertEqual(out, ["True ['endpointkit']", "ProxyError endpointkit.memory"])
