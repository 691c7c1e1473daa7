"""
Several ways to reach one service: C{fallback:} tries client descriptions in
order, C{race:} starts them staggered and takes the first that connects::

    fallback:unix\\:/run/app.sock:tcp\\:127.0.0.1\\:8080
    fallback:tcp\\:primary\\:80:tcp\\:backup\\:80:attemptTimeout=3:cooldown=60
    race:tcp\\:127.0.0.1\\:8080:socks5\\:example.com\\:80\\:endpoint\\=tcp\\\\\\:127.0.0.1\\\\\\:1080
    race:tcp\\:a.example\\:80:tcp\\:b.example\\:80:delay=0.5

or, from Python::

    buildDescription("fallback", "unix:/run/app.sock", "tcp:127.0.0.1:8080", cooldown=10)

Each member is one escaped positional argument, as C{multi:} takes its
members, and any client description (Twisted's, endpointkit's, a third
party's).  Every attempt has its own deadline (C{attemptTimeout}, default 10
seconds, through L{endpointkit.deadline.TimeoutEndpoint}), so a member that
never answers counts as failed, and a connection a member completes after
its attempt ended is closed before its protocol sees C{connectionMade}.

C{fallback:} tries the members in order until one connects.  A member that
failed is skipped for C{cooldown} seconds (default 30; 0 turns cooling off),
counted from when its failure was seen; when no member that is not cooling
down is left to try in a connect, the one that failed longest ago is tried
once more (so with every member cooling down, a connect makes exactly one
attempt).  A member that connects stops cooling down.  The cooling state
belongs to the endpoint object: every connect through one C{fallback:}
endpoint (the relay builds its CONNECT endpoint once) shares it; two
endpoints built from the same description do not.

C{race:} starts the first member, and each next one C{delay} seconds
(default 0.25, as RFC 8305 does for addresses) after the one before, or at
once when the one before fails; the first to connect wins and every other
attempt is cancelled.

When every member fails, the L{Deferred} fails with L{AllMembersFailed},
which lists each member's description (secrets masked) and its reason.
Cancelling the L{Deferred} cancels every member attempt under way.

Each endpoint counts its attempts, failures, cooldown skips and winners by
member in L{endpointkit.metrics} (prometheus_client's global registry unless
one is given).  L{servedBy} names the member a connected protocol came
through.

A C{tcp:} or C{unix:} member with a whole-second C{attemptTimeout} (the
default 10 is one) keeps the attempt deadline in its own connector, as
C{timeout:} arranges, and is connected with nothing between it and the
caller's factory; with fractions of a second, or for any other member, the
deadline is a timer of its own per attempt.

Around the relay's CONNECT, mind the relay's own C{--connect-timeout}
(default 10 s) bounds the whole connect: set C{attemptTimeout} below it
divided by the members, so that the backup is reached when the primary never
answers.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, TimeoutError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit._grammar import DescriptionError, buildDescription, formatSeconds
from endpointkit._kinds import Nested, Seconds
from endpointkit._schema import Arg, EndpointType, Parsed
from endpointkit.deadline import (
    ConnectTimeout,
    TimeoutEndpoint,
    _asFactory,
    _factoryClasses,
    _withDeadline,
    describeEndpoint,
)
from endpointkit.metrics import BoundFailoverMetrics, FailoverMetrics, failoverMetrics

__all__ = [
    "AllMembersFailed",
    "FallbackClientEndpoint",
    "MemberCoolingDown",
    "RaceClientEndpoint",
    "fallbackType",
    "raceType",
    "servedBy",
]

_log = Logger()

DEFAULT_ATTEMPT_TIMEOUT = 10.0
DEFAULT_COOLDOWN = 30.0
DEFAULT_DELAY = 0.25


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.rstrip(".")


def _seconds(value: float) -> str:
    return f"{formatSeconds(round(value, 3))} s"


class MemberCoolingDown(ConnectError):
    """
    The reason L{AllMembersFailed} gives for a C{fallback:} member that was
    not tried, because it failed less than C{cooldown} seconds before.

    @ivar description: the member's description (secrets masked).
    @ivar failedAgo: seconds since its last failure.
    @ivar remaining: seconds it still cools down for.
    @ivar lastReason: why it failed last.
    """

    def __init__(self, description: str, failedAgo: float, remaining: float,
                 lastReason: str) -> None:
        self.description = description
        self.failedAgo = failedAgo
        self.remaining = remaining
        self.lastReason = lastReason
        self.osError = None
        Exception.__init__(
            self, f"not tried: cooling down for {_seconds(remaining)} more, "
            f"after failing {_seconds(failedAgo)} ago ({lastReason})")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.description, self.failedAgo, self.remaining,
                             self.lastReason))


class AllMembersFailed(ConnectError):
    """
    Every member of a C{fallback:} or C{race:} endpoint failed (or, for
    C{fallback:}, was cooling down and not tried).

    @ivar prefix: C{"fallback"} or C{"race"}.
    @ivar reasons: C{(description, exception)} for each member, in
        description order; descriptions have their secrets masked.
    """

    def __init__(self, prefix: str, reasons: Sequence[tuple[str, BaseException]]) -> None:
        self.prefix = prefix
        self.reasons = list(reasons)
        listed = "; ".join(f"{index}. {description}: {_reason(error)}"
                           for index, (description, error) in enumerate(self.reasons, 1))
        count = len(self.reasons)
        self.osError = None
        Exception.__init__(
            self, f"{prefix}: {'the only member' if count == 1 else f'all {count} members'}"
            f" failed: {listed}")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.prefix, self.reasons))


_SERVED_BY = "_endpointkit_servedBy"

# For the rare protocol that has no __dict__ (one with __slots__).
_servedBy: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def servedBy(protocol: object) -> str | None:
    """
    The description (secrets masked) of the C{fallback:} or C{race:} member
    through which C{protocol} was connected, or L{None} when it was not
    connected through one (or keeps no attributes and cannot be weakly
    referenced).
    """
    try:
        found = vars(protocol).get(_SERVED_BY)
    except TypeError:
        try:
            return _servedBy.get(protocol)
        except TypeError:
            return None
    return found if isinstance(found, str) else None


def _remember(protocol: object, description: str) -> None:
    """
    Note on C{protocol} the member that connected it: in its C{__dict__}
    (no C{__setattr__} of its own is called), else in a weak map.  The
    innermost C{fallback:} or C{race:} notes first, so the outermost has
    the last word.
    """
    try:
        vars(protocol)[_SERVED_BY] = description
    except TypeError:
        try:
            _servedBy[protocol] = description
        except TypeError:
            pass


def _abort(protocol: object) -> None:
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


class _Members:
    """
    What C{fallback:} and C{race:} share: the members, each behind its own
    deadline, their descriptions, the clock and the metrics.
    """

    prefix = ""

    def __init__(self, reactor: Any, endpoints: Sequence[IStreamClientEndpoint],
                 descriptions: Sequence[str] | None, attemptTimeout: float,
                 metrics: FailoverMetrics | None, description: str | None,
                 timed: Sequence[TimeoutEndpoint] | None = None) -> None:
        if not endpoints:
            raise ValueError(f"{type(self).__name__} needs at least one endpoint")
        self.reactor = reactor
        self.endpoints: list[Any] = list(endpoints)
        self.descriptions = (list(descriptions) if descriptions is not None
                             else [describeEndpoint(e) for e in self.endpoints])
        if len(self.descriptions) != len(self.endpoints):
            raise ValueError("one description per endpoint")
        self.attemptTimeout = float(attemptTimeout)
        if timed is None:
            timed = [TimeoutEndpoint(endpoint, self.attemptTimeout, reactor, description)
                     for endpoint, description in zip(self.endpoints, self.descriptions,
                                                      strict=True)]
        self.timed: list[TimeoutEndpoint] = list(timed)
        self.description = (description if description is not None else buildDescription(
            self.prefix, *self.descriptions, **self._keywords()))
        family = metrics if metrics is not None else failoverMetrics()
        self.metrics: BoundFailoverMetrics = family.bind(self.description, self.descriptions)

    def _keywords(self) -> dict[str, Any]:
        return {"attemptTimeout": self.attemptTimeout}

    def _attempt(self, index: int, factory: Any) -> Deferred[Any]:
        """
        Start an attempt through member C{index}.  A member that keeps the
        deadline itself (C{tcp:}, C{unix:}: see
        L{TimeoutEndpoint.innerTimesOut}) is connected directly, with no
        layer between it and the caller's factory, and L{_error} names its
        time-out; any other goes through its L{TimeoutEndpoint}.
        """
        timed = self.timed[index]
        if timed.innerTimesOut:
            return timed.endpoint.connect(factory)
        return timed.connect(factory)

    def _error(self, index: int, failure: Failure) -> BaseException:
        """
        Why member C{index}'s attempt failed: its own error, or
        L{ConnectTimeout} when it kept the deadline itself and reached it.
        """
        error = failure.value
        assert error is not None
        if type(error) is TimeoutError:
            timed = self.timed[index]
            if timed.innerTimesOut:
                return ConnectTimeout(timed.endpoint, timed.timeout, self.descriptions[index])
        return error

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"


@implementer(IStreamClientEndpoint)
class FallbackClientEndpoint(_Members):
    """
    Tries several client endpoints in order, skipping the ones that failed
    recently; what C{fallback:} builds.

    @param reactor: the clock for deadlines and cooldowns.
    @param descriptions: how to name each endpoint in errors, logs and
        metrics (default: its C{description} attribute, or its repr).
    @param attemptTimeout: seconds each attempt may take.
    @param cooldown: seconds a failed member is skipped; 0: never.
    @param metrics: where to count (default: L{failoverMetrics} of
        prometheus_client's global registry).
    @param description: its own description, secrets masked (default: one
        made from the members'); its label in the metrics.

    @ivar failedAt: for each member, when it failed last (the reactor's
        seconds), or L{None} if it has not failed since it last connected.
    """

    prefix = "fallback"

    def __init__(self, reactor: Any, endpoints: Sequence[IStreamClientEndpoint],
                 descriptions: Sequence[str] | None = None,
                 attemptTimeout: float = DEFAULT_ATTEMPT_TIMEOUT,
                 cooldown: float = DEFAULT_COOLDOWN,
                 metrics: FailoverMetrics | None = None,
                 description: str | None = None, *,
                 timed: Sequence[TimeoutEndpoint] | None = None) -> None:
        self.cooldown = float(cooldown)
        _Members.__init__(self, reactor, endpoints, descriptions, attemptTimeout, metrics,
                          description, timed)
        self.failedAt: list[float | None] = [None] * len(self.endpoints)
        self.lastReason: list[str] = [""] * len(self.endpoints)

    def _keywords(self) -> dict[str, Any]:
        return {"attemptTimeout": self.attemptTimeout, "cooldown": self.cooldown}

    def coolingDown(self, index: int, now: float | None = None) -> bool:
        """
        Whether member C{index} is skipped now.
        """
        failedAt = self.failedAt[index]
        if failedAt is None or not self.cooldown:
            return False
        if now is None:
            now = self.reactor.seconds()
        return now < failedAt + self.cooldown

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Connect through the first member that is not cooling down and
        connects; see the module's description.
        """
        factory: Any = protocolFactory
        if type(factory) not in _factoryClasses:
            factory = _asFactory(factory)
        return _Fallback(self, factory).result

    def _failed(self, index: int, error: BaseException) -> None:
        now = self.reactor.seconds()
        wasCooling = self.coolingDown(index, now)
        self.failedAt[index] = now
        self.lastReason[index] = _reason(error)
        self.metrics.failure(index)
        if self.cooldown and not wasCooling:
            _log.info("fallback: {member} failed ({reason}); skipping it for {seconds}",
                      member=self.descriptions[index], reason=self.lastReason[index],
                      seconds=_seconds(self.cooldown))

    def _connected(self, index: int) -> None:
        if self.failedAt[index] is not None:
            self.failedAt[index] = None
            if self.cooldown:
                _log.info("fallback: {member} connects again", member=self.descriptions[index])


class _Fallback:
    """
    One connect through a L{FallbackClientEndpoint}.

    @ivar index: the member being tried.
    @ivar skipped: the members skipped in this connect, cooling down (none:
        L{None}); each index is tried or skipped once, then one of these may
        be tried once more.
    @ivar reasons: why each member tried in this connect failed (none yet:
        L{None}).
    """

    __slots__ = ("cancelled", "current", "factory", "index", "owner", "position", "probed",
                 "reasons", "result", "skipped")

    def __init__(self, owner: FallbackClientEndpoint, factory: Any) -> None:
        self.owner = owner
        self.factory = factory
        self.position = 0
        self.index = 0
        self.skipped: list[int] | None = None
        self.reasons: dict[int, BaseException] | None = None
        self.probed = False
        self.cancelled = False
        self.current: Deferred[Any] | None = None
        self.result: Deferred[IProtocol] = Deferred(self._cancel)
        self._next()

    def _choose(self) -> int | None:
        owner = self.owner
        failedAt = owner.failedAt
        cooldown = owner.cooldown
        count = len(failedAt)
        now: float | None = None
        while self.position < count:
            index = self.position
            self.position += 1
            failed = failedAt[index]
            if failed is not None and cooldown:
                if now is None:
                    now = owner.reactor.seconds()
                if now < failed + cooldown:
                    if self.skipped is None:
                        self.skipped = []
                    self.skipped.append(index)
                    owner.metrics.skip(index)
                    continue
            return index
        if self.probed or not self.skipped:
            return None
        # Every member is cooling down or failed in this connect: try the one
        # that failed longest ago, once.
        self.probed = True
        return min(self.skipped, key=lambda index: failedAt[index] or 0.0)

    def _next(self) -> None:
        index = self._choose()
        if index is None:
            self._allFailed()
            return
        owner = self.owner
        self.index = index
        owner.metrics.attempt(index)
        d = owner._attempt(index, self.factory)
        self.current = d
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, protocol: Any) -> None:
        self.current = None
        if self.cancelled or self.result.called:
            # Delivered by a canceller.
            _abort(protocol)
            return
        owner = self.owner
        index = self.index
        if owner.failedAt[index] is not None:
            owner._connected(index)
        owner.metrics.win(index)
        _remember(protocol, owner.descriptions[index])
        self.result.callback(protocol)

    def _failed(self, failure: Failure) -> None:
        self.current = None
        if self.cancelled:
            return
        index = self.index
        error = self.owner._error(index, failure)
        if self.reasons is None:
            self.reasons = {}
        self.reasons[index] = error
        self.owner._failed(index, error)
        self._next()

    def _allFailed(self) -> None:
        owner = self.owner
        now = owner.reactor.seconds()
        tried = self.reasons or {}
        reasons: list[tuple[str, BaseException]] = []
        for index, description in enumerate(owner.descriptions):
            error = tried.get(index)
            if error is None:
                failedAt = owner.failedAt[index] or now
                error = MemberCoolingDown(description, now - failedAt,
                                          max(0.0, failedAt + owner.cooldown - now),
                                          owner.lastReason[index])
            reasons.append((description, error))
        owner.metrics.allFailed()
        self.result.errback(AllMembersFailed(owner.prefix, reasons))

    def _cancel(self, result: Deferred[IProtocol]) -> None:
        self.cancelled = True
        current, self.current = self.current, None
        if current is not None:
            current.cancel()


@implementer(IStreamClientEndpoint)
class RaceClientEndpoint(_Members):
    """
    Starts several client endpoints C{delay} seconds apart and takes the
    first that connects; what C{race:} builds.

    @param reactor: the clock for the stagger and the deadlines.
    @param descriptions: how to name each endpoint in errors and metrics.
    @param delay: seconds between the starts of two members (0: all at
        once); a member that fails starts the next at once.
    @param attemptTimeout: seconds each attempt may take.
    @param metrics: where to count (default: L{failoverMetrics} of
        prometheus_client's global registry).
    @param description: its own description, secrets masked (default: one
        made from the members'); its label in the metrics.
    """

    prefix = "race"

    def __init__(self, reactor: Any, endpoints: Sequence[IStreamClientEndpoint],
                 descriptions: Sequence[str] | None = None,
                 delay: float = DEFAULT_DELAY,
                 attemptTimeout: float = DEFAULT_ATTEMPT_TIMEOUT,
                 metrics: FailoverMetrics | None = None,
                 description: str | None = None, *,
                 timed: Sequence[TimeoutEndpoint] | None = None) -> None:
        self.delay = float(delay)
        _Members.__init__(self, reactor, endpoints, descriptions, attemptTimeout, metrics,
                          description, timed)

    def _keywords(self) -> dict[str, Any]:
        return {"delay": self.delay, "attemptTimeout": self.attemptTimeout}

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Race the members; see the module's description.
        """
        factory: Any = protocolFactory
        if type(factory) not in _factoryClasses:
            factory = _asFactory(factory)
        return _Race(self, factory).result


class _Race:
    """
    One connect through a L{RaceClientEndpoint}.
    """

    __slots__ = ("done", "factory", "owner", "pending", "reasons", "result", "started",
                 "timer")

    def __init__(self, owner: RaceClientEndpoint, factory: Any) -> None:
        self.owner = owner
        self.factory = factory
        self.started = 0
        self.pending: dict[int, Deferred[Any]] = {}
        self.reasons: dict[int, BaseException] = {}
        self.timer: Any = None
        self.done = False
        self.result: Deferred[IProtocol] = Deferred(self._cancel)
        self._start()

    def _start(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        owner = self.owner
        index = self.started
        self.started += 1
        owner.metrics.attempt(index)
        d = owner._attempt(index, self.factory)
        self.pending[index] = d
        d.addCallbacks(self._won, self._lost, callbackArgs=(index,), errbackArgs=(index,))
        if self.done or index not in self.pending or self.started >= len(owner.timed):
            return
        if self.timer is None:
            if owner.delay:
                self.timer = owner.reactor.callLater(owner.delay, self._start)
            else:
                self._start()

    def _won(self, protocol: Any, index: int) -> None:
        self.pending.pop(index, None)
        if self.done:
            # Delivered by a canceller after the race ended.
            _abort(protocol)
            return
        self._end()
        owner = self.owner
        owner.metrics.win(index)
        _remember(protocol, owner.descriptions[index])
        self.result.callback(protocol)

    def _lost(self, failure: Failure, index: int) -> None:
        self.pending.pop(index, None)
        if self.done:
            return
        owner = self.owner
        self.reasons[index] = owner._error(index, failure)
        owner.metrics.failure(index)
        if self.started < len(owner.timed):
            self._start()
        elif not self.pending:
            self._end()
            owner.metrics.allFailed()
            self.result.errback(AllMembersFailed(owner.prefix, [
                (description, self.reasons[i]) for i, description
                in enumerate(owner.descriptions)]))

    def _end(self) -> None:
        """
        The race is over: stop the stagger and cancel every attempt still
        under way (what they built is closed, and what they connect later is
        closed before its protocol hears of it).
        """
        self.done = True
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        pending = self.pending
        if pending:
            self.pending = {}
            for d in pending.values():
                d.cancel()

    def _cancel(self, result: Deferred[IProtocol]) -> None:
        self._end()


def _members(prefix: str, parsed: Parsed, reactor: Any) -> dict[str, Any]:
    """
    The members of a parsed description, each built inside C{timeout:} with
    the attempt deadline (so that around C{tcp:} and C{unix:} the
    connector's own timer keeps it, as C{timeout:} arranges).
    """
    members: tuple[Parsed, ...] = parsed.values["endpoints"]
    seconds: float = parsed.values["attemptTimeout"]
    timed: list[TimeoutEndpoint] = []
    for member in members:
        try:
            timed.append(_withDeadline(reactor, member, seconds))
        except DescriptionError as e:
            raise e.nestedIn(prefix, "endpoints") from None
    return {"endpoints": [t.endpoint for t in timed],
            "descriptions": [member.description(masked=True) for member in members],
            "attemptTimeout": seconds, "timed": timed,
            "description": parsed.description(masked=True)}


def _buildFallback(reactor: Any, parsed: Parsed) -> FallbackClientEndpoint:
    return FallbackClientEndpoint(reactor, cooldown=parsed.values["cooldown"],
                                  **_members("fallback", parsed, reactor))


def _buildRace(reactor: Any, parsed: Parsed) -> RaceClientEndpoint:
    return RaceClientEndpoint(reactor, delay=parsed.values["delay"],
                              **_members("race", parsed, reactor))


_MEMBERS_HELP = "client descriptions, each one escaped positional argument"

_ATTEMPT_TIMEOUT = Arg("attemptTimeout", Seconds(), DEFAULT_ATTEMPT_TIMEOUT,
                       "seconds each member's attempt may take before it counts as failed")

fallbackType = EndpointType(
    "fallback", "client",
    (
        Arg("endpoints", Nested("client"), help=_MEMBERS_HELP + ", tried in order",
            variadic=True),
        _ATTEMPT_TIMEOUT,
        Arg("cooldown", Seconds(allowZero=True), DEFAULT_COOLDOWN,
            "seconds a failed member is skipped (0: never skipped)"),
    ),
    "several client descriptions tried in order until one connects; a failed member "
    "is skipped for COOLDOWN seconds; all failing gives AllMembersFailed listing each",
    build=_buildFallback,
)

raceType = EndpointType(
    "race", "client",
    (
        Arg("endpoints", Nested("client"), help=_MEMBERS_HELP + ", started in order",
            variadic=True),
        Arg("delay", Seconds(allowZero=True), DEFAULT_DELAY,
            "seconds between the starts of two members; a failure starts the next at once"),
        _ATTEMPT_TIMEOUT,
    ),
    "several client descriptions started DELAY seconds apart (RFC 8305 style); the first "
    "to connect wins and the others are cancelled",
    build=_buildRace,
)
