"""
Tests for L{endpointkit.deadline}: L{connectWithTimeout}, C{timeout:} and
C{hostname:}.
"""

from __future__ import annotations

import gc
import os
import select
import socket
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.endpoints import clientFromString as twistedClientFromString
from twisted.internet.endpoints import serverFromString as twistedServerFromString
from twisted.internet.error import ConnectionRefusedError, TimeoutError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocolNegotiationFactory,
    IReactorPluggableNameResolver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

import endpointkit
from endpointkit._grammar import DescriptionError, buildDescription
from endpointkit.deadline import (
    ConnectTimeout,
    TimeoutEndpoint,
    _Attempt,
    connectWithTimeout,
    describeEndpoint,
)
from tests._support import fileDescriptorNumbers, selfSignedCertificate

# Bounds every wait on a real network in this module.
NETWORK_WAIT = 15.0


def _bounded(d: Deferred[Any]) -> Deferred[Any]:
    return d.addTimeout(NETWORK_WAIT, reactor)


class Recorder(Protocol):
    """
    A protocol that records what happens to it.
    """

    def __init__(self) -> None:
        self.made = 0
        self.received = b""
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.made += 1

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason


class RecorderFactory(Factory):
    """
    Builds C{protocol} (a L{Recorder}) for each connection and keeps each
    in C{built}.
    """

    noisy = False
    protocol: Any = Recorder

    def __init__(self) -> None:
        self.built: list[Any] = []

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.protocol()
        protocol.factory = self
        self.built.append(protocol)
        return protocol


@implementer(IStreamClientEndpoint)
class ScriptedEndpoint:
    """
    A hand-made endpoint on a L{Clock}: it builds the protocol, connects it
    to a L{StringTransport} and fires its L{Deferred} (or fails) at the
    times given, each L{None} for never or 0 for at once.  It honours
    cancellation (cancels what it still had to do) or ignores it.
    """

    def __init__(self, clock: Clock, *, buildAt: float | None = None,
                 makeAt: float | None = None, fireAt: float | None = None,
                 failWith: Exception | None = None, honourCancel: bool = True) -> None:
        self.clock = clock
        self.buildAt = buildAt
        self.makeAt = makeAt
        self.fireAt = fireAt
        self.failWith = failWith
        self.honourCancel = honourCancel
        self.cancelled = 0
        self.transport = StringTransport()
        self.protocol: Any = None
        self.calls: list[Any] = []

    def __repr__(self) -> str:
        return "<ScriptedEndpoint>"

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(self._cancel)

        def build() -> None:
            self.protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))

        def make() -> None:
            self.protocol.makeConnection(self.transport)

        def fire() -> None:
            if d.called:
                return
            if self.failWith is not None:
                d.errback(self.failWith)
            else:
                d.callback(self.protocol)

        for at, step in ((self.buildAt, build), (self.makeAt, make), (self.fireAt, fire)):
            if at == 0:
                step()
            elif at is not None:
                self.calls.append(self.clock.callLater(at, step))
        return d

    def _cancel(self, d: Deferred[Any]) -> None:
        self.cancelled += 1
        if self.honourCancel:
            for call in self.calls:
                if call.active():
                    call.cancel()


def connected(clock: Clock, at: float, **kw: Any) -> ScriptedEndpoint:
    return ScriptedEndpoint(clock, buildAt=at, makeAt=at, fireAt=at, **kw)


class Outcome:
    """
    What a L{Deferred} fired with, and when on the clock.
    """

    def __init__(self, d: Deferred[Any], clock: Clock) -> None:
        self.result: Any = None
        self.failure: Failure | None = None
        self.at: float | None = None

        def done(result: Any) -> None:
            self.at = clock.seconds()
            if isinstance(result, Failure):
                self.failure = result
            else:
                self.result = result

        d.addBoth(done)

    @property
    def fired(self) -> bool:
        return self.at is not None


