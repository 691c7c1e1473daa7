"""
The relay core: accept on any server description, connect each accepted
connection to any client description, and move bytes both ways::

    service = RelayService("tcp:8080:interface=127.0.0.1", "unix:/run/app.sock",
                           maxConnections=100, idleTimeout=300)
    service.setServiceParent(application)

Both directions use producer/consumer flow control (a slow reader on one side
pauses reading on the other), half-closes are passed on where both sides
support them, a clean close closes the other side once what it sent has been
flushed, and a reset (or any other loss that is not a clean close) aborts the
other side, so that it sees a reset too.  When both sides turn out to be
plain kernel sockets, also behind pass-through wrappers such as C{limit:}'s
and lifecycle's connection tracking, the bytes move with C{os.splice}
instead (L{endpointkit._splice}).

When CONNECT sends a PROXY header (C{proxyprotocol:} around it, which is
what C{endpointkit relay --send-proxy v1|v2} does, through
L{endpointkit.proxyprotocol.sendProxyDescription}), each backend factory
carries the accepted connection's addresses
(L{endpointkit.proxyprotocol.recordOriginalConnection}), and over TLS the
name the client asked for (SNI) and the negotiated ALPN protocol: the backend
is then connected once the accepted side's handshake is done.  The
header is sent when the backend connection is made, before any relayed
byte, so such a relay splices too (when the socket did not take the header
whole, it waits in the transport's buffer and that relay copies).

The caps and the idle timeout (C{maxConnections}, C{idleTimeout}) are
C{limit:}'s (L{endpointkit.limit.LimitingFactory}): one refusal, one idle
timer, which bytes moved by splice also reset.

Every relay counts into L{endpointkit.metrics.RelayMetrics} (connections,
bytes each way, connect failures by reason, connect latency, refusals),
labelled with its masked descriptions, in the registry the application
passes (prometheus_client's global one by default); C{metrics=False} turns
that off.  Counting costs a few calls per connection and one per chunk
moved (a splice call's byte count on the splice path), never per byte.

The command line (C{endpointkit relay}), the twistd plugin's glue, the demo
backend and the log observer sit above this module, in
L{endpointkit._relaycli}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IListeningPort,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, ServerFactory, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit import TrackingFactory, _splice
from endpointkit._grammar import buildDescription
from endpointkit._lookup import parseDescription
from endpointkit._parse import logInsecure
from endpointkit._schema import Parsed
from endpointkit._wrapping import PassThroughProtocol
from endpointkit.deadline import TimeoutEndpoint, _withDeadline
from endpointkit.failover import servedBy
from endpointkit.limit import LimitingFactory
from endpointkit.metrics import RelayMetrics
from endpointkit.proxyprotocol import (
    IOriginalConnection,
    ProxyHeaderSendingProtocol,
    recordOriginalConnection,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["RelayFactory", "RelayService", "RelayStats", "describeAddress",
           "describeListening"]

log = Logger(namespace="endpointkit.relay")

# Twisted's application and failure modules are untyped; called through these.
_Failure: Any = Failure
_Service: Any = Service

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_DRAIN_TIMEOUT = 10.0
SHOWN_NAMES = 16
"""
At most this many members (C{servedBy}) and chosen targets are counted by
name in L{RelayStats}; further ones are counted under C{(other)}.
"""

READ_SIZE = 1 << 18
"""
How much one read takes from a socket on the general path, and how much a
transport buffers before it pauses the other side (per direction).
"""


@dataclass
class RelayStats:
    """
    Counters of one relay service.

    @ivar refused: connections refused over C{maxConnections}.
    @ivar timedOut: relays closed after C{idleTimeout} without bytes.
    @ivar up: bytes from accepted clients to the backend.
    @ivar down: bytes from the backend to accepted clients.
    @ivar servedBy: relayed connections by the C{fallback:} or C{race:}
        member that made their backend connection (masked descriptions).
    @ivar targets: relayed connections by the target the CONNECT endpoint
        says it chose (its C{chosenTarget}, where it has one, such as
        C{srv:}).
    """

    open: int = 0
    total: int = 0
    failed: int = 0
    refused: int = 0
    spliced: int = 0
    up: int = 0
    down: int = 0
    timedOut: int = 0
    servedBy: dict[str, int] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """
        The one-line summary the stats log prints (and C{SIGUSR1} asks for
        in the command), with the members and targets that served
        connections when there are any.
        """
        text = (f"relay stats: open={self.open} total={self.total} "
                f"failed={self.failed} refused={self.refused} spliced={self.spliced} "
                f"idle={self.timedOut} up={_size(self.up)} down={_size(self.down)}")
        for title, counts in (("served by", self.servedBy), ("targets", self.targets)):
            if counts:
                text += f"; {title} " + ", ".join(f"{name} ({n})" for name, n in counts.items())
        return text


def _tally(counts: dict[str, int], name: str) -> None:
    if name not in counts and len(counts) >= SHOWN_NAMES:
        name = "(other)"
    counts[name] = counts.get(name, 0) + 1


def chosenTarget(endpoint: object, protocol: object) -> str | None:
    """
    The target a CONNECT endpoint says it chose for the connection of
    C{protocol}, where it exposes one (a C{chosenTarget} attribute, a string
    or a function of the protocol; C{srv:} has one), else L{None}.
    """
    chosen = getattr(endpoint, "chosenTarget", None)
    if callable(chosen):
        try:
            chosen = chosen(protocol)
        except Exception:
            return None
    if chosen is None:
        return None
    return chosen if isinstance(chosen, str) else str(chosen)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def describeAddress(address: IAddress | None) -> str:
    """
    A short description of a peer address for log lines, like
    C{tcp:127.0.0.1:5555} or C{unix:/run/x.sock}.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        kind = str(getattr(address, "type", "TCP")).lower()
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"{kind if kind in ('tcp', 'udp') else 'tcp'}:{shown}:{port}"
    name = getattr(address, "name", None)
    if name is not None:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"unix:{name or '(unnamed)'}"
    return repr(address)


