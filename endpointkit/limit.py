"""
C{limit:} -- a server wrapper that caps concurrent connections, in total and
per peer address, and closes connections that stay idle too long::

    limit:max=1000:perPeer=20:idle=300:endpoint=tcp\\:8080
    limit:max=100:pause=yes:message=busy:endpoint=multi\\:...

Over a cap a new connection is closed at once, after writing C{message} and
CRLF if one is given, and counted.  With C{pause=yes} the listening sockets
stop accepting while the total cap is reached (new connections wait in the
kernel's listen queue) and resume when a connection ends; connections the
kernel hands over in the same accept batch are still refused.  A connection
with no data in either direction for C{idle} seconds is aborted.

Per-peer counting uses the peer's host (IPv4-mapped IPv6 addresses count as
their IPv4 address); peers without a host, such as UNIX-socket clients, are
counted only in the total.  The listening port (L{LimitPort}) exposes the
current counts (C{open}, C{perPeer}, C{rejected}, C{timedOut}, C{peak},
C{paused}, or all at once as C{counts}) and the port it wraps as
C{wrappedPort}.

A C{limit:} built from a description counts into
L{endpointkit.metrics.LimitMetrics} (open, refused by reason, timed out,
paused) in prometheus_client's global registry, labelled with its masked
description; L{LimitingFactory} and L{LimitServerEndpoint} take a
C{metrics} object of the application's (L{None}: no metrics).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit._kinds import Bool, Int, Nested, Seconds, String
from endpointkit._schema import Arg, EndpointType, Parsed
from endpointkit._wrapping import PassThroughFactory, PassThroughPort, PassThroughProtocol

if TYPE_CHECKING:
    from endpointkit.metrics import LimitMetrics

__all__ = ["LimitCounts", "LimitPort", "LimitServerEndpoint", "LimitingFactory", "limitType"]

_log = Logger()

# Twisted's policies module is untyped; its methods are called through these.
_Wrapper: Any = ProtocolWrapper
_Timeout: Any = TimeoutMixin

REJECT_GRACE = 5.0
"""
Default seconds a refused connection may take to flush its message before
it is aborted.
"""

LOG_INTERVAL = 60.0
"""
Refusals are logged at most once in this many seconds, with their count.
"""


@dataclass(frozen=True)
class LimitCounts:
    """
    A snapshot of a L{LimitingFactory}'s counters.

    @ivar open: connections open now.
    @ivar peak: the most connections that were open at once.
    @ivar rejected: connections refused over a cap, since listening.
    @ivar timedOut: connections closed for being idle.
    @ivar perPeer: open connections by peer host.
    @ivar paused: whether accepting is paused at the cap.
    """

    open: int
    peak: int
    rejected: int
    timedOut: int
    perPeer: Mapping[str, int]
    paused: bool


def peerKey(address: IAddress | None) -> str | None:
    """
    The host a per-peer cap counts C{address} under, or L{None} for an
    address without a host.
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str) or not host:
        return None
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return host


def _acceptors(port: Any) -> list[Any]:
    """
    The reactor ports under C{port} (through C{wrappedPort} and C{ports})
    that can stop and start accepting.
    """
    if callable(getattr(port, "stopReading", None)) and callable(
            getattr(port, "startReading", None)):
        return [port]
    found: list[Any] = []
    for member in getattr(port, "ports", ()) or ():
        found += _acceptors(member)
    inner = getattr(port, "wrappedPort", None)
    if inner is not None:
        found += _acceptors(inner)
    return found


class _Refused(Protocol):
    """
    A connection over a cap: write the message, if any, and close; abort if
    the peer does not take it within L{REJECT_GRACE} seconds.
    """

    def __init__(self, message: bytes | None, clock: IReactorTime, grace: float) -> None:
        self.message = message
        self.clock: Any = clock
        self.grace = grace
        self._abort: Any = None
        self._lost = False

    def connectionMade(self) -> None:
        transport: Any = self.transport
        if self.message:
            transport.write(self.message)
        transport.loseConnection()
        abort = getattr(transport, "abortConnection", None)
        if not self._lost and abort is not None:
            self._abort = self.clock.callLater(self.grace, abort)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self._abort = None


class _Limited(PassThroughProtocol, TimeoutMixin):
    """
    An accepted connection: counted until it is lost, and aborted after
    C{idle} seconds without data either way.  Half-close and TLS handshake
    events pass through to the application.
    """

    factory: LimitingFactory
    peer: str | None = None

    def callLater(self, period: float, func: Any) -> IDelayedCall:
        call: IDelayedCall = self.factory.clock.callLater(period, func)
        return call

    def makeConnection(self, transport: ITransport) -> None:
        _Timeout.setTimeout(self, self.factory.idle)
        PassThroughProtocol.makeConnection(self, transport)

    def dataReceived(self, data: bytes) -> None:
        _Timeout.resetTimeout(self)
        _Wrapper.dataReceived(self, data)

    def write(self, data: bytes) -> None:
        _Timeout.resetTimeout(self)
        _Wrapper.write(self, data)

    def writeSequence(self, data: Any) -> None:
        _Timeout.resetTimeout(self)
        _Wrapper.writeSequence(self, data)

    def timeoutConnection(self) -> None:
        factory = self.factory
        factory.timedOut += 1
        if factory.metrics is not None:
            factory.metrics.timedOut()
        transport: Any = self.transport
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        _Timeout.setTimeout(self, None)
        self.factory.release(self)
        _Wrapper.connectionLost(self, reason)


