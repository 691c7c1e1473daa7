"""
Listen, with errors an administrator can act on::

    port = yield listen("tcp:8080", factory)

L{listen} takes an endpoint or a server description, wraps the factory in a
L{TrackingFactory} and fires with a L{TrackedPort}, which L{gracefulStop}
can drain.  A failure is a L{ListenError} (see
L{endpointkit.lifecycle.diagnosis}), and a description that does not parse
a L{DescriptionError}.  An endpoint that listens asynchronously gets a
deadline; a port that arrives after it is closed.

Twisted's UNIX port logs its "... starting on PATH" line before it binds,
so a listen that then fails would still announce the port; L{listen} holds
that line back and logs it only once the port really listens.  A failed
UNIX listen also leaves no lock file and no started factory behind.

Each listen is counted in L{endpointkit.metrics.LifecycleMetrics} (listens
by result, and whether the description is listening), labelled with the
masked description, in the registry given (prometheus_client's global one
by default); stopping the port and L{gracefulStop} count there too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from endpointkit._grammar import DescriptionError, buildDescription
from endpointkit._lookup import parseDescription
from endpointkit._parse import logInsecure
from endpointkit._schema import Parsed
from endpointkit.lifecycle._shared import (
    DEFAULT_LISTEN_TIMEOUT,
    ProtocolFactory,
    defaultReactor,
    text,
)
from endpointkit.lifecycle.diagnosis import (
    ListenError,
    explainListenFailure,
    explainSystemd,
    lockHolder,
)
from endpointkit.lifecycle.stopping import stopListening
from endpointkit.lifecycle.tracking import TrackedPort, TrackingFactory

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from endpointkit.metrics import LifecycleMetrics

__all__ = ["listen"]

_log = Logger(namespace="endpointkit.lifecycle")


def listen(endpointOrDescription: IStreamServerEndpoint | str | bytes,
           factory: ProtocolFactory, reactor: Any = None,
           timeout: float | None = DEFAULT_LISTEN_TIMEOUT,
           registry: CollectorRegistry | None = None) -> defer.Deferred[TrackedPort]:
    """
    Listen on an endpoint or a server description, with C{factory} wrapped
    in a L{TrackingFactory} (unless it is one already).

    @param timeout: seconds to wait for an endpoint that listens
        asynchronously (most listen at once); L{None} waits forever.  A port
        that arrives after the deadline is closed.
    @param registry: where the listen is counted (default:
        prometheus_client's global C{REGISTRY}).

    @return: a Deferred that fires with a L{TrackedPort}, or fails with
        L{ListenError} when listening failed, or with L{DescriptionError}
        when the description itself is wrong.
    """
    if reactor is None:
        reactor = defaultReactor()
    parsed: Parsed | None = None
    if isinstance(endpointOrDescription, (str, bytes)):
        given = text(endpointOrDescription)
        try:
            parsed = parseDescription(given, "server")
        except DescriptionError:
            return defer.fail()
        description = _shownDescription(given, parsed)
        logInsecure(parsed)
        metrics = _metrics(parsed, registry)
        try:
            endpoint: IStreamServerEndpoint = parsed.build(reactor)
        except Exception as e:
            metrics.listenFailed()
            if parsed.prefix == "systemd":
                return defer.fail(_chained(explainSystemd(description, e), e))
            explained = explainListenFailure(e, description)
            if explained is None and isinstance(e, DescriptionError):
                explained = ListenError(description, str(e).removeprefix(f"{parsed.prefix}: "))
            if explained is None:
                return defer.fail()
            return defer.fail(_chained(explained, e))
    else:
        endpoint = endpointOrDescription
        description = _describeEndpoint(endpoint)
        metrics = _metrics(description, registry)
    tracker = factory if isinstance(factory, TrackingFactory) else TrackingFactory(factory)
    unix = _unixPath(endpoint)
    if unix is None and parsed is not None and parsed.prefix == "unix":
        unix = str(parsed.values["address"]), bool(parsed.values.get("lockfile"))
    unixPath = unix[0] if unix is not None else None
    lockPath = unix[0] + ".lock" if unix is not None and unix[1] else None
    lockedBefore = lockPath is not None and lockHolder(lockPath) == str(os.getpid())
    portsBefore = tracker.numPorts

    def failed(failure: Failure) -> Failure:
        # Twisted's UNIX port takes its lock and starts the factory before it
        # binds, and leaves both behind when binding fails.
        metrics.listenFailed()
        if tracker.numPorts > portsBefore:
            cast(Any, tracker).doStop()
        if (lockPath is not None and not lockedBefore
                and lockHolder(lockPath) == str(os.getpid())):
            try:
                os.remove(lockPath)
            except OSError:
                pass
        error = failure.value
        assert error is not None
        explained = explainListenFailure(error, description, unixPath)
        if explained is None:
            return failure
        return Failure(_chained(explained, error))  # type: ignore[no-untyped-call]

    def listening(port: IListeningPort) -> TrackedPort:
        metrics.listened()
        return _CountedPort(port, tracker, description, metrics)

    listenOn: Any = endpoint.listen
    with _startLinesHeld() as held:
        d: defer.Deferred[Any] = defer.maybeDeferred(listenOn, tracker)
    d.addBoth(held.settle)
    result: defer.Deferred[TrackedPort] = d.addCallbacks(listening, failed)
    if result.called or timeout is None:
        return result
    return _withDeadline(result, timeout, reactor, description)


def _metrics(description: str | Parsed, registry: CollectorRegistry | None
             ) -> LifecycleMetrics:
    from endpointkit.metrics import LifecycleMetrics

    return LifecycleMetrics(description, registry)


class _CountedPort(TrackedPort):
    """
    A L{TrackedPort} whose stop is counted in its L{LifecycleMetrics}
    (which L{gracefulStop} finds as C{metrics}): once per stop, whether
    through its own C{stopListening}, L{stopListening} or L{stopAll}.
    """

    def __init__(self, wrappedPort: IListeningPort, factory: TrackingFactory,
                 description: str, metrics: LifecycleMetrics) -> None:
        TrackedPort.__init__(self, wrappedPort, factory, description)
        self.metrics = metrics

    def listeningStopped(self) -> None:
        self.metrics.stopped()


class _HeldStartLines:
    """
    The "starting on" lines that Twisted's ports log (through the legacy
    C{twisted.python.log}) while this thread listens: published once the
    listen succeeds, dropped if it fails.  Every other event is published
    as it comes.
    """

    def __init__(self, publish: Any) -> None:
        self._publish = publish
        self._thread = threading.get_ident()
        self._lines: list[Any] | None = []

    def __call__(self, event: Any) -> None:
        if (self._lines is not None and threading.get_ident() == self._thread
                and " starting on " in str(event.get("log_text", ""))):
            self._lines.append(event)
        else:
            self._publish(event)

    def settle(self, result: object) -> object:
        """
        The listen ended with C{result}: publish the lines held for a port,
        drop them for a failure.
        """
        lines, self._lines = self._lines or [], None
        if not isinstance(result, Failure):
            for event in lines:
                self._publish(event)
        return result


@contextmanager
def _startLinesHeld() -> Iterator[_HeldStartLines]:
    """
    Hold the legacy log's "starting on" lines emitted inside the block (see
    L{_HeldStartLines}); whatever else is logged goes out at once.
    """
    from twisted.python import log

    legacy: Any = log.theLogPublisher
    publish = getattr(legacy, "_publishPublisher", None)
    if publish is None:
        # A Twisted that publishes legacy events some other way: nothing to
        # hold, the lines go out as they come.
        yield _HeldStartLines(lambda event: None)
        return
    held = _HeldStartLines(publish)
    legacy._publishPublisher = held
    try:
        yield held
    finally:
        legacy._publishPublisher = publish


def _withDeadline(d: defer.Deferred[TrackedPort], timeout: float, clock: Any,
                  description: str) -> defer.Deferred[TrackedPort]:
    """
    C{d}, or a L{ListenError} once C{timeout} seconds pass.  C{d} is left
    to finish rather than cancelled (an endpoint without a canceller would
    drop its port unclosed); a port that arrives after the deadline, or
    after the caller cancelled, is closed.
    """
    def cancelled(_: object) -> None:
        if timer.active():
            timer.cancel()

    out: defer.Deferred[TrackedPort] = defer.Deferred(cancelled)

    def expire() -> None:
        out.errback(ListenError(description, f"no port after {timeout:g} s",
                                "the endpoint never finished listening"))

    timer = clock.callLater(timeout, expire)

    def settle(result: object) -> None:
        if timer.active():
            timer.cancel()
        if not out.called:
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(cast(TrackedPort, result))
        elif isinstance(result, TrackedPort):
            _log.warn("endpointkit: closing {description}, which listened after the "
                      "{timeout} s deadline", description=description, timeout=timeout)
            stopListening(result).addErrback(
                lambda f: _log.failure("endpointkit: closing a late port failed", f))

    d.addBoth(settle)
    return out


def _chained(error: ListenError, cause: BaseException) -> ListenError:
    error.__cause__ = cause
    return error


def _shownDescription(given: str, parsed: Parsed | None) -> str:
    if parsed is not None and parsed.description(masked=True) != parsed.description():
        return parsed.description(masked=True)
    return given


def _describeEndpoint(endpoint: object) -> str:
    """
    A short description of an endpoint object, for messages.
    """
    from twisted.internet import endpoints

    if isinstance(endpoint, endpoints.TCP6ServerEndpoint):
        return buildDescription("tcp6", endpoint._port, interface=endpoint._interface)
    if isinstance(endpoint, endpoints.TCP4ServerEndpoint):
        return buildDescription("tcp", endpoint._port, interface=endpoint._interface or None)
    if isinstance(endpoint, endpoints.SSL4ServerEndpoint):
        return buildDescription("ssl", endpoint._port, interface=endpoint._interface or None)
    if isinstance(endpoint, endpoints.UNIXServerEndpoint):
        return buildDescription("unix", text(endpoint._address))
    return repr(endpoint)


def _unixPath(endpoint: object) -> tuple[str, bool] | None:
    """
    The path of a UNIX server endpoint, and whether it takes a lock file.
    """
    from twisted.internet import endpoints

    if isinstance(endpoint, endpoints.UNIXServerEndpoint):
        return text(endpoint._address), bool(endpoint._wantPID)
    return None