def _kernelOf(transport: Any, touches: list[Callable[[], None]] | None = None) -> Any:
    """
    The plain kernel socket transport under C{transport}, seeing through
    pass-through wrappers (lifecycle's tracking, C{limit:}'s caps), with a
    bigger read size; or L{None} when TLS or another layer that changes the
    bytes sits in between.

    @param touches: gets the C{resetTimeout} of each wrapper with an idle
        timer on the way, for the relay to call as bytes move (spliced bytes
        never pass through the wrapper).
    """
    for _ in range(6):
        if _splice.isKernelTransport(transport):
            transport.bufferSize = READ_SIZE
            return transport
        if not _passesThrough(transport):
            return None
        if touches is not None and isinstance(transport, TimeoutMixin):
            touches.append(transport.resetTimeout)
        wrapper: Any = transport
        transport = wrapper.transport
    return None


def _passesThrough(transport: Any) -> bool:
    """
    Whether C{transport} is a wrapper that passes bytes through unchanged
    (so that splice may move them below it).
    """
    return isinstance(transport, PassThroughProtocol)


_T = TypeVar("_T")


def _unwrap(protocol: Any, kind: type[_T]) -> _T | None:
    """
    C{protocol}, or the protocol it wraps (C{wrappedProtocol}, or
    C{_wrappedProtocol} as Twisted's endpoints name it), and so on a few
    levels down, that is a C{kind}; L{None} when there is none.
    """
    for _ in range(8):
        if protocol is None or isinstance(protocol, kind):
            return protocol
        protocol = (getattr(protocol, "_wrappedProtocol", None)
                    or getattr(protocol, "wrappedProtocol", None))
    return protocol if isinstance(protocol, kind) else None


def _whyNotKernel(transport: Any) -> str:
    """
    Why C{transport} is not a plain socket the splice path can take, for
    the log.
    """
    for _ in range(6):
        if not isinstance(transport, PassThroughProtocol):
            break
        wrapper: Any = transport
        transport = wrapper.transport
    if _unwrap(getattr(transport, "protocol", None), ProxyHeaderSendingProtocol) is not None:
        # Its header is still in the transport's buffer when it connects.
        return "it sends a PROXY protocol header of its own first"
    if isinstance(transport, _splice.KERNEL_TRANSPORTS):
        return "its socket had bytes queued or was closing"
    return f"its transport is a {type(transport).__name__}, not a plain socket"


