"""
C{memory:} -- in-memory server and client endpoints, addressable by name::

    memory:db                    server or client (or memory:name=db)
    memory:db:timeout=5          client: how long to wait for a port that
                                 is not accepting (default 30 s)

A server listening on C{memory:db} and a client connecting to C{memory:db}
on the same reactor are joined without a socket: a program under test keeps
its real configuration strings.  Names live in a per-reactor registry:
listening on a name that is taken fails with L{CannotListenError} (errno
C{EADDRINUSE}), connecting to a name nobody listens on fails with
L{ConnectionRefusedError}, and C{stopListening} frees the name.

The transports behave like TCP's: writes are buffered and delivered later
from the reactor (never inside the caller's C{write}), C{loseConnection}
waits for buffered data, C{abortConnection} drops it and the peer sees
L{ConnectionLost}, half-close follows L{IHalfCloseableProtocol}, data
written to a peer that has closed for good ends the writer's connection with
L{ConnectionLost} (TCP's broken pipe), and a
registered producer is paused when the peer's unread data passes
L{HIGH_WATER} bytes and resumed below L{LOW_WATER} (a reader that calls
C{transport.pauseProducing()} stops delivery, so backpressure reaches the
writer).

Delivery runs from one scheduled call per reactor (C{callLater(0)}), so on a
real reactor it is live and on a L{twisted.internet.task.Clock} or
L{MemoryReactorClock} it happens when the test calls L{pump}.

A port that stops accepting (C{stopReading}, as C{limit:pause=yes} does)
keeps new connection attempts waiting until it accepts again; unlike TCP,
whose kernel completes the handshake meanwhile, the client's C{connect}
fires only once the server accepts.

The transport and the address live in L{endpointkit._memorytransport};
their names are imported from here.
"""

from __future__ import annotations

import errno
import os
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import (
    CannotListenError,
    ConnectingCancelledError,
    ConnectionLost,
    ConnectionRefusedError,
    NoProtocol,
)
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit._grammar import formatDuration, quoteArgument
from endpointkit._kinds import Seconds, String
from endpointkit._memorytransport import (
    HIGH_WATER,
    LOW_WATER,
    MemoryAddress,
    MemoryTransport,
    _done,
    _failure,
)
from endpointkit._schema import Arg, EndpointType

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "MemoryAddress",
    "MemoryClientEndpoint",
    "MemoryPort",
    "MemoryServerEndpoint",
    "MemoryTransport",
    "listeningNames",
    "memoryClientType",
    "memoryServerType",
    "openConnections",
    "pump",
]

_log = Logger()

#: Tasks run per reactor turn before the pump yields to the reactor.
_BUDGET = 2048


def _description(name: str) -> str:
    return "memory:" + quoteArgument(name)


class _Network:
    """
    The names listened on with one reactor, its live connections, and the
    queue of delivery tasks that one scheduled call runs.
    """

    def __init__(self) -> None:
        self.ports: dict[str, MemoryPort] = {}
        self.connections: set[MemoryTransport] = set()
        self._queue: deque[Callable[[], None]] = deque()
        self._call: IDelayedCall | None = None
        self._running = False
        #: While L{pump} runs: how many more turns it allows.
        self.turnsLeft: int | None = None

    def schedule(self, reactor: Any, task: Callable[[], None]) -> None:
        self._queue.append(task)
        if self._call is None and not self._running:
            self._call = reactor.callLater(0, self._run, reactor)

    def _run(self, reactor: Any) -> None:
        self._call = None
        if self.turnsLeft is not None:
            self.turnsLeft -= 1
        self._running = True
        queue = self._queue
        budget = _BUDGET
        try:
            while queue and budget:
                budget -= 1
                queue.popleft()()
        finally:
            self._running = False
            if queue and (self.turnsLeft is None or self.turnsLeft > 0):
                self._call = reactor.callLater(0, self._run, reactor)

    def resume(self, reactor: Any) -> None:
        """
        Schedule the pending tasks again after L{pump} stopped at its bound.
        """
        if self._queue and self._call is None and not self._running:
            self._call = reactor.callLater(0, self._run, reactor)


_networks: weakref.WeakKeyDictionary[Any, _Network] = weakref.WeakKeyDictionary()
_ATTRIBUTE = "_endpointkitMemoryNetwork"


def _networkFor(reactor: Any) -> _Network:
    network = _existing(reactor)
    if network is None:
        network = _Network()
        try:
            _networks[reactor] = network
        except TypeError:
            # A reactor that cannot be weakly referenced keeps its own.
            setattr(reactor, _ATTRIBUTE, network)
    return network


def _existing(reactor: Any) -> _Network | None:
    try:
        found = _networks.get(reactor)
    except TypeError:
        found = None
    return found if found is not None else getattr(reactor, _ATTRIBUTE, None)


