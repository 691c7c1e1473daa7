"""
A service for twistd: listen while running, drain when stopped::

    from endpointkit import EndpointService

    application = service.Application("web")
    EndpointService("tcp:8080", server.Site(root), drainTimeout=30).setServiceParent(
        application)

L{EndpointService} listens in C{privilegedStartService} (before twistd
sheds its privileges), as Twisted's C{strports.service} does; a failure to
listen is logged as the one-line L{ListenError} and raised, so twistd
reports it and exits.  C{stopService} drains (L{gracefulStop}); so SIGTERM
to twistd lets the live connections finish, and a completed drain after
SIGTERM exits with status 0.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from endpointkit._lookup import parseDescription
from endpointkit.lifecycle._shared import (
    DEFAULT_ABORT_GRACE,
    DEFAULT_DRAIN_TIMEOUT,
    ProtocolFactory,
    defaultReactor,
)
from endpointkit.lifecycle.diagnosis import ListenError
from endpointkit.lifecycle.draining import DrainResult, gracefulStop
from endpointkit.lifecycle.listening import listen
from endpointkit.lifecycle.stopping import Outcome
from endpointkit.lifecycle.tracking import TrackedPort

__all__ = ["EndpointService"]

_log = Logger(namespace="endpointkit.lifecycle")


class EndpointService(Service):
    """
    Listens on a server description while running, and drains gracefully
    when stopped: usable from a C{.tac} file, a twistd plugin or a
    L{MultiService}.

    Like Twisted's own C{strports.service}, it listens in
    C{privilegedStartService}, before twistd sheds its privileges, and a
    failure to listen there raises the L{ListenError} (after logging it), so
    twistd reports it and exits.  C{stopService} stops accepting and waits
    up to C{drainTimeout} seconds for live connections; SIGTERM to twistd
    therefore drains.  Twisted's twistd then ends the process by the
    signal itself; with C{exitCleanly} (the default) a completed drain
    after SIGTERM makes it exit with status 0 instead, the status of an
    orderly shutdown.

    @ivar port: the L{TrackedPort} while listening, else L{None}.
    @ivar lastDrain: the L{DrainResult} of the last stop, if any.
    """

    def __init__(self, description: str | IStreamServerEndpoint, factory: ProtocolFactory,
                 drainTimeout: float = DEFAULT_DRAIN_TIMEOUT, reactor: Any = None,
                 grace: float = DEFAULT_ABORT_GRACE, exitCleanly: bool = True) -> None:
        if isinstance(description, str):
            parseDescription(description, "server")
        if drainTimeout < 0:
            raise ValueError(f"drainTimeout must be zero or more seconds, got {drainTimeout!r}")
        self.description = description
        self.factory = factory
        self.drainTimeout = drainTimeout
        self.grace = grace
        self.exitCleanly = exitCleanly
        self._reactor = reactor
        self.port: TrackedPort | None = None
        self.lastDrain: DrainResult | None = None
        self._listening: defer.Deferred[TrackedPort] | None = None
        self._outcome: TrackedPort | Failure | None = None
        self._waiters: list[defer.Deferred[TrackedPort]] = []
        self._draining: Outcome | None = None

    def __repr__(self) -> str:
        return f"<EndpointService {self.description!r}>"

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)  # type: ignore[no-untyped-call]
        self._listen()

    def startService(self) -> None:
        if self._listening is None:
            self._listen()
        Service.startService(self)  # type: ignore[no-untyped-call]

    def _listen(self) -> None:
        self._outcome = None
        self._listening = listen(self.description, self.factory, self._reactor)
        raiseNow: list[Failure] = []

        def listening(port: TrackedPort) -> None:
            self.port = port
            self._settle(port)

        def failed(failure: Failure) -> None:
            self._listening = None
            if isinstance(failure.value, defer.CancelledError):
                self._settle(failure)
                return
            message = (str(failure.value) if isinstance(failure.value, ListenError)
                       else f"listen {self.description}: {failure.getErrorMessage()}")
            _log.error("endpointkit: {error}", error=message)
            if inside:
                raiseNow.append(failure)
            self._settle(failure)

        inside = True
        self._listening.addCallbacks(listening, failed)
        inside = False
        if raiseNow:
            raiseNow[0].raiseException()

    def _settle(self, outcome: TrackedPort | Failure) -> None:
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._deliver(waiter)

    def _deliver(self, waiter: defer.Deferred[TrackedPort]) -> None:
        if isinstance(self._outcome, Failure):
            waiter.errback(self._outcome)
        elif self._outcome is not None:
            waiter.callback(self._outcome)

    def whenListening(self) -> defer.Deferred[TrackedPort]:
        """
        A Deferred that fires with the port once listening, or fails with
        the L{ListenError}.
        """
        waiter: defer.Deferred[TrackedPort] = defer.Deferred()
        if self._outcome is None:
            self._waiters.append(waiter)
        else:
            self._deliver(waiter)
        return waiter

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)  # type: ignore[no-untyped-call]
        listening, self._listening = self._listening, None
        port, self.port = self.port, None
        if port is None:
            if listening is not None:
                listening.cancel()
                listening.addErrback(lambda _: None)
            if self._draining is not None:
                return self._draining.follow()
            return defer.succeed(None)
        self._outcome = None

        def drained(result: DrainResult) -> None:
            self.lastDrain = result
            _log.info(
                "endpointkit: stopped listening on {description}: {finished} connection(s) "
                "finished, {closed} closed at the {timeout} s deadline",
                description=port.description, finished=result.finished,
                closed=result.closed, timeout=self.drainTimeout)
            running = self._reactor if self._reactor is not None else defaultReactor()
            if self.exitCleanly and getattr(running, "_exitSignal", None) == signal.SIGTERM:
                # The reactor's record of the signal that stopped it
                # (_ISupportsExitSignalCapturing), which twistd turns into
                # dying by that signal.
                running._exitSignal = None

        draining = gracefulStop(port, self.drainTimeout, self._reactor, self.grace)
        self._draining = Outcome(draining.addCallback(drained))
        return self._draining.follow()