class _End(Protocol):
    """
    One side of a relay.  Data received goes to the other side's transport.
    """

    relay: Relay
    index: int

    def __init__(self) -> None:
        self.peer: _End | None = None
        self.pending: list[bytes] = []
        self.readClosed = False
        self.writeClosed = False
        self.lost = False
        self.kernel: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.relay.count(self.index, len(data))
        peer = self.peer
        if peer is None:
            self.pending.append(data)
        elif not peer.lost:
            kernel = peer.kernel
            if (kernel is not None and not kernel.dataBuffer
                    and not kernel._tempDataBuffer and not kernel.disconnecting
                    and not kernel._writeDisconnecting):
                # Nothing is queued on the other side: send now rather than
                # queue and wait a reactor turn for writability.
                try:
                    sent = kernel.socket.send(data)
                except OSError:
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
            peer.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        if self.readClosed:
            return
        self.readClosed = True
        peer = self.peer
        if peer is None:
            return
        self.relay.passEOF(self, peer)
        self._maybeClose()

    def writeConnectionLost(self) -> None:
        self.writeClosed = True
        self._maybeClose()

    def _maybeClose(self) -> None:
        if self.readClosed and self.writeClosed and not self.lost:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        self.relay.endLost(self, reason)

    # The producer the other side's transport is given: pausing and resuming
    # go to this side's transport, and stopping is left to the relay (a
    # transport stops its producer with a clean close when it is lost, and
    # a reset must be passed on as a reset).

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        pass


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class _ClientEnd(_End):
    """
    The accepted connection.  It is not read until its backend connects;
    when the backend is to be told the TLS names (a PROXY header's
    authority and ALPN), it is read until its handshake is done first.
    """

    index = 0

    def __init__(self, factory: RelayFactory) -> None:
        _End.__init__(self)
        self.factory = factory
        self.awaitingHandshake = False

    def connectionMade(self) -> None:
        transport: Any = self.transport
        relay = self.relay = Relay(self.factory, self)
        self.kernel = _kernelOf(transport, relay.touches)
        relay.start()
        if self.factory.recordOriginal and _handshakePending(transport):
            self.awaitingHandshake = True
            return
        transport.pauseProducing()
        relay.connectBackend()

    def handshakeCompleted(self) -> None:
        if not self.awaitingHandshake or self.lost:
            return
        self.awaitingHandshake = False
        transport: Any = self.transport
        transport.pauseProducing()
        self.relay.connectBackend()


def _handshakePending(transport: Any) -> bool:
    """
    Whether C{transport} (seen through wrappers) is TLS whose handshake is
    not done yet.
    """
    layer = transport
    for _ in range(8):
        if layer is None:
            return False
        if getattr(layer, "_tlsConnection", None) is not None:
            return not getattr(layer, "_handshakeDone", True)
        layer = layer.__dict__.get("transport") if hasattr(layer, "__dict__") else None
    return False


@implementer(IHalfCloseableProtocol)
class _BackendEnd(_End):
    """
    The connection to the backend.
    """

    index = 1

    def __init__(self, relay: Relay) -> None:
        _End.__init__(self)
        self.relay = relay

    def connectionMade(self) -> None:
        self.kernel = _kernelOf(self.transport)


@implementer(IOriginalConnection)
class _BackendFactory(Factory):
    """
    Builds a relay's backend end.  It provides L{IOriginalConnection} (its
    addresses are L{None} unless the relay records them), so that recording
    them sets attributes only.
    """

    noisy = False
    originalPeer: IAddress | None = None
    originalHost: IAddress | None = None
    originalAuthority: str | None = None
    originalALPN: bytes | None = None

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def buildProtocol(self, addr: IAddress | None) -> _BackendEnd:
        return _BackendEnd(self.relay)


def _reason(failure: Failure) -> str:
    value = failure.value
    text = str(value).strip() or type(value).__name__
    return text.rstrip(".")


def _abort(end: _End) -> None:
    transport: Any = end.transport
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