class LimitingFactory(PassThroughFactory):
    """
    Wraps a server factory: refuses connections over the total or per-peer
    cap, counts them, pauses accepting at the cap if asked, and times out
    idle connections.

    @ivar metrics: where the events are counted too (L{None}: only here).
    """

    protocol = _Limited

    def __init__(self, wrappedFactory: IProtocolFactory, maxConnections: int | None = None,
                 perPeer: int | None = None, idle: float | None = None,
                 message: str | None = None, pause: bool = False,
                 clock: IReactorTime | None = None,
                 refuseGrace: float = REJECT_GRACE,
                 metrics: LimitMetrics | None = None) -> None:
        PassThroughFactory.__init__(self, wrappedFactory)
        self.metrics = metrics
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock: Any = clock
        self.maxConnections = maxConnections
        self.perPeer = perPeer
        self.idle = idle
        self.message = (message.encode("utf-8") + b"\r\n") if message else None
        self.pause = pause
        self.open = 0
        self.peak = 0
        self.rejected = 0
        self.timedOut = 0
        self.perPeerCounts: dict[str, int] = {}
        self.paused = False
        self.refuseGrace = refuseGrace
        self.port: Any = None
        self._unlogged = 0
        self._loggedAt: float | None = None

    def counts(self) -> LimitCounts:
        """
        A snapshot of the counters.
        """
        return LimitCounts(self.open, self.peak, self.rejected, self.timedOut,
                           dict(self.perPeerCounts), self.paused)

    def buildProtocol(self, addr: IAddress | None) -> Any:
        """
        Refuse over a cap, else wrap the wrapped factory's protocol and count
        it.
        """
        key = peerKey(addr)
        if self.maxConnections is not None and self.open >= self.maxConnections:
            return self._refuse(f"the cap of {self.maxConnections} connections", "max")
        if (self.perPeer is not None and key is not None
                and self.perPeerCounts.get(key, 0) >= self.perPeer):
            return self._refuse(f"the cap of {self.perPeer} connections from {key}", "perPeer")
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        wrapper: _Limited = _Limited(self, inner)
        wrapper.peer = key
        self.open += 1
        if self.metrics is not None:
            self.metrics.opened()
        self.peak = max(self.peak, self.open)
        if key is not None:
            self.perPeerCounts[key] = self.perPeerCounts.get(key, 0) + 1
        if (self.pause and self.maxConnections is not None
                and self.open >= self.maxConnections):
            self._setPaused(True)
        return wrapper

    def _refuse(self, what: str, reason: str = "max") -> Protocol:
        """
        Count and refuse a connection over a cap.

        @param reason: the cap, for the metrics: C{max} or C{perPeer}.
        """
        self.rejected += 1
        if self.metrics is not None:
            self.metrics.refused(reason)
        self._unlogged += 1
        now: float = self.clock.seconds()
        if self._loggedAt is None or now - self._loggedAt >= LOG_INTERVAL:
            _log.info("limit: refused {count} connection(s), the latest over {what}",
                      count=self._unlogged, what=what)
            self._loggedAt = now
            self._unlogged = 0
        return _Refused(self.message, self.clock, self.refuseGrace)

    def release(self, wrapper: _Limited) -> None:
        """
        A counted connection ended.
        """
        self.open -= 1
        if self.metrics is not None:
            self.metrics.closed()
        key = wrapper.peer
        if key is not None:
            left = self.perPeerCounts.get(key, 0) - 1
            if left > 0:
                self.perPeerCounts[key] = left
            else:
                self.perPeerCounts.pop(key, None)
        if self.paused and (self.maxConnections is None or self.open < self.maxConnections):
            self._setPaused(False)

    def _setPaused(self, paused: bool) -> None:
        if self.port is None or paused == self.paused:
            return
        self.paused = paused
        if self.metrics is not None:
            self.metrics.setPaused(paused)
        for acceptor in _acceptors(self.port):
            if paused:
                acceptor.stopReading()
            elif getattr(acceptor, "connected", True) and not getattr(
                    acceptor, "disconnecting", False):
                acceptor.startReading()


