"""
Helpers for trial tests of code that speaks through endpoints.

L{connectedPair} gives a test a connected (client protocol, server protocol)
pair from a server description (C{memory:} by default, any server
description works) and cleans up when the test ends: both connections
closed, the listener stopped, nothing left in the reactor or in the
C{memory:} registry.  L{pump} runs a deterministic C{memory:} connection on
a L{twisted.internet.task.Clock}-based reactor.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from endpointkit._grammar import formatDuration, quoteArgument
from endpointkit._parse import clientFromString, serverFromString
from endpointkit.memory import listeningNames, pump

__all__ = ["connectedPair", "pump"]

_counter = itertools.count(1)


def _isClock(reactor: Any) -> bool:
    return callable(getattr(reactor, "advance", None))


class _Watched:
    """
    A protocol built for a pair, with Deferreds for its connection being
    made and lost.
    """

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.made: defer.Deferred[Any] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()
        makeConnection = protocol.makeConnection
        connectionLost = protocol.connectionLost

        def watchedMakeConnection(transport: Any) -> None:
            try:
                makeConnection(transport)
            finally:
                if not self.made.called:
                    self.made.callback(protocol)

        def watchedConnectionLost(reason: Failure) -> None:
            try:
                connectionLost(reason)
            finally:
                if not self.lost.called:
                    self.lost.callback(None)

        # The protocol's own methods, seen by the transport through the
        # instance, so that the test keeps the protocol object it expects.
        protocol.makeConnection = watchedMakeConnection
        protocol.connectionLost = watchedConnectionLost


class _WatchingFactory(Factory):
    """
    Builds protocols with the test's factory and watches each one.
    """

    noisy = False

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.watched: list[_Watched] = []
        self.first: defer.Deferred[Any] = defer.Deferred()

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.wrapped.buildProtocol(addr)
        if protocol is None:
            return None
        watched = _Watched(protocol)
        self.watched.append(watched)
        if len(self.watched) == 1:
            watched.made.chainDeferred(self.first)
        return protocol


class _Once(Factory):
    """
    A factory for a protocol the test made itself: it builds it once.
    """

    noisy = False

    def __init__(self, builder: Callable[[], Any]) -> None:
        self.builder = builder

    def buildProtocol(self, addr: Any) -> Any:
        return self.builder()


def _asFactory(thing: Any) -> Any:
    if IProtocolFactory.providedBy(thing):
        return thing
    if IProtocol.providedBy(thing):
        protocols = [thing]
        return _Once(lambda: protocols.pop() if protocols else None)
    if callable(thing):
        return _Once(thing)
    raise TypeError(
        f"expected a protocol factory, a protocol or a callable that makes one, got {thing!r}"
    )


def connectedPair(
    testCase: Any,
    server: Any,
    client: Any,
    serverDescription: str | IStreamServerEndpoint | None = None,
    clientDescription: str | None = None,
    reactor: Any = None,
    timeout: float = 10.0,
) -> defer.Deferred[tuple[Any, Any]]:
    """
    Listen on C{serverDescription}, connect to it from C{clientDescription},
    and fire with C{(clientProtocol, serverProtocol)} once both are
    connected.

    @param testCase: the trial test; the pair is closed and the listener
        stopped at its cleanup, which waits (at most C{timeout} seconds, then
        aborts) until both protocols have seen C{connectionLost}.
    @param server: a protocol factory, a protocol, or a callable returning a
        protocol; likewise C{client}.
    @param serverDescription: a server description or endpoint; by default
        C{memory:} with a name unique to this test.
    @param clientDescription: the client description; by default the one
        that reaches the port (C{memory:NAME} for C{memory:}).
    @param reactor: by default the global reactor.  With a
        L{twisted.internet.task.Clock}-based reactor the pair is made
        deterministically: L{pump} has already run, so the Deferred has fired.
    @param timeout: bound, in seconds, on making the pair on a real reactor
        and on each wait during cleanup.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    if serverDescription is None:
        name = f"{testCase.id()}.{next(_counter)}"
        serverDescription = "memory:" + quoteArgument(name)
    serverFactory = _WatchingFactory(_asFactory(server))
    clientFactory = _WatchingFactory(_asFactory(client))
    clock = _isClock(reactor)
    state: dict[str, Any] = {"port": None}

    endpoint: Any = (
        serverFromString(reactor, serverDescription)
        if isinstance(serverDescription, str)
        else serverDescription
    )

    def listened(port: Any) -> defer.Deferred[tuple[Any, Any]]:
        state["port"] = port
        testCase.addCleanup(_cleanup, reactor, state, serverFactory, clientFactory, timeout)
        description = clientDescription
        if description is None:
            description = _clientDescription(port)
        connecting = cast(Any, clientFromString(reactor, description)).connect(clientFactory)
        found: dict[str, Any] = {}

        def cancel(d: defer.Deferred[tuple[Any, Any]]) -> None:
            connecting.cancel()

        result: defer.Deferred[tuple[Any, Any]] = defer.Deferred(cancel)

        def made(protocol: Any, side: str) -> None:
            found[side] = protocol
            if len(found) == 2 and not result.called:
                result.callback((found["client"], found["server"]))

        def failed(failure: Failure) -> None:
            if not result.called:
                result.errback(failure)

        connecting.addErrback(failed)
        clientFactory.first.addCallback(made, "client")
        serverFactory.first.addCallback(made, "server")
        def expire(why: str) -> None:
            if not result.called:
                connecting.cancel()
            if not result.called:
                result.errback(defer.TimeoutError(
                    f"connectedPair: {description} did not give a connected pair {why}"))

        if clock:
            pump(reactor)
            expire("once pumped (does a wrapper need the global reactor?)")
        else:
            call = reactor.callLater(timeout, expire, f"within {formatDuration(timeout)}")
            result.addBoth(lambda outcome: (call.cancel() if call.active() else None, outcome)[1])
        return result

    listening: defer.Deferred[Any] = defer.maybeDeferred(endpoint.listen, serverFactory)
    return listening.addCallback(listened)