class Relay:
    """
    One accepted connection and its backend connection.
    """

    def __init__(self, factory: RelayFactory, client: _ClientEnd) -> None:
        self.factory = factory
        self.client = client
        self.backend: _BackendEnd | None = None
        self.connecting: Deferred[Any] | None = None
        self.splicer: _splice.Splicer | None = None
        self.finished = False
        self.touches: list[Callable[[], None]] = []
        self.startedAt = 0.0

    @property
    def peer(self) -> str:
        """
        The client's address, for log lines.
        """
        return describeAddress(self.client.transport.getPeer())  # type: ignore[union-attr]

    def start(self) -> None:
        """
        Count the relay as open.
        """
        factory = self.factory
        factory.relays.add(self)
        stats = factory.stats
        stats.open += 1
        stats.total += 1
        metrics = factory.metrics
        if metrics is not None:
            metrics.connectionOpened()
            self.startedAt = factory.reactor.seconds()

    def connectBackend(self) -> None:
        """
        Connect to the backend; with C{recordOriginal}, the backend factory
        carries the accepted connection's addresses (and TLS names).
        """
        factory = self.factory
        backendFactory = _BackendFactory(self)
        if factory.recordOriginal:
            recordOriginalConnection(backendFactory, self.client.transport)
        d = factory.connector.connect(backendFactory)
        self.connecting = d
        d.addCallbacks(self._connected, self._connectFailed)

    def count(self, direction: int, n: int) -> None:
        factory = self.factory
        stats = factory.stats
        metrics = factory.metrics
        if direction == 0:
            stats.up += n
            if metrics is not None:
                metrics.bytesUp(n)
        else:
            stats.down += n
            if metrics is not None:
                metrics.bytesDown(n)
        for touch in self.touches:
            touch()

    def _connected(self, protocol: Any) -> None:
        self.connecting = None
        factory = self.factory
        if factory.metrics is not None:
            factory.metrics.connected(factory.reactor.seconds() - self.startedAt)
        backend = self.backend = self._find(protocol)
        member = servedBy(protocol)
        if member is not None:
            _tally(factory.stats.servedBy, member)
        target = chosenTarget(factory.connectEndpoint, protocol)
        if target is not None:
            _tally(factory.stats.targets, target)
        client = self.client
        if client.lost or self.finished:
            backend.transport.loseConnection()  # type: ignore[union-attr]
            return
        client.peer, backend.peer = backend, client
        if self._trySplice(client, backend):
            return
        ct: Any = client.transport
        bt: Any = backend.transport
        ct.registerProducer(backend, True)
        bt.registerProducer(client, True)
        for source, sink in ((backend, ct), (client, bt)):
            pending, source.pending = source.pending, []
            for data in pending:
                sink.write(data)
        if backend.readClosed:
            self.passEOF(backend, client)
        if client.readClosed:
            self.passEOF(client, backend)
        ct.resumeProducing()

    @staticmethod
    def _find(protocol: Any) -> _BackendEnd:
        # Some endpoints hand back a wrapper of the protocol they built.
        found = _unwrap(protocol, _BackendEnd)
        if found is None:
            raise TypeError("the backend endpoint returned an unknown protocol")
        return found

    def _trySplice(self, client: _ClientEnd, backend: _BackendEnd) -> bool:
        factory = self.factory
        if not factory.splice:
            return False
        if backend.pending or backend.readClosed:
            factory.noteCopying("the backend had already sent bytes when it connected")
            return False
        if client.pending or client.readClosed:
            factory.noteCopying("the client had already sent bytes when the backend connected")
            return False
        for end, side in ((client, "accepted"), (backend, "backend")):
            if end.kernel is None or not _splice.isKernelTransport(end.kernel):
                factory.noteCopying(f"the {side} connection cannot be spliced: "
                                    f"{_whyNotKernel(end.transport)}")
                return False
        try:
            splicer = _splice.Splicer(factory.reactor, client.kernel, backend.kernel,
                                      self.count, factory.pipes)
        except OSError as e:
            factory.noteCopying(f"splice is unavailable ({e})")
            return False
        self.splicer = splicer
        factory.stats.spliced += 1
        if factory.metrics is not None:
            factory.metrics.spliced()
        splicer.start()
        return True

    def _connectFailed(self, failure: Failure) -> None:
        self.connecting = None
        if isinstance(failure.value, defer.CancelledError) and self.client.lost:
            return
        factory = self.factory
        factory.stats.failed += 1
        if factory.metrics is not None:
            factory.metrics.connectFailed(failure)
        log.warn("relay: could not connect {peer} to {target}: {reason}",
                 peer=self.peer, target=self.factory.connectDescription,
                 reason=_reason(failure))
        self.client.transport.abortConnection()  # type: ignore[union-attr]

    def passEOF(self, source: _End, sink: _End) -> None:
        """
        C{source} will send no more: pass the half-close on, or close
        C{sink} after flushing when it cannot be half-closed.
        """
        if sink.lost:
            return
        transport: Any = sink.transport
        if IHalfCloseableDescriptor.providedBy(transport) or callable(
                getattr(transport, "loseWriteConnection", None)):
            transport.loseWriteConnection()
        else:
            transport.loseConnection()

    def endLost(self, end: _End, reason: Failure) -> None:
        """
        C{end}'s connection is gone: a clean close closes the other side
        after flushing, anything else (a reset, an abort, an error) aborts
        it.
        """
        clean = isinstance(reason.value, ConnectionDone)
        if self.splicer is not None and not self.splicer.finished:
            self.splicer.transportGone(end.kernel, clean)
        if end is self.client and self.connecting is not None:
            self.connecting.cancel()
        other = end.peer
        if other is not None and not other.lost:
            if clean:
                other.transport.loseConnection()  # type: ignore[union-attr]
            else:
                _abort(other)
        if self.client.lost and (self.backend is None or self.backend.lost):
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        factory = self.factory
        factory.relays.discard(self)
        factory.stats.open -= 1
        if factory.metrics is not None:
            factory.metrics.connectionClosed()
        factory.relayFinished()

    def abort(self) -> None:
        """
        Close both sides now, dropping what is buffered.
        """
        if self.splicer is not None and not self.splicer.finished:
            self.splicer.abort()
            return
        if self.connecting is not None:
            self.connecting.cancel()
        for end in (self.client, self.backend):
            if end is not None and not end.lost and end.transport is not None:
                _abort(end)

    def buffered(self) -> int:
        """
        Bytes this relay holds in memory or pipes right now.
        """
        if self.splicer is not None:
            return self.splicer.buffered()
        total = 0
        for end in (self.client, self.backend):
            transport = getattr(end, "transport", None)
            total += len(getattr(transport, "dataBuffer", b""))
            total += int(getattr(transport, "_tempDataLen", 0))
        return total


