"""
Tests for C{memory:}: one protocol suite run over C{memory:} and over real
loopback C{tcp:} with the same assertions, deterministic tests on a
L{MemoryReactorClock}, the trial helper, and C{memory:} under wrappers
(C{tls:}, C{timeout:}, C{limit:}, C{multi:}).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, endpoints, reactor, ssl
from twisted.internet.error import (
    CannotListenError,
    ConnectingCancelledError,
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    NoProtocol,
)
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    IListeningPort,
    IPullProducer,
    IPushProducer,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from endpointkit import (
    ConnectTimeout,
    DescriptionError,
    ListenError,
    buildDescription,
    clientDescriptionFor,
    clientDescriptionsFor,
    clientFromString,
    gracefulStop,
    listen,
    serverFromString,
)
from endpointkit._compat import wrapServerTLS
from endpointkit.memory import (
    HIGH_WATER,
    LOW_WATER,
    MemoryAddress,
    MemoryClientEndpoint,
    MemoryPort,
    MemoryServerEndpoint,
    MemoryTransport,
    listeningNames,
    openConnections,
    pump,
)
from endpointkit.testing import connectedPair
from tests._support import freePort, selfSignedCertificate

_names = itertools.count(1)

#: Bound on every wait for the reactor in the live tests.
WAIT = 15.0


def uniqueName(prefix: str = "test") -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def bounded(d: defer.Deferred[Any], seconds: float = WAIT) -> defer.Deferred[Any]:
    """
    C{d}, failing with a timeout after C{seconds} on the global reactor.
    """
    return d.addTimeout(seconds, reactor)


class Recorder(Protocol):
    """
    Records what happens to it: data, half-closes, the reason it was lost.
    """

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.received = b""
        self.made: defer.Deferred[Recorder] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        self.events.append("made")
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.events or self.events[-1] != "data":
            self.events.append("data")

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:
        self.events.append("lost")
        self.reason = reason
        self.lost.callback(None)


@implementer(IHalfCloseableProtocol)
class HalfCloser(Recorder):
    def readConnectionLost(self) -> None:
        self.events.append("readLost")

    def writeConnectionLost(self) -> None:
        self.events.append("writeLost")


class Echo(Recorder):
    def dataReceived(self, data: bytes) -> None:
        Recorder.dataReceived(self, data)
        assert self.transport is not None
        self.transport.write(data)


@defer.inlineCallbacks
def poll(condition: Callable[[], object]) -> Any:
    """
    Wait until C{condition()} is true, checking every millisecond at most
    1,000 times; the assertions that follow say whether it came true.
    """
    for _ in range(1000):
        if condition():
            return
        yield deferLater(reactor, 0.001, lambda: None)


def factoryOf(*protocols: Protocol) -> Factory:
    """
    A factory that hands out C{protocols} in order.
    """
    queue = list(protocols)

    class Handing(Factory):
        def buildProtocol(self, addr: Any) -> Any:
            return queue.pop(0) if queue else None

    return Handing()


@implementer(IPushProducer)
class SteadyProducer:
    """
    Writes C{total} bytes of a known pattern in C{chunk}-byte writes, a burst
    per reactor turn, honouring pause and resume; records both.
    """

    def __init__(self, transport: Any, total: int, chunk: int = 64 * 1024) -> None:
        self.transport = transport
        self.total = total
        self.sent = 0
        self.chunk = chunk
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.stopped = False
        self.firstPause: defer.Deferred[None] = defer.Deferred()
        self.digest = hashlib.sha256()
        self._call: Any = None

    def start(self) -> None:
        self.transport.registerProducer(self, True)
        self._next()

    def _next(self) -> None:
        self._call = reactor.callLater(0, self._burst)

    def _burst(self) -> None:
        self._call = None
        for _ in range(4):
            if self.paused or self.stopped:
                return
            if self.sent >= self.total:
                self.transport.unregisterProducer()
                self.transport.loseConnection()
                return
            data = pattern(self.sent, min(self.chunk, self.total - self.sent))
            self.digest.update(data)
            self.sent += len(data)
            self.transport.write(data)
        self._next()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1
        if not self.firstPause.called:
            self.firstPause.callback(None)

    def resumeProducing(self) -> None:
        self.resumes += 1
        self.paused = False
        if self._call is None and not self.stopped:
            self._next()

    def stopProducing(self) -> None:
        self.stopped = True
        if self._call is not None:
            self._call.cancel()
            self._call = None


def pattern(offset: int, size: int) -> bytes:
    block = bytes(range(256)) * 4
    start = offset % len(block)
    repeated = block * (size // len(block) + 2)
    return repeated[start : start + size]


class Counter(Recorder):
    """
    Counts and hashes what it receives, keeping none of it; starts paused.
    """

    def __init__(self) -> None:
        Recorder.__init__(self)
        self.count = 0
        self.digest = hashlib.sha256()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.pauseProducing()
        Recorder.connectionMade(self)

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)
        self.digest.update(data)


class ProtocolSuiteMixin(TestCase if TYPE_CHECKING else object):
    """
    The behaviour every stream transport here must share, written once and
    run over C{memory:} and over loopback C{tcp:}.  Subclasses say how to
    listen, how to reach a port, and where nothing listens.
    """

    timeout = 60

    serverBase: str

    def serverDescription(self) -> str:
        raise NotImplementedError()

    def clientDescription(self, port: Any) -> str:
        raise NotImplementedError()

    def unreachable(self) -> str:
        raise NotImplementedError()

    def listen(self, factory: Factory, description: str | None = None) -> defer.Deferred[Any]:
        d = serverFromString(reactor, description or self.serverDescription()).listen(factory)

        def listening(port: Any) -> Any:
            self.addCleanup(port.stopListening)
            return port

        return d.addCallback(listening)

    @defer.inlineCallbacks
    def pair(self, server: Protocol, client: Protocol) -> Any:
        port = yield self.listen(factoryOf(server))
        yield bounded(clientFromString(reactor, self.clientDescription(port)).connect(
            factoryOf(client)))
        yield bounded(server.made)
        return port

    @defer.inlineCallbacks
    def bothLost(self, *protocols: Recorder) -> Any:
        for protocol in protocols:
            yield bounded(protocol.lost)
        return [protocol.reason for protocol in protocols]

    @defer.inlineCallbacks
    def test_echo(self) -> Any:
        """
        Data written with C{write} and C{writeSequence} comes back whole and
        in order; a clean close is C{ConnectionDone} on both sides.
        """
        server, client = Echo(), Recorder()
        yield self.pair(server, client)
        chunks = [b"%05d," % i for i in range(2000)]
        client.transport.write(b"".join(chunks[:1000]))
        client.transport.writeSequence(chunks[1000:])
        expected = b"".join(chunks)
        yield poll(lambda: len(client.received) >= len(expected))
        self.assertEqual(client.received, expected)
        client.transport.loseConnection()
        clientReason, serverReason = yield self.bothLost(client, server)
        self.assertEqual(type(clientReason.value), ConnectionDone)
        self.assertEqual(type(serverReason.value), ConnectionDone)
        self.assertEqual(server.received, expected)

    @defer.inlineCallbacks
    def test_loseConnectionDeliversBufferedData(self) -> Any:
        """
        Data written just before C{loseConnection} is delivered before the
        peer sees the stream end cleanly.
        """
        server, client = Recorder(), Recorder()
        yield self.pair(server, client)
        data = pattern(0, 1024 * 1024)
        server.transport.write(data)
        server.transport.loseConnection()
        clientReason, serverReason = yield self.bothLost(client, server)
        self.assertEqual(client.received, data)
        self.assertEqual(type(clientReason.value), ConnectionDone)
        self.assertEqual(type(serverReason.value), ConnectionDone)
        self.assertEqual(client.events, ["made", "data", "lost"])

    @defer.inlineCallbacks
    def test_halfClose(self) -> Any:
        """
        C{loseWriteConnection} ends the stream one way: the writer gets
        C{writeConnectionLost}, the reader C{readConnectionLost}, and the
        reader can still answer.
        """
        server, client = HalfCloser(), HalfCloser()
        yield self.pair(server, client)
        client.transport.write(b"question")
        client.transport.loseWriteConnection()
        yield poll(lambda: "readLost" in server.events)
        self.assertEqual(server.events, ["made", "data", "readLost"])
        self.assertEqual(server.received, b"question")
        server.transport.write(b"answer")
        server.transport.loseConnection()
        yield poll(lambda: "readLost" in client.events)
        self.assertEqual(client.events, ["made", "writeLost", "data", "readLost"])
        self.assertEqual(client.received, b"answer")
        client.transport.loseConnection()
        clientReason, serverReason = yield self.bothLost(client, server)
        self.assertEqual(type(clientReason.value), ConnectionDone)
        self.assertEqual(type(serverReason.value), ConnectionDone)

    @defer.inlineCallbacks
    def test_writeAfterPeerClosed(self) -> Any:
        """
        The client half-closes, then closes fully, while the server goes on
        writing: the server's connection ends with C{ConnectionLost}, as a
        write into a broken pipe does, and the client's cleanly.
        """
        server, client = HalfCloser(), HalfCloser()
        yield self.pair(server, client)
        client.transport.write(b"question")
        client.transport.loseWriteConnection()
        yield poll(lambda: "readLost" in server.events)
        self.assertEqual(server.events, ["made", "data", "readLost"])
        client.transport.loseConnection()
        yield bounded(client.lost)
        self.assertEqual(type(client.reason.value), ConnectionDone)
        # TCP: the first write after the peer's close draws a reset, a
        # later one fails; the bound is generous, a loaded machine is slow.
        for _ in range(2000):
            if server.lost.called:
                break
            server.transport.write(b"answer")
            yield deferLater(reactor, 0.005, lambda: None)
        yield bounded(server.lost)
        self.assertEqual(type(server.reason.value), ConnectionLost)
        self.assertEqual(server.events, ["made", "data", "readLost", "lost"])

    @defer.inlineCallbacks
    def test_endOfStreamClosesOrdinaryProtocol(self) -> Any:
        """
        A protocol that is not half-closeable loses its connection, cleanly,
        when the peer half-closes.
        """
        server, client = Recorder(), HalfCloser()
        yield self.pair(server, client)
        client.transport.write(b"bye")
        client.transport.loseWriteConnection()
        yield bounded(server.lost)
        serverReason = server.reason
        self.assertEqual(type(serverReason.value), ConnectionDone)
        self.assertEqual(server.received, b"bye")
        yield poll(lambda: "readLost" in client.events)
        # Half-closeable, the client only hears that reading ended.
        self.assertEqual(client.events, ["made", "writeLost", "readLost"])
        client.transport.loseConnection()
        yield bounded(client.lost)
        self.assertEqual(type(client.reason.value), ConnectionDone)

    @defer.inlineCallbacks
    def test_flowControlSlowConsumer(self) -> Any:
        """
        A reader that pauses reading holds back data until the writer's
        streaming producer is paused; resumed, it gets every byte in order,
        and the producer is resumed.
        """
        server, client = Counter(), Recorder()
        yield self.pair(server, client)
        producer = SteadyProducer(client.transport, total=48 * 1024 * 1024, chunk=256 * 1024)
        producer.start()
        yield bounded(producer.firstPause)
        self.assertTrue(producer.sent < producer.total)
        self.assertEqual(server.count, 0)
        server.transport.resumeProducing()
        clientReason, serverReason = yield self.bothLost(client, server)
        self.assertEqual(server.count, producer.total)
        self.assertEqual(server.digest.hexdigest(), producer.digest.hexdigest())
        self.assertTrue(producer.resumes >= 1)
        self.assertEqual(type(clientReason.value), ConnectionDone)
        self.assertEqual(type(serverReason.value), ConnectionDone)

    @defer.inlineCallbacks
    def test_pausedReaderSeesEndAfterResume(self) -> Any:
        """
        A reader that paused sees neither data nor the end of the stream
        until it resumes, though the writer has finished and closed.
        """
        server, client = Recorder(), Recorder()
        yield self.pair(server, client)
        server.transport.pauseProducing()
        client.transport.write(b"held back")
        client.transport.loseConnection()
        yield bounded(client.lost)
        for _ in range(20):
            yield deferLater(reactor, 0.001, lambda: None)
        self.assertEqual(server.events, ["made"])
        server.transport.resumeProducing()
        yield bounded(server.lost)
        self.assertEqual(server.events, ["made", "data", "lost"])
        self.assertEqual(server.received, b"held back")
        self.assertEqual(type(server.reason.value), ConnectionDone)
        self.assertEqual(type(client.reason.value), ConnectionDone)

    @defer.inlineCallbacks
    def test_producerStoppedWhenConnectionLost(self) -> Any:
        """
        A registered producer is told to stop when the connection is lost,
        and a second registration is refused.
        """
        server, client = Recorder(), Recorder()
        yield self.pair(server, client)

        @implementer(IPushProducer)
        class Producer:
            stopped = 0

            def pauseProducing(self) -> None:
                pass

            def resumeProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                self.stopped += 1

        producer = Producer()
        client.transport.registerProducer(producer, True)
        with self.assertRaises(RuntimeError):
            client.transport.registerProducer(Producer(), True)
        server.transport.loseConnection()
        yield self.bothLost(client, server)
        self.assertEqual(producer.stopped, 1)
        late = Producer()
        client.transport.registerProducer(late, True)
        self.assertEqual(late.stopped, 1)

    @defer.inlineCallbacks
    def test_pullProducer(self) -> Any:
        """
        A pull producer is asked for data whenever the transport can take
        more, and the connection closes once it is unregistered.
        """
        server, client = Recorder(), Recorder()
        yield self.pair(server, client)

        @implementer(IPullProducer)
        class Pull:
            calls = 0

            def resumeProducing(self) -> None:
                self.calls += 1
                if self.calls > 50:
                    client.transport.unregisterProducer()
                    client.transport.loseConnection()
                else:
                    client.transport.write(pattern(self.calls * 1000, 1000))

            def stopProducing(self) -> None:
                pass

        pull = Pull()
        client.transport.registerProducer(pull, False)
        yield self.bothLost(client, server)
        self.assertEqual(pull.calls, 51)
        self.assertEqual(server.received, b"".join(pattern(i * 1000, 1000) for i in range(1, 51)))

    @defer.inlineCallbacks
    def test_abort(self) -> Any:
        """
        C{abortConnection} drops unsent data: the aborting side sees
        C{ConnectionAborted}, the peer a reset (C{ConnectionLost}).
        """
        server, client = Recorder(), Recorder()
        yield self.pair(server, client)
        server.transport.write(b"never sent")
        server.transport.abortConnection()
        clientReason, serverReason = yield self.bothLost(client, server)
        self.assertEqual(type(serverReason.value), ConnectionAborted)
        self.assertEqual(type(clientReason.value), ConnectionLost)
        self.assertEqual(client.received, b"")

    @defer.inlineCallbacks
    def test_errorInProtocol(self) -> Any:
        """
        An exception from C{dataReceived} is logged and drops that side's
        connection with it; the peer sees a clean end.
        """
        class Broken(Recorder):
            def dataReceived(self, data: bytes) -> None:
                raise ZeroDivisionError("bad data")

        server, client = Broken(), Recorder()
        yield self.pair(server, client)
        client.transport.write(b"x")
        clientReason, serverReason = yield self.bothLost(client, server)
        self.assertEqual(type(serverReason.value), ZeroDivisionError)
        self.assertEqual(type(clientReason.value), ConnectionDone)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    @defer.inlineCallbacks
    def test_noReentrantDelivery(self) -> Any:
        """
        What a protocol writes is delivered after its call returns, never
        inside C{write}.
        """
        order: list[str] = []

        class Talker(Recorder):
            def dataReceived(self, data: bytes) -> None:
                Recorder.dataReceived(self, data)
                order.append("client received")

        class Answer(Recorder):
            def dataReceived(self, data: bytes) -> None:
                order.append("server received")
                assert self.transport is not None
                self.transport.write(data)
                order.append("server wrote")
                self.transport.loseConnection()

        server, client = Answer(), Talker()
        yield self.pair(server, client)
        client.transport.write(b"ping")
        order.append("client wrote")
        yield self.bothLost(client, server)
        self.assertEqual(order, ["client wrote", "server received", "server wrote",
                                 "client received"])

    @defer.inlineCallbacks
    def test_refused(self) -> Any:
        """
        Connecting where nothing listens fails with C{ConnectionRefusedError}.
        """
        factory = factoryOf(Recorder())
        d = clientFromString(reactor, self.unreachable()).connect(factory)
        with self.assertRaises(ConnectionRefusedError):
            yield bounded(d)

    @defer.inlineCallbacks
    def test_addressInUse(self) -> Any:
        """
        A second listener on a taken address fails with C{CannotListenError}
        carrying C{EADDRINUSE}; once the first stops, the address is free.
        """
        port = yield self.listen(factoryOf())
        again = self.sameAddress(port)
        with self.assertRaises(CannotListenError) as caught:
            yield serverFromString(reactor, again).listen(factoryOf())
        self.assertEqual(caught.exception.socketError.errno, errno.EADDRINUSE)
        yield port.stopListening()
        second = yield self.listen(factoryOf(), again)
        self.assertTrue(IListeningPort.providedBy(second))

    def sameAddress(self, port: Any) -> str:
        raise NotImplementedError()

    @defer.inlineCallbacks
    def test_stopListeningKeepsConnections(self) -> Any:
        """
        Stopping the listener refuses new connections and leaves open ones
        working.
        """
        server, client = Echo(), Recorder()
        port = yield self.pair(server, client)
        description = self.clientDescription(port)
        yield port.stopListening()
        d = clientFromString(reactor, description).connect(factoryOf(Recorder()))
        with self.assertRaises(ConnectionRefusedError):
            yield bounded(d)
        client.transport.write(b"still here")
        yield poll(lambda: client.received == b"still here")
        self.assertEqual(client.received, b"still here")
        client.transport.loseConnection()
        yield self.bothLost(client, server)

    @defer.inlineCallbacks
    def test_addresses(self) -> Any:
        """
        Each side's host is the other side's peer; the server's host is the
        listening address.
        """
        server, client = Recorder(), Recorder()
        port = yield self.pair(server, client)
        self.assertEqual(client.transport.getPeer(), server.transport.getHost())
        self.assertEqual(server.transport.getPeer(), client.transport.getHost())
        self.assertEqual(server.transport.getHost(), port.getHost())
        self.assertTrue(ITransport.providedBy(client.transport))
        self.assertTrue(IConsumer.providedBy(server.transport))
        self.assertTrue(IPushProducer.providedBy(server.transport))
        client.transport.loseConnection()
        yield self.bothLost(client, server)



class MemorySuiteTests(ProtocolSuiteMixin, TestCase):
    """
    The protocol suite over C{memory:} on the real reactor.
    """

    def setUp(self) -> None:
        self.name = uniqueName("suite")
        self.addCleanup(self.checkRegistry)

    def checkRegistry(self) -> None:
        self.assertEqual(listeningNames(reactor), [])
        self.assertEqual(openConnections(reactor), 0)

    def serverDescription(self) -> str:
        return buildDescription("memory", self.name)

    def clientDescription(self, port: Any) -> str:
        description: str = port.clientDescription()
        return description

    def sameAddress(self, port: Any) -> str:
        return buildDescription("memory", name=port.name)

    def unreachable(self) -> str:
        return buildDescription("memory", uniqueName("nobody"))


class TCPSuiteTests(ProtocolSuiteMixin, TestCase):
    """
    The same suite over loopback C{tcp:}: the reference behaviour.
    """

    def serverDescription(self) -> str:
        return "tcp:0:interface=127.0.0.1"

    def clientDescription(self, port: Any) -> str:
        return buildDescription("tcp", "127.0.0.1", port.getHost().port)

    def sameAddress(self, port: Any) -> str:
        return buildDescription("tcp", port.getHost().port, interface="127.0.0.1")

    def unreachable(self) -> str:
        return buildDescription("tcp", "127.0.0.1", freePort())


class DescriptionTests(SynchronousTestCase):
    """
    C{memory:} as a description, through endpointkit's parser and Twisted's.
    """

    def test_positionalAndKeyword(self) -> None:
        clock = MemoryReactorClock()
        for description in ("memory:db", "memory:name=db"):
            server = serverFromString(clock, description)
            client = clientFromString(clock, description)
            self.assertIsInstance(server, MemoryServerEndpoint)
            self.assertIsInstance(client, MemoryClientEndpoint)
            self.assertEqual((server.name, client.name), ("db", "db"))
            self.assertTrue(IStreamServerEndpoint.providedBy(server))
            self.assertTrue(IStreamClientEndpoint.providedBy(client))

    def test_twistedParsers(self) -> None:
        clock = MemoryReactorClock()
        server = endpoints.serverFromString(clock, "memory:name=a\\:b")
        client = endpoints.clientFromString(clock, "memory:a\\:b")
        self.assertEqual(server.name, "a:b")
        self.assertEqual(client.name, "a:b")

    def test_clientTimeout(self) -> None:
        clock = MemoryReactorClock()
        self.assertEqual(clientFromString(clock, "memory:db").timeout, 30.0)
        with self.assertRaises(DescriptionError) as caught:
            clientFromString(clock, "memory:db:timeout=soon")
        self.assertIn("memory: argument 'timeout' must be a positive number of seconds",
                      str(caught.exception))
        with self.assertRaises(DescriptionError):
            serverFromString(clock, "memory:db:timeout=5")

    def test_errors(self) -> None:
        clock = MemoryReactorClock()
        with self.assertRaises(DescriptionError) as caught:
            clientFromString(clock, "memory:")
        self.assertIn("memory: argument 'name' must be a non-empty string", str(caught.exception))
        with self.assertRaises(DescriptionError) as caught:
            serverFromString(clock, "memory:a:b")
        self.assertIn("got an extra 'b'", str(caught.exception))
        with self.assertRaises(DescriptionError) as caught:
            serverFromString(clock, "memory:nmae=db")
        self.assertIn("did you mean 'name'?", str(caught.exception))

    def test_clientDescriptionRoundTrips(self) -> None:
        """
        The port's client description reaches it, however odd the name.
        """
        clock = MemoryReactorClock()
        name = "odd:name=with\\escapes"
        port = self.successResultOf(MemoryServerEndpoint(clock, name).listen(Factory()))
        description = port.clientDescription()
        self.assertEqual(clientFromString(clock, description).name, name)
        self.assertEqual(clientDescriptionFor(port), description)
        self.successResultOf(port.stopListening())
        self.assertEqual(listeningNames(clock), [])

    def test_address(self) -> None:
        address = MemoryAddress("db", 3)
        self.assertTrue(IAddress.providedBy(address))
        self.assertEqual(address, MemoryAddress("db", 3))
        self.assertNotEqual(address, MemoryAddress("db", 4))
        self.assertEqual(str(address), "memory:db#3")


class DeterministicTests(SynchronousTestCase):
    """
    On a L{MemoryReactorClock}, nothing moves until the test pumps.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()

    def tearDown(self) -> None:
        pump(self.clock)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def listen(self, factory: Any, name: str = "db") -> MemoryPort:
        port: MemoryPort = self.successResultOf(
            MemoryServerEndpoint(self.clock, name).listen(factory))
        return port

    def connect(self, factory: Any, name: str = "db") -> defer.Deferred[Any]:
        return MemoryClientEndpoint(self.clock, name).connect(factory)

    def pairUp(self) -> tuple[Recorder, Recorder, MemoryPort]:
        server, client = Recorder(), Recorder()
        port = self.listen(factoryOf(server))
        d = self.connect(factoryOf(client))
        self.assertNoResult(d)
        self.assertEqual(server.events, [])
        pump(self.clock)
        self.assertIs(self.successResultOf(d), client)
        return server, client, port

    def test_deliveryWaitsForPump(self) -> None:
        server, client, port = self.pairUp()
        client.transport.write(b"hello")
        self.assertEqual(server.received, b"")
        self.assertEqual(pump(self.clock), 1)
        self.assertEqual(server.received, b"hello")
        self.assertEqual(client.transport.getHost(), MemoryAddress("db", 1))
        self.assertEqual(client.transport.getPeer(), MemoryAddress("db", 0))
        self.assertEqual(server.transport.getPeer(), MemoryAddress("db", 1))
        client.transport.loseConnection()
        self.assertEqual(openConnections(self.clock), 2)
        pump(self.clock)
        self.assertEqual(openConnections(self.clock), 0)
        self.assertIsInstance(server.reason.value, ConnectionDone)
        self.successResultOf(port.stopListening())

    def test_connectionNumbers(self) -> None:
        """
        Each client of a listener gets the next connection number.
        """
        port = self.listen(Factory.forProtocol(Recorder))
        clients = [Recorder() for _ in range(3)]
        ds = [self.connect(factoryOf(c)) for c in clients]
        pump(self.clock)
        for i, (d, client) in enumerate(zip(ds, clients, strict=True), start=1):
            self.successResultOf(d)
            self.assertEqual(client.transport.getHost(), MemoryAddress("db", i))
            client.transport.abortConnection()
        pump(self.clock)
        self.successResultOf(port.stopListening())
        self.assertEqual(openConnections(self.clock), 0)

    def test_refusedAndCancelled(self) -> None:
        stops: list[str] = []

        class Tracked(Factory):
            def doStart(self) -> None:
                stops.append("start")

            def doStop(self) -> None:
                stops.append("stop")

        d = self.connect(Tracked(), "nobody")
        self.assertNoResult(d)
        pump(self.clock)
        self.failureResultOf(d, ConnectionRefusedError)
        port = self.listen(Factory.forProtocol(Recorder))
        d = self.connect(Tracked())
        d.cancel()
        self.failureResultOf(d, ConnectingCancelledError)
        pump(self.clock)
        self.assertEqual(openConnections(self.clock), 0)
        self.assertEqual(stops, ["start", "stop", "start", "stop"])
        self.successResultOf(port.stopListening())

    def test_factoriesDecline(self) -> None:
        """
        A client factory that builds nothing fails with C{NoProtocol} and the
        server sees the stream end; a server factory that builds nothing
        closes the client cleanly, as TCP does.
        """
        server = Recorder()
        port = self.listen(factoryOf(server))
        d = self.connect(factoryOf())
        pump(self.clock)
        self.failureResultOf(d, NoProtocol)
        self.assertIsInstance(server.reason.value, ConnectionDone)
        self.successResultOf(port.stopListening())
        port = self.listen(factoryOf())
        client = Recorder()
        d = self.connect(factoryOf(client))
        pump(self.clock)
        self.assertIs(self.successResultOf(d), client)
        self.assertEqual(client.events, ["made", "lost"])
        self.assertIsInstance(client.reason.value, ConnectionDone)
        self.successResultOf(port.stopListening())

    def test_addressInUseAndRegistryPerReactor(self) -> None:
        port = self.listen(Factory())
        failure = self.failureResultOf(
            MemoryServerEndpoint(self.clock, "db").listen(Factory()), CannotListenError)
        self.assertEqual(failure.value.socketError.errno, errno.EADDRINUSE)
        self.assertIn("memory:db", str(failure.value))
        other = MemoryReactorClock()
        elsewhere = self.successResultOf(MemoryServerEndpoint(other, "db").listen(Factory()))
        self.assertEqual(listeningNames(other), ["db"])
        self.successResultOf(elsewhere.stopListening())
        self.successResultOf(port.stopListening())
        self.assertEqual(listeningNames(self.clock), [])
        self.assertEqual(listeningNames(other), [])

    def test_portFactoryStartsAndStops(self) -> None:
        events: list[str] = []

        class Tracked(Factory):
            def startFactory(self) -> None:
                events.append("start")

            def stopFactory(self) -> None:
                events.append("stop")

        port = self.listen(Tracked())
        self.assertEqual(events, ["start"])
        self.assertTrue(IListeningPort.providedBy(port))
        self.successResultOf(port.stopListening())
        self.assertEqual(events, ["start", "stop"])
        self.successResultOf(port.stopListening())
        self.assertEqual(events, ["start", "stop"])

    def test_highAndLowWater(self) -> None:
        """
        The writer's streaming producer is paused when the peer's unread data
        passes L{HIGH_WATER}, and resumed only when it falls to L{LOW_WATER}.
        """
        server, client, port = self.pairUp()
        server.transport.pauseProducing()

        @implementer(IPushProducer)
        class Producer:
            state = "running"

            def pauseProducing(self) -> None:
                self.state = "paused"

            def resumeProducing(self) -> None:
                self.state = "running"

            def stopProducing(self) -> None:
                self.state = "stopped"

        producer = Producer()
        client.transport.registerProducer(producer, True)
        client.transport.write(b"x" * HIGH_WATER)
        self.assertEqual(producer.state, "running")
        client.transport.write(b"x")
        self.assertEqual(producer.state, "paused")
        pump(self.clock)
        self.assertEqual(producer.state, "paused")
        self.assertEqual(server.received, b"")
        server.transport.resumeProducing()
        pump(self.clock)
        self.assertEqual(producer.state, "running")
        self.assertEqual(len(server.received), HIGH_WATER + 1)
        self.assertTrue(LOW_WATER < HIGH_WATER)
        client.transport.loseConnection()
        pump(self.clock)
        self.assertEqual(producer.state, "stopped")
        self.successResultOf(port.stopListening())

    def test_closeWaitsForPausedProducer(self) -> None:
        """
        As with TCP, C{loseConnection} with a paused producer registered
        resumes it and waits for it to be unregistered.
        """
        server, client, port = self.pairUp()
        server.transport.pauseProducing()

        @implementer(IPushProducer)
        class Producer:
            resumed = 0

            def pauseProducing(self) -> None:
                pass

            def resumeProducing(self) -> None:
                self.resumed += 1

            def stopProducing(self) -> None:
                pass

        producer = Producer()
        client.transport.registerProducer(producer, True)
        client.transport.write(b"y" * (HIGH_WATER + 1))
        client.transport.loseConnection()
        pump(self.clock)
        self.assertEqual(client.events, ["made"])
        server.transport.resumeProducing()
        pump(self.clock)
        self.assertEqual(producer.resumed, 1)
        self.assertEqual(client.events, ["made"])
        client.transport.unregisterProducer()
        pump(self.clock)
        self.assertEqual(client.events, ["made", "lost"])
        self.assertEqual(server.events, ["made", "data", "lost"])
        self.successResultOf(port.stopListening())

    def test_writeAfterCloseIgnored(self) -> None:
        server, client, port = self.pairUp()
        client.transport.loseWriteConnection()
        pump(self.clock)
        client.transport.write(b"late")
        pump(self.clock)
        self.assertEqual(server.received, b"")
        with self.assertRaises(TypeError):
            client.transport.write("text")
        # The server is not half-closeable: the end of the stream closed it,
        # and then the client.  Aborting now does nothing.
        self.assertEqual(server.events, ["made", "lost"])
        self.assertEqual(client.events, ["made", "lost"])
        client.transport.abortConnection()
        pump(self.clock)
        self.assertIsInstance(client.reason.value, ConnectionDone)
        self.assertEqual(client.events, ["made", "lost"])
        self.successResultOf(port.stopListening())

    def test_acceptPaused(self) -> None:
        """
        While the port does not accept, connection attempts wait, as in a
        listen queue; they connect when it accepts again, and are refused if
        it stops listening first.
        """
        port = self.listen(Factory.forProtocol(Recorder))
        port.stopReading()
        waiting = self.connect(factoryOf(Recorder()))
        cancelled = self.connect(factoryOf(Recorder()))
        pump(self.clock)
        self.assertNoResult(waiting)
        self.assertNoResult(cancelled)
        cancelled.cancel()
        self.failureResultOf(cancelled, ConnectingCancelledError)
        port.startReading()
        pump(self.clock)
        protocol = self.successResultOf(waiting)
        self.assertEqual(openConnections(self.clock), 2)
        port.stopReading()
        refused = self.connect(factoryOf(Recorder()))
        pump(self.clock)
        self.assertNoResult(refused)
        self.successResultOf(port.stopListening())
        pump(self.clock)
        self.failureResultOf(refused, ConnectionRefusedError)
        protocol.transport.loseConnection()
        pump(self.clock)
        self.assertEqual(openConnections(self.clock), 0)

    def test_lifecycle(self) -> None:
        """
        C{endpointkit.lifecycle} over C{memory:}: a taken name is a
        C{ListenError}, and a graceful stop lets one connection finish and
        closes the other at the timeout, all on the clock.
        """
        port = self.successResultOf(listen("memory:svc", Factory.forProtocol(Echo),
                                           reactor=self.clock))
        self.failureResultOf(listen("memory:svc", Factory.forProtocol(Echo),
                                    reactor=self.clock), ListenError)
        quitter, stayer = Recorder(), Recorder()
        for client in (quitter, stayer):
            self.connect(factoryOf(client), "svc")
        pump(self.clock)
        self.assertEqual(openConnections(self.clock), 4)
        drained = gracefulStop(port, timeout=5, reactor=self.clock)
        pump(self.clock)
        self.assertEqual(listeningNames(self.clock), [])
        quitter.transport.loseConnection()
        pump(self.clock)
        self.assertNoResult(drained)
        self.clock.advance(5)
        pump(self.clock)
        result = self.successResultOf(drained)
        self.assertEqual((result.finished, result.closed, result.aborted), (1, 1, 0))
        self.assertIsInstance(stayer.reason.value, ConnectionDone)
        self.assertEqual(openConnections(self.clock), 0)

    def test_waitingAttemptTimesOut(self) -> None:
        """
        An attempt waiting for a port that does not accept fails after the
        client's C{timeout} with Twisted's C{TimeoutError}, and leaves the
        queue.
        """
        port = self.listen(Factory.forProtocol(Recorder))
        port.stopReading()
        endpoint = clientFromString(self.clock, "memory:db:timeout=2")
        self.assertEqual(endpoint.timeout, 2.0)
        d = endpoint.connect(factoryOf(Recorder()))
        pump(self.clock)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        failure = self.failureResultOf(d, ConnectTimeoutError)
        self.assertIn("memory:db did not accept within 2 s", str(failure.value))
        self.assertEqual(port._waiting, [])
        port.startReading()
        pump(self.clock)
        self.assertEqual(openConnections(self.clock), 0)
        self.successResultOf(port.stopListening())

    def test_durationStyle(self) -> None:
        """
        Durations in messages are exact seconds followed by C{s}, never in
        exponent notation.
        """
        port = self.listen(Factory.forProtocol(Recorder))
        port.stopReading()
        d = clientFromString(self.clock, "memory:db:timeout=1234567.5").connect(
            factoryOf(Recorder()))
        pump(self.clock)
        self.clock.advance(1234567.5)
        failure = self.failureResultOf(d, ConnectTimeoutError)
        self.assertIn("memory:db did not accept within 1234567.5 s", str(failure.value))
        self.successResultOf(port.stopListening())

    def test_pumpNeedsClock(self) -> None:
        with self.assertRaises(TypeError) as caught:
            pump(object())
        self.assertIn("Clock-based reactor", str(caught.exception))

    def test_pumpIsBounded(self) -> None:
        """
        Two protocols that talk forever cannot hang L{pump}.
        """
        class Forever(Protocol):
            def connectionMade(self) -> None:
                assert self.transport is not None
                self.transport.write(b"x")

            def dataReceived(self, data: bytes) -> None:
                assert self.transport is not None
                self.transport.write(data)

        port = self.listen(Factory.forProtocol(Forever))
        d = self.connect(Factory.forProtocol(Forever))
        self.assertEqual(pump(self.clock, maxTurns=5), 5)
        protocol = self.successResultOf(d)
        protocol.transport.abortConnection()
        pump(self.clock)
        self.assertEqual(openConnections(self.clock), 0)
        self.successResultOf(port.stopListening())

    def test_transportProvides(self) -> None:
        _server, client, port = self.pairUp()
        transport = client.transport
        self.assertIsInstance(transport, MemoryTransport)
        self.assertTrue(ITransport.providedBy(transport))
        transport.setTcpNoDelay(False)
        transport.setTcpKeepAlive(True)
        self.assertEqual((transport.getTcpNoDelay(), transport.getTcpKeepAlive()),
                         (False, True))
        self.assertIn("memory:db#1", repr(transport))
        transport.stopProducing()
        pump(self.clock)
        self.assertEqual(openConnections(self.clock), 0)
        self.successResultOf(port.stopListening())