class LimitPort(PassThroughPort):
    """
    The listening port of a C{limit:} endpoint: the wrapped port, plus the
    counters.

    @ivar wrappedPort: the port of the wrapped endpoint.
    @ivar factory: the L{LimitingFactory} that counts.
    """

    def __init__(self, wrappedPort: IListeningPort, factory: LimitingFactory) -> None:
        PassThroughPort.__init__(self, wrappedPort)
        self.factory = factory
        factory.port = wrappedPort

    def __repr__(self) -> str:
        return f"<LimitPort {self.counts} of {self.wrappedPort!r}>"

    @property
    def counts(self) -> LimitCounts:
        """
        A snapshot of all counters.
        """
        return self.factory.counts()

    @property
    def open(self) -> int:
        """
        Connections open now.
        """
        return self.factory.open

    @property
    def rejected(self) -> int:
        """
        Connections refused over a cap since listening.
        """
        return self.factory.rejected

    @property
    def timedOut(self) -> int:
        """
        Connections closed for being idle.
        """
        return self.factory.timedOut

    @property
    def peak(self) -> int:
        """
        The most connections open at once.
        """
        return self.factory.peak

    @property
    def perPeer(self) -> dict[str, int]:
        """
        Open connections by peer host.
        """
        return dict(self.factory.perPeerCounts)

    @property
    def paused(self) -> bool:
        """
        Whether accepting is paused at the cap.
        """
        return self.factory.paused

    def startListening(self) -> None:
        self.factory.port = self.wrappedPort
        PassThroughPort.startListening(self)

    def stopListening(self) -> defer.Deferred[None]:
        """
        Stop the wrapped port; fires when it is closed.  Open connections
        stay open (and counted).
        """
        self.factory.port = None
        if self.factory.paused and self.factory.metrics is not None:
            self.factory.metrics.setPaused(False)
        self.factory.paused = False
        return PassThroughPort.stopListening(self)


@implementer(IStreamServerEndpoint)
class LimitServerEndpoint:
    """
    Wraps a server endpoint with connection caps and an idle timeout.

    @param maxConnections: cap on open connections in total (L{None}: none).
    @param perPeer: cap on open connections per peer host (L{None}: none).
    @param idle: seconds without data before a connection is aborted.
    @param message: text (UTF-8, then CRLF) written to a refused connection.
    @param pause: stop accepting while at C{maxConnections}.
    @param clock: for the idle timeout and the refusal grace (default: the
        reactor).
    @param metrics: where the events are counted (L{None}: not counted).
    """

    def __init__(self, endpoint: IStreamServerEndpoint, maxConnections: int | None = None,
                 perPeer: int | None = None, idle: float | None = None,
                 message: str | None = None, pause: bool = False,
                 clock: IReactorTime | None = None,
                 metrics: LimitMetrics | None = None) -> None:
        self.endpoint: Any = endpoint
        self.metrics = metrics
        self.maxConnections = maxConnections
        self.perPeer = perPeer
        self.idle = idle
        self.message = message
        self.pause = pause
        self.clock = clock

    def __repr__(self) -> str:
        return (f"<LimitServerEndpoint max={self.maxConnections} perPeer={self.perPeer} "
                f"idle={self.idle} of {self.endpoint!r}>")

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        factory = LimitingFactory(protocolFactory, self.maxConnections, self.perPeer,
                                  self.idle, self.message, self.pause, self.clock,
                                  metrics=self.metrics)
        listening: defer.Deferred[Any] = defer.maybeDeferred(self.endpoint.listen, factory)
        listening.addCallback(lambda port: LimitPort(port, factory))
        return listening


def _check(values: Mapping[str, Any], given: frozenset[str]) -> None:
    if values["max"] is None and values["perPeer"] is None and values["idle"] is None:
        raise limitType.error(None, "needs at least one of max, perPeer and idle")
    if values["pause"] and values["max"] is None:
        raise limitType.error("pause", "needs max (it pauses accepting at that cap)")
    if values["message"] is not None and values["max"] is None and values["perPeer"] is None:
        raise limitType.error("message", "is sent to refused connections; it needs max or perPeer")


def _build(reactor: Any, parsed: Parsed) -> LimitServerEndpoint:
    from endpointkit.metrics import LimitMetrics

    values = parsed.values
    return LimitServerEndpoint(values["endpoint"].build(reactor), values["max"],
                               values["perPeer"], values["idle"], values["message"],
                               values["pause"], clock=reactor, metrics=LimitMetrics(parsed))


limitType = EndpointType(
    "limit", "server",
    (
        Arg("endpoint", Nested("server"), help="the server description it wraps"),
        Arg("max", Int(1), None, "most connections open at once, in total"),
        Arg("perPeer", Int(1), None, "most connections open at once from one peer host"),
        Arg("idle", Seconds(), None, "seconds without data either way before a "
            "connection is aborted"),
        Arg("message", String(), None, "text written (then CRLF) to a connection "
            "refused over a cap"),
        Arg("pause", Bool(), False, "stop accepting while at max, instead of "
            "accepting and closing"),
    ),
    "caps concurrent connections in total and per peer host, and closes idle "
    "connections, around another server description",
    build=_build,
    validate=_check,
)