class RelayFactory(ServerFactory):
    """
    Builds a relay for each accepted connection, to C{connectEndpoint}.

    @param recordOriginal: give each backend connection's factory the
        accepted connection's addresses and TLS names
        (L{endpointkit.proxyprotocol.IOriginalConnection}), for a
        C{proxyprotocol:} client endpoint to send; over TLS the backend is
        connected once the handshake is done.
    @param connector: C{connectEndpoint} with its deadline, made once
        (default: a L{TimeoutEndpoint} of C{connectTimeout} around it; when
        given, its own timeout is C{connectTimeout}); L{RelayService} builds
        it as C{timeout:} does, so that a C{tcp:} or C{unix:} backend keeps
        the deadline in its own connector.
    @ivar pipes: the spliced relays' pipes, kept for reuse (closed by
        L{close}).
    @ivar metrics: where the relays count (L{None}: nowhere but C{stats}).
    """

    protocol = _ClientEnd
    noisy = False

    def __init__(self, reactor: Any, connectEndpoint: IStreamClientEndpoint,
                 connectDescription: str, *, connectTimeout: float = DEFAULT_CONNECT_TIMEOUT,
                 splice: bool = True, metrics: RelayMetrics | None = None,
                 recordOriginal: bool = False,
                 connector: TimeoutEndpoint | None = None) -> None:
        self.reactor = reactor
        self.metrics = metrics
        self.recordOriginal = recordOriginal
        self.connectEndpoint = connectEndpoint
        self.connectDescription = connectDescription
        self.connector = (connector if connector is not None
                          else TimeoutEndpoint(connectEndpoint, connectTimeout, reactor))
        self.connectTimeout = self.connector.timeout
        self.splice = splice and _splice.spliceAvailable()
        self.stats = RelayStats()
        self.relays: set[Relay] = set()
        self.pipes = _splice.PipePool()
        self._idleWaiters: list[Deferred[None]] = []
        self._notedCopying = False

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return _ClientEnd(self)

    def noteCopying(self, why: str) -> None:
        """
        A relay is copied although splice is on: say why, once.
        """
        if self._notedCopying:
            return
        self._notedCopying = True
        log.info("relay: copying through Python, not splicing: {why} "
                 "(said once; other relays may splice)", why=why)

    def relayFinished(self) -> None:
        if not self.relays:
            waiters, self._idleWaiters = self._idleWaiters, []
            for d in waiters:
                d.callback(None)

    def whenIdle(self) -> Deferred[None]:
        """
        A Deferred that fires when no relay is open.
        """
        if not self.relays:
            return defer.succeed(None)
        d: Deferred[None] = Deferred()
        self._idleWaiters.append(d)
        return d

    def buffered(self) -> int:
        """
        Bytes held by all relays right now (memory and pipes).
        """
        return sum(relay.buffered() for relay in self.relays)

    def close(self) -> None:
        """
        Close the pipes kept for reuse.
        """
        self.pipes.close()


