"""
The command line of the relay, above the library: C{endpointkit relay}
(L{main}), the twistd plugin C{endpointkit-relay} (L{Options},
L{makeService}), the demo backend (L{DemoBackendService}) and the log
observer the command prints with, the metrics server (C{--metrics}) and
the C{SIGUSR1} handler that logs the stats line at once.  The relay itself is
L{endpointkit.relay}; nothing in the library imports this module.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit._grammar import DescriptionError
from endpointkit._lookup import parseDescription
from endpointkit.relay import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT,
    RelayService,
    _reason,
    describeListening,
)

log = Logger(namespace="endpointkit.relay")

# Twisted's application and failure modules are untyped; called through these.
_Failure: Any = Failure
_Service: Any = Service

DEMO_LISTEN = "tcp:8000:interface=127.0.0.1"
DEMO_BACKEND = "memory:endpointkit-relay-demo"


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


def _sendProxyVersion(text: str) -> str:
    from endpointkit.proxyprotocol import sendProxyDescription

    try:
        sendProxyDescription("tcp:localhost:1", text)
    except ValueError as e:
        raise usage.UsageError(str(e)) from None
    return text


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
        ["send-proxy", None, None,
         "Send a PROXY protocol header, v1 or v2, first on each backend connection, with "
         "the client's addresses (the same as wrapping CONNECT in proxyprotocol:).",
         _sendProxyVersion],
        ["stats-interval", None, 0.0,
         "Log a one-line stats summary every this many seconds (0: never).",
         _seconds("stats-interval", True)],
        ["metrics", None, None,
         "Serve Prometheus metrics over HTTP on this server description "
         "(tcp:9100:interface=127.0.0.1, unix:/run/relay-metrics.sock, ...)."],
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
        if self["send-proxy"] is not None:
            from endpointkit.proxyprotocol import sendProxyDescription

            self["connect"] = sendProxyDescription(self["connect"], self["send-proxy"])
        checked = [("listen", "server"), ("connect", "client")]
        if self["metrics"] is not None:
            checked.append(("metrics", "server"))
        for name, side in checked:
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
        reactor=reactor,
        metrics=options["metrics"] is not None)


def makeService(options: Options) -> Service:
    """
    The twistd plugin's service: the relay, plus the demo backend with
    C{--demo}, the metrics server with C{--metrics}, and the C{SIGUSR1}
    stats line.
    """
    from twisted.application.service import MultiService

    relay = serviceFromOptions(options)
    top: Any = MultiService()  # type: ignore[no-untyped-call]
    if options["demo"]:
        demo: Any = DemoBackendService(DEMO_BACKEND)
        demo.setServiceParent(top)
    service: Any = relay
    service.setServiceParent(top)
    if options["metrics"] is not None:
        served: Any = MetricsService(options["metrics"])
        served.setServiceParent(top)
    signals: Any = StatsSignalService(relay)
    signals.setServiceParent(top)
    result: Service = top
    return result


# The metrics server and the stats signal.


class MetricsService(Service):
    """
    Serve the relay's metrics (prometheus_client's global registry by
    default) on the server description C{description}
    (L{endpointkit.metrics.serveMetrics}).
    """

    def __init__(self, description: str, registry: Any = None, reactor: Any = None) -> None:
        self.description = description
        self.registry = registry
        self.reactor = reactor
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] = Deferred()

    def startService(self) -> None:
        from endpointkit.metrics import serveMetrics

        _Service.startService(self)
        d = serveMetrics(self.description, self.registry, self.reactor)

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            log.info("relay: serving metrics on {where}",
                     where=describeListening(parseDescription(self.description, "server"),
                                             port))
            return port

        d.addCallback(listening)
        d.chainDeferred(self.listening)

    def stopService(self) -> Any:
        _Service.stopService(self)
        if self.port is not None:
            from endpointkit.lifecycle import stopListening

            port, self.port = self.port, None
            return stopListening(port)
        return None


class StatsSignalService(Service):
    """
    While running, C{SIGUSR1} logs the relay's stats line at once (as
    socat does); the previous handler is put back on stop.  The line is
    logged from the reactor's thread.
    """

    def __init__(self, relay: RelayService, reactor: Any = None) -> None:
        self.relay = relay
        self.reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        _Service.startService(self)
        sigusr1 = getattr(signal, "SIGUSR1", None)
        if sigusr1 is None:  # pragma: no cover - not on Windows
            return
        reactor = self.reactor
        if reactor is None:
            from twisted.internet import reactor as reactor
        logStats = self.relay.logStats

        def handler(signum: int, frame: object) -> None:
            reactor.callFromThread(logStats)

        self._previous = signal.signal(sigusr1, handler)

    def stopService(self) -> None:
        _Service.stopService(self)
        sigusr1 = getattr(signal, "SIGUSR1", None)
        if sigusr1 is not None and self._previous is not None:
            signal.signal(sigusr1, self._previous)
            self._previous = None


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
    served: MetricsService | None = None
    try:
        if options["demo"]:
            demo = DemoBackendService(DEMO_BACKEND, reactor)
        service = serviceFromOptions(options, reactor)
        if options["metrics"] is not None:
            served = MetricsService(options["metrics"], reactor=reactor)
    except DescriptionError as e:
        sys.stderr.write(f"endpointkit relay: {e}\n")
        return 2

    signals = StatsSignalService(service, reactor)

    def failMetrics(failure: Failure) -> None:
        fail(failure, f"could not serve metrics on {options['metrics']}")

    def fail(failure: Failure, what: str | None = None) -> None:
        reason = _reason(failure)
        if not reason.startswith("listen "):
            reason = f"{what or f'could not listen on {service.listenParsed}'}: {reason}"
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
            if served is not None:
                served.startService()
                served.listening.addErrback(failMetrics)
            signals.startService()
        except DescriptionError as e:
            fail(_Failure(e))
            return
        service.listening.addCallbacks(started, fail)

    def stop() -> Deferred[None] | None:
        result: Deferred[None] | None = None
        if signals.running:
            signals.stopService()
        if served is not None and served.running:
            result = defer.maybeDeferred(served.stopService)
        if service.running:
            stopping = defer.maybeDeferred(service.stopService)
            result = stopping if result is None else result.addBoth(lambda _: stopping)
        if demo is not None and demo.running:
            stopped = defer.maybeDeferred(demo.stopService)
            result = stopped if result is None else result.addBoth(lambda _: stopped)
        return result

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return status[0]
