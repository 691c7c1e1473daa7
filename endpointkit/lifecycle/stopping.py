"""
Stop listening, and really wait for the socket to close.

Twisted's own C{stopListening} closes a TCP or UNIX socket in a later
reactor turn, so listening again on the same address at once can fail.
L{stopListening} fires only once every socket under a port is closed: it
sees through wrapper ports (C{wrappedPort}) and several-ports-as-one
(C{ports}, as C{multi:} has), so the address can be bound again at once (a
UNIX socket's file is removed and its lock released by then).  Calling it
again while the port is stopping, or after, is harmless: every caller gets
the outcome of the one stop::

    yield stopListening(port)
    port = yield listen("tcp:8080", factory)   # the address is free again

L{stopAll} stops several ports together; L{WrappingPort} is the base of a
port that stands for another one (C{wrappedPort}) and stops through this
module, which calls its C{listeningStopped} once per stop, whichever way
the stop was asked for.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["WrappingPort", "forgetStop", "stopAll", "stopListening"]


class Outcome:
    """
    The outcome of one stop, handed to everyone who asks for it (a
    Deferred's result goes to one callback chain only).
    """

    _pending = object()

    def __init__(self, d: defer.Deferred[Any]) -> None:
        self.result: object = self._pending
        self.waiters: list[defer.Deferred[None]] = []
        d.addBoth(self._fired)

    @property
    def called(self) -> bool:
        return self.result is not self._pending

    def _fired(self, result: object) -> None:
        self.result = result
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            self._deliver(waiter)

    def _deliver(self, waiter: defer.Deferred[None]) -> None:
        if isinstance(self.result, Failure):
            waiter.errback(self.result)
        else:
            waiter.callback(None)

    def follow(self) -> defer.Deferred[None]:
        """
        A new Deferred that fires with L{None} (or the failure) once the
        stop is over.
        """
        waiter: defer.Deferred[None] = defer.Deferred()
        if self.called:
            self._deliver(waiter)
        else:
            self.waiters.append(waiter)
        return waiter


_stops: weakref.WeakKeyDictionary[Any, Outcome] = weakref.WeakKeyDictionary()


@implementer(IListeningPort)
class WrappingPort:
    """
    A port that stands for another (C{wrappedPort}): it listens and stops
    through it, and L{stopListening} waits for that port's socket.
    """

    def __init__(self, wrappedPort: IListeningPort) -> None:
        self.wrappedPort: Any = wrappedPort

    def startListening(self) -> None:
        self.wrappedPort.startListening()
        forgetStop(self)

    def stopListening(self) -> defer.Deferred[None]:
        return stopListening(self)

    def listeningStopped(self) -> None:
        """
        Called once each time L{stopListening} (this method, the module's
        function or L{stopAll}) has closed the port; nothing by default.
        A subclass that counts or reports the stop overrides it.
        """

    def getHost(self) -> IAddress:
        address: IAddress = self.wrappedPort.getHost()
        return address


def _follow(d: defer.Deferred[Any]) -> defer.Deferred[None]:
    """
    A new Deferred that fires when C{d} does, with L{None} or its failure,
    leaving C{d}'s own result alone.
    """
    follower: defer.Deferred[None] = defer.Deferred()

    def done(result: object) -> object:
        if isinstance(result, Failure):
            follower.errback(result)
        else:
            follower.callback(None)
        return result

    d.addBoth(done)
    return follower


def _stopOne(port: Any) -> defer.Deferred[None]:
    from twisted.internet import tcp

    if isinstance(port, tcp.Port):
        # Twisted's ports close in a later reactor turn; calling their
        # stopListening again meanwhile would close them twice.
        if not port.connected:
            return defer.succeed(None)
        pending = getattr(port, "deferred", None)
        if port.disconnecting and isinstance(pending, defer.Deferred):
            return _follow(pending)
    return defer.maybeDeferred(port.stopListening).addCallback(lambda _: None)


def members(port: Any) -> list[Any]:
    """
    The ports directly under C{port}: its C{ports}, or its C{wrappedPort}.
    """
    under = getattr(port, "ports", None)
    if isinstance(under, (list, tuple)):
        return list(under)
    inner = getattr(port, "wrappedPort", None)
    return [inner] if inner is not None else []


def stopListening(port: IListeningPort | Any) -> defer.Deferred[None]:
    """
    Stop listening on C{port}; fire once every socket under it (through
    C{wrappedPort} and C{ports}) is closed, so that its address can be bound
    again at once (a UNIX socket's file is removed and its lock released by
    then).  Calling it again while stopping, or after, is harmless.

    @return: a Deferred that fires with L{None}, or with the first failure
        of stopping any of the sockets.
    """
    outcome = _stops.get(port)
    if outcome is not None and outcome.called and _restarted(port):
        forgetStop(port)
        outcome = None
    if outcome is None:
        if isinstance(port, WrappingPort):
            stopping = stopListening(port.wrappedPort)
            stopping.addCallback(_stopped, port)
        else:
            stopping = _stopOne(port)
            under = members(port)
            if under:
                stopping.addCallback(lambda _: stopAll(under))
        outcome = Outcome(stopping)
        try:
            _stops[port] = outcome
        except TypeError:
            pass
    return outcome.follow()


def _stopped(result: None, port: WrappingPort) -> None:
    port.listeningStopped()
    return result


def stopAll(ports: Sequence[IListeningPort | Any]) -> defer.Deferred[None]:
    """
    Stop every port in C{ports} with L{stopListening}, all at once.

    @return: a Deferred that fires once every one is closed, with the first
        failure if stopping any failed.
    """
    stops = [stopListening(p) for p in ports]

    def done(results: list[tuple[bool, Any]]) -> None:
        for ok, value in results:
            if not ok:
                value.raiseException()

    return defer.DeferredList(stops, consumeErrors=True).addCallback(done)


def _restarted(port: Any) -> bool:
    from twisted.internet import tcp

    if isinstance(port, tcp.Port):
        return bool(port.connected and not port.disconnecting)
    return any(_restarted(member) for member in members(port))


def forgetStop(port: Any) -> None:
    """
    C{port} (and every port under it) listens again: the next
    L{stopListening} stops it anew instead of reporting the last stop.
    """
    for member in members(port):
        forgetStop(member)
    try:
        _stops.pop(port, None)
    except TypeError:
        pass
