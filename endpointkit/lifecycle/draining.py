"""
Draining: stop accepting at once, let the connections already accepted
finish, and close the ones that stay too long::

    result = yield gracefulStop(port, 30)
    # result.finished: ended by themselves; result.closed: still open at the
    # deadline and closed; result.aborted: of those, aborted after the grace

L{gracefulStop} stops listening at once (through L{stopListening}), waits up
to C{timeout} seconds, then closes what is still open with
C{loseConnection} (which still sends what the application wrote), and
aborts what is still open C{grace} seconds later.  It finds the connections
through the L{TrackingFactory} of the port (from L{endpointkit.listen}), of
each member of a C{multi:} port, or of a wrapper's port.  A port from
L{endpointkit.listen} counts the drain (its outcomes and duration) in its
L{endpointkit.metrics.LifecycleMetrics}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from endpointkit.lifecycle._shared import DEFAULT_ABORT_GRACE, defaultReactor
from endpointkit.lifecycle.stopping import members, stopListening
from endpointkit.lifecycle.tracking import TrackingFactory, TrackingProtocol

__all__ = ["DrainResult", "gracefulStop"]

_log = Logger(namespace="endpointkit.lifecycle")


@dataclass(frozen=True)
class DrainResult:
    """
    How a graceful stop ended.

    @ivar finished: connections that ended by themselves before the timeout.
    @ivar closed: connections still open at the timeout, which were closed.
    @ivar aborted: of those, the ones that did not close within the grace
        and were aborted.
    """

    finished: int
    closed: int
    aborted: int = 0


def _trackers(port: Any) -> list[TrackingFactory]:
    found: list[TrackingFactory] = []
    todo = [port]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        factory = getattr(current, "factory", None)
        depth = 0
        while factory is not None and depth < 16:
            if isinstance(factory, TrackingFactory):
                if factory not in found:
                    found.append(factory)
                break
            factory = getattr(factory, "wrappedFactory", None)
            depth += 1
        todo += members(current)
    return found


class _Drain:
    def __init__(self, trackers: list[TrackingFactory], timeout: float, grace: float,
                 clock: Any, stopped: defer.Deferred[None]) -> None:
        self.clock = clock
        self.grace = grace
        self.stopped = stopped
        self.remaining = {p for t in trackers for p in t.protocols}
        self.finished = self.closed = self.aborted = 0
        self.phase = "waiting"
        self.result: defer.Deferred[DrainResult] = defer.Deferred()
        self.unobserve = [t.observeLost(self.lost) for t in trackers]
        self.timer: Any = None
        if not self.remaining:
            self.done()
        else:
            self.timer = clock.callLater(timeout, self.closeRest)

    def lost(self, protocol: TrackingProtocol) -> None:
        if protocol not in self.remaining:
            return
        self.remaining.discard(protocol)
        if self.phase == "waiting":
            self.finished += 1
        if not self.remaining:
            self.done()

    def closeRest(self) -> None:
        self.phase = "closing"
        self.closed = len(self.remaining)
        self.timer = self.clock.callLater(self.grace, self.abortRest)
        for protocol in list(self.remaining):
            if protocol.transport is not None:
                protocol.transport.loseConnection()

    def abortRest(self) -> None:
        self.phase = "aborting"
        self.aborted = len(self.remaining)
        self.timer = self.clock.callLater(self.grace, self.giveUp)
        for protocol in list(self.remaining):
            transport = protocol.transport
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            elif transport is not None:
                transport.loseConnection()

    def giveUp(self) -> None:
        self.timer = None
        _log.warn("{count} connection(s) did not close even when aborted",
                  count=len(self.remaining))
        self.done()

    def done(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        for stop in self.unobserve:
            stop()
        result = DrainResult(self.finished, self.closed, self.aborted)
        self.stopped.addCallback(lambda _: result).chainDeferred(self.result)


def gracefulStop(port: IListeningPort | Any, timeout: float, reactor: Any = None,
                 grace: float = DEFAULT_ABORT_GRACE) -> defer.Deferred[DrainResult]:
    """
    Stop accepting on C{port} at once and let the connections it already
    accepted finish; at C{timeout} seconds close those still open
    (C{loseConnection}, which still sends what the application wrote), and
    abort the ones still open C{grace} seconds later.

    C{port} must come from L{listen}, or its factory must be a
    L{TrackingFactory}.

    @return: a Deferred that fires with a L{DrainResult} once every
        connection is gone and the port is closed.
    """
    trackers = _trackers(port)
    if not trackers:
        raise ValueError(
            f"gracefulStop: {port!r} does not track its connections; listen with "
            "endpointkit.lifecycle.listen, or wrap its factory in TrackingFactory")
    clock: Any = reactor if reactor is not None else defaultReactor()
    stopped = stopListening(port)
    result = _Drain(trackers, timeout, grace, clock, stopped).result
    metrics: Any = getattr(port, "metrics", None)
    if callable(getattr(metrics, "drained", None)):
        began = clock.seconds()

        def drained(outcome: DrainResult) -> DrainResult:
            metrics.drained(outcome, clock.seconds() - began)
            return outcome

        result.addCallback(drained)
    return result
