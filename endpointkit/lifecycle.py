"""
The listening lifecycle: listen with errors an administrator can act on,
stop listening and really wait for the socket to close, drain live
connections gracefully, run all of that as a twistd service, and turn a
listening port back into the client description that reaches it.

    port = yield listen("tcp:8080", factory)
    description = clientDescriptionFor(port)  # "tcp:127.0.0.1:8080"
    result = yield gracefulStop(port, 30)   # result.finished, result.closed

The port that L{listen} returns wraps the endpoint's port (as C{wrappedPort})
and knows the L{TrackingFactory} that tracks its connections, which is what
L{gracefulStop} needs.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import types
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ClientFactory, Factory
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit._grammar import DescriptionError, buildDescription
from endpointkit._lookup import parseDescription
from endpointkit._schema import Parsed
from endpointkit._wrapping import PassThroughFactory, PassThroughProtocol

__all__ = [
    "CannotDescribePort",
    "DrainResult",
    "EndpointService",
    "ListenError",
    "TrackedPort",
    "TrackingFactory",
    "clientDescriptionFor",
    "clientDescriptionsFor",
    "gracefulStop",
    "listen",
    "stopListening",
]

_log = Logger()

ProtocolFactory = IProtocolFactory | Factory[Any]
"""
A protocol factory: anything that provides L{IProtocolFactory}, spelled so
that type checkers without the zope.interface plugin accept a L{Factory}.
"""

DEFAULT_LISTEN_TIMEOUT = 30.0
DEFAULT_DRAIN_TIMEOUT = 30.0
DEFAULT_ABORT_GRACE = 2.0


def _defaultReactor() -> Any:
    from twisted.internet import reactor

    return reactor


# Listen errors.


class ListenError(CannotListenError):
    """
    Listening failed.  C{str()} is one line an administrator can act on:
    what was asked, what went wrong and, where one helps, a hint.

    A L{CannotListenError}, so handlers written for Twisted's own error
    still catch it.

    @ivar description: what was asked (the description, secrets masked, or
        a short form of the endpoint).
    @ivar problem: what went wrong, without the description.
    @ivar hint: what to do about it, or L{None}.
    @ivar errno: the operating system's error number, when there is one.
    """

    def __init__(self, description: str, problem: str, hint: str | None = None, *,
                 interface: str | None = None, port: object = None,
                 socketError: object = None, errno: int | None = None) -> None:
        CannotListenError.__init__(self, interface, port, socketError)  # type: ignore[no-untyped-call]
        self.description = description
        self.problem = problem
        self.hint = hint
        self.errno = errno
        self.message = f"listen {description}: {problem}" + (f" ({hint})" if hint else "")

    def __str__(self) -> str:
        return self.message


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return os.fsdecode(value)
    return "" if value is None else str(value)


def _unprivilegedPortStart() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def _where(interface: str, port: object) -> str:
    if interface in ("", "0.0.0.0"):
        return f"port {port} on every IPv4 address"
    if interface == "::":
        return f"port {port} on every address"
    shown = f"[{interface}]" if ":" in interface else interface
    return f"port {port} on {shown}"


def _holderHint(port: object) -> str:
    return f"find the holder with: ss -ltnp 'sport = :{port}'"


def _looksLikePath(port: object) -> bool:
    text = _text(port)
    return "/" in text and re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", text) is None


def _explainUnix(description: str, path: str, cause: object) -> ListenError:
    directory = os.path.dirname(path) or "."
    code = cause.errno if isinstance(cause, OSError) else None
    extra: dict[str, Any] = {"port": path, "socketError": cause, "errno": code}
    if isinstance(cause, str) and "lock" in cause.lower():
        holder = _lockHolder(path + ".lock")
        if holder is None:
            return ListenError(description, f"lock file {path}.lock is held by a running process",
                               "another server uses this socket; stop it first", **extra)
        name = _processName(holder)
        return ListenError(
            description,
            f"lock file {path}.lock is held by running process {holder}"
            + (f" ({name})" if name else ""),
            f"another server uses this socket; stop it first, or if process {holder} "
            f"is not that server, remove the stale {path}.lock", **extra)
    if code == errno.ENOENT:
        return ListenError(description, f"directory {directory} does not exist",
                           f"create it first: mkdir -p {directory}", **extra)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "read-only" if code == errno.EROFS else f"not writable by uid {os.getuid()}"
        return ListenError(description,
                           f"permission denied creating {path} (directory {directory} is {what})",
                           None, **extra)
    if code == errno.EADDRINUSE:
        if _somethingListens(path):
            return ListenError(description, f"another server is listening on {path}",
                               "stop it first, or choose another path", **extra)
        return ListenError(
            description, f"{path} already exists and nothing listens on it",
            "a stale socket file left by a server that exited; remove it, "
            "or listen with lockfile=1 so it is cleaned up", **extra)
    if code == errno.ENAMETOOLONG or (code == errno.EINVAL and len(path.encode()) > 107):
        return ListenError(description, f"path {path} is too long for a UNIX socket",
                           "keep it under 108 bytes", **extra)
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
    return ListenError(description, f"cannot listen on {path}: {reason.lower()}", None, **extra)


def _lockHolder(lockPath: str) -> str | None:
    try:
        return os.readlink(lockPath)
    except OSError:
        return None


def _processName(pid: str) -> str | None:
    try:
        with open(f"/proc/{int(pid)}/comm") as f:
            return f.read().strip() or None
    except (OSError, ValueError):
        return None


def _somethingListens(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:
            return False
        return True


def _explainInet(description: str, interface: str, port: object, cause: object) -> ListenError:
    code = cause.errno if isinstance(cause, OSError) else None
    extra: dict[str, Any] = {"interface": interface, "port": port,
                             "socketError": cause, "errno": code}
    where = _where(interface, port)
    if code == errno.EADDRINUSE:
        return ListenError(description, f"address already in use: {where} is taken",
                           _holderHint(port), **extra)
    if code in (errno.EACCES, errno.EPERM):
        start = _unprivilegedPortStart()
        if isinstance(port, int) and 0 < port < start:
            return ListenError(description, f"permission denied binding port {port}",
                               f"ports below {start} need privileges", **extra)
        return ListenError(description, f"permission denied binding {where}",
                           "a security policy forbids it", **extra)
    if code == errno.EADDRNOTAVAIL:
        return ListenError(description, f"address {interface} is not on this host",
                           "no interface has it; list them with: ip -brief address", **extra)
    if code == errno.EAFNOSUPPORT:
        return ListenError(description, f"address family of {interface!r} is not supported here",
                           None, **extra)
    if isinstance(cause, socket.gaierror):
        return ListenError(description, f"cannot resolve interface {interface!r}: "
                           f"{cause.strerror or cause}", "give an IP address", **extra)
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
    return ListenError(description, f"cannot listen on {where}: {reason.lower()}", None, **extra)


def _explainOther(description: str, address: str, cause: object) -> ListenError:
    code = cause.errno if isinstance(cause, OSError) else None
    extra: dict[str, Any] = {"port": address, "socketError": cause, "errno": code}
    if code == errno.EADDRINUSE:
        return ListenError(description, f"address already in use: {address} is taken",
                           None, **extra)
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
    return ListenError(description, f"cannot listen on {address}: {reason.lower()}", None,
                       **extra)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        if isinstance(reason, Failure) and isinstance(reason.value, BaseException):
            todo.append(reason.value)
        elif isinstance(reason, BaseException):
            todo.append(reason)
        todo += [current.__cause__, current.__context__]


def _explainListenFailure(exc: BaseException, description: str,
                         unixPath: str | None = None) -> ListenError | None:
    """
    The L{ListenError} that explains C{exc}, a failure to listen on
    C{description} (a UNIX socket at C{unixPath}, if given); L{None} if
    C{exc} is not a failure to listen.
    """
    for cause in _causes(exc):
        if isinstance(cause, ListenError):
            return cause
        if isinstance(cause, CannotListenError):
            if cause.interface is None and not isinstance(cause.port, int):
                if unixPath is not None or _looksLikePath(cause.port):
                    return _explainUnix(description, _text(cause.port), cause.socketError)
                return _explainOther(description, _text(cause.port), cause.socketError)
            return _explainInet(description, _text(cause.interface), cause.port,
                                cause.socketError)
    for cause in _causes(exc):
        if isinstance(cause, OSError):
            if unixPath is not None:
                return _explainUnix(description, unixPath, cause)
            reason = (cause.strerror or str(cause)).lower()
            filename = cause.filename2 or cause.filename
            problem = (f"cannot use {_text(filename)}: {reason}" if filename
                       else f"cannot listen: {reason}")
            return ListenError(description, problem, socketError=cause, errno=cause.errno)
    return None


def _explainSystemd(description: str, error: Exception) -> ListenError:
    """
    Why a C{systemd:} description has no socket to adopt, from what
    Twisted read of C{LISTEN_FDS} and C{LISTEN_FDNAMES} (it removes them
    from the environment).
    """
    try:
        from twisted.internet.endpoints import _SystemdParser

        passed = _SystemdParser._sddaemon
        count = len(passed.inheritedDescriptors())
        names = list(passed.inheritedNamedDescriptors())
    except Exception:
        count, names = 0, []
    if not count:
        return ListenError(description, "systemd passed no sockets to this process",
                           "run it from a socket unit, or under systemd-socket-activate",
                           socketError=str(error))
    named = f", named {', '.join(names)}" if names else ""
    return ListenError(description, f"no such passed socket: systemd passed {count}{named}",
                       "check index= or name= against FileDescriptorName= in the socket unit",
                       socketError=str(error))


def _shownDescription(text: str, parsed: Parsed | None) -> str:
    if parsed is not None and parsed.description(masked=True) != parsed.description():
        return parsed.description(masked=True)
    return text


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
        return buildDescription("unix", _text(endpoint._address))
    return repr(endpoint)


def _unixPath(endpoint: object) -> tuple[str, bool] | None:
    """
    The path of a UNIX server endpoint, and whether it takes a lock file.
    """
    from twisted.internet import endpoints

    if isinstance(endpoint, endpoints.UNIXServerEndpoint):
        return _text(endpoint._address), bool(endpoint._wantPID)
    return None


# Tracking connections.


class TrackingProtocol(PassThroughProtocol):
    """
    The protocol of a L{TrackingFactory}: passes everything through (half-
    close, TLS handshake and file descriptor events included) and tells its
    factory when the connection is made and lost.
    """


class TrackingFactory(PassThroughFactory):
    """
    Wraps a server factory and keeps track of the connections it builds,
    so that L{gracefulStop} can wait for them and close the ones that stay
    too long.

    @ivar protocols: the live connections (their L{TrackingProtocol}s).
    """

    protocol = TrackingProtocol
    noisy = False

    def __init__(self, wrappedFactory: ProtocolFactory) -> None:
        PassThroughFactory.__init__(self, wrappedFactory)
        self._observers: list[Callable[[TrackingProtocol], None]] = []
        self._heldStops = 0

    def doStart(self) -> None:
        if self._heldStops:
            # Listening again before the last drain ended: the wrapped
            # factory never stopped.
            self._heldStops -= 1
            ClientFactory.doStart(self)  # type: ignore[no-untyped-call]
            return
        WrappingFactory.doStart(self)  # type: ignore[no-untyped-call]

    def doStop(self) -> None:
        """
        When the last port closes while connections are still open, the
        wrapped factory is stopped only once they are all gone: it is still
        serving them.
        """
        if self.numPorts == 1 and self.protocols:
            self._heldStops += 1
            ClientFactory.doStop(self)  # type: ignore[no-untyped-call]
            return
        WrappingFactory.doStop(self)  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return f"<TrackingFactory of {self.wrappedFactory!r}: {len(self.protocols)} live>"

    @property
    def connections(self) -> list[TrackingProtocol]:
        """
        The live connections, oldest first.
        """
        return list(self.protocols)

    def unregisterProtocol(self, p: TrackingProtocol) -> None:
        if p not in self.protocols:
            return
        del self.protocols[p]
        for observer in list(self._observers):
            observer(p)
        if not self.protocols and self._heldStops:
            held, self._heldStops = self._heldStops, 0
            for _ in range(held):
                self.wrappedFactory.doStop()

    def observeLost(self, observer: Callable[[TrackingProtocol], None]) -> Callable[[], None]:
        """
        Call C{observer} with each connection that is lost from now on;
        returns the function that stops observing.
        """
        self._observers.append(observer)

        def stop() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return stop


@implementer(IListeningPort)
class TrackedPort:
    """
    The port that L{listen} returns: the endpoint's own port
    (C{wrappedPort}), the L{TrackingFactory} of its connections and what was
    asked.
    """

    def __init__(self, wrappedPort: IListeningPort, factory: TrackingFactory,
                 description: str) -> None:
        self.wrappedPort: Any = wrappedPort
        self.factory = factory
        self.description = description

    def __repr__(self) -> str:
        return f"<TrackedPort {self.description} {self.wrappedPort!r}>"

    def startListening(self) -> None:
        self.wrappedPort.startListening()
        _forget(self)

    def stopListening(self) -> defer.Deferred[None]:
        return stopListening(self)

    def getHost(self) -> IAddress:
        address: IAddress = self.wrappedPort.getHost()
        return address


# Listening.


def listen(endpointOrDescription: IStreamServerEndpoint | str | bytes,
           factory: ProtocolFactory, reactor: Any = None,
           timeout: float | None = DEFAULT_LISTEN_TIMEOUT) -> defer.Deferred[TrackedPort]:
    """
    Listen on an endpoint or a server description, with C{factory} wrapped
    in a L{TrackingFactory} (unless it is one already).

    @param timeout: seconds to wait for an endpoint that listens
        asynchronously (most listen at once); L{None} waits forever.  A port
        that arrives after the deadline is closed.

    @return: a Deferred that fires with a L{TrackedPort}, or fails with
        L{ListenError} when listening failed, or with L{DescriptionError}
        when the description itself is wrong.
    """
    if reactor is None:
        reactor = _defaultReactor()
    parsed: Parsed | None = None
    if isinstance(endpointOrDescription, (str, bytes)):
        text = _text(endpointOrDescription)
        try:
            parsed = parseDescription(text, "server")
        except DescriptionError:
            return defer.fail()
        description = _shownDescription(text, parsed)
        try:
            endpoint: IStreamServerEndpoint = parsed.build(reactor)
        except Exception as e:
            if parsed.prefix == "systemd":
                return defer.fail(_chained(_explainSystemd(description, e), e))
            explained = _explainListenFailure(e, description)
            if explained is None and isinstance(e, DescriptionError):
                explained = ListenError(description, str(e).removeprefix(f"{parsed.prefix}: "))
            if explained is None:
                return defer.fail()
            return defer.fail(_chained(explained, e))
    else:
        endpoint = endpointOrDescription
        description = _describeEndpoint(endpoint)
    tracker = factory if isinstance(factory, TrackingFactory) else TrackingFactory(factory)
    unix = _unixPath(endpoint)
    if unix is None and parsed is not None and parsed.prefix == "unix":
        unix = str(parsed.values["address"]), bool(parsed.values.get("lockfile"))
    unixPath = unix[0] if unix is not None else None
    lockPath = unix[0] + ".lock" if unix is not None and unix[1] else None
    lockedBefore = lockPath is not None and _lockHolder(lockPath) == str(os.getpid())
    portsBefore = tracker.numPorts

    def failed(failure: Failure) -> Failure:
        # Twisted's UNIX port takes its lock and starts the factory before it
        # binds, and leaves both behind when binding fails.
        if tracker.numPorts > portsBefore:
            cast(Any, tracker).doStop()
        if (lockPath is not None and not lockedBefore
                and _lockHolder(lockPath) == str(os.getpid())):
            try:
                os.remove(lockPath)
            except OSError:
                pass
        error = failure.value
        assert error is not None
        explained = _explainListenFailure(error, description, unixPath)
        if explained is None:
            return failure
        return Failure(_chained(explained, error))  # type: ignore[no-untyped-call]

    def listening(port: IListeningPort) -> TrackedPort:
        return TrackedPort(port, tracker, description)

    listenOn: Any = endpoint.listen
    d: defer.Deferred[Any] = defer.maybeDeferred(listenOn, tracker)
    result: defer.Deferred[TrackedPort] = d.addCallbacks(listening, failed)
    if result.called or timeout is None:
        return result
    return _withDeadline(result, timeout, reactor, description)


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


# Stopping.

class _Outcome:
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
        waiter: defer.Deferred[None] = defer.Deferred()
        if self.called:
            self._deliver(waiter)
        else:
            self.waiters.append(waiter)
        return waiter


_stops: weakref.WeakKeyDictionary[Any, _Outcome] = weakref.WeakKeyDictionary()


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


def _members(port: Any) -> list[Any]:
    members = getattr(port, "ports", None)
    if isinstance(members, (list, tuple)):
        return list(members)
    inner = getattr(port, "wrappedPort", None)
    return [inner] if inner is not None else []


def stopListening(port: IListeningPort | Any) -> defer.Deferred[None]:
    """
    Stop listening on C{port}; fire once every socket under it (through
    C{wrappedPort} and C{ports}) is closed, so that its address can be bound
    again at once (a UNIX socket's file is removed and its lock released by
    then).  Calling it again while stopping, or after, is harmless.
    """
    outcome = _stops.get(port)
    if outcome is not None and outcome.called and _restarted(port):
        _forget(port)
        outcome = None
    if outcome is None:
        if isinstance(port, TrackedPort):
            stopping = stopListening(port.wrappedPort)
        else:
            stopping = _stopOne(port)
            members = _members(port)
            if members:
                stopping.addCallback(lambda _: _stopAll(members))
        outcome = _Outcome(stopping)
        try:
            _stops[port] = outcome
        except TypeError:
            pass
    return outcome.follow()


def _restarted(port: Any) -> bool:
    from twisted.internet import tcp

    if isinstance(port, tcp.Port):
        return bool(port.connected and not port.disconnecting)
    return any(_restarted(member) for member in _members(port))


def _forget(port: Any) -> None:
    for member in _members(port):
        _forget(member)
    try:
        _stops.pop(port, None)
    except TypeError:
        pass


def _stopAll(ports: list[Any]) -> defer.Deferred[None]:
    stops = [stopListening(p) for p in ports]

    def done(results: list[tuple[bool, Any]]) -> None:
        for ok, value in results:
            if not ok:
                value.raiseException()

    return defer.DeferredList(stops, consumeErrors=True).addCallback(done)


# Draining.


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
        todo += _members(current)
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
    clock: Any = reactor if reactor is not None else _defaultReactor()
    stopped = stopListening(port)
    return _Drain(trackers, timeout, grace, clock, stopped).result


# A service for twistd.


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
        self._draining: _Outcome | None = None

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
            running = self._reactor if self._reactor is not None else _defaultReactor()
            if self.exitCleanly and getattr(running, "_exitSignal", None) == signal.SIGTERM:
                # The reactor's record of the signal that stopped it
                # (_ISupportsExitSignalCapturing), which twistd turns into
                # dying by that signal.
                running._exitSignal = None

        draining = gracefulStop(port, self.drainTimeout, self._reactor, self.grace)
        self._draining = _Outcome(draining.addCallback(drained))
        return self._draining.follow()


# Client descriptions.


class CannotDescribePort(ValueError):
    """
    There is no client description for this listening port.
    """


_LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def clientDescriptionsFor(port: IListeningPort | Any, hostname: str | None = None,
                          trustRoots: str | None = None) -> list[str]:
    """
    The client descriptions that reach C{port}: one for an ordinary port,
    one per member of a C{multi:} port (attribute C{ports}).

    See L{clientDescriptionFor} for C{hostname} and C{trustRoots}.
    """
    members = getattr(port, "ports", None)
    if isinstance(members, (list, tuple)):
        return [d for member in members
                for d in clientDescriptionsFor(member, hostname, trustRoots)]
    inner = getattr(port, "wrappedPort", None)
    if inner is not None and not callable(getattr(port, "clientDescription", None)):
        return clientDescriptionsFor(inner, hostname, trustRoots)
    return [clientDescriptionFor(port, hostname, trustRoots)]


def clientDescriptionFor(port: IListeningPort | Any, hostname: str | None = None,
                         trustRoots: str | None = None) -> str:
    """
    The client description that connects to C{port}: C{tcp:} to its
    address (the loopback address when it listens on every address),
    C{unix:} to its path, C{tls:} for a TLS port, or whatever a port that
    has C{clientDescription()} says; wrappers are seen through
    (C{wrappedPort}).

    For TLS, the name to verify is C{hostname}, or else the first DNS name
    (then IP address, then common name) of the certificate the port serves;
    the description connects to the port's own address and verifies that
    name, trusting the PEM certificates in the directory C{trustRoots} (as
    Twisted's C{tls:} client reads it) or, without it, the platform's.  Both
    are ignored for ports without TLS.

    @raise CannotDescribePort: for a port with several addresses (use
        L{clientDescriptionsFor}) or one no client description reaches.
    """
    members = getattr(port, "ports", None)
    if isinstance(members, (list, tuple)):
        raise CannotDescribePort(
            f"{port!r} listens on {len(members)} addresses; use "
            "clientDescriptionsFor(port) for one description per address")
    own = getattr(port, "clientDescription", None)
    if callable(own):
        described: str = own()
        return described
    inner = getattr(port, "wrappedPort", None)
    if inner is not None:
        return clientDescriptionFor(inner, hostname, trustRoots)
    try:
        host: Any = cast(Any, port).getHost()
    except Exception as e:
        raise CannotDescribePort(f"{port!r} is not listening ({e})") from None
    factories = list(_factoryChain(getattr(port, "factory", None)))
    if any(type(f).__name__ == "HAProxyWrappingFactory" for f in factories):
        raise CannotDescribePort(
            f"{port!r} expects the PROXY protocol header, which no client description sends")
    if isinstance(host, (IPv4Address, IPv6Address)) and host.type == "TCP":
        address = _LOOPBACK.get(host.host, host.host)
        tcp = buildDescription("tcp", address, host.port)
        tls = next((f for f in factories if type(f).__name__ == "TLSMemoryBIOFactory"), None)
        if tls is None:
            return tcp
        name = hostname or _certificateName(tls, port)
        if name == address:
            return buildDescription("tls", address, host.port, trustRoots=trustRoots)
        return buildDescription("tls", name, host.port, trustRoots=trustRoots, endpoint=tcp)
    if isinstance(host, UNIXAddress):
        path = _text(host.name)
        if not path or path.startswith("\0"):
            raise CannotDescribePort(
                f"{port!r} listens on an abstract or unnamed UNIX socket, which a "
                "description cannot name")
        return buildDescription("unix", path)
    raise CannotDescribePort(
        f"no client description reaches {port!r} (address {host!r}); a port type of "
        "its own can say how by implementing clientDescription()")


def _factoryChain(factory: object) -> Iterator[object]:
    depth = 0
    while factory is not None and depth < 16:
        yield factory
        factory = getattr(factory, "wrappedFactory", None)
        depth += 1


def _certificateName(tlsFactory: Any, port: object) -> str:
    from cryptography import x509

    try:
        # A connection made for a stand-in protocol (never used on the
        # wire) holds the certificate the port serves.
        standIn = types.SimpleNamespace(factory=tlsFactory)
        connection = tlsFactory._creatorCallable(standIn)
        certificate: x509.Certificate = connection.get_certificate().to_cryptography()
    except Exception:
        raise CannotDescribePort(
            f"cannot read the certificate of TLS port {port!r}; pass hostname= with "
            "the name to verify") from None
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [n for n in names.get_values_for_type(x509.DNSName) if "*" not in n]
        ips = [str(n) for n in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    common = [str(a.value) for a in
              certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]
    for name in dns + ips + [c for c in common if "*" not in c]:
        return name
    raise CannotDescribePort(
        f"the certificate of TLS port {port!r} names no host; pass hostname= with "
        "the name to verify")