def listeningNames(reactor: Any) -> list[str]:
    """
    The names that something listens on with C{reactor}, sorted: a test can
    check that it left none behind.
    """
    network = _existing(reactor)
    return sorted(network.ports) if network is not None else []


def openConnections(reactor: Any) -> int:
    """
    How many C{memory:} transports on C{reactor} are not yet disconnected.
    """
    network = _existing(reactor)
    return len(network.connections) if network is not None else 0


def pump(reactor: Any, maxTurns: int = 10_000) -> int:
    """
    Run what is due on a L{twisted.internet.task.Clock}-based reactor (such
    as L{MemoryReactorClock}) without moving its time, until nothing is due:
    every pending C{memory:} delivery happens, and what it causes.

    A turn delivers up to a few thousand pending events; at most
    C{maxTurns} turns are taken, so protocols that talk forever cannot hang
    a test (the rest stays pending for the next call).  Returns the number
    of turns taken.
    """
    if not callable(getattr(reactor, "advance", None)):
        raise TypeError(
            f"pump needs a Clock-based reactor such as MemoryReactorClock, got {reactor!r}; "
            "on a real reactor, memory: delivery is already live")
    network = _networkFor(reactor)
    outer = network.turnsLeft
    network.turnsLeft = left = maxTurns if outer is None else min(maxTurns, outer)
    try:
        for _ in range(maxTurns):
            now = reactor.seconds()
            if not any(call.getTime() <= now for call in reactor.getDelayedCalls()):
                break
            reactor.advance(0)
            if (network.turnsLeft or 0) <= 0:
                break
        return left - (network.turnsLeft or 0)
    finally:
        network.turnsLeft = outer
        if outer is None:
            network.resume(reactor)


def _connect(
    reactor: Any,
    network: _Network,
    port: MemoryPort,
    clientProtocol: Any,
    clientNumber: int,
    onClientLost: Callable[[], None],
) -> MemoryTransport | None:
    """
    Join a client protocol to a new server protocol of C{port}; either may
    be missing (its factory declined), and then the other end is connected
    and sees the stream end at once, as with TCP.
    """
    serverAddress = port.getHost()
    clientAddress = MemoryAddress(port.name, clientNumber)
    serverProtocol: Any
    try:
        serverProtocol = port.factory.buildProtocol(clientAddress)
    except BaseException:
        _log.failure("error building the protocol for a memory: connection")
        serverProtocol = None
    server = client = None
    if serverProtocol is not None:
        server = MemoryTransport(reactor, network, serverAddress, clientAddress)
        server.protocol = serverProtocol
    if clientProtocol is not None:
        client = MemoryTransport(reactor, network, clientAddress, serverAddress, onClientLost)
        client.protocol = clientProtocol
    for end, other in ((server, client), (client, server)):
        if end is None:
            continue
        end._peer = other
        end.connected = True
        network.connections.add(end)
        if other is None:
            end._inboundEnd = _done()
            end._schedule()
    for end in (server, client):
        if end is not None and end.protocol is not None and end.connected:
            end._call(end.protocol.makeConnection, end)
    return client


@implementer(IListeningPort)
class MemoryPort:
    """
    A name listened on with C{memory:}.  Its connections stay open after
    C{stopListening}, as TCP's do.
    """

    def __init__(self, reactor: Any, name: str, factory: IProtocolFactory) -> None:
        self.reactor = reactor
        self.name = name
        self.factory: Any = factory
        self.listening = False
        self.accepting = True
        self._connections = 0
        self._waiting: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        state = "listening" if self.listening else "not listening"
        return f"<MemoryPort {_description(self.name)} {state}>"

    def _nextNumber(self) -> int:
        self._connections += 1
        return self._connections

    def startListening(self) -> None:
        if self.listening:
            return
        network = _networkFor(self.reactor)
        if self.name in network.ports:
            raise CannotListenError(  # type: ignore[no-untyped-call]
                None,
                _description(self.name),
                OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)),
            )
        network.ports[self.name] = self
        self.listening = True
        self.factory.doStart()

    def stopListening(self) -> defer.Deferred[None]:
        """
        Free the name; the returned Deferred has fired by then.  Connection
        attempts still waiting to be accepted are refused.
        """
        if self.listening:
            network = _networkFor(self.reactor)
            if network.ports.get(self.name) is self:
                del network.ports[self.name]
            self.listening = False
            self._release()
            self.factory.doStop()
        return defer.succeed(None)

    def stopReading(self) -> None:
        """
        Stop accepting: new connection attempts wait, as in a listen queue,
        until L{startReading} (C{limit:pause=yes} uses this).
        """
        self.accepting = False

    def startReading(self) -> None:
        """
        Accept again, starting with the attempts that waited.
        """
        self.accepting = True
        self._release()

    def _wait(self, attempt: Callable[[], None]) -> None:
        self._waiting.append(attempt)

    def _release(self) -> None:
        waiting, self._waiting = self._waiting, []
        network = _networkFor(self.reactor)
        for attempt in waiting:
            network.schedule(self.reactor, attempt)

    def getHost(self) -> MemoryAddress:
        return MemoryAddress(self.name, 0)

    def clientDescription(self, hostname: str | None = None,
                          trustRoots: str | None = None) -> str:
        """
        The client description that connects to this port (no TLS here:
        C{hostname} and C{trustRoots} are for the wrappers' descriptions).
        """
        return _description(self.name)