class _RelayLimits(LimitingFactory):
    """
    C{limit:}'s caps for the relay's own C{maxConnections} and
    C{idleTimeout}: a refusal is also counted in the relay's metrics.
    """

    noisy = False

    def __init__(self, factory: RelayFactory, maxConnections: int | None,
                 idle: float | None, clock: Any) -> None:
        LimitingFactory.__init__(self, factory, maxConnections, idle=idle, clock=clock)
        self.relayMetrics = factory.metrics

    def _refuse(self, what: str, reason: str = "max") -> Protocol:
        if self.relayMetrics is not None:
            self.relayMetrics.refused()
        return LimitingFactory._refuse(self, what, reason)


class _Tracker(TrackingFactory):
    """
    lifecycle's tracking factory (its listen errors and port handling),
    without a wrapper protocol per connection: the relay keeps its own
    relays and drains them itself, and a wrapper per connection costs a
    good share of a short connection's time.
    """

    noisy = False

    def buildProtocol(self, addr: IAddress | None) -> Any:
        return self.wrappedFactory.buildProtocol(addr)


_SPLICEABLE_SERVERS = frozenset({"tcp", "tcp4", "tcp6", "unix", "reuseport", "adopt",
                                 "systemd"})
_SPLICEABLE_CLIENTS = frozenset({"tcp", "tcp4", "tcp6", "unix", "timeout", "hostname"})
_PASS_THROUGH_SERVERS = frozenset({"limit", "multi"})
_PASS_THROUGH_CLIENTS = frozenset({"timeout", "proxyprotocol"})


def _plain(parsed: Parsed, plain: frozenset[str]) -> str | None:
    """
    L{None} when C{parsed} makes plain socket connections (what splice can
    take), else the prefix that does not.
    """
    if parsed.prefix in plain:
        return None
    if parsed.prefix in _PASS_THROUGH_SERVERS | _PASS_THROUGH_CLIENTS:
        for value in parsed.values.values():
            members = value if isinstance(value, tuple) else (value,)
            for member in members:
                if isinstance(member, Parsed):
                    inner = _plain(member, plain)
                    if inner is not None:
                        return inner
        return None
    return parsed.prefix


def _sendsProxyHeader(parsed: Parsed) -> bool:
    """
    Whether a C{proxyprotocol:} client sits anywhere in C{parsed}.
    """
    if parsed.prefix == "proxyprotocol":
        return True
    for value in parsed.values.values():
        members = value if isinstance(value, tuple) else (value,)
        if any(isinstance(m, Parsed) and _sendsProxyHeader(m) for m in members):
            return True
    return False


def splicePath(listen: Parsed, connect: Parsed, splice: bool) -> str:
    """
    Which path a relay from C{listen} to C{connect} takes, and why when it
    cannot splice, as the start-up log says it.
    """
    if not splice:
        return "copying through Python (splice off)"
    if not _splice.spliceAvailable():
        return "copying through Python (os.splice is not available here)"
    for parsed, plain, side in ((listen, _SPLICEABLE_SERVERS, "listen"),
                                (connect, _SPLICEABLE_CLIENTS, "connect")):
        prefix = _plain(parsed, plain)
        if prefix is not None:
            return (f"copying through Python ({prefix}: on the {side} side does not "
                    f"hand over plain sockets)")
    return "splice (zero-copy)"


