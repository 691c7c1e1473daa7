"""
L{endpointkit.lifecycle.tracking}: the tracking wrapper passes half-close,
TLS handshake events and ALPN through, and a refused connection is not
tracked.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocolNegotiationFactory,
)
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from endpointkit import clientFromString
from endpointkit._grammar import buildDescription
from endpointkit.lifecycle import (
    TrackingFactory,
    clientDescriptionFor,
    gracefulStop,
    listen,
    stopListening,
)
from tests.test_lifecycle._helpers import (
    Collect,
    Inline,
    LifecycleTestCase,
    bounded,
    makeCertificate,
)


@implementer(IHalfCloseableProtocol)
class AnswerAtEOF(protocol.Protocol):
    """
    Reads until the client half-closes, then answers with what it read.
    """

    received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.write(b"read " + self.received)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class HalfClose(Collect):
    def connectionMade(self) -> None:
        self.transport.write(self.message)
        self.transport.loseWriteConnection()


@implementer(IHandshakeListener)
class Negotiated(protocol.Protocol):
    def handshakeCompleted(self) -> None:
        self.factory.negotiated.callback(self.transport.negotiatedProtocol)


@implementer(IProtocolNegotiationFactory)
class NegotiatingFactory(protocol.Factory):
    protocol = Negotiated

    def __init__(self) -> None:
        self.negotiated: defer.Deferred[bytes | None] = defer.Deferred()

    def acceptableProtocols(self) -> list[bytes]:
        return [b"h2", b"http/1.1"]


class WrapperTransparencyTests(LifecycleTestCase):
    """
    The tracking wrapper keeps what the application's protocol and factory
    take part in: half-close, TLS handshake events, ALPN.
    """

    @defer.inlineCallbacks
    def test_halfClose(self) -> Inline:
        port = yield self.listenFor("tcp:0:interface=127.0.0.1",
                                    protocol.Factory.forProtocol(AnswerAtEOF))
        client = HalfClose(b"request body")
        endpoint = clientFromString(reactor, clientDescriptionFor(port))
        yield bounded(endpoint.connect(protocol.Factory.forProtocol(lambda: client)))
        self.assertEqual((yield bounded(client.done)), b"read request body")

    @defer.inlineCallbacks
    def test_alpnAndHandshake(self) -> Inline:
        from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        cert, key = makeCertificate(self.tempDir(), "service.test")
        factory = NegotiatingFactory()
        port = yield self.listenFor(buildDescription(
            "ssl", 0, privateKey=key, certKey=cert, interface="127.0.0.1"), factory)
        with open(cert, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        options = optionsForClientTLS("service.test", trustRoot=trust,
                                      acceptableProtocols=[b"h2"])
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                             port.getHost().port))
        client = yield bounded(endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol)))
        self.assertEqual((yield bounded(factory.negotiated)), b"h2")
        client.transport.loseConnection()
        yield bounded(gracefulStop(port, 5))


class RefusingFactoryTests(TestCase):
    """
    A factory may refuse a connection by building no protocol.
    """

    def test_refusedConnectionIsClosed(self) -> None:
        """
        Behind C{listen}'s tracking wrapper, a connection the application's
        factory refuses is closed and not tracked.
        """
        class Refusing(protocol.Factory):
            def buildProtocol(self, addr: Any) -> None:
                return None

        from twisted.internet.address import IPv4Address


        factory = TrackingFactory(Refusing())
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)))
        self.assertEqual(factory.connections, [])

        @defer.inlineCallbacks
        def overTCP() -> Any:
            port = yield listen("tcp:0:interface=127.0.0.1", Refusing())
            self.addCleanup(stopListening, port)
            closed: defer.Deferred[None] = defer.Deferred()

            class Client(protocol.Protocol):
                def connectionLost(self, reason: Any = None) -> None:
                    closed.callback(None)

            yield clientFromString(reactor, f"tcp:127.0.0.1:{port.getHost().port}").connect(
                protocol.Factory.forProtocol(Client))
            yield closed.addTimeout(10, reactor)

        return overTCP()

