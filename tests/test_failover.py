"""
Tests for L{endpointkit.failover}: C{fallback:} and C{race:}, with exact
timing on a L{Clock}, with real sockets on loopback, and as the CONNECT of
a real C{endpointkit relay} process.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.endpoints import clientFromString as twistedClientFromString
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

import endpointkit
from endpointkit import DescriptionError, buildDescription
from endpointkit._schema import EndpointType, Parsed, parseArguments
from endpointkit.deadline import ConnectTimeout
from endpointkit.failover import (
    AllMembersFailed,
    FallbackClientEndpoint,
    MemberCoolingDown,
    RaceClientEndpoint,
    fallbackType,
    raceType,
    servedBy,
)
from endpointkit.metrics import FailoverMetrics
from tests import test_deadline
from tests._support import (
    PYTHON,
    ROOT,
    LoggedProcess,
    fileDescriptorNumbers,
    freePort,
    waitForPort,
)
from tests.test_deadline import fullListener

TICK = 2.0 ** -10
"""
A step of the clock that floating point adds exactly.
"""

WAIT = 30.0
_reactor: Any = reactor


class Recorder(Protocol):
    """
    Records what happens to it.
    """

    def __init__(self) -> None:
        self.made = 0
        self.lost: Deferred[None] = Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        self.made += 1

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.lost.called:
            self.lost.callback(None)


class RecorderFactory(test_deadline.RecorderFactory):
    """
    L{test_deadline.RecorderFactory} of this module's L{Recorder}.
    """

    protocol = Recorder


@implementer(IStreamClientEndpoint)
class Scripted:
    """
    A member on a L{Clock}: every connect succeeds (builds, connects to a
    L{StringTransport} and fires) or fails after C{after} seconds, or never
    completes (C{after=None}).  It honours cancellation, or ignores it and
    completes anyway.

    @ivar starts: the clock's time at each connect.
    @ivar transports: the transports of the connections it made.
    """

    def __init__(self, clock: Clock, after: float | None = 0.0,
                 failWith: Exception | None = None, honourCancel: bool = True,
                 name: str = "member") -> None:
        self.clock = clock
        self.after = after
        self.failWith = failWith
        self.honourCancel = honourCancel
        self.name = name
        self.starts: list[float] = []
        self.cancelled = 0
        self.transports: list[StringTransport] = []

    def __repr__(self) -> str:
        return f"<Scripted {self.name}>"

    def connect(self, factory: Any) -> Deferred[Any]:
        self.starts.append(self.clock.seconds())
        calls: list[Any] = []

        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1
            if self.honourCancel:
                for call in calls:
                    if call.active():
                        call.cancel()

        d: Deferred[Any] = Deferred(cancel)

        def complete() -> None:
            if self.failWith is not None:
                if not d.called:
                    d.errback(self.failWith)
                return
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
            transport = StringTransport()
            self.transports.append(transport)
            protocol.makeConnection(transport)
            if not d.called:
                d.callback(protocol)

        if self.after == 0:
            complete()
        elif self.after is not None:
            calls.append(self.clock.callLater(self.after, complete))
        return d


def refused() -> ConnectionRefusedError:
    return ConnectionRefusedError("Connection refused")


class Result:
    """
    What a connect's L{Deferred} gave, and when.
    """

    def __init__(self, d: Deferred[Any], clock: Clock) -> None:
        self.value: Any = None
        self.at: float | None = None

        def done(result: Any) -> None:
            self.value = result
            self.at = clock.seconds()

        d.addBoth(done)

    @property
    def fired(self) -> bool:
        return self.at is not None

    def error(self) -> Any:
        assert isinstance(self.value, Failure), self.value
        return self.value.value


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class FallbackClockTests(SynchronousTestCase):
    """
    C{fallback:}'s rules, timed exactly on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = CollectorRegistry()
        self.factory = RecorderFactory()

    def fallback(self, *members: Scripted, **kw: Any) -> FallbackClientEndpoint:
        return FallbackClientEndpoint(self.clock, members, [m.name for m in members],
                                      metrics=FailoverMetrics(self.registry),
                                      description="fallback-under-test", **kw)

    def connect(self, endpoint: Any) -> Result:
        return Result(endpoint.connect(self.factory), self.clock)

    def count(self, name: str, member: str) -> float:
        return sample(self.registry, f"endpointkit_failover_{name}_total",
                      description="fallback-under-test", member=member)

    def test_firstConnects(self) -> None:
        a, b = Scripted(self.clock, name="a"), Scripted(self.clock, name="b")
        result = self.connect(self.fallback(a, b))
        self.assertEqual(result.at, 0)
        self.assertIs(result.value, self.factory.built[0])
        self.assertEqual(servedBy(result.value), "a")
        self.assertEqual((a.starts, b.starts), ([0], []))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual((self.count("attempts", "a"), self.count("wins", "a"),
                          self.count("attempts", "b")), (1, 1, 0))

    def test_failedMemberThenNext(self) -> None:
        """
        A member that fails after 2 s hands over to the next at once.
        """
        a = Scripted(self.clock, 2, refused(), name="a")
        b = Scripted(self.clock, 1, name="b")
        result = self.connect(self.fallback(a, b))
        self.clock.advance(2)
        self.assertEqual(b.starts, [2])
        self.assertFalse(result.fired)
        self.clock.advance(1)
        self.assertEqual(result.at, 3)
        self.assertEqual(servedBy(result.value), "b")
        self.assertEqual(self.count("failures", "a"), 1)
        self.assertEqual(self.count("wins", "b"), 1)

    def test_neverAnswersTimesOut(self) -> None:
        """
        A member that never answers fails at C{attemptTimeout} exactly, and
        its attempt is cancelled.
        """
        a = Scripted(self.clock, None, name="a")
        b = Scripted(self.clock, 0, name="b")
        endpoint = self.fallback(a, b, attemptTimeout=3)
        result = self.connect(endpoint)
        self.clock.advance(3 - TICK)
        self.assertEqual((b.starts, a.cancelled), ([], 0))
        self.clock.advance(TICK)
        self.assertEqual((b.starts, a.cancelled), ([3], 1))
        self.assertEqual(result.at, 3)
        self.assertEqual(endpoint.failedAt, [3, None])
        self.assertIn("timed out after 3 s", endpoint.lastReason[0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cooldownSkipsThenExpires(self) -> None:
        """
        A failed member is skipped until exactly C{cooldown} seconds after
        its failure, and tried again from then on.
        """
        a = Scripted(self.clock, 0, refused(), name="a")
        b = Scripted(self.clock, 0, name="b")
        endpoint = self.fallback(a, b, cooldown=30)
        self.clock.advance(5)
        self.connect(endpoint)
        self.assertEqual((a.starts, b.starts), ([5], [5]))
        self.clock.advance(30 - TICK)
        self.connect(endpoint)
        self.assertEqual((a.starts, b.starts), ([5], [5, 35 - TICK]))
        self.assertEqual(self.count("cooldown_skips", "a"), 1)
        self.clock.advance(TICK)
        self.connect(endpoint)
        self.assertEqual(a.starts, [5, 35])
        self.assertEqual(self.count("attempts", "a"), 2)
        self.assertEqual(self.count("wins", "b"), 3)

    def test_cooldownZero(self) -> None:
        a = Scripted(self.clock, 0, refused(), name="a")
        b = Scripted(self.clock, 0, name="b")
        endpoint = self.fallback(a, b, cooldown=0)
        for _ in range(3):
            self.connect(endpoint)
        self.assertEqual(len(a.starts), 3)
        self.assertEqual(self.count("cooldown_skips", "a"), 0)

    def test_successClearsCooldown(self) -> None:
        a = Scripted(self.clock, 0, refused(), name="a")
        b = Scripted(self.clock, 0, name="b")
        endpoint = self.fallback(a, b, cooldown=10)
        self.connect(endpoint)
        a.failWith = None
        self.clock.advance(10)
        result = self.connect(endpoint)
        self.assertEqual(servedBy(result.value), "a")
        self.assertEqual(endpoint.failedAt, [None, None])
        self.clock.advance(1)
        self.connect(endpoint)
        self.assertEqual(a.starts, [0, 10, 11])

    def test_allCoolingTriesLongestAgo(self) -> None:
        """
        With every member cooling down, one attempt is made: through the
        member that failed longest ago.
        """
        a = Scripted(self.clock, 0, refused(), name="a")
        b = Scripted(self.clock, 1, refused(), name="b")
        endpoint = self.fallback(a, b, cooldown=60)
        first = self.connect(endpoint)
        self.clock.advance(1)
        self.assertIsInstance(first.error(), AllMembersFailed)
        self.assertEqual(endpoint.failedAt, [0, 1])
        self.clock.advance(4)
        second = self.connect(endpoint)
        self.assertEqual((a.starts, b.starts), ([0, 5], [0]))
        error = second.error()
        self.assertIsInstance(error, AllMembersFailed)
        self.assertIsInstance(error.reasons[1][1], MemberCoolingDown)
        self.assertEqual(str(error.reasons[1][1]),
                         "not tried: cooling down for 56 s more, after failing 4 s ago "
                         "(Connection was refused by other side: Connection refused)")
        # Now b failed longest ago.
        self.connect(endpoint)
        self.assertEqual((a.starts, b.starts), ([0, 5], [0, 5]))

    def test_coolingMemberProbedWhenTheRestFail(self) -> None:
        """
        When the members not cooling down all fail in a connect, the one
        cooling down is tried once before giving up.
        """
        a = Scripted(self.clock, 0, refused(), name="a")
        b = Scripted(self.clock, 0, name="b")
        endpoint = self.fallback(a, b, cooldown=60)
        self.connect(endpoint)
        b.failWith = refused()
        a.failWith = None
        self.clock.advance(3)
        result = self.connect(endpoint)
        self.assertEqual((a.starts, b.starts), ([0, 3], [0, 3]))
        self.assertEqual(servedBy(result.value), "a")
        self.assertEqual(self.count("cooldown_skips", "a"), 1)

    def test_allFailListsEach(self) -> None:
        """
        L{AllMembersFailed} is a L{ConnectError} naming each member's masked
        description and reason, in order.
        """
        clock = self.clock
        secret = "s3cret-pw"
        description = buildDescription(
            "fallback", buildDescription("tcp", "127.0.0.1", freePort()),
            buildDescription("socks5", "example.com", 80, endpoint="memory:nowhere",
                             user="u", password=secret),
            attemptTimeout=2)
        endpoint = endpointkit.clientFromString(clock, description)
        self.assertNotIn(secret, repr(endpoint))
        member = endpoint.descriptions[1]
        self.assertIn("password=***", member)
        endpoint.timed[0].endpoint = Scripted(clock, 0, refused())
        endpoint.timed[1].endpoint = Scripted(clock, None)
        result = self.connect(endpoint)
        clock.advance(2)
        error = result.error()
        self.assertIsInstance(error, ConnectError)
        self.assertEqual(
            str(error),
            f"fallback: all 2 members failed: 1. {endpoint.descriptions[0]}: Connection was "
            f"refused by other side: Connection refused; 2. {member}: connecting to {member} "
            "timed out after 2 s")
        self.assertNotIn(secret, str(error))
        self.assertEqual([d for d, _ in error.reasons], endpoint.descriptions)
        self.assertIsInstance(error.reasons[1][1], ConnectTimeout)
        self.assertEqual(sample(self.registry, "endpointkit_failover_all_failed_total",
                                description="fallback-under-test"), 0)

    def test_cancelFirstMember(self) -> None:
        a = Scripted(self.clock, None, name="a")
        b = Scripted(self.clock, 0, name="b")
        endpoint = self.fallback(a, b)
        d = endpoint.connect(self.factory)
        result = Result(d, self.clock)
        d.cancel()
        self.assertIsInstance(result.error(), CancelledError)
        self.assertEqual((a.cancelled, b.starts), (1, []))
        self.assertEqual(endpoint.failedAt, [None, None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelSecondMember(self) -> None:
        a = Scripted(self.clock, 1, refused(), name="a")
        b = Scripted(self.clock, None, name="b")
        endpoint = self.fallback(a, b)
        d = endpoint.connect(self.factory)
        result = Result(d, self.clock)
        self.clock.advance(1)
        self.clock.advance(0.5)
        d.cancel()
        self.assertIsInstance(result.error(), CancelledError)
        self.assertEqual(b.cancelled, 1)
        self.assertEqual(endpoint.failedAt, [1, None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelAfterConnected(self) -> None:
        a = Scripted(self.clock, 0, name="a")
        endpoint = self.fallback(a)
        d = endpoint.connect(self.factory)
        result = Result(d, self.clock)
        d.cancel()
        self.assertIs(result.value, self.factory.built[0])
        self.assertFalse(a.transports[0].disconnecting)

    def test_cancelIgnoredLateConnectClosed(self) -> None:
        """
        A member that ignores cancellation and connects later: the connect
        has failed with L{CancelledError}, and the late connection is closed
        without the caller's factory building anything for it.
        """
        a = Scripted(self.clock, 5, honourCancel=False, name="a")
        endpoint = self.fallback(a)
        d = endpoint.connect(self.factory)
        result = Result(d, self.clock)
        self.clock.advance(1)
        d.cancel()
        self.assertIsInstance(result.error(), CancelledError)
        self.clock.advance(4)
        self.assertEqual(self.factory.built, [])
        self.assertTrue(a.transports[0].disconnecting)

    def test_lateConnectAfterDeadlineClosed(self) -> None:
        """
        A member that ignores the cancellation at its deadline and connects
        later: the next member serves, the late connection is closed and
        never delivered.
        """
        a = Scripted(self.clock, 5, honourCancel=False, name="a")
        b = Scripted(self.clock, 1, name="b")
        endpoint = self.fallback(a, b, attemptTimeout=2)
        result = self.connect(endpoint)
        self.clock.advance(2)
        self.assertEqual(b.starts, [2])
        self.clock.advance(1)
        self.assertEqual(result.at, 3)
        self.assertEqual(servedBy(result.value), "b")
        self.clock.advance(2)
        self.assertEqual(len(self.factory.built), 1)
        self.assertTrue(a.transports[0].disconnecting)
        self.assertFalse(b.transports[0].disconnecting)

    def test_synchronousFailures(self) -> None:
        """
        Members that fail within C{connect} hand over at once, all of them.
        """
        members = [Scripted(self.clock, 0, refused(), name=str(i)) for i in range(20)]
        result = self.connect(self.fallback(*members))
        self.assertEqual(len(result.error().reasons), 20)
        self.assertEqual(sample(self.registry, "endpointkit_failover_all_failed_total",
                                description="fallback-under-test"), 1)


class ServedByTests(SynchronousTestCase):
    """
    L{servedBy} for protocols that keep attributes, that keep none (slots
    only, noted in a weak map), and that are neither.
    """

    def test_kinds(self) -> None:
        from endpointkit.failover import _remember

        class Slotted:
            __slots__ = ("__weakref__",)

        class Bare:
            __slots__ = ()

        plain, slotted, bare = Recorder(), Slotted(), Bare()
        for protocol in (plain, slotted, bare):
            self.assertIsNone(servedBy(protocol))
            _remember(protocol, "tcp:127.0.0.1:1")
        self.assertEqual(servedBy(plain), "tcp:127.0.0.1:1")
        self.assertEqual(servedBy(slotted), "tcp:127.0.0.1:1")
        self.assertIsNone(servedBy(bare))
        _remember(plain, "outer")
        self.assertEqual(servedBy(plain), "outer")

    def test_nested(self) -> None:
        """
        Through a C{fallback:} inside a C{race:}, the outer endpoint names
        its member: the C{fallback:}.
        """
        clock = Clock()
        inner = FallbackClientEndpoint(clock, [Scripted(clock, name="a")], ["a"],
                                       metrics=FailoverMetrics(CollectorRegistry()))
        outer = RaceClientEndpoint(clock, [inner], ["fallback:a"],
                                   metrics=FailoverMetrics(CollectorRegistry()))
        result = Result(outer.connect(RecorderFactory()), clock)
        self.assertEqual(servedBy(result.value), "fallback:a")


class RaceClockTests(SynchronousTestCase):
    """
    C{race:}'s rules, timed exactly on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = CollectorRegistry()
        self.factory = RecorderFactory()

    def race(self, *members: Scripted, **kw: Any) -> RaceClientEndpoint:
        return RaceClientEndpoint(self.clock, members, [m.name for m in members],
                                  metrics=FailoverMetrics(self.registry),
                                  description="race-under-test", **kw)

    def connect(self, endpoint: Any) -> Result:
        return Result(endpoint.connect(self.factory), self.clock)

    def count(self, name: str, member: str) -> float:
        return sample(self.registry, f"endpointkit_failover_{name}_total",
                      description="race-under-test", member=member)

    def test_staggered(self) -> None:
        """
        Members start C{delay} apart while none has answered.
        """
        members = [Scripted(self.clock, None, name=str(i)) for i in range(3)]
        self.connect(self.race(*members, delay=0.25))
        self.assertEqual([m.starts for m in members], [[0], [], []])
        self.clock.advance(0.25 - TICK)
        self.assertEqual(members[1].starts, [])
        self.clock.advance(TICK)
        self.assertEqual(members[1].starts, [0.25])
        self.clock.advance(0.25)
        self.assertEqual(members[2].starts, [0.5])

    def test_failureStartsNextAtOnce(self) -> None:
        a = Scripted(self.clock, 0.125, refused(), name="a")
        b = Scripted(self.clock, None, name="b")
        c = Scripted(self.clock, None, name="c")
        self.connect(self.race(a, b, c, delay=0.25))
        self.clock.advance(0.125)
        self.assertEqual(b.starts, [0.125])
        self.clock.advance(0.25 - TICK)
        self.assertEqual(c.starts, [])
        self.clock.advance(TICK)
        self.assertEqual(c.starts, [0.375])

    def test_fastLaterMemberWins(self) -> None:
        """
        A member delayed by 0.5 s loses to a later one that answers in
        1/64 s; the loser is cancelled and nothing is left on the clock.
        """
        slow = Scripted(self.clock, 0.5, name="slow")
        fast = Scripted(self.clock, 1 / 64, name="fast")
        result = self.connect(self.race(slow, fast, delay=0.25))
        self.clock.advance(0.25)
        self.assertEqual(fast.starts, [0.25])
        self.assertFalse(result.fired)
        self.clock.advance(1 / 64)
        self.assertEqual(result.at, 0.25 + 1 / 64)
        self.assertEqual(servedBy(result.value), "fast")
        self.assertEqual(slow.cancelled, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.factory.built), 1)
        self.assertEqual((self.count("wins", "fast"), self.count("wins", "slow"),
                          self.count("attempts", "slow")), (1, 0, 1))

    def test_firstWinsBeforeNextStarts(self) -> None:
        a = Scripted(self.clock, 0.1, name="a")
        b = Scripted(self.clock, 0, name="b")
        result = self.connect(self.race(a, b))
        self.clock.advance(0.1)
        self.assertEqual(servedBy(result.value), "a")
        self.assertEqual(b.starts, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_loserConnectsAnywayIsClosed(self) -> None:
        """
        A losing member that ignores cancellation and connects later has its
        connection closed before any protocol of the caller sees it.
        """
        stubborn = Scripted(self.clock, 1, honourCancel=False, name="stubborn")
        fast = Scripted(self.clock, 0.0625, name="fast")
        result = self.connect(self.race(stubborn, fast, delay=0.125))
        self.clock.advance(0.125)
        self.clock.advance(0.0625)
        self.assertEqual(servedBy(result.value), "fast")
        self.clock.advance(1)
        self.assertEqual(len(stubborn.transports), 1)
        self.assertTrue(stubborn.transports[0].disconnecting)
        self.assertEqual([p.made for p in self.factory.built], [1])

    def test_allFail(self) -> None:
        a = Scripted(self.clock, 0.25, refused(), name="a")
        b = Scripted(self.clock, None, name="b")
        result = self.connect(self.race(a, b, delay=0.5, attemptTimeout=1))
        self.clock.advance(0.25)
        self.assertEqual(b.starts, [0.25])
        self.clock.advance(1 - TICK)
        self.assertFalse(result.fired)
        self.clock.advance(TICK)
        error = result.error()
        self.assertIsInstance(error, AllMembersFailed)
        self.assertEqual(result.at, 1.25)
        self.assertEqual(str(error), "race: all 2 members failed: 1. a: Connection was refused "
                         "by other side: Connection refused; 2. b: connecting to b timed out "
                         "after 1 s")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelBeforeSecondStarts(self) -> None:
        a = Scripted(self.clock, None, name="a")
        b = Scripted(self.clock, 0, name="b")
        d = self.race(a, b).connect(self.factory)
        result = Result(d, self.clock)
        self.clock.advance(0.1)
        d.cancel()
        self.assertIsInstance(result.error(), CancelledError)
        self.assertEqual((a.cancelled, b.starts), (1, []))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelWhileBothRun(self) -> None:
        a = Scripted(self.clock, None, name="a")
        b = Scripted(self.clock, None, name="b")
        d = self.race(a, b).connect(self.factory)
        result = Result(d, self.clock)
        self.clock.advance(0.3)
        d.cancel()
        self.assertIsInstance(result.error(), CancelledError)
        self.assertEqual((a.cancelled, b.cancelled), (1, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_delayZeroStartsAll(self) -> None:
        members = [Scripted(self.clock, None, name=str(i)) for i in range(3)]
        self.connect(self.race(*members, delay=0))
        self.assertEqual([m.starts for m in members], [[0], [0], [0]])

    def test_synchronousFailures(self) -> None:
        members = [Scripted(self.clock, 0, refused(), name=str(i)) for i in range(3)]
        members.append(Scripted(self.clock, 0, name="ok"))
        result = self.connect(self.race(*members))
        self.assertEqual(servedBy(result.value), "ok")
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ParsingTests(SynchronousTestCase):
    def test_declared(self) -> None:
        self.assertEqual([arg.name for arg in fallbackType.args],
                         ["endpoints", "attemptTimeout", "cooldown"])
        self.assertEqual([arg.name for arg in raceType.args],
                         ["endpoints", "delay", "attemptTimeout"])
        self.assertEqual((fallbackType.side, raceType.side), ("client", "client"))

    def test_built(self) -> None:
        clock = Clock()
        for parse in (endpointkit.clientFromString, twistedClientFromString):
            endpoint = parse(clock, "fallback:unix\\:/run/app.sock:tcp\\:127.0.0.1\\:8080"
                                    ":attemptTimeout=2.5:cooldown=0")
            self.assertIsInstance(endpoint, FallbackClientEndpoint)
            self.assertEqual(endpoint.descriptions, ["unix:/run/app.sock", "tcp:127.0.0.1:8080"])
            self.assertEqual((endpoint.attemptTimeout, endpoint.cooldown), (2.5, 0))
            race = parse(clock, buildDescription("race", "tcp:127.0.0.1:1", "memory:x",
                                                 delay=0.5))
            self.assertIsInstance(race, RaceClientEndpoint)
            self.assertEqual((race.delay, race.attemptTimeout), (0.5, 10))

    def test_defaults(self) -> None:
        endpoint = endpointkit.clientFromString(Clock(), "fallback:memory\\:a")
        self.assertEqual((endpoint.attemptTimeout, endpoint.cooldown), (10, 30))
        self.assertEqual(endpointkit.clientFromString(Clock(), "race:memory\\:a").delay, 0.25)

    def test_errors(self) -> None:
        cases = {
            "fallback": "fallback: missing required argument 'endpoints'",
            "fallback:tcp\\:127.0.0.1\\:80:cooldown=-1":
                "fallback: argument 'cooldown' must be a number of seconds, zero or more, "
                "got '-1'",
            "race:tcp\\:127.0.0.1\\:80:delay=soon":
                "race: argument 'delay' must be a number of seconds, zero or more, got 'soon'",
            "race:tcp\\:127.0.0.1\\:80:attemptTimeout=0":
                "race: argument 'attemptTimeout' must be a positive number of seconds, got '0'",
            "fallback:tcp\\:127.0.0.1\\:80:cooldwn=1":
                "fallback: unknown argument 'cooldwn'; did you mean 'cooldown'?",
            "fallback:tcp\\:127.0.0.1": "fallback: argument 'endpoints': tcp: missing required "
                                         "argument 'port'",
            "fallback:tcp\\:127.0.0.1\\:80:endpoints=x":
                "fallback: argument 'endpoints' is given by position, not as a keyword",
        }
        for description, start in cases.items():
            with self.assertRaises(DescriptionError) as caught:
                endpointkit.clientFromString(Clock(), description)
            self.assertTrue(str(caught.exception).startswith(start),
                            (description, str(caught.exception)))

    def test_insecureMemberWarned(self) -> None:
        """
        What a member declares insecure is among the warnings of the whole
        description (C{check} and the log show them).
        """
        lax = EndpointType("lax", "client", (), "test", factory=lambda reactor: None,
                           insecure=lambda values: ["verification is off"])

        def parseNested(text: str, side: Any) -> Parsed:
            if text == "lax":
                return parseArguments(lax, [], [], parseNested)
            return endpointkit.parseDescription(text, side)

        for etype in (fallbackType, raceType):
            parsed = parseArguments(etype, ["tcp:127.0.0.1:80", "lax"], [], parseNested)
            self.assertEqual(parsed.warnings(), ["lax: verification is off"])

    def test_secretsMasked(self) -> None:
        inner = buildDescription("socks5", "example.com", 80, endpoint="tcp:127.0.0.1:1080",
                                 user="u", password="hunter2")
        for prefix in ("fallback", "race"):
            endpoint = endpointkit.clientFromString(Clock(), buildDescription(prefix, inner))
            self.assertNotIn("hunter2", repr(endpoint))
            self.assertNotIn("hunter2", endpoint.description)
            self.assertIn("***", endpoint.descriptions[0])

    def test_fromPython(self) -> None:
        with self.assertRaises(ValueError):
            FallbackClientEndpoint(Clock(), [])
        with self.assertRaises(ValueError):
            RaceClientEndpoint(Clock(), [Scripted(Clock())], ["a", "b"])
        endpoint = FallbackClientEndpoint(Clock(), [Scripted(Clock(), name="x")],
                                          metrics=FailoverMetrics(CollectorRegistry()))
        self.assertEqual(endpoint.descriptions, ["<Scripted x>"])


# Real sockets on loopback.


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class CountingServer(Factory):
    noisy = False

    def __init__(self) -> None:
        self.built: list[Recorder] = []

    def buildProtocol(self, addr: Any) -> Recorder:
        protocol = Recorder()
        self.built.append(protocol)
        return protocol


@implementer(IStreamClientEndpoint)
class LateTCP:
    """
    A real TCP member that ignores cancellation: it starts connecting
    C{wait} seconds after C{connect} and fires its L{Deferred} (one with no
    canceller) whatever happened meanwhile.
    """

    def __init__(self, port: int, wait: float) -> None:
        self.port = port
        self.wait = wait
        self.connected: list[Any] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()

        def go() -> None:
            attempt = TCP4ClientEndpoint(_reactor, "127.0.0.1", self.port).connect(factory)
            attempt.addCallback(self.connected.append)
            attempt.chainDeferred(d)

        _reactor.callLater(self.wait, go)
        return d


def within(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    return d.addTimeout(seconds, _reactor)


async def until(condition: Any, what: str, seconds: float = WAIT) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(_reactor, 0.01, lambda: None)


class LoopbackTests(TestCase):
    """
    C{fallback:} and C{race:} over real loopback sockets.
    """

    timeout = 180

    def setUp(self) -> None:
        self.registry = CollectorRegistry()

    async def server(self, factory: Any = None) -> tuple[Any, int]:
        server = factory if factory is not None else CountingServer()
        port = await within(TCP4ServerEndpoint(_reactor, 0, interface="127.0.0.1")
                            .listen(server))
        self.addCleanup(port.stopListening)
        return server, port.getHost().port

    def build(self, description: str) -> Any:
        endpoint = endpointkit.clientFromString(_reactor, description)
        endpoint.metrics = FailoverMetrics(self.registry).bind(
            endpoint.description, endpoint.descriptions)
        return endpoint

    async def connected(self, endpoint: Any) -> Recorder:
        factory = RecorderFactory()
        protocol = await within(endpoint.connect(factory))
        self.addCleanup(lambda: protocol.transport is not None
                        and protocol.transport.abortConnection())
        return protocol  # type: ignore[no-any-return]

    async def close(self, protocol: Recorder) -> None:
        protocol.transport.loseConnection()  # type: ignore[union-attr]
        await within(protocol.lost)

    async def test_refusedMember(self) -> None:
        """
        A refused member hands over to the live one at once; the next
        connect skips it.
        """
        server, live = await self.server()
        dead = freePort()
        endpoint = self.build(buildDescription(
            "fallback", f"tcp:127.0.0.1:{dead}", f"tcp:127.0.0.1:{live}"))
        first = await self.connected(endpoint)
        self.assertEqual(servedBy(first), f"tcp:127.0.0.1:{live}")
        self.assertIsNotNone(endpoint.failedAt[0])
        self.assertIn("refused", endpoint.lastReason[0])
        second = await self.connected(endpoint)
        self.assertEqual(servedBy(second), f"tcp:127.0.0.1:{live}")
        self.assertEqual(sample(self.registry, "endpointkit_failover_attempts_total",
                                description=endpoint.description,
                                member=f"tcp:127.0.0.1:{dead}"), 1)
        await until(lambda: len(server.built) == 2, "both connections at the server")
        await self.close(first)
        await self.close(second)

    async def test_neverAnswersThenLive(self) -> None:
        """
        A member behind a full accept queue fails at C{attemptTimeout}.
        """
        _, live = await self.server()
        blackhole = fullListener(self)
        endpoint = self.build(buildDescription(
            "fallback", f"tcp:127.0.0.1:{blackhole}", f"tcp:127.0.0.1:{live}",
            attemptTimeout=0.5))
        started = time.monotonic()
        protocol = await self.connected(endpoint)
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.5)
        self.assertLess(elapsed, 10)
        self.assertEqual(servedBy(protocol), f"tcp:127.0.0.1:{live}")
        self.assertIn("timed out after 0.5 s", endpoint.lastReason[0])
        await self.close(protocol)

    async def test_allFailReal(self) -> None:
        blackhole = fullListener(self)
        dead = freePort()
        endpoint = self.build(buildDescription(
            "fallback", f"tcp:127.0.0.1:{dead}", f"tcp:127.0.0.1:{blackhole}",
            attemptTimeout=0.3))
        error = await self.assertFailure(within(endpoint.connect(RecorderFactory())),
                                         AllMembersFailed)
        self.assertIsInstance(error.reasons[0][1], ConnectionRefusedError)
        self.assertIsInstance(error.reasons[1][1], ConnectTimeout)

    async def test_slowFailureFastLater(self) -> None:
        """
        C{race:} with a first member that never answers and a live second
        one connects through the second, C{delay} after the start.
        """
        _, live = await self.server()
        blackhole = fullListener(self)
        endpoint = self.build(buildDescription(
            "race", f"tcp:127.0.0.1:{blackhole}", f"tcp:127.0.0.1:{live}", delay=0.2))
        started = time.monotonic()
        protocol = await self.connected(endpoint)
        self.assertGreaterEqual(time.monotonic() - started, 0.2)
        self.assertEqual(servedBy(protocol), f"tcp:127.0.0.1:{live}")
        await self.close(protocol)

    async def test_cooldownExpiry(self) -> None:
        _, live = await self.server()
        dead = freePort()
        endpoint = self.build(buildDescription(
            "fallback", f"tcp:127.0.0.1:{dead}", f"tcp:127.0.0.1:{live}", cooldown=0.3))
        member = f"tcp:127.0.0.1:{dead}"

        def attempts() -> float:
            return sample(self.registry, "endpointkit_failover_attempts_total",
                          description=endpoint.description, member=member)

        for _ in range(2):
            await self.close(await self.connected(endpoint))
        self.assertEqual(attempts(), 1)
        await task.deferLater(_reactor, 0.35, lambda: None)
        await self.close(await self.connected(endpoint))
        self.assertEqual(attempts(), 2)

    async def test_cancelEachStage(self) -> None:
        """
        Cancelling while the first member connects (a full queue), and while
        the second one does after the first was refused, leaves no
        descriptor and no delayed call.
        """
        blackhole = fullListener(self)
        dead = freePort()
        await task.deferLater(_reactor, 0, lambda: None)
        descriptors = fileDescriptorNumbers()
        delayed = len(_reactor.getDelayedCalls())
        for members in ([f"tcp:127.0.0.1:{blackhole}"],
                        [f"tcp:127.0.0.1:{dead}", f"tcp:127.0.0.1:{blackhole}"]):
            for prefix in ("fallback", "race"):
                endpoint = self.build(buildDescription(prefix, *members, cooldown=0)
                                      if prefix == "fallback"
                                      else buildDescription(prefix, *members))
                d = endpoint.connect(RecorderFactory())
                await task.deferLater(_reactor, 0.2, lambda: None)
                d.cancel()
                await self.assertFailure(d, CancelledError)
        await task.deferLater(_reactor, 0.05, lambda: None)
        self.assertEqual(fileDescriptorNumbers() - descriptors, set())
        self.assertEqual(len(_reactor.getDelayedCalls()), delayed)

    async def test_lateConnectClosed(self) -> None:
        """
        A C{race:} member that ignores cancellation connects after another
        won: that connection reaches the server and is closed, and the
        caller's factory never builds a protocol for it.
        """
        server, live = await self.server()
        late = LateTCP(live, 0.3)
        endpoint = RaceClientEndpoint(
            _reactor, [late, TCP4ClientEndpoint(_reactor, "127.0.0.1", live)],
            ["late", "fast"], delay=0.05, metrics=FailoverMetrics(self.registry))
        factory = RecorderFactory()
        protocol = await within(endpoint.connect(factory))
        self.assertEqual(servedBy(protocol), "fast")
        await until(lambda: len(server.built) == 2, "the late connection at the server")
        await within(server.built[1].lost)
        self.assertEqual(len(factory.built), 1)
        self.assertEqual(protocol.made, 1)
        self.assertFalse(server.built[0].lost.called)
        await self.close(protocol)

    async def manyConnects(self, endpoint: Any, count: int = 1000) -> None:
        await task.deferLater(_reactor, 0, lambda: None)
        descriptors = fileDescriptorNumbers()
        delayed = len(_reactor.getDelayedCalls())
        done = 0
        while done < count:
            batch = min(50, count - done)
            protocols = await within(defer.gatherResults(
                [endpoint.connect(RecorderFactory()) for _ in range(batch)]))
            for protocol in protocols:
                protocol.transport.loseConnection()
            await within(defer.gatherResults([p.lost for p in protocols]))
            done += batch
        await task.deferLater(_reactor, 0.1, lambda: None)
        self.assertEqual(fileDescriptorNumbers() - descriptors, set())
        self.assertEqual(len(_reactor.getDelayedCalls()), delayed)

    async def test_thousandFallback(self) -> None:
        """
        1,000 connects through C{fallback:} with a refused first member.
        """
        _, live = await self.server(Factory.forProtocol(Echo))
        endpoint = self.build(buildDescription(
            "fallback", f"tcp:127.0.0.1:{freePort()}", f"tcp:127.0.0.1:{live}", cooldown=0.5))
        await self.manyConnects(endpoint)
        self.assertEqual(sample(self.registry, "endpointkit_failover_wins_total",
                                description=endpoint.description,
                                member=f"tcp:127.0.0.1:{live}"), 1000)

    async def test_thousandRace(self) -> None:
        """
        1,000 connects through C{race:} with two live members started
        together: each time one wins and the other is cancelled or closed.
        """
        _, one = await self.server(Factory.forProtocol(Echo))
        _, other = await self.server(Factory.forProtocol(Echo))
        endpoint = self.build(buildDescription(
            "race", f"tcp:127.0.0.1:{one}", f"tcp:127.0.0.1:{other}", delay=0))
        await self.manyConnects(endpoint)
        wins = sum(sample(self.registry, "endpointkit_failover_wins_total",
                          description=endpoint.description, member=member)
                   for member in endpoint.descriptions)
        self.assertEqual(wins, 1000)


# The relay.


Process = LoggedProcess


def greeting(port: int) -> str:
    """
    Connect to C{port}, read the backend's greeting line (its pid), and
    close.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.settimeout(WAIT)
        line = b""
        while not line.endswith(b"\n"):
            chunk = s.recv(100)
            if not chunk:
                break
            line += chunk
        return line.decode()


class RelayTests(TestCase):
    """
    C{endpointkit relay} with C{fallback:} as its CONNECT, against backend
    processes.
    """

    timeout = 120

    def backend(self) -> tuple[Process, int]:
        port = freePort()
        process = Process(self, [PYTHON, os.path.join(ROOT, "tests", "servers_pidecho.py"),
                                 f"tcp:{port}:interface=127.0.0.1"])
        waitForPort(port, process=process.process, timeout=WAIT)
        return process, port

    def test_backendKilledMidRun(self) -> None:
        """
        With the primary killed, the next new connection goes to the backup
        within one attempt, and the relay's log names the member that
        failed; the connections after it skip the primary.
        """
        primary, primaryPort = self.backend()
        backup, backupPort = self.backend()
        listen = freePort()
        connect = buildDescription("fallback", f"tcp:127.0.0.1:{primaryPort}",
                                   f"tcp:127.0.0.1:{backupPort}", attemptTimeout=3)
        relay = Process(self, [PYTHON, "-m", "endpointkit", "relay",
                               f"tcp:{listen}:interface=127.0.0.1", connect])
        waitForPort(listen, process=relay.process, timeout=WAIT)
        for _ in range(3):
            self.assertEqual(greeting(listen).split()[0], f"pid={primary.process.pid}")
        primary.process.send_signal(signal.SIGKILL)
        primary.process.wait(WAIT)
        started = time.monotonic()
        self.assertEqual(greeting(listen).split()[0], f"pid={backup.process.pid}")
        self.assertLess(time.monotonic() - started, 3)
        for _ in range(5):
            self.assertEqual(greeting(listen).split()[0], f"pid={backup.process.pid}")
        deadline = time.monotonic() + WAIT
        needle = f"fallback: tcp:127.0.0.1:{primaryPort} failed"
        while needle not in relay.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        output = relay.output()
        self.assertIn(needle, output)
        self.assertEqual(output.count(needle), 1, output)
        self.assertNotIn("could not connect", output)