class RelayService(Service):
    """
    An C{IService} that relays every connection accepted on C{listen} to
    C{connect}.  Stopping it stops accepting, lets live relays finish for up
    to C{drainTimeout} seconds, then aborts what is left.

    @param maxConnections: most relays open at once (0: no limit); over it a
        new connection is refused by C{limit:}'s machinery.
    @param idleTimeout: seconds without bytes either way before a relay is
        aborted (0: never), C{limit:}'s idle timer.
    @param metrics: whether to count into L{RelayMetrics} (labelled with
        the masked listen and connect descriptions).
    @param registry: the prometheus_client registry the relay's metrics and
        its listen events go to (default: prometheus_client's global
        C{REGISTRY}).
    """

    def __init__(self, listen: str, connect: str, *,
                 connectTimeout: float = DEFAULT_CONNECT_TIMEOUT,
                 maxConnections: int = 0, idleTimeout: float = 0.0,
                 drainTimeout: float = DEFAULT_DRAIN_TIMEOUT, statsInterval: float = 0.0,
                 splice: bool = True, reactor: Any = None, metrics: bool = True,
                 registry: CollectorRegistry | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.listenParsed = parseDescription(listen, "server")
        self.connectParsed = parseDescription(connect, "client")
        logInsecure(self.listenParsed)
        logInsecure(self.connectParsed)
        self.listenDescription = listen
        self.drainTimeout = drainTimeout
        self.statsInterval = statsInterval
        self.registry = registry
        self.metrics = (RelayMetrics(self.listenParsed, self.connectParsed, registry)
                        if metrics else None)
        # The deadline as timeout: puts it, built once: around tcp: and
        # unix:, their connector keeps it, with no timer of the relay's.
        connector = _withDeadline(reactor, self.connectParsed, connectTimeout)
        self.factory = RelayFactory(
            reactor, connector.endpoint, str(self.connectParsed), splice=splice,
            metrics=self.metrics, recordOriginal=_sendsProxyHeader(self.connectParsed),
            connector=connector)
        self.limits: LimitingFactory | None = None
        if maxConnections or idleTimeout:
            self.limits = _RelayLimits(self.factory, maxConnections or None,
                                       idleTimeout or None, reactor)
        self.path = splicePath(self.listenParsed, self.connectParsed, self.factory.splice)
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()
        self._stats: LoopingCall | None = None
        self.name = "endpointkit-relay"

    @property
    def stats(self) -> RelayStats:
        """
        The counters, with the refusals and idle closes of the caps.
        """
        stats = self.factory.stats
        if self.limits is not None:
            stats.refused = self.limits.rejected
            stats.timedOut = self.limits.timedOut
        return stats

    def startService(self) -> None:
        from endpointkit import listen

        _Service.startService(self)
        d: Deferred[Any] = listen(self.listenDescription,
                                  _Tracker(self.limits or self.factory), self.reactor,
                                  registry=self.registry)

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            log.info("relay: listening on {listen}, relaying to {connect} by {path}",
                     listen=describeListening(self.listenParsed, port),
                     connect=self.factory.connectDescription, path=self.path)
            if self.statsInterval:
                self._stats = LoopingCall(self.logStats)
                self._stats.clock = self.reactor
                self._stats.start(self.statsInterval, now=False)
            return port

        d.addCallback(listening)
        d.chainDeferred(self.listening)

    def logStats(self) -> None:
        """
        Log the one-line stats summary.
        """
        log.info("{line}", line=self.stats.line())

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        _Service.stopService(self)
        if self._stats is not None and self._stats.running:
            self._stats.stop()
        self._stats = None
        if self.port is not None:
            yield self.port.stopListening()
            self.port = None
        factory = self.factory
        if factory.relays:
            log.info("relay: draining {n} open connection(s), up to {t:g} s",
                     n=len(factory.relays), t=self.drainTimeout)
            yield _within(self.reactor, factory.whenIdle(), self.drainTimeout)
        if factory.relays:
            log.info("relay: closing {n} connection(s) still open", n=len(factory.relays))
            for relay in list(factory.relays):
                relay.abort()
            yield _within(self.reactor, factory.whenIdle(), 5.0)
        factory.close()
        log.info("{line}", line=self.stats.line())


def describeListening(parsed: Parsed, port: IListeningPort) -> str:
    """
    The listen description, with the real port number when it was 0.
    """
    address = port.getHost()
    text = str(parsed)
    if parsed.prefix == "tcp" and parsed.values.get("port") == 0 and hasattr(address, "port"):
        text = buildDescription("tcp", address.port, interface=parsed.values.get("interface") or None)
    return text


def _within(reactor: Any, d: Deferred[None], timeout: float) -> Deferred[None]:
    """
    C{d}, or nothing after C{timeout} seconds, whichever comes first.
    """
    result: Deferred[None] = Deferred()

    def fire() -> None:
        if not result.called:
            result.callback(None)

    call = reactor.callLater(timeout, fire)

    def fired(_: object) -> None:
        if call.active():
            call.cancel()
        fire()

    d.addBoth(fired)
    return result