@implementer(IStreamServerEndpoint)
class MemoryServerEndpoint:
    """
    Listens on a name in the C{memory:} registry of C{reactor}.
    """

    def __init__(self, reactor: Any, name: str) -> None:
        self._reactor = reactor
        self.name = name

    def __repr__(self) -> str:
        return f"<MemoryServerEndpoint {_description(self.name)}>"

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        port = MemoryPort(self._reactor, self.name, protocolFactory)
        try:
            port.startListening()
        except CannotListenError:
            return defer.fail()
        return defer.succeed(port)


class _Attempt:
    cancelled = False
    timer: IDelayedCall | None = None

    def settle(self) -> None:
        """
        The attempt is over: no more waiting, no deadline.
        """
        self.cancelled = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


@implementer(IStreamClientEndpoint)
class MemoryClientEndpoint:
    """
    Connects to a name in the C{memory:} registry of C{reactor}.  The
    connection is made from the reactor, so the Deferred never fires inside
    C{connect}.

    @ivar timeout: seconds an attempt may wait for a port that is not
        accepting (see L{MemoryPort.stopReading}) before it fails with
        L{twisted.internet.error.TimeoutError}, as a TCP connect would.
    """

    def __init__(self, reactor: Any, name: str, timeout: float = 30.0) -> None:
        self._reactor = reactor
        self.name = name
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"<MemoryClientEndpoint {_description(self.name)}>"

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        factory: Any = protocolFactory
        reactor = self._reactor
        network = _networkFor(reactor)
        attempt = _Attempt()

        def cancel(d: defer.Deferred[IProtocol]) -> None:
            attempt.settle()
            forget()
            factory.doStop()
            d.errback(ConnectingCancelledError(  # type: ignore[no-untyped-call]
                MemoryAddress(self.name)))

        result: defer.Deferred[IProtocol] = defer.Deferred(cancel)
        factory.doStart()

        def forget() -> None:
            port = network.ports.get(self.name)
            if port is not None and attemptConnection in port._waiting:
                port._waiting.remove(attemptConnection)

        def expire() -> None:
            attempt.timer = None
            attempt.settle()
            forget()
            factory.doStop()
            result.errback(ConnectTimeoutError(  # type: ignore[no-untyped-call]
                f"{_description(self.name)} did not accept within {formatDuration(self.timeout)}"))

        def attemptConnection() -> None:
            if attempt.cancelled:
                return
            port = network.ports.get(self.name)
            if port is not None and not port.accepting:
                port._wait(attemptConnection)
                if attempt.timer is None:
                    attempt.timer = reactor.callLater(self.timeout, expire)
                return
            attempt.settle()
            if port is None:
                factory.doStop()
                result.errback(
                    ConnectionRefusedError(  # type: ignore[no-untyped-call]
                        f"nothing listens on {_description(self.name)}")
                )
                return
            number = port._nextNumber()
            try:
                protocol = factory.buildProtocol(port.getHost())
            except BaseException:
                protocol = None
                failure: Failure | None = _failure()
            else:
                failure = None if protocol is not None else _failure(NoProtocol())
            client = _connect(reactor, network, port, protocol, number, factory.doStop)
            if failure is not None:
                factory.doStop()
                result.errback(failure)
            elif client is not None and client.connected:
                assert protocol is not None
                result.callback(protocol)
            else:
                result.errback(ConnectionLost("the connection was lost while it was made"))

        network.schedule(reactor, attemptConnection)
        return result


_nameArg = Arg("name", String(), help="the name to listen on or connect to", positional=True)

memoryServerType = EndpointType(
    "memory", "server", (_nameArg,),
    "in-memory listener on a name, for tests: no socket; clients connect with memory:NAME",
    factory=MemoryServerEndpoint,
)

memoryClientType = EndpointType(
    "memory", "client",
    (_nameArg, Arg("timeout", Seconds(), 30.0,
                   "seconds to wait while the listener is not accepting")),
    "in-memory connection to a memory: listener on the same reactor, for tests",
    factory=MemoryClientEndpoint,
)
