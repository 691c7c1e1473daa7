"""
C{endpointkit relay}: accept on any server description, connect each accepted
connection to any client description, and move bytes both ways.

Both directions use producer/consumer flow control (a slow reader on one side
pauses reading on the other), half-closes are passed on where both sides
support them, and one side's close closes the other once what it sent has
been flushed.  When both sides turn out to be plain kernel sockets the bytes
move with C{os.splice} instead (L{endpointkit._splice}).

The same options serve the command (L{main}) and the twistd plugin
C{endpointkit-relay} (L{Options}, L{makeService}).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IListeningPort,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit import _splice
from endpointkit._grammar import DescriptionError, buildDescription
from endpointkit._lookup import parseDescription
from endpointkit._schema import Parsed

log = Logger(namespace="endpointkit.relay")

# Twisted's application and failure modules are untyped; called through these.
_Failure: Any = Failure
_Service: Any = Service

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_DRAIN_TIMEOUT = 10.0
READ_SIZE = 1 << 18
"""
How much one read takes from a socket on the general path, and how much a
transport buffers before it pauses the other side (per direction).
"""

DEMO_LISTEN = "tcp:8000:interface=127.0.0.1"
DEMO_BACKEND = "memory:endpointkit-relay-demo"


@dataclass
class RelayStats:
    """
    Counters of one relay service.

    @ivar up: bytes from accepted clients to the backend.
    @ivar down: bytes from the backend to accepted clients.
    """

    open: int = 0
    total: int = 0
    failed: int = 0
    refused: int = 0
    spliced: int = 0
    up: int = 0
    down: int = 0

    def line(self) -> str:
        """
        The one-line summary the stats log prints.
        """
        return (f"relay stats: open={self.open} total={self.total} "
                f"failed={self.failed} refused={self.refused} spliced={self.spliced} "
                f"up={_size(self.up)} down={_size(self.down)}")


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


_DONE: Failure = _Failure(ConnectionDone())


def _passThrough() -> tuple[type, ...]:
    try:
        from endpointkit.lifecycle import TrackingProtocol
    except ImportError:
        return ()
    return (TrackingProtocol,)


_PASS_THROUGH = _passThrough()
"""
Protocol wrappers that only pass bytes through (and count or track the
connection): a relay end behind one still owns a plain socket.
"""


def _kernelOf(transport: Any) -> Any:
    """
    The plain kernel socket transport under C{transport} (seeing through
    pass-through wrappers), with a bigger read size; or L{None} when TLS or
    another layer that changes the bytes sits in between.
    """
    for _ in range(4):
        if _splice.isKernelTransport(transport):
            transport.bufferSize = READ_SIZE
            return transport
        if not isinstance(transport, _PASS_THROUGH):
            return None
        wrapper: Any = transport
        transport = wrapper.transport
    return None


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
        relay = self.relay
        relay.count(self.index, len(data))
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

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self.lost = True
        self.relay.endLost(self, reason)


@implementer(IHalfCloseableProtocol)
class _ClientEnd(_End):
    """
    The accepted connection.
    """

    index = 0

    def __init__(self, factory: RelayFactory) -> None:
        _End.__init__(self)
        self.factory = factory

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.pauseProducing()
        self.kernel = _kernelOf(transport)
        self.relay = Relay(self.factory, self)
        self.relay.start()


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


class _Refused(Protocol):
    """
    A connection over the cap: closed as soon as it is accepted.
    """

    def connectionMade(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]


class _BackendFactory(Factory):
    noisy = False

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def buildProtocol(self, addr: IAddress | None) -> _BackendEnd:
        return _BackendEnd(self.relay)


def _connect(reactor: Any, endpoint: IStreamClientEndpoint, factory: Factory,
             timeout: float) -> Deferred[Any]:
    try:
        from endpointkit.deadline import connectWithTimeout
    except ImportError:
        return _connectWithCancel(reactor, endpoint, factory, timeout)
    d: Deferred[Any] = connectWithTimeout(endpoint, factory, timeout, clock=reactor)
    return d


def _connectWithCancel(reactor: Any, endpoint: IStreamClientEndpoint, factory: Factory,
                       timeout: float) -> Deferred[Any]:
    from twisted.internet.error import TimeoutError

    d = endpoint.connect(factory)
    timedOut = []

    def expire() -> None:
        timedOut.append(True)
        d.cancel()

    call = reactor.callLater(timeout, expire)

    def done(result: Any) -> Any:
        if call.active():
            call.cancel()
        if timedOut and isinstance(result, Failure) and _checks(result, defer.CancelledError):
            return _Failure(TimeoutError(f"no connection within {timeout:g} s"))  # type: ignore[no-untyped-call]
        return result

    d.addBoth(done)
    return d


def _checks(failure: Failure, kind: type[BaseException]) -> bool:
    return isinstance(failure.value, kind)


def _reason(failure: Failure) -> str:
    value = failure.value
    text = str(value).strip() or type(value).__name__
    return text.rstrip(".")


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
        self.lastActive = 0.0
        self.idleCall: IDelayedCall | None = None
        self.peer = describeAddress(client.transport.getPeer())  # type: ignore[union-attr]

    def start(self) -> None:
        factory = self.factory
        factory.relays.add(self)
        factory.stats.open += 1
        factory.stats.total += 1
        self.touch()
        if factory.idleTimeout:
            self.idleCall = factory.reactor.callLater(factory.idleTimeout, self._checkIdle)
        d = _connect(factory.reactor, factory.connectEndpoint, _BackendFactory(self),
                     factory.connectTimeout)
        self.connecting = d
        d.addCallbacks(self._connected, self._connectFailed)

    def touch(self) -> None:
        self.lastActive = self.factory.reactor.seconds()

    def count(self, direction: int, n: int) -> None:
        stats = self.factory.stats
        if direction == 0:
            stats.up += n
        else:
            stats.down += n
        if self.idleCall is not None:
            self.touch()

    def _checkIdle(self) -> None:
        self.idleCall = None
        idle = self.factory.idleTimeout
        elapsed = self.factory.reactor.seconds() - self.lastActive
        if elapsed >= idle:
            log.info("relay: closing {peer}: idle for {idle:g} s", peer=self.peer, idle=idle)
            self.abort()
        else:
            self.idleCall = self.factory.reactor.callLater(idle - elapsed, self._checkIdle)

    def _connected(self, protocol: Any) -> None:
        self.connecting = None
        backend = self.backend = self._find(protocol)
        client = self.client
        if client.lost or self.finished:
            backend.transport.loseConnection()  # type: ignore[union-attr]
            return
        client.peer, backend.peer = backend, client
        if self._trySplice(client, backend):
            return
        ct: Any = client.transport
        bt: Any = backend.transport
        ct.registerProducer(bt, True)
        bt.registerProducer(ct, True)
        pending, backend.pending = backend.pending, []
        for data in pending:
            ct.write(data)
        if backend.readClosed:
            self.passEOF(backend, client)
        ct.resumeProducing()

    @staticmethod
    def _find(protocol: Any) -> _BackendEnd:
        # Some endpoints hand back a wrapper of the protocol they built.
        seen = 0
        while not isinstance(protocol, _BackendEnd) and seen < 8:
            protocol = getattr(protocol, "_wrappedProtocol", None) or getattr(
                protocol, "wrappedProtocol", None)
            seen += 1
        if not isinstance(protocol, _BackendEnd):
            raise TypeError("the backend endpoint returned an unknown protocol")
        return protocol

    def _trySplice(self, client: _ClientEnd, backend: _BackendEnd) -> bool:
        factory = self.factory
        if not factory.splice or backend.pending or backend.readClosed:
            return False
        if not (client.kernel is not None and backend.kernel is not None
                and _splice.isKernelTransport(client.kernel)
                and _splice.isKernelTransport(backend.kernel)):
            return False
        try:
            splicer = _splice.Splicer(factory.reactor, client.kernel, backend.kernel,
                                      self.count)
        except OSError as e:
            log.warn("relay: splice unavailable ({reason}); copying instead", reason=e)
            return False
        self.splicer = splicer
        factory.stats.spliced += 1
        splicer.start()
        return True

    def _connectFailed(self, failure: Failure) -> None:
        self.connecting = None
        if _checks(failure, defer.CancelledError) and self.client.lost:
            return
        self.factory.stats.failed += 1
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
        if self.splicer is not None and not self.splicer.finished:
            self.splicer.transportGone(end.kernel)
        if end is self.client and self.connecting is not None:
            self.connecting.cancel()
        other = end.peer
        if other is not None and not other.lost:
            other.transport.loseConnection()  # type: ignore[union-attr]
        if self.client.lost and (self.backend is None or self.backend.lost):
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.idleCall is not None and self.idleCall.active():
            self.idleCall.cancel()
        self.idleCall = None
        factory = self.factory
        factory.relays.discard(self)
        factory.stats.open -= 1
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
                end.transport.abortConnection()  # type: ignore[attr-defined]

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
    """

    protocol = _ClientEnd
    noisy = False

    def __init__(self, reactor: Any, connectEndpoint: IStreamClientEndpoint,
                 connectDescription: str, *, connectTimeout: float = DEFAULT_CONNECT_TIMEOUT,
                 idleTimeout: float = 0.0, maxConnections: int = 0,
                 splice: bool = True) -> None:
        self.reactor = reactor
        self.connectEndpoint = connectEndpoint
        self.connectDescription = connectDescription
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.splice = splice and _splice.spliceAvailable()
        self.stats = RelayStats()
        self.relays: set[Relay] = set()
        self._idleWaiters: list[Deferred[None]] = []

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        if self.maxConnections and self.stats.open >= self.maxConnections:
            self.stats.refused += 1
            log.warn("relay: refusing {peer}: {n} connections open (the limit)",
                     peer=describeAddress(addr), n=self.stats.open)
            return _Refused()
        return _ClientEnd(self)

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