class ConnectedPairTests(TestCase):
    """
    The trial helper, live and deterministic.
    """

    def assertNothingLeft(self, clock: Any = None) -> None:
        self.assertEqual(listeningNames(clock or reactor), [])
        self.assertEqual(openConnections(clock or reactor), 0)

    @defer.inlineCallbacks
    def test_live(self) -> Any:
        self.addCleanup(self.assertNothingLeft)
        client, server = yield connectedPair(self, Echo, Recorder())
        self.assertIsInstance(server, Echo)
        self.assertIsInstance(client, Recorder)
        client.transport.write(b"hi")
        yield poll(lambda: client.received)
        self.assertEqual(client.received, b"hi")

    def test_deterministic(self) -> None:
        clock = MemoryReactorClock()
        self.addCleanup(self.assertNothingLeft, clock)
        client, server = self.successResultOf(
            connectedPair(self, Factory.forProtocol(Echo), Recorder, reactor=clock))
        client.transport.write(b"ping")
        pump(clock)
        self.assertEqual(client.received, b"ping")
        self.assertEqual(server.received, b"ping")

    @defer.inlineCallbacks
    def test_overTCP(self) -> Any:
        """
        Any server description works; its cleanup closes real sockets.
        """
        client, server = yield connectedPair(
            self, Echo, Recorder, serverDescription="tcp:0:interface=127.0.0.1")
        self.assertEqual(client.transport.getPeer(), server.transport.getHost())

    @defer.inlineCallbacks
    def test_cleanupAbortsWhatWillNotClose(self) -> Any:
        """
        A connection that does not close when asked (its producer is never
        unregistered) is aborted once the cleanup's timeout passes.
        """
        client = Recorder()

        def checkAborted() -> None:
            self.assertNothingLeft()
            self.assertEqual(type(client.reason.value), ConnectionAborted)

        self.addCleanup(checkAborted)

        @implementer(IPullProducer)
        class Idle:
            def resumeProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                pass

        paired, _ = yield connectedPair(self, Echo, client, timeout=0.2)
        self.assertIs(paired, client)
        client.transport.registerProducer(Idle(), False)

    def test_noServerProtocol(self) -> None:
        """
        A pair that cannot be made fails at once on a clock, saying so,
        instead of leaving the test waiting.
        """
        clock = MemoryReactorClock()
        self.addCleanup(self.assertNothingLeft, clock)
        d = connectedPair(self, factoryOf(), Recorder, reactor=clock)
        failure = self.failureResultOf(d, defer.TimeoutError)
        self.assertIn("did not give a connected pair once pumped", str(failure.value))

    def test_refused(self) -> None:
        clock = MemoryReactorClock()
        self.addCleanup(self.assertNothingLeft, clock)
        d = connectedPair(self, Echo, Recorder, clientDescription="memory:elsewhere",
                          reactor=clock)
        self.failureResultOf(d, ConnectionRefusedError)