def _clientDescription(port: Any) -> str:
    describe = getattr(port, "clientDescription", None)
    if describe is not None:
        description: str = describe()
        return description
    from endpointkit import clientDescriptionFor

    found: str = clientDescriptionFor(port)
    return found


def _firstOf(reactor: Any, ds: list[defer.Deferred[None]], timeout: float) -> defer.Deferred[None]:
    """
    A Deferred that fires when all of C{ds} have fired or C{timeout} seconds
    have passed, whichever is first; C{ds} themselves are left alone.
    """
    gate: defer.Deferred[None] = defer.Deferred()

    def open(_: object = None) -> None:
        if not gate.called:
            gate.callback(None)
        if timer.active():
            timer.cancel()

    timer = reactor.callLater(timeout, open)
    defer.DeferredList(ds).addCallback(open)
    return gate


def _lostAll(factories: tuple[_WatchingFactory, ...]) -> list[_Watched]:
    return [w for f in factories for w in f.watched if not w.lost.called]


@defer.inlineCallbacks
def _cleanup(
    reactor: Any,
    state: dict[str, Any],
    serverFactory: _WatchingFactory,
    clientFactory: _WatchingFactory,
    timeout: float,
) -> Any:
    factories = (clientFactory, serverFactory)
    for method in ("loseConnection", "abortConnection"):
        remaining = _lostAll(factories)
        if not remaining:
            break
        for watched in remaining:
            transport = getattr(watched.protocol, "transport", None)
            if transport is not None:
                getattr(transport, method)()
        if _isClock(reactor):
            pump(reactor)
        else:
            # Wait for every connectionLost, or the timeout, whichever is
            # first; the protocols' own Deferreds are left alone.
            yield _firstOf(reactor, [w.lost for w in remaining], timeout)
    port = state["port"]
    if port is not None:
        stopped = defer.maybeDeferred(port.stopListening)
        if _isClock(reactor):
            pump(reactor)
        yield stopped
    unclosed = _lostAll(factories)
    if unclosed:
        raise AssertionError(
            f"connections still open after cleanup: {[w.protocol for w in unclosed]!r}"
        )
    if hasattr(port, "name") and port.name in listeningNames(reactor):
        raise AssertionError(f"memory:{port.name} is still listened on after cleanup")
