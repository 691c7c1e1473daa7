"""
Tests for C{limit:}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.endpoints import serverFromString as twistedServerFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from endpointkit._grammar import DescriptionError, buildDescription
from endpointkit._parse import serverFromString
from endpointkit.limit import LimitingFactory, LimitPort, LimitServerEndpoint, peerKey
from endpointkit.multi import MultiPort
from tests.servers_helpers import Collect, bounded, connect, waitUntil


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


ECHO = protocol.Factory.forProtocol(Echo)
LOOPBACK = buildDescription("tcp", 0, interface="127.0.0.1", backlog=1024)


class ParseTests(TestCase):
    """
    Parsing C{limit:} descriptions.
    """

    def test_values(self) -> None:
        """
        Every argument arrives typed, through both parse APIs.
        """
        description = buildDescription("limit", max=10, perPeer=3, idle=2.5,
                                       message="busy now", pause=True, endpoint=LOOPBACK)
        for parse in (serverFromString, twistedServerFromString):
            endpoint = parse(MemoryReactor(), description)
            self.assertIsInstance(endpoint, LimitServerEndpoint)
            self.assertEqual((endpoint.maxConnections, endpoint.perPeer, endpoint.idle,
                              endpoint.message, endpoint.pause), (10, 3, 2.5, "busy now", True))

    def test_errors(self) -> None:
        cases = {
            "limit:max=5": "limit: missing required argument 'endpoint'",
            f"limit:endpoint={LOOPBACK.replace(':', chr(92) + ':')}": "limit: needs at least one of max, perPeer and idle",
            "limit:max=0:endpoint=tcp\\:0": "limit: argument 'max' must be a whole number of at least 1, got '0'",
            "limit:idle=soon:endpoint=tcp\\:0": "limit: argument 'idle' must be a positive number of seconds, got 'soon'",
            "limit:perPeer=2:pause=yes:endpoint=tcp\\:0": "limit: argument 'pause' needs max",
            "limit:idle=5:message=hi:endpoint=tcp\\:0": "limit: argument 'message' is sent to refused connections; it needs max or perPeer",
            "limit:max=1:pause=maybe:endpoint=tcp\\:0": "limit: argument 'pause' must be yes or no",
            "limit:max=1:endpoint=tcp\\:x": "limit: argument 'endpoint': tcp: argument 'port' must be a TCP port number 0-65535, got 'x'",
            "limit:max=1:mx=2:endpoint=tcp\\:0": "limit: unknown argument 'mx'; did you mean 'max'?",
        }
        for description, message in cases.items():
            with self.assertRaises(DescriptionError) as caught:
                serverFromString(MemoryReactor(), description)
            self.assertTrue(str(caught.exception).startswith(message), str(caught.exception))

    def test_peerKey(self) -> None:
        """
        Peers count by host; IPv4-mapped IPv6 as IPv4; UNIX peers not at all.
        """
        self.assertEqual(peerKey(IPv4Address("TCP", "127.0.0.2", 5)), "127.0.0.2")
        self.assertEqual(peerKey(IPv6Address("TCP", "::ffff:10.0.0.1", 5)), "10.0.0.1")
        self.assertEqual(peerKey(IPv6Address("TCP", "::1", 5)), "::1")
        self.assertIsNone(peerKey(UNIXAddress(b"/tmp/x")))
        self.assertIsNone(peerKey(None))


class FactoryTests(TestCase):
    """
    The factory on its own, with a fake transport and a Clock.
    """

    def test_refusedPeerThatDoesNotRead(self) -> None:
        """
        A refused connection gets the message and a close; if it is still
        open after the grace period, it is aborted, and nothing stays
        scheduled.
        """
        clock = Clock()
        factory = LimitingFactory(ECHO, maxConnections=1, message="full", clock=clock,
                                  refuseGrace=3)
        address = IPv4Address("TCP", "127.0.0.1", 1)
        accepted = factory.buildProtocol(address)
        accepted.makeConnection(StringTransport(peerAddress=address))
        refused = factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        refused.makeConnection(transport)
        self.assertEqual((transport.value(), transport.disconnecting), (b"full\r\n", True))
        self.assertEqual((factory.open, factory.rejected), (1, 1))
        clock.advance(2.9)
        self.assertFalse(transport.disconnected)
        clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        refused.connectionLost(Failure(ConnectionDone()))
        accepted.connectionLost(Failure(ConnectionDone()))
        self.assertEqual((factory.open, factory.perPeerCounts, clock.getDelayedCalls()),
                         (0, {}, []))

    def test_unixPeersCountOnlyInTotal(self) -> None:
        """
        Peers without a host are not held to perPeer.
        """
        factory = LimitingFactory(ECHO, perPeer=1, clock=Clock())
        for _ in range(3):
            factory.buildProtocol(UNIXAddress(b"")).makeConnection(StringTransport())
        self.assertEqual((factory.open, factory.rejected, factory.perPeerCounts), (3, 0, {}))


class LoopbackTests(TestCase):
    """
    Real loopback clients.
    """

    @defer.inlineCallbacks
    def listen(self, description: str) -> Any:
        port = yield serverFromString(reactor, description).listen(ECHO)
        self.assertIsInstance(port, LimitPort)
        self.addCleanup(port.stopListening)
        return port

    @defer.inlineCallbacks
    def closeAll(self, port: LimitPort, clients: list[Collect]) -> Any:
        for client in clients:
            if not client.done.called:
                client.transport.loseConnection()  # type: ignore[union-attr]
        yield bounded(reactor, defer.gatherResults([c.done for c in clients]), 30)
        yield waitUntil(reactor, lambda: port.open == 0)

    @defer.inlineCallbacks
    def test_burstCapIsExact(self) -> Any:
        """
        500 connects at once against max=50: exactly 50 stay open, 450 are
        refused with the message and counted, and never more than 50 were
        open at once.
        """
        port = yield self.listen(buildDescription("limit", max=50, message="busy",
                                                  endpoint=LOOPBACK))
        number = port.getHost().port
        clients = yield bounded(reactor, defer.gatherResults(
            [connect(reactor, number) for _ in range(500)]), 60)
        yield waitUntil(reactor, lambda: port.open + port.rejected == 500, 60)
        yield waitUntil(reactor, lambda: sum(c.done.called for c in clients) == 450, 30)
        refused = [c for c in clients if c.done.called]
        self.assertEqual((port.open, port.rejected, port.peak), (50, 450, 50))
        self.assertEqual({c.received for c in refused}, {b"busy\r\n"})
        self.assertEqual(port.counts.perPeer, {"127.0.0.1": 50})
        yield self.closeAll(port, clients)
        self.assertEqual((port.open, port.perPeer, port.peak), (0, {}, 50))

    @defer.inlineCallbacks
    def test_perPeer(self) -> Any:
        """
        perPeer=2 with four clients each from 127.0.0.1 and 127.0.0.2: two
        of each are open, the rest refused (closed without a message).
        """
        port = yield self.listen(buildDescription("limit", perPeer=2, endpoint=LOOPBACK))
        number = port.getHost().port
        clients = yield bounded(reactor, defer.gatherResults(
            [connect(reactor, number, bindAddress=(host, 0))
             for host in ("127.0.0.1", "127.0.0.2") for _ in range(4)]), 30)
        yield waitUntil(reactor, lambda: port.open + port.rejected == 8)
        yield waitUntil(reactor, lambda: sum(c.done.called for c in clients) == 4)
        self.assertEqual(port.perPeer, {"127.0.0.1": 2, "127.0.0.2": 2})
        self.assertEqual((port.open, port.rejected), (4, 4))
        self.assertEqual({c.received for c in clients if c.done.called}, {b""})
        yield self.closeAll(port, clients)
        self.assertEqual(port.perPeer, {})

    @defer.inlineCallbacks
    def test_idleWithClock(self) -> Any:
        """
        A connection with no data either way for idle seconds is aborted;
        data resets the timer.
        """
        clock = Clock()
        endpoint = LimitServerEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                       idle=10, clock=clock)
        port = yield endpoint.listen(ECHO)
        self.addCleanup(port.stopListening)
        client = yield bounded(reactor, connect(reactor, port.getHost().port))
        yield waitUntil(reactor, lambda: port.open == 1)
        clock.advance(9)
        client.transport.write(b"still here")  # type: ignore[union-attr]
        yield waitUntil(reactor, lambda: client.received == b"still here")
        clock.advance(9)
        self.assertEqual((port.open, port.timedOut, client.done.called), (1, 0, False))
        clock.advance(1.5)
        self.assertEqual(port.timedOut, 1)
        yield bounded(reactor, client.done)
        yield waitUntil(reactor, lambda: port.open == 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_pause(self) -> Any:
        """
        pause=yes: at the cap the listening socket stops accepting (nobody
        is refused); when a connection ends, accepting resumes.
        """
        port = yield self.listen(buildDescription("limit", max=2, pause=True,
                                                  endpoint=LOOPBACK))
        number = port.getHost().port
        first = yield bounded(reactor, defer.gatherResults(
            [connect(reactor, number) for _ in range(2)]))
        yield waitUntil(reactor, lambda: port.open == 2)
        self.assertTrue(port.paused)
        self.assertNotIn(port.wrappedPort, reactor.getReaders())
        waiting = yield bounded(reactor, connect(reactor, number))
        first[0].transport.loseConnection()
        yield bounded(reactor, first[0].done)
        yield waitUntil(reactor, lambda: port.open == 2 and port.perPeer == {"127.0.0.1": 2}
                        and port.peak == 2 and not first[1].done.called)
        waiting.transport.write(b"served")  # type: ignore[union-attr]
        yield waitUntil(reactor, lambda: waiting.received == b"served")
        self.assertEqual((port.rejected, port.paused), (0, True))
        yield self.closeAll(port, [first[1], waiting])
        self.assertFalse(port.paused)
        self.assertIn(port.wrappedPort, reactor.getReaders())

    @defer.inlineCallbacks
    def test_limitAroundMulti(self) -> Any:
        """
        limit: around multi: counts the connections of every member
        together, through Twisted's parser too; pause reaches every member.
        """
        inner = buildDescription("multi", LOOPBACK,
                                 buildDescription("tcp6", 0, interface="::1"))
        for parse in (serverFromString, twistedServerFromString):
            port = yield parse(reactor, buildDescription(
                "limit", max=2, pause=True, endpoint=inner)).listen(ECHO)
            self.addCleanup(port.stopListening)
            self.assertIsInstance(port.wrappedPort, MultiPort)
            four, six = port.wrappedPort.getHosts()
            clients = [(yield bounded(reactor, connect(reactor, four.port))),
                       (yield bounded(reactor, connect(reactor, six.port, host="::1")))]
            yield waitUntil(reactor, lambda port=port: port.open == 2)
            self.assertEqual(port.perPeer, {"127.0.0.1": 1, "::1": 1})
            self.assertTrue(port.paused)
            for member in port.wrappedPort.ports:
                self.assertNotIn(member, reactor.getReaders())
            yield self.closeAll(port, clients)
            for member in port.wrappedPort.ports:
                self.assertIn(member, reactor.getReaders())
            yield port.stopListening()


class PassThroughTests(TestCase):
    """
    What passes through the wrapper to the application.
    """

    def test_halfClose(self) -> None:
        """
        A client's half-close reaches a half-closeable application behind
        C{limit:}, which can still answer.
        """
        from twisted.internet.interfaces import IHalfCloseableProtocol
        from zope.interface import implementer

        @implementer(IHalfCloseableProtocol)
        class AnswerAtEnd(protocol.Protocol):
            def connectionMade(self) -> None:
                self.received = b""

            def dataReceived(self, data: bytes) -> None:
                self.received += data

            def readConnectionLost(self) -> None:
                assert self.transport is not None
                self.transport.write(b"got " + self.received)
                self.transport.loseConnection()

            def writeConnectionLost(self) -> None:
                pass

        @implementer(IHalfCloseableProtocol)
        class HalfCloser(protocol.Protocol):
            def connectionMade(self) -> None:
                self.received = b""
                self.done: defer.Deferred[bytes] = defer.Deferred()
                assert self.transport is not None
                self.transport.write(b"question")
                self.transport.loseWriteConnection()  # type: ignore[attr-defined]

            def dataReceived(self, data: bytes) -> None:
                self.received += data

            def readConnectionLost(self) -> None:
                assert self.transport is not None
                self.transport.loseConnection()

            def writeConnectionLost(self) -> None:
                pass

            def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
                self.done.callback(self.received)

        endpoint = serverFromString(reactor, r"limit:max=5:endpoint=tcp\:0\:interface=127.0.0.1")
        d = endpoint.listen(protocol.Factory.forProtocol(AnswerAtEnd))

        @defer.inlineCallbacks
        def exchange(port: Any) -> Any:
            self.addCleanup(port.stopListening)
            from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

            client = HalfCloser()
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
                                  client)
            answer = yield bounded(reactor, client.done, 10)
            self.assertEqual(answer, b"got question")

        return d.addCallback(exchange)

    def test_wrappedFactoryRefuses(self) -> None:
        """
        A factory that refuses a connection (C{buildProtocol} returns
        L{None}) behind C{limit:} has it closed, and it is not counted.
        """
        class Refusing(protocol.Factory):
            def buildProtocol(self, addr: Any) -> None:
                return None

        factory = LimitingFactory(Refusing(), maxConnections=2)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)))
        self.assertEqual(factory.open, 0)