def _listen(description: str, factory: RelayFactory, reactor: Any) -> Deferred[Any]:
    """
    Listen with L{endpointkit.lifecycle.listen} (clear errors, a port that
    tracks its connections) when it is there, else with the endpoint.
    """
    try:
        from endpointkit.lifecycle import listen
    except ImportError:
        endpoint = parseDescription(description, "server").build(reactor)
        return defer.maybeDeferred(endpoint.listen, factory)
    return listen(description, factory, reactor)


class RelayService(Service):
    """
    An C{IService} that relays every connection accepted on C{listen} to
    C{connect}.  Stopping it stops accepting, lets live relays finish for up
    to C{drainTimeout} seconds, then aborts what is left.
    """

    def __init__(self, listen: str, connect: str, *,
                 connectTimeout: float = DEFAULT_CONNECT_TIMEOUT,
                 maxConnections: int = 0, idleTimeout: float = 0.0,
                 drainTimeout: float = DEFAULT_DRAIN_TIMEOUT, statsInterval: float = 0.0,
                 splice: bool = True, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.listenParsed = parseDescription(listen, "server")
        self.connectParsed = parseDescription(connect, "client")
        self.listenDescription = listen
        self.drainTimeout = drainTimeout
        self.statsInterval = statsInterval
        self.factory = RelayFactory(
            reactor, self.connectParsed.build(reactor), str(self.connectParsed),
            connectTimeout=connectTimeout, idleTimeout=idleTimeout,
            maxConnections=maxConnections, splice=splice)
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()
        self._stats: LoopingCall | None = None
        self.name = "endpointkit-relay"

    @property
    def stats(self) -> RelayStats:
        return self.factory.stats

    def startService(self) -> None:
        _Service.startService(self)
        d = _listen(self.listenDescription, self.factory, self.reactor)

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            log.info("relay: listening on {listen}, relaying to {connect}{how}",
                     listen=describeListening(self.listenParsed, port),
                     connect=self.factory.connectDescription,
                     how="" if self.factory.splice else " (splice off)")
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
        log.info("{line}", line=self.factory.stats.line())

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
        log.info("{line}", line=factory.stats.line())


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


# Options, shared by the command and the twistd plugin.


def _seconds(name: str, allowZero: bool) -> Callable[[str], float]:
    from endpointkit._kinds import Invalid, Seconds

    def convert(text: str) -> float:
        try:
            value: float = Seconds(allowZero).convert(text)
        except Invalid:
            expected = Seconds(allowZero).expected
            raise usage.UsageError(f"--{name} must be {expected}, got {text!r}") from None
        return value

    return convert


def _count(text: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise usage.UsageError(
            f"--max-connections must be a whole number, 0 for no limit, got {text!r}")
    return int(text)


class Options(usage.Options):
    """
    The relay's options: C{endpointkit relay [options] LISTEN CONNECT}, or
    C{--listen} and C{--connect} (the twistd plugin's form).
    """

    synopsis = ("Usage: endpointkit relay [options] LISTEN CONNECT\n"
                "   or: twistd -n endpointkit-relay [options] --listen LISTEN --connect CONNECT")
    longdesc = ("Accept connections on the server description LISTEN and relay each "
                "one to the client description CONNECT, both ways.  "
                "Example: endpointkit relay tcp:8080:interface=127.0.0.1 "
                "unix:/run/app.sock")

    optFlags = [
        ["no-splice", None, "Copy bytes through Python even where splice could move them."],
        ["demo", None, "Relay to a built-in demo backend (echo and HTTP) on memory:; "
                       f"LISTEN defaults to {DEMO_LISTEN}."],
    ]
    optParameters = [
        ["listen", "l", None, "The server description to accept connections on."],
        ["connect", "c", None, "The client description to connect each one to."],
        ["connect-timeout", None, DEFAULT_CONNECT_TIMEOUT,
         "Seconds to wait for the backend connection.", _seconds("connect-timeout", False)],
        ["max-connections", None, 0,
         "Most relayed connections open at once (0: no limit).", _count],
        ["idle-timeout", None, 0.0,
         "Close a relay after this many seconds with no bytes either way (0: never).",
         _seconds("idle-timeout", True)],
        ["drain-timeout", None, DEFAULT_DRAIN_TIMEOUT,
         "On stop, seconds to let open relays finish before closing them.",
         _seconds("drain-timeout", True)],
        ["stats-interval", None, 0.0,
         "Log a one-line stats summary every this many seconds (0: never).",
         _seconds("stats-interval", True)],
    ]

    def parseArgs(self, *args: str) -> None:
        if len(args) > 2:
            raise usage.UsageError(f"too many arguments: {' '.join(args[2:])}")
        if len(args) >= 1:
            self._positional("listen", args[0])
        if len(args) == 2:
            self._positional("connect", args[1])

    def _positional(self, name: str, value: str) -> None:
        if self[name] is not None:
            raise usage.UsageError(f"{name} is given twice (--{name} and as an argument)")
        self[name] = value

    def postOptions(self) -> None:
        if self["demo"]:
            if self["connect"] is not None:
                raise usage.UsageError("--demo relays to its own backend; give no CONNECT")
            if self["listen"] is None:
                self["listen"] = DEMO_LISTEN
            self["connect"] = DEMO_BACKEND
        if self["listen"] is None or self["connect"] is None:
            missing = "LISTEN and CONNECT" if self["listen"] is None else "CONNECT"
            raise usage.UsageError(f"missing {missing} (server and client descriptions)")
        for name, side in (("listen", "server"), ("connect", "client")):
            try:
                parseDescription(self[name], side)  # type: ignore[arg-type]
            except DescriptionError as e:
                raise usage.UsageError(f"{name}: {e}") from None


def serviceFromOptions(options: Options, reactor: Any = None) -> RelayService:
    """
    The relay service the options describe.
    """
    return RelayService(
        options["listen"], options["connect"],
        connectTimeout=options["connect-timeout"],
        maxConnections=options["max-connections"],
        idleTimeout=options["idle-timeout"],
        drainTimeout=options["drain-timeout"],
        statsInterval=options["stats-interval"],
        splice=not options["no-splice"],
        reactor=reactor)


def makeService(options: Options) -> Service:
    """
    The twistd plugin's service: the relay, plus the demo backend with
    C{--demo}.
    """
    from twisted.application.service import MultiService

    relay = serviceFromOptions(options)
    if not options["demo"]:
        return relay
    top: Any = MultiService()  # type: ignore[no-untyped-call]
    demo: Any = DemoBackendService(DEMO_BACKEND)
    demo.setServiceParent(top)
    service: Any = relay
    service.setServiceParent(top)
    result: Service = top
    return result


# The demo backend: echo for anything, HTTP for what looks like a request.


class _DemoProtocol(Protocol):
    """
    Echoes what it receives, except that a connection starting with an
    HTTP request line gets a small HTTP response.
    """

    def __init__(self) -> None:
        self.buffer = b""
        self.mode: str | None = None

    def dataReceived(self, data: bytes) -> None:
        transport: Any = self.transport
        if self.mode == "echo":
            transport.write(data)
            return
        if self.mode == "http":
            self.buffer += data
            self._http()
            return
        self.buffer += data
        line, found, _ = self.buffer.partition(b"\n")
        if not found and len(self.buffer) < 8192:
            return
        words = line.strip().split(b" ")
        if len(words) == 3 and words[2].startswith(b"HTTP/1.") and words[0].isupper():
            self.mode = "http"
            self._http()
        else:
            self.mode = "echo"
            data, self.buffer = self.buffer, b""
            transport.write(data)

    def _http(self) -> None:
        transport: Any = self.transport
        while b"\r\n\r\n" in self.buffer or b"\n\n" in self.buffer:
            head, _, self.buffer = self.buffer.replace(b"\r\n", b"\n").partition(b"\n\n")
            request = head.split(b"\n", 1)[0].decode("latin-1")
            body = (f"hello from the endpointkit relay demo backend\n"
                    f"you asked for: {request}\n").encode()
            transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            if b"connection: close" in head.lower() or request.endswith("HTTP/1.0"):
                transport.loseConnection()
                return
        if len(self.buffer) > 65536:
            transport.loseConnection()


class DemoBackendService(Service):
    """
    The demo backend, listening on C{description} (a C{memory:} name).
    """

    def __init__(self, description: str, reactor: Any = None) -> None:
        self.description = description
        self.reactor = reactor
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()

    def startService(self) -> None:
        _Service.startService(self)
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor as reactor
        endpoint = parseDescription(self.description, "server").build(reactor)
        factory = Factory.forProtocol(_DemoProtocol)
        factory.noisy = False
        d = endpoint.listen(factory)

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            return port

        d.addCallback(listening)
        d.chainDeferred(self.listening)

    def stopService(self) -> Any:
        _Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


# The command.


@implementer(ILogObserver)
class _LineObserver:
    """
    Log events as one readable line each: time, level, text.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        from twisted.logger import formatEvent

        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}: {failure.getErrorMessage()}" if text else failure.getTraceback()
        level = event.get("log_level")
        name = getattr(level, "name", "info")
        stamp = time.strftime("%H:%M:%S", time.localtime(event.get("log_time", time.time())))
        self.stream.write(f"{stamp} {name:<5} {text}\n")
        self.stream.flush()


def main(argv: Sequence[str], reactor: Any = None) -> int:
    """
    C{endpointkit relay ARGS...}: run a relay until SIGTERM or SIGINT, then
    drain and exit 0.  Returns the exit status.
    """
    options: Any = Options()  # type: ignore[no-untyped-call]
    try:
        options.parseOptions(list(argv))
    except usage.UsageError as e:
        sys.stderr.write(f"endpointkit relay: {e}\n")
        sys.stderr.write("usage: endpointkit relay [options] LISTEN CONNECT (--help for more)\n")
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)

    from twisted.logger import globalLogBeginner

    observer: Any = _LineObserver(sys.stderr)
    globalLogBeginner.beginLoggingTo([observer],
                                     redirectStandardIO=False)
    if reactor is None:
        from twisted.internet import reactor as reactor
    status = [0]
    demo: DemoBackendService | None = None
    try:
        if options["demo"]:
            demo = DemoBackendService(DEMO_BACKEND, reactor)
        service = serviceFromOptions(options, reactor)
    except DescriptionError as e:
        sys.stderr.write(f"endpointkit relay: {e}\n")
        return 2

    def fail(failure: Failure) -> None:
        reason = _reason(failure)
        if not reason.startswith("listen "):
            reason = f"could not listen on {service.listenParsed}: {reason}"
        log.error("relay: {reason}", reason=reason)
        status[0] = 1
        if reactor.running:
            reactor.stop()

    def started(port: IListeningPort) -> None:
        if options["demo"]:
            where = describeListening(service.listenParsed, port)
            address = port.getHost()
            host = getattr(address, "host", "127.0.0.1")
            number = getattr(address, "port", 8000)
            sys.stderr.write(
                f"\nendpointkit relay demo: {where} -> {DEMO_BACKEND}\n"
                f"  try:  curl http://{host}:{number}/\n"
                f"        nc {host} {number}     (type a line: it comes back)\n"
                f"  stop: Ctrl-C\n\n")
            sys.stderr.flush()

    def start() -> None:
        try:
            if demo is not None:
                demo.startService()
                demo.listening.addErrback(fail)
            service.startService()
        except DescriptionError as e:
            fail(_Failure(e))
            return
        service.listening.addCallbacks(started, fail)

    def stop() -> Deferred[None] | None:
        result: Deferred[None] | None = None
        if service.running:
            result = defer.maybeDeferred(service.stopService)
        if demo is not None and demo.running:
            stopped = defer.maybeDeferred(demo.stopService)
            result = stopped if result is None else result.addBoth(lambda _: stopped)
        return result

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return status[0]