class ConnectWithTimeoutTests(TestCase):
    """
    L{connectWithTimeout} with hand-made endpoints on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.factory = RecorderFactory()

    def connect(self, endpoint: Any, timeout: float = 5) -> Outcome:
        return Outcome(connectWithTimeout(endpoint, self.factory, timeout, self.clock), self.clock)

    def test_neverCompletes(self) -> None:
        """
        An attempt that never completes is cancelled exactly at the
        deadline and fails with L{ConnectTimeout}, a L{TimeoutError}.
        """
        endpoint = ScriptedEndpoint(self.clock)
        outcome = self.connect(endpoint, 5)
        self.clock.advance(4.999)
        self.assertFalse(outcome.fired)
        self.assertEqual(endpoint.cancelled, 0)
        self.clock.advance(0.001)
        self.assertEqual(outcome.at, 5)
        assert outcome.failure is not None
        error = outcome.failure.value
        self.assertIsInstance(error, ConnectTimeout)
        self.assertIsInstance(error, TimeoutError)
        self.assertEqual(error.seconds, 5)
        self.assertIs(error.endpoint, endpoint)
        self.assertEqual(str(error), "connecting to <ScriptedEndpoint> timed out after 5 s")
        self.assertEqual(endpoint.cancelled, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fractionalSeconds(self) -> None:
        """
        Fractions of a second are kept, and the message says so.
        """
        outcome = self.connect(ScriptedEndpoint(self.clock), 0.25)
        self.clock.advance(0.2)
        self.assertFalse(outcome.fired)
        self.clock.advance(0.05)
        assert outcome.failure is not None
        self.assertEqual(outcome.at, 0.25)
        self.assertIn("timed out after 0.25 s", str(outcome.failure.value))

    def test_namesDescription(self) -> None:
        """
        The message names an endpoint by its C{description} when it has one.
        """
        endpoint = ScriptedEndpoint(self.clock)
        endpoint.description = "scripted:here"  # type: ignore[attr-defined]
        outcome = self.connect(endpoint, 1)
        self.clock.advance(1)
        assert outcome.failure is not None
        self.assertEqual(str(outcome.failure.value),
                         "connecting to scripted:here timed out after 1 s")
        self.assertEqual(describeEndpoint(object.__new__(ScriptedEndpoint)), "<ScriptedEndpoint>")

    def test_succeedsEarly(self) -> None:
        """
        A connection before the deadline is the caller's own protocol; the
        delayed call is gone, and the connection lives on past the deadline
        with data passing both ways.
        """
        endpoint = connected(self.clock, 1)
        outcome = self.connect(endpoint, 5)
        self.clock.advance(1)
        self.assertEqual(outcome.at, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        protocol = outcome.result
        self.assertEqual(self.factory.built, [protocol])
        self.assertEqual(protocol.made, 1)
        self.assertIs(protocol.transport, endpoint.transport)
        self.clock.advance(10)
        self.assertFalse(endpoint.transport.disconnecting)
        protocol.transport.write(b"out")
        self.assertEqual(endpoint.transport.value(), b"out")
        endpoint.protocol.dataReceived(b"in")
        self.assertEqual(protocol.received, b"in")
        endpoint.protocol.connectionLost(Failure(ConnectionRefusedError()))
        assert protocol.lost is not None
        self.assertIsInstance(protocol.lost.value, ConnectionRefusedError)
        self.assertEqual(endpoint.cancelled, 0)

    def test_succeedsSynchronously(self) -> None:
        """
        An endpoint that connects inside C{connect} leaves no delayed call.
        """
        outcome = self.connect(connected(self.clock, 0), 5)
        self.assertEqual(outcome.at, 0)
        self.assertEqual(outcome.result.made, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failsEarly(self) -> None:
        """
        A failure before the deadline is passed on as it is, at once, and
        the delayed call is gone.
        """
        endpoint = ScriptedEndpoint(self.clock, fireAt=2, failWith=ConnectionRefusedError())
        outcome = self.connect(endpoint, 5)
        self.clock.advance(2)
        self.assertEqual(outcome.at, 2)
        assert outcome.failure is not None
        self.assertIsInstance(outcome.failure.value, ConnectionRefusedError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(endpoint.cancelled, 0)

    def test_failsSynchronously(self) -> None:
        """
        An endpoint whose C{connect} raises gives a failed L{Deferred} and
        leaves no delayed call.
        """

        @implementer(IStreamClientEndpoint)
        class Raising:
            def connect(self, factory: Any) -> Deferred[Any]:
                raise ConnectionRefusedError()

        outcome = self.connect(Raising(), 5)
        assert outcome.failure is not None
        self.assertIsInstance(outcome.failure.value, ConnectionRefusedError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_completesLate(self) -> None:
        """
        An endpoint that would connect after the deadline is cancelled at
        the deadline; nothing of it is left on the clock and no protocol is
        built.
        """
        endpoint = connected(self.clock, 10)
        outcome = self.connect(endpoint, 5)
        self.clock.advance(5)
        assert outcome.failure is not None
        self.assertIsInstance(outcome.failure.value, ConnectTimeout)
        self.assertEqual(endpoint.cancelled, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.factory.built, [])

    def test_ignoresCancellation(self) -> None:
        """
        An endpoint that ignores cancellation and connects after the
        deadline: the caller had its timeout on time, the caller's factory
        builds nothing and the late connection is closed.
        """
        endpoint = connected(self.clock, 10, honourCancel=False)
        outcome = self.connect(endpoint, 5)
        self.clock.advance(5)
        self.assertEqual(outcome.at, 5)
        assert outcome.failure is not None
        self.assertIsInstance(outcome.failure.value, ConnectTimeout)
        self.assertEqual(endpoint.cancelled, 1)
        self.clock.advance(5)
        self.assertEqual(self.factory.built, [])
        self.assertTrue(endpoint.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ignoresCancellationBuiltEarly(self) -> None:
        """
        When the protocol was built before the deadline but the connection
        is made after it (an endpoint with a handshake of its own), the
        protocol never sees C{connectionMade} and the connection is closed.
        """
        endpoint = ScriptedEndpoint(self.clock, buildAt=0, makeAt=10, fireAt=10,
                                    honourCancel=False)
        outcome = self.connect(endpoint, 5)
        self.clock.advance(5)
        assert outcome.failure is not None
        self.assertIsInstance(outcome.failure.value, ConnectTimeout)
        self.clock.advance(5)
        [protocol] = self.factory.built
        self.assertEqual(protocol.made, 0)
        self.assertTrue(endpoint.transport.disconnecting)
        endpoint.protocol.dataReceived(b"late")
        endpoint.protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(protocol.received, b"")
        self.assertIsNone(protocol.lost)

    def test_madeBeforeDeadlineDeliveredAfter(self) -> None:
        """
        A connection made before the deadline whose endpoint had not
        delivered it by then is closed at the deadline (the caller will never
        get it), and its protocol hears that it was lost.
        """
        endpoint = ScriptedEndpoint(self.clock, buildAt=0, makeAt=0, fireAt=10,
                                    honourCancel=False)
        outcome = self.connect(endpoint, 5)
        [protocol] = self.factory.built
        self.assertEqual(protocol.made, 1)
        self.assertFalse(endpoint.transport.disconnecting)
        self.clock.advance(5)
        assert outcome.failure is not None
        self.assertIsInstance(outcome.failure.value, ConnectTimeout)
        self.assertTrue(endpoint.transport.disconnecting)
        endpoint.protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertIsNotNone(protocol.lost)
        self.clock.advance(5)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lateFailureIgnored(self) -> None:
        """
        A failure that an endpoint reports after the deadline is dropped:
        the caller has its timeout and nothing is logged as unhandled.
        """
        endpoint = ScriptedEndpoint(self.clock, fireAt=10, honourCancel=False,
                                    failWith=ConnectionRefusedError())
        outcome = self.connect(endpoint, 5)
        self.clock.advance(10)
        assert outcome.failure is not None
        self.assertIsInstance(outcome.failure.value, ConnectTimeout)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_lateDeliveryClosed(self) -> None:
        """
        An endpoint that, cancelled at the deadline, delivers a protocol
        anyway (here not even one the attempt built) has that protocol's
        transport closed.
        """
        late = Recorder()
        late.makeConnection(StringTransport())

        @implementer(IStreamClientEndpoint)
        class Stubborn:
            def connect(self, factory: Any) -> Deferred[Any]:
                return Deferred(lambda d: d.callback(late))

        outcome = self.connect(Stubborn(), 5)
        self.clock.advance(5)
        assert outcome.failure is not None
        self.assertIsInstance(outcome.failure.value, ConnectTimeout)
        self.assertTrue(late.transport.disconnecting)  # type: ignore[attr-defined]

    def test_cancel(self) -> None:
        """
        Cancelling the L{Deferred} cancels the attempt and the deadline.
        """
        endpoint = connected(self.clock, 10)
        d = connectWithTimeout(endpoint, self.factory, 5, self.clock)
        self.clock.advance(1)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(endpoint.cancelled, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(20)
        self.assertEqual(self.factory.built, [])

    def test_cancelIgnored(self) -> None:
        """
        After a cancellation, a connection that an endpoint makes anyway is
        closed unseen.
        """
        endpoint = connected(self.clock, 10, honourCancel=False)
        d = connectWithTimeout(endpoint, self.factory, 50, self.clock)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [call for call in endpoint.calls])
        self.clock.advance(10)
        self.assertEqual(self.factory.built, [])
        self.assertTrue(endpoint.transport.disconnecting)

    def test_cancelAfterSuccess(self) -> None:
        """
        Cancelling after the connection was made changes nothing.
        """
        d = connectWithTimeout(connected(self.clock, 1), self.factory, 5, self.clock)
        self.clock.advance(1)
        d.cancel()
        protocol = self.successResultOf(d)
        self.assertIsNone(protocol.lost)

    def test_protocolInstance(self) -> None:
        """
        Given a protocol instance, as L{connectProtocol} is, it connects that
        instance.
        """
        protocol = Recorder()
        d = connectWithTimeout(connected(self.clock, 1), protocol, 5, self.clock)
        self.clock.advance(1)
        self.assertIs(self.successResultOf(d), protocol)
        self.assertEqual(protocol.made, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_notAProtocol(self) -> None:
        """
        Anything but a protocol or a factory is a L{TypeError}.
        """
        with self.assertRaises(TypeError):
            connectWithTimeout(connected(self.clock, 1), object(), 5, self.clock)  # type: ignore[arg-type]
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_badTimeout(self) -> None:
        """
        The timeout is a positive finite number of seconds.
        """
        for bad in (0, -1, -0.5, float("nan"), float("inf"), float("-inf")):
            with self.assertRaises(ValueError, msg=repr(bad)):
                connectWithTimeout(connected(self.clock, 1), self.factory, bad, self.clock)
        for wrong in ("5", None, True):
            with self.assertRaises(TypeError, msg=repr(wrong)):
                connectWithTimeout(connected(self.clock, 1), self.factory,
                                   wrong, self.clock)  # type: ignore[arg-type]
        with self.assertRaises(ValueError):
            TimeoutEndpoint(connected(self.clock, 1), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_interfacesPassedThrough(self) -> None:
        """
        The attempt offers what the caller's factory offers (ALPN protocols
        to a TLS wrapper), and half-close events reach the caller's protocol.
        """

        @implementer(IHalfCloseableProtocol)
        class HalfClose(Recorder):
            readLost = False

            def readConnectionLost(self) -> None:
                self.readLost = True

            def writeConnectionLost(self) -> None:
                pass

        @implementer(IProtocolNegotiationFactory)
        class Negotiating(RecorderFactory):
            def acceptableProtocols(self) -> list[bytes]:
                return [b"h2"]

            def buildProtocol(self, addr: Any) -> HalfClose:
                protocol = HalfClose()
                self.built.append(protocol)
                return protocol

        seen: list[Any] = []

        @implementer(IStreamClientEndpoint)
        class Inspecting:
            def connect(self, factory: Any) -> Deferred[Any]:
                seen.append(IProtocolNegotiationFactory.providedBy(factory))
                seen.append(factory.acceptableProtocols())
                protocol = factory.buildProtocol(None)
                seen.append(IHalfCloseableProtocol.providedBy(protocol))
                protocol.makeConnection(StringTransport())
                protocol.readConnectionLost()
                return defer.succeed(protocol)

        d = connectWithTimeout(Inspecting(), Negotiating(), 5, self.clock)
        protocol = self.successResultOf(d)
        self.assertEqual(seen, [True, [b"h2"], True])
        self.assertTrue(protocol.readLost)

    def test_factoryStartedAndStopped(self) -> None:
        """
        The caller's factory is started and stopped with the attempt, as
        Twisted's endpoints do.
        """

        @implementer(IStreamClientEndpoint)
        class Starting:
            def connect(self, factory: Any) -> Deferred[Any]:
                factory.doStart()
                starts.append(self.outer.numPorts)
                factory.doStop()
                return defer.fail(ConnectionRefusedError())

        starts: list[int] = []
        endpoint = Starting()
        endpoint.outer = self.factory  # type: ignore[attr-defined]
        d = connectWithTimeout(endpoint, self.factory, 5, self.clock)
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(starts, [1])
        self.assertEqual(self.factory.numPorts, 0)

    def test_globalReactor(self) -> None:
        """
        Without a clock, the deadline runs on the global reactor.
        """
        endpoint = ScriptedEndpoint(self.clock)
        d = connectWithTimeout(endpoint, self.factory, 0.01)
        d = self.assertFailure(d, ConnectTimeout)

        def check(error: ConnectTimeout) -> None:
            self.assertEqual(endpoint.cancelled, 1)

        return _bounded(d).addCallback(check)

    def test_timeoutEndpoint(self) -> None:
        """
        L{TimeoutEndpoint} puts the deadline on every attempt and names the
        endpoint it wraps by its description.
        """
        endpoint = TimeoutEndpoint(ScriptedEndpoint(self.clock), 2, self.clock,
                                   "scripted:inner")
        self.assertEqual(endpoint.description, "timeout:2:endpoint=scripted\\:inner")
        self.assertEqual(repr(endpoint),
                         "<TimeoutEndpoint timeout:2:endpoint=scripted\\:inner>")
        outcomes = [Outcome(endpoint.connect(self.factory), self.clock) for _ in range(3)]
        self.clock.advance(2)
        for outcome in outcomes:
            assert outcome.failure is not None
            self.assertEqual(str(outcome.failure.value),
                             "connecting to scripted:inner timed out after 2 s")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        bare = TimeoutEndpoint(ScriptedEndpoint(self.clock), 0.5, self.clock)
        self.assertIsNone(bare.description)
        self.assertEqual(repr(bare), "<TimeoutEndpoint 0.5 s around <ScriptedEndpoint>>")

    def test_innerTimesOut(self) -> None:
        """
        Around an endpoint that keeps the deadline itself, no timer is set:
        its L{TimeoutError} becomes L{ConnectTimeout} naming the inner
        description and the seconds, and every other outcome (success, any
        other error, a L{TimeoutError} subclass from a deadline further in)
        is passed on as it is.
        """
        endpoint = ScriptedEndpoint(self.clock, fireAt=3, failWith=TimeoutError())
        timed = TimeoutEndpoint(endpoint, 3, self.clock, "scripted:inner", innerTimesOut=True)
        outcome = Outcome(timed.connect(self.factory), self.clock)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the endpoint's own
        self.clock.advance(3)
        assert outcome.failure is not None
        self.assertIs(type(outcome.failure.value), ConnectTimeout)
        self.assertEqual(str(outcome.failure.value),
                         "connecting to scripted:inner timed out after 3 s")
        self.assertIs(outcome.failure.value.endpoint, endpoint)
        self.assertEqual(self.clock.getDelayedCalls(), [])

        for error in (ConnectionRefusedError(), ConnectTimeout(endpoint, 1, "inner:deeper")):
            timed = TimeoutEndpoint(ScriptedEndpoint(self.clock, fireAt=0, failWith=error),
                                    3, self.clock, innerTimesOut=True)
            failure = self.failureResultOf(timed.connect(self.factory))
            self.assertIs(failure.value, error)

        timed = TimeoutEndpoint(connected(self.clock, 0), 3, self.clock, innerTimesOut=True)
        protocol = self.successResultOf(timed.connect(Recorder()))
        self.assertEqual(protocol.made, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_manyAttemptsLeaveNothing(self) -> None:
        """
        10,000 attempts that all time out leave no delayed call and no
        attempt object behind.
        """
        endpoint = TimeoutEndpoint(ScriptedEndpoint(self.clock), 1, self.clock)
        failures: list[Failure] = []
        # Only this test's attempts: other tests in the same process may
        # still hold theirs.
        gc.collect()
        before = {id(o) for o in gc.get_objects() if isinstance(o, _Attempt)}
        for _ in range(10_000):
            endpoint.connect(self.factory).addErrback(failures.append)
        self.clock.advance(1)
        self.assertEqual(len(failures), 10_000)
        self.assertTrue(all(f.check(ConnectTimeout) for f in failures))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        del failures
        gc.collect()
        self.assertEqual([o for o in gc.get_objects()
                          if isinstance(o, _Attempt) and id(o) not in before], [])


def _inTwoWays(test: TestCase, description: str) -> list[Any]:
    """
    The endpoint built from C{description} by endpointkit's and by
    Twisted's C{clientFromString}.
    """
    return [endpointkit.clientFromString(reactor, description),
            twistedClientFromString(reactor, description)]


class ParsingTests(TestCase):
    """
    C{timeout:} and C{hostname:} through endpointkit's and Twisted's
    C{clientFromString}.
    """

    def test_timeout(self) -> None:
        description = buildDescription("timeout", 2.5,
                                       endpoint=buildDescription("tcp", "127.0.0.1", 8080))
        self.assertEqual(description, "timeout:2.5:endpoint=tcp\\:127.0.0.1\\:8080")
        for endpoint in _inTwoWays(self, description):
            self.assertIsInstance(endpoint, TimeoutEndpoint)
            self.assertEqual(endpoint.timeout, 2.5)
            self.assertIs(endpoint.clock, reactor)
            self.assertIsInstance(endpoint.endpoint, TCP4ClientEndpoint)
            self.assertEqual((endpoint.endpoint._host, endpoint.endpoint._port),
                             ("127.0.0.1", 8080))
            self.assertEqual(endpoint.innerDescription, "tcp:127.0.0.1:8080")
            self.assertEqual(endpoint.description, description)

    def test_innerDeadline(self) -> None:
        """
        Around C{tcp:} and C{unix:} with whole seconds, C{timeout:} sets the
        inner endpoint's own connect timeout to them instead of a second
        timer, when that timeout is no shorter (C{tcp:}'s own C{timeout=0}
        gives up at once, as Twisted's does); otherwise, and around every
        other type, it keeps its own timer.  The description
        stays as given.
        """
        tcp = buildDescription("tcp", "127.0.0.1", 8080)
        cases = [
            (buildDescription("timeout", 30, endpoint=tcp), True, 30),
            (buildDescription("timeout", 5, endpoint=tcp), True, 5),
            (buildDescription("timeout", 5, endpoint=tcp + ":timeout=0"), False, 0),
            (buildDescription("timeout", 5, endpoint=buildDescription("unix", "/tmp/x.sock")),
             True, 5),
            (buildDescription("timeout", 2.5, endpoint=tcp), False, 30),
            (buildDescription("timeout", 5, endpoint=tcp + ":timeout=2"), False, 2),
            (buildDescription("timeout", 31, endpoint=tcp), False, 30),
            (buildDescription("timeout", 5, endpoint=buildDescription(
                "hostname", "localhost", 8080)), False, 30),
        ]
        for description, keptInside, innerSeconds in cases:
            for endpoint in _inTwoWays(self, description):
                self.assertIsInstance(endpoint, TimeoutEndpoint)
                self.assertEqual(endpoint.innerTimesOut, keptInside, description)
                self.assertEqual(endpoint.endpoint._timeout, innerSeconds, description)
                self.assertEqual(endpoint.description, description)

    def test_timeoutByKeyword(self) -> None:
        for endpoint in _inTwoWays(self, "timeout:endpoint=unix\\:/tmp/s:seconds=1"):
            self.assertIsInstance(endpoint, TimeoutEndpoint)
            self.assertEqual(endpoint.timeout, 1)
            self.assertEqual(endpoint.innerDescription, "unix:/tmp/s")

    def test_nested(self) -> None:
        """
        C{timeout:} wraps anything, itself included.
        """
        inner = buildDescription("timeout", 1, endpoint="hostname:localhost:80")
        for endpoint in _inTwoWays(self, buildDescription("timeout", 5, endpoint=inner)):
            self.assertIsInstance(endpoint.endpoint, TimeoutEndpoint)
            self.assertIsInstance(endpoint.endpoint.endpoint, HostnameEndpoint)
            self.assertEqual(endpoint.endpoint.timeout, 1)

    def test_secretsMasked(self) -> None:
        """
        The description that names the inner endpoint, in the wrapper's
        C{repr} and in L{ConnectTimeout}, shows secrets as C{***}.
        """
        inner = buildDescription("socks5", "example.com", 80, user="u", password="hunter2",
                                 endpoint=buildDescription("tcp", "127.0.0.1", 1080))
        clock = MemoryReactorClock()
        endpoint = endpointkit.clientFromString(clock, buildDescription("timeout", 1,
                                                                        endpoint=inner))
        self.assertIn("password=***", endpoint.innerDescription)
        self.assertNotIn("hunter2", repr(endpoint))
        self.assertNotIn("hunter2", endpoint.description)
        endpoint.endpoint = ScriptedEndpoint(Clock())
        d = endpoint.connect(RecorderFactory())
        clock.advance(1)
        error = self.failureResultOf(d, ConnectTimeout).value
        self.assertIn("password=***", str(error))
        self.assertNotIn("hunter2", str(error))

    def test_badSeconds(self) -> None:
        """
        Zero, negative, NaN, infinite and malformed seconds are clear
        L{DescriptionError}s from both parsers.
        """
        for bad in ("0", "0.0", "-1", "-0.5", "nan", "NaN", "inf", "Infinity", "junk",
                    "", "1e3", "0x10", "5s", "1.2.3"):
            description = f"timeout:{bad}:endpoint=tcp\\:127.0.0.1\\:80"
            for parse in (endpointkit.clientFromString, twistedClientFromString):
                with self.assertRaises(DescriptionError, msg=bad) as caught:
                    parse(reactor, description)
                self.assertEqual(
                    str(caught.exception),
                    f"timeout: argument 'seconds' must be a positive number of seconds, got {bad!r}")
                self.assertEqual(caught.exception.argument, "seconds")

    def test_badEndpoint(self) -> None:
        with self.assertRaises(DescriptionError) as caught:
            endpointkit.clientFromString(reactor, "timeout:5")
        self.assertIn("missing required argument 'endpoint'", str(caught.exception))
        with self.assertRaises(DescriptionError) as caught:
            endpointkit.clientFromString(reactor, "timeout:5:endpoint=tcp\\:127.0.0.1\\:https")
        self.assertEqual(
            str(caught.exception),
            "timeout: argument 'endpoint': tcp: argument 'port' must be a TCP port "
            "number 1-65535, got 'https'")
        with self.assertRaises(DescriptionError) as caught:
            endpointkit.clientFromString(reactor, "timeout:5:endpoint=tcp\\:127.0.0.1\\:80:x=1")
        self.assertIn("unknown argument 'x'", str(caught.exception))

    def test_hostname(self) -> None:
        for description, shown in [
            ("hostname:localhost:8080", "<HostnameEndpoint localhost:8080>"),
            ("hostname:[::1]:8080", "<HostnameEndpoint [::1]:8080>"),
            ("hostname:\\:\\:1:8080", "<HostnameEndpoint [::1]:8080>"),
            ("hostname:bücher.example:443", "<HostnameEndpoint xn--bcher-kva.example:443>"),
            ("hostname:host=127.0.0.1:port=80", "<HostnameEndpoint 127.0.0.1:80>"),
        ]:
            for endpoint in _inTwoWays(self, description):
                self.assertIsInstance(endpoint, HostnameEndpoint)
                self.assertEqual(repr(endpoint), shown)

    def test_hostnameOptions(self) -> None:
        for endpoint in _inTwoWays(
                self, "hostname:localhost:80:timeout=2.5:bindAddress=127.0.0.1:attemptDelay=0"):
            self.assertEqual(endpoint._timeout, 2.5)
            self.assertEqual(endpoint._bindAddress, ("127.0.0.1", 0))
            self.assertEqual(endpoint._attemptDelay, 0)
        [endpoint] = [endpointkit.clientFromString(reactor, "hostname:[::1]:80:bindAddress=[::1]")]
        self.assertEqual(endpoint._bindAddress, ("::1", 0))
        default = endpointkit.clientFromString(reactor, "hostname:localhost:80")
        self.assertEqual((default._timeout, default._bindAddress), (30, None))

    def test_hostnameErrors(self) -> None:
        for description, message in [
            ("hostname:localhost:0", "argument 'port' must be a TCP port number 1-65535, got '0'"),
            ("hostname:localhost:http", "argument 'port' must be a TCP port number"),
            ("hostname:bad_host-:80", "argument 'host' must be a host name or IP address"),
            ("hostname:[::1:80", "opens '[' without a closing ']'"),
            ("hostname:localhost:80:timeout=0", "argument 'timeout' must be a positive number"),
            ("hostname:localhost", "missing required argument 'port'"),
            ("hostname:localhost:80:bindAddres=127.0.0.1", "did you mean 'bindAddress'?"),
        ]:
            with self.assertRaises(DescriptionError, msg=description) as caught:
                endpointkit.clientFromString(reactor, description)
            self.assertIn(message, str(caught.exception))

    def test_types(self) -> None:
        """
        Both types are declared with help for every argument.
        """
        from endpointkit.deadline import hostnameType, timeoutType

        for etype, names in [(timeoutType, ["seconds", "endpoint"]),
                             (hostnameType, ["host", "port", "timeout", "bindAddress",
                                             "attemptDelay"])]:
            self.assertEqual(etype.side, "client")
            self.assertEqual([arg.name for arg in etype.args], names)
            self.assertTrue(etype.help)
            self.assertTrue(all(arg.help for arg in etype.args))


def fullListener(test: TestCase) -> int:
    """
    A loopback TCP port whose accept queue is full: a listening socket with
    a backlog of 0 that never accepts, filled with raw connections until
    one no longer completes.  Closed at cleanup.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    test.addCleanup(listener.close)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    for _ in range(64):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        test.addCleanup(raw.close)
        raw.setblocking(False)
        raw.connect_ex(("127.0.0.1", port))
        _, writable, _ = select.select([], [raw], [], 0.3)
        if not writable:
            return port
    raise AssertionError("the accept queue of a backlog-0 listener never filled")


class Exchange(Protocol):
    """
    One side of a short exchange: it sends its greeting when connected,
    records what arrives, and reports when the connection is lost.  The
    server closes once it has heard the client's greeting.
    """

    def __init__(self, greeting: bytes, closeAfter: bytes | None = None) -> None:
        self.greeting = greeting
        self.closeAfter = closeAfter
        self.received = b""
        self.peer: Any = None
        self.lost: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()  # type: ignore[attr-defined]
        self.transport.write(self.greeting)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.closeAfter is not None and self.received == self.closeAfter:
            self.transport.loseConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(self.received)


class ExchangeServer(Factory):
    noisy = False

    def __init__(self) -> None:
        self.protocols: list[Exchange] = []

    def buildProtocol(self, addr: Any) -> Exchange:
        protocol = Exchange(b"hello from server", closeAfter=b"hello from client")
        self.protocols.append(protocol)
        return protocol


class LoopbackTests(TestCase):
    """
    C{timeout:} and C{hostname:} with real sockets on loopback.
    """

    timeout = 120

    @defer.inlineCallbacks
    def listen(self, description: str) -> Any:
        server = ExchangeServer()
        port: IListeningPort = yield twistedServerFromString(
            reactor, description).listen(server)
        self.addCleanup(port.stopListening)
        return server, port

    @defer.inlineCallbacks
    def exchange(self, server: ExchangeServer, client: IStreamClientEndpoint) -> Any:
        """
        Connect, and check that each side heard the other.
        """
        protocol = Exchange(b"hello from client")
        connected = yield _bounded(connectWithTimeout(client, protocol, NETWORK_WAIT))
        self.assertIs(connected, protocol)
        clientGot = yield _bounded(protocol.lost)
        [serverSide] = server.protocols
        serverGot = yield _bounded(serverSide.lost)
        self.assertEqual(clientGot, b"hello from server")
        self.assertEqual(serverGot, b"hello from client")
        return serverSide

    @defer.inlineCallbacks
    def test_tcpFullQueue(self) -> Any:
        """
        C{timeout:} around C{tcp:} to a listener whose accept queue is full
        fails with L{ConnectTimeout} at its deadline, long before C{tcp:}'s
        own 30 seconds.
        """
        port = fullListener(self)
        inner = buildDescription("tcp", "127.0.0.1", port)
        endpoint = endpointkit.clientFromString(
            reactor, buildDescription("timeout", 0.5, endpoint=inner))
        before = reactor.seconds()
        d = connectWithTimeout(endpoint, Protocol(), NETWORK_WAIT)
        error = yield self.assertFailure(_bounded(d), ConnectTimeout)
        self.assertGreaterEqual(reactor.seconds() - before, 0.5)
        self.assertEqual(error.seconds, 0.5)
        self.assertEqual(str(error), f"connecting to {inner} timed out after 0.5 s")

    @defer.inlineCallbacks
    def test_tcpFullQueueInnerDeadline(self) -> Any:
        """
        With whole seconds around C{tcp:}, the deadline that C{tcp:} keeps
        itself gives the same L{ConnectTimeout} on time, for many attempts at
        once, and leaves the process's file descriptors and the reactor's
        delayed calls as they were.
        """
        port = fullListener(self)
        inner = buildDescription("tcp", "127.0.0.1", port)
        endpoint = endpointkit.clientFromString(
            reactor, buildDescription("timeout", 1, endpoint=inner))
        self.assertTrue(endpoint.innerTimesOut)
        yield task.deferLater(reactor, 0, lambda: None)
        descriptors = fileDescriptorNumbers()
        delayed = len(reactor.getDelayedCalls())
        factory = RecorderFactory()
        before = reactor.seconds()
        results = yield _bounded(defer.DeferredList(
            [endpoint.connect(factory) for _ in range(500)], consumeErrors=True))
        self.assertGreaterEqual(reactor.seconds() - before, 1)
        errors = {str(result.value) for ok, result in results
                  if not ok and type(result.value) is ConnectTimeout}
        self.assertEqual(errors, {f"connecting to {inner} timed out after 1 s"})
        self.assertEqual(sum(1 for ok, _ in results if not ok), 500)
        self.assertEqual(factory.built, [])
        self.assertEqual(fileDescriptorNumbers() - descriptors, set())
        self.assertEqual(len(reactor.getDelayedCalls()), delayed)

    @defer.inlineCallbacks
    def test_tcp(self) -> Any:
        server, port = yield self.listen("tcp:0:interface=127.0.0.1")
        inner = buildDescription("tcp", "127.0.0.1", port.getHost().port)
        for parse in (endpointkit.clientFromString, twistedClientFromString):
            server.protocols = []
            client = parse(reactor, buildDescription("timeout", 5, endpoint=inner))
            yield self.exchange(server, client)

    @defer.inlineCallbacks
    def test_unix(self) -> Any:
        path = self.mktemp()
        server, _ = yield self.listen(buildDescription("unix", path))
        client = endpointkit.clientFromString(
            reactor, buildDescription("timeout", 5, endpoint=buildDescription("unix", path)))
        yield self.exchange(server, client)

    @defer.inlineCallbacks
    def test_tls(self) -> Any:
        """
        C{timeout:} around C{tls:} that verifies a self-signed certificate
        for C{localhost}.
        """
        certificate, key, trustRoots = selfSigned(self, "localhost")
        server, port = yield self.listen(buildDescription(
            "ssl", 0, interface="127.0.0.1", privateKey=key, certKey=certificate))
        inner = buildDescription("tls", "localhost", port.getHost().port, trustRoots=trustRoots)
        client = twistedClientFromString(reactor, buildDescription("timeout", 5, endpoint=inner))
        yield self.exchange(server, client)

    @defer.inlineCallbacks
    def test_tlsUntrusted(self) -> Any:
        """
        The C{tls:} inside C{timeout:} really verifies: trusting another
        certificate, the exchange fails and the server hears nothing.
        """
        certificate, key, _ = selfSigned(self, "localhost")
        _, _, other = selfSigned(self, "localhost")
        server, port = yield self.listen(buildDescription(
            "ssl", 0, interface="127.0.0.1", privateKey=key, certKey=certificate))
        inner = buildDescription("tls", "localhost", port.getHost().port, trustRoots=other)
        client = endpointkit.clientFromString(reactor, buildDescription("timeout", 5,
                                                                        endpoint=inner))
        protocol = Exchange(b"hello from client")
        yield _bounded(client.connect(Factory.forProtocol(lambda: protocol)))
        got = yield _bounded(protocol.lost)
        self.assertEqual(got, b"")
        for serverSide in server.protocols:
            serverGot = yield _bounded(serverSide.lost)
            self.assertEqual(serverGot, b"")

    @defer.inlineCallbacks
    def test_leaks(self) -> Any:
        """
        10,000 connections through C{timeout:} to a full accept queue all
        time out, and leave the process's open file descriptors and the
        reactor's delayed calls as they were.
        """
        port = fullListener(self)
        endpoint = endpointkit.clientFromString(reactor, buildDescription(
            "timeout", 0.02, endpoint=buildDescription("tcp", "127.0.0.1", port)))
        factory = RecorderFactory()
        # Count once the reactor runs: trial starts it (and its signal
        # handling pipe) only at the first wait.
        yield task.deferLater(reactor, 0, lambda: None)
        descriptors = fileDescriptorNumbers()
        delayed = len(reactor.getDelayedCalls())
        timedOut = 0
        for _ in range(40):
            results = yield _bounded(defer.DeferredList(
                [endpoint.connect(factory) for _ in range(250)], consumeErrors=True))
            timedOut += sum(1 for ok, result in results
                            if not ok and result.check(ConnectTimeout))
        self.assertEqual(timedOut, 10_000)
        self.assertEqual(factory.built, [])
        self.assertEqual(fileDescriptorNumbers() - descriptors, set())
        self.assertEqual(len(reactor.getDelayedCalls()), delayed)

    @defer.inlineCallbacks
    def test_hostnameIPv4(self) -> Any:
        """
        C{hostname:localhost} reaches a listener on 127.0.0.1 only.
        """
        server, port = yield self.listen("tcp:0:interface=127.0.0.1")
        for parse in (endpointkit.clientFromString, twistedClientFromString):
            server.protocols = []
            client = parse(reactor, buildDescription("hostname", "localhost",
                                                     port.getHost().port))
            serverSide = yield self.exchange(server, client)
            self.assertIsInstance(serverSide.peer, IPv4Address)
            self.assertEqual(serverSide.peer.host, "127.0.0.1")

    @defer.inlineCallbacks
    def test_hostnameIPv6(self) -> Any:
        """
        C{hostname:localhost} reaches a listener on ::1 only, where the name
        resolves to both loopback addresses (RFC 6761; this machine's hosts
        file lists only 127.0.0.1, so the resolver adds ::1 as a dual-stack
        hosts file would).
        """
        server, port = yield self.listen("tcp6:0:interface=\\:\\:1")
        client = endpointkit.clientFromString(
            dualStackLocalhost(), buildDescription("hostname", "localhost",
                                                   port.getHost().port))
        serverSide = yield self.exchange(server, client)
        self.assertIsInstance(serverSide.peer, IPv6Address)
        self.assertEqual(serverSide.peer.host, "::1")

    @defer.inlineCallbacks
    def test_hostnameIPv6Literal(self) -> Any:
        server, port = yield self.listen("tcp6:0:interface=\\:\\:1")
        client = endpointkit.clientFromString(
            reactor, f"hostname:[::1]:{port.getHost().port}:bindAddress=[::1]")
        serverSide = yield self.exchange(server, client)
        self.assertEqual(serverSide.peer.host, "::1")

    @defer.inlineCallbacks
    def test_timeoutAroundHostname(self) -> Any:
        server, port = yield self.listen("tcp6:0:interface=\\:\\:1")
        client = endpointkit.clientFromString(reactor, buildDescription(
            "timeout", 5, endpoint=f"hostname:[::1]:{port.getHost().port}"))
        serverSide = yield self.exchange(server, client)
        self.assertEqual(serverSide.peer.host, "::1")


def dualStackLocalhost() -> Any:
    """
    The global reactor, with a name resolver (Twisted's, over
    C{getaddrinfo}) that resolves C{localhost} to ::1 as well as 127.0.0.1.
    """
    from twisted.internet._resolver import GAIResolver

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[Any]:
        found = list(socket.getaddrinfo(host, port, family, type, proto, flags))
        wanted = family in (socket.AF_UNSPEC, socket.AF_INET6)
        if host in ("localhost", b"localhost") and wanted and not any(
                info[0] == socket.AF_INET6 for info in found):
            found.insert(0, (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                             ("::1", int(port or 0), 0, 0)))
        return found

    @implementer(IReactorPluggableNameResolver)
    class WithResolver:
        nameResolver = GAIResolver(reactor, getaddrinfo=getaddrinfo)

        def installNameResolver(self, resolver: Any) -> Any:
            raise NotImplementedError()

        def __getattr__(self, name: str) -> Any:
            return getattr(reactor, name)

    return WithResolver()


def selfSigned(test: TestCase, name: str) -> tuple[str, str, str]:
    """
    A new self-signed certificate for C{name} and its key, as PEM files, and
    a directory holding only the certificate (C{tls:}'s C{trustRoots} is a
    directory of PEM files).
    """
    certificate, key = selfSignedCertificate(name)
    trustRoots = test.mktemp()
    os.mkdir(trustRoots)
    certificatePath = os.path.join(trustRoots, "certificate.pem")
    keyPath = test.mktemp() + ".key"
    with open(certificatePath, "wb") as f:
        f.write(certificate)
    with open(keyPath, "wb") as f:
        f.write(key)
    return certificatePath, keyPath, trustRoots