class WrapperTests(TestCase):
    """
    C{memory:} under wrappers: TLS (Twisted's C{tls:} client with
    C{endpoint=}, and C{wrapServerTLS}), C{timeout:}, C{limit:},
    C{multi:}.
    """

    timeout = 60

    def setUp(self) -> None:
        self.name = uniqueName("wrapped")
        self.addCleanup(self.checkRegistry)

    def checkRegistry(self) -> None:
        self.assertEqual(listeningNames(reactor), [])
        self.assertEqual(openConnections(reactor), 0)

    def tlsServer(self, hostname: str) -> tuple[Any, str]:
        certificate, key = selfSignedCertificate(hostname)
        roots = self.mktemp()
        os.makedirs(roots)
        with open(os.path.join(roots, "root.pem"), "wb") as f:
            f.write(certificate)
        options = ssl.PrivateCertificate.loadPEM(certificate + key).options()
        endpoint = wrapServerTLS(options, MemoryServerEndpoint(reactor, self.name))
        return endpoint, roots

    @defer.inlineCallbacks
    def test_tlsOverMemory(self) -> Any:
        """
        TLS runs over C{memory:} with the certificate and host name checked,
        through endpointkit's parser and Twisted's.
        """
        endpoint, roots = self.tlsServer("service.example.test")
        memory = buildDescription("memory", self.name)
        description = buildDescription(
            "tls", "service.example.test", 443, trustRoots=roots, endpoint=memory)
        client, server = yield connectedPair(
            self, Echo, Recorder, serverDescription=endpoint, clientDescription=description)
        client.transport.write(b"secret over memory")
        for _ in range(2000):
            if client.received == b"secret over memory":
                break
            yield deferLater(reactor, 0.001, lambda: None)
        self.assertEqual(client.received, b"secret over memory")
        self.assertEqual(server.received, b"secret over memory")
        peer = client.transport.getPeerCertificate()
        self.assertEqual(peer.get_subject().commonName, "service.example.test")
        self.assertEqual(openConnections(reactor), 2)

        other = Recorder()
        yield bounded(endpoints.clientFromString(reactor, description).connect(factoryOf(other)))
        other.transport.write(b"twisted's parser")
        for _ in range(2000):
            if other.received == b"twisted's parser":
                break
            yield deferLater(reactor, 0.001, lambda: None)
        self.assertEqual(other.received, b"twisted's parser")
        other.transport.loseConnection()
        yield bounded(other.lost)
        reason = other.reason
        self.assertEqual(type(reason.value), ConnectionDone)

    def test_timeoutDeterministic(self) -> None:
        """
        C{timeout:} over a C{memory:} port that does not accept: the attempt
        waits, and the deadline fails it with C{ConnectTimeout} and takes it
        out of the queue.
        """
        clock = MemoryReactorClock()
        port = self.successResultOf(MemoryServerEndpoint(clock, "slow").listen(
            Factory.forProtocol(Echo)))
        port.stopReading()
        endpoint = clientFromString(clock, buildDescription(
            "timeout", 2.5, endpoint=buildDescription("memory", "slow")))
        d = endpoint.connect(factoryOf(Recorder()))
        pump(clock)
        self.assertNoResult(d)
        clock.advance(2.5)
        failure = self.failureResultOf(d, ConnectTimeout)
        self.assertIn("2.5", str(failure.value))
        port.startReading()
        pump(clock)
        self.assertEqual(openConnections(clock), 0)
        self.successResultOf(port.stopListening())
        self.assertEqual(clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_tlsVerifiesHostname(self) -> Any:
        """
        A certificate for another name fails the handshake: nothing is
        delivered and the client's connection is lost with the TLS error.
        """
        from OpenSSL.SSL import Error as SSLError
        from service_identity import VerificationError

        endpoint, roots = self.tlsServer("service.example.test")
        port = yield endpoint.listen(Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        client = Recorder()
        description = buildDescription(
            "tls", "other.example.test", 443, trustRoots=roots,
            endpoint=buildDescription("memory", self.name))
        yield bounded(clientFromString(reactor, description).connect(factoryOf(client)))
        client.transport.write(b"must not arrive")
        yield bounded(client.lost)
        reason = client.reason
        self.assertTrue(reason.check(SSLError, VerificationError), reason)
        self.assertEqual(client.received, b"")
        yield poll(lambda: openConnections(reactor) == 0)

    @defer.inlineCallbacks
    def test_timeout(self) -> Any:
        """
        C{timeout:} over C{memory:} connects, and passes a refusal through.
        """
        inner = buildDescription("memory", self.name)
        description = buildDescription("timeout", 5, endpoint=inner)
        _client, server = yield connectedPair(
            self, Echo, Recorder, serverDescription=inner, clientDescription=description)
        self.assertIsInstance(server, Echo)
        d = clientFromString(reactor, buildDescription(
            "timeout", 5, endpoint=buildDescription("memory", uniqueName("nobody")))
        ).connect(factoryOf(Recorder()))
        with self.assertRaises(ConnectionRefusedError):
            yield bounded(d)

    @defer.inlineCallbacks
    def test_limit(self) -> Any:
        """
        C{limit:max=1} over C{memory:}: the second client gets the message
        and a clean close while the first is open.
        """
        inner = buildDescription("memory", self.name)
        description = buildDescription("limit", endpoint=inner, max=1, message="busy")
        first, _server = yield connectedPair(
            self, Echo, Recorder, serverDescription=description,
            clientDescription=inner)
        second = Recorder()
        yield bounded(clientFromString(reactor, inner).connect(factoryOf(second)))
        yield bounded(second.lost)
        reason = second.reason
        self.assertEqual(second.received, b"busy\r\n")
        self.assertEqual(type(reason.value), ConnectionDone)
        self.assertTrue(first.transport.connected)

    @defer.inlineCallbacks
    def test_limitPause(self) -> Any:
        """
        C{limit:max=1:pause=yes} over C{memory:}: the second client waits
        until the first connection ends, then connects.
        """
        inner = buildDescription("memory", self.name)
        description = buildDescription("limit", endpoint=inner, max=1, pause=True)
        port = yield serverFromString(reactor, description).listen(Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        first, second = Recorder(), Recorder()
        yield bounded(clientFromString(reactor, inner).connect(factoryOf(first)))
        connecting = clientFromString(reactor, inner).connect(factoryOf(second))
        for _ in range(50):
            yield deferLater(reactor, 0, lambda: None)
        self.assertFalse(connecting.called)
        first.transport.loseConnection()
        yield bounded(first.lost)
        yield bounded(connecting)
        second.transport.write(b"now")
        yield poll(lambda: second.received)
        self.assertEqual(second.received, b"now")
        second.transport.loseConnection()
        yield bounded(second.lost)
        yield poll(lambda: openConnections(reactor) == 0)

    @defer.inlineCallbacks
    def test_multi(self) -> Any:
        """
        C{multi:} listens on two names at once; both reach the server and
        stopping frees both.
        """
        names = [self.name + "-a", self.name + "-b"]
        description = buildDescription(
            "multi", *[buildDescription("memory", name) for name in names])
        port = yield serverFromString(reactor, description).listen(Factory.forProtocol(Echo))
        self.assertEqual(listeningNames(reactor), sorted(names))
        for name in names:
            client = Recorder()
            yield bounded(clientFromString(reactor, buildDescription("memory", name)).connect(
                factoryOf(client)))
            client.transport.write(name.encode())
            yield poll(lambda client=client: client.received)
            self.assertEqual(client.received, name.encode())
            client.transport.loseConnection()
            yield bounded(client.lost)
        self.assertEqual(sorted(clientDescriptionsFor(port)),
                         sorted(f"memory:{name}" for name in names))
        yield port.stopListening()
        self.assertEqual(listeningNames(reactor), [])
        yield poll(lambda: openConnections(reactor) == 0)
