"""
Deadlines for client connections, and happy-eyeballs TCP from a description.

    timeout:5:endpoint=tcp\\:example.com\\:80
    timeout:2.5:endpoint=tls\\:example.com\\:443
    hostname:example.com:443
    hostname:[::1]:8080:timeout=10:bindAddress=[::1]

Twisted's endpoint interface does not promise a timeout, and the usual
C{reactor.callLater(30, attempt.cancel)} leaks its delayed call when the
connection succeeds, reports a C{CancelledError} instead of a timeout, and
cannot stop an endpoint that ignores cancellation.  L{connectWithTimeout} does
all three right for any endpoint; C{timeout:} puts it around any client
description.  C{hostname:} is Twisted's L{HostnameEndpoint} (RFC 8305 over
IPv4 and IPv6), which no built-in description gives.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import classImplements, implementer, providedBy

from endpointkit._description import (
    Arg,
    EndpointType,
    Host,
    Nested,
    Parsed,
    Port,
    Seconds,
    buildDescription,
)

__all__ = [
    "ConnectTimeout",
    "TimeoutEndpoint",
    "connectWithTimeout",
    "describeEndpoint",
    "hostnameType",
    "timeoutType",
]

_log = Logger()
_T = TypeVar("_T")


def _formatSeconds(seconds: float) -> str:
    return Seconds().format(seconds)


def describeEndpoint(endpoint: object) -> str:
    """
    How messages name C{endpoint}: its C{description} attribute when it has
    one (endpointkit sets it, with secrets masked, on endpoints it builds from
    a description), its C{repr} otherwise.
    """
    description = getattr(endpoint, "description", None)
    if isinstance(description, str):
        return description
    return repr(endpoint)


class ConnectTimeout(TimeoutError):
    """
    A connection attempt did not complete before its deadline.

    @ivar endpoint: the endpoint that was connecting.
    @ivar description: how the message names it (see L{describeEndpoint}).
    @ivar seconds: the deadline, in seconds after the attempt started.
    """

    def __init__(self, endpoint: object, seconds: float, description: str | None = None) -> None:
        self.endpoint = endpoint
        self.description = describeEndpoint(endpoint) if description is None else description
        self.seconds = seconds
        self.osError = None
        Exception.__init__(
            self,
            f"connecting to {self.description} timed out after "
            f"{_formatSeconds(seconds)} second{'' if seconds == 1 else 's'}")

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (None, self.seconds, self.description))


def _checkTimeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
    seconds = float(timeout)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"timeout must be a positive, finite number of seconds, got {timeout!r}")
    return seconds


def _abort(transport: Any) -> None:
    abort = getattr(transport, "abortConnection", None)
    if abort is None:
        transport.loseConnection()
    else:
        abort()


class _OneShotFactory(Factory):
    """
    Builds one given protocol instance, as L{connectProtocol} does.
    """

    noisy = False

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> Any:
        return self.protocol

    def __repr__(self) -> str:
        return f"<connection of {self.protocol!r}>"


@implementer(IProtocol)
class _Discarded:
    """
    What an attempt builds once its deadline has passed: it closes the
    connection it is given, and the caller's factory builds nothing.
    """

    transport: Any = None

    def makeConnection(self, transport: ITransport) -> None:
        self.transport = transport
        _abort(transport)

    def connectionMade(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.transport = None


def _refuseConnection(protocol: Any, attempt: _Attempt) -> None:
    """
    Silence C{protocol}, built for an attempt that ended before the endpoint
    connected it: when the endpoint makes the connection it is closed, and
    the protocol hears nothing of it, not C{connectionMade}, data or
    C{connectionLost}.  The instance is never handed to anyone.  Only this
    instance is changed, and only in this rare case (an endpoint that builds
    a protocol and connects it in a later turn), so that the common path
    puts nothing between a transport and its protocol.
    """

    def makeConnection(transport: ITransport) -> None:
        attempt.discarded()
        _abort(transport)

    def ignore(*args: object) -> None:
        pass

    try:
        protocol.makeConnection = makeConnection
        for name in _EVENTS:
            setattr(protocol, name, ignore)
    except AttributeError:
        pass


_EVENTS = ("dataReceived", "connectionLost", "readConnectionLost", "writeConnectionLost",
           "handshakeCompleted", "fileDescriptorReceived")


def _offering(base: type[_T], wrapped: object, cache: dict[Any, Any]) -> type[_T]:
    """
    A subclass of C{base} that provides what C{wrapped} provides, from
    C{cache} by what C{wrapped} provides.  Classes are made once per kind of
    wrapped object: declaring interfaces on every instance would cost more
    than the rest of an attempt.
    """
    spec = providedBy(wrapped)
    try:
        found: type[_T] = cache[spec]
        return found
    except KeyError:
        cacheable = True
    except TypeError:
        cacheable = False
    offering = type(base.__name__, (base,), {"__module__": base.__module__})
    _declare(offering, spec)
    if cacheable:
        cache[spec] = offering
    return offering


# The interfaces offered are only known at run time.
_declare: Any = classImplements


@implementer(IProtocolFactory)
class _Attempt:
    """
    One connection attempt with a deadline, and the factory it hands to the
    inner endpoint.

    While the attempt is live it builds the caller's protocols and hands
    them to the endpoint as they are: nothing stands between a transport
    and the caller's protocol.  Once it ends without a connection (deadline, cancellation, failure) it
    is I{closed}: it closes every connection it made that the endpoint had
    not delivered, and every connection that still arrives.  It offers the
    interfaces and attributes of the caller's factory, so that a TLS wrapper
    still finds, say, its ALPN protocols.

    @ivar finished: the result has fired (or is firing).
    @ivar closed: no connection is wanted any more.
    @ivar built: protocols built for the caller but not yet delivered.
    """

    timer: Any = None
    pending: Deferred[Any] | None = None
    finished = False
    closed = False

    def __init__(self, endpoint: Any, factory: Any, seconds: float, clock: Any,
                 name: str | None) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.seconds = seconds
        self.clock = clock
        self.name = name
        self.built: list[Any] = []
        self.result: Deferred[IProtocol] = Deferred(self._cancel)

    def __repr__(self) -> str:
        return f"<deadline of {_formatSeconds(self.seconds)} s around {self.factory!r}>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "factory":
            raise AttributeError(name)
        return getattr(self.factory, name)

    # The factory.

    def buildProtocol(self, addr: IAddress) -> Any:
        if self.closed:
            return _Discarded()
        protocol = self.factory.buildProtocol(addr)
        if protocol is not None:
            self.built.append(protocol)
        return protocol

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()

    def discarded(self) -> None:
        _log.info("closed a connection to {endpoint} that completed after its attempt ended",
                  endpoint=self.describe())

    def describe(self) -> str:
        return describeEndpoint(self.endpoint) if self.name is None else self.name

    # The attempt (started by _connect).

    def _stopTimer(self) -> None:
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()

    def _connected(self, protocol: Any) -> None:
        self.pending = None
        if self.finished:
            if not isinstance(protocol, _Discarded):
                self._shut(protocol)
            return
        self.finished = True
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        self.built = []
        self.result.callback(protocol)

    def _failed(self, failure: Failure) -> None:
        self.pending = None
        if self.finished:
            return
        self._close()
        self.result.errback(failure)

    def _close(self) -> None:
        self.finished = self.closed = True
        self._stopTimer()
        built, self.built = self.built, []
        for protocol in built:
            self._shut(protocol)
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.cancel()

    def _shut(self, protocol: Any) -> None:
        """
        Close the connection of a protocol built for this attempt, now if it
        is connected, else as soon as it is.
        """
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            _abort(transport)
        else:
            _refuseConnection(protocol, self)

    def _expire(self) -> None:
        self.timer = None
        if self.finished:
            return
        self._close()
        self.result.errback(ConnectTimeout(self.endpoint, self.seconds, self.describe()))

    def _cancel(self, result: Deferred[IProtocol]) -> None:
        if not self.finished:
            self._close()


def _connect(endpoint: Any, protocolOrFactory: Any, seconds: float, clock: Any,
             name: str | None) -> Deferred[IProtocol]:
    factory: Any
    if IProtocolFactory.providedBy(protocolOrFactory):
        factory = protocolOrFactory
    elif IProtocol.providedBy(protocolOrFactory):
        factory = _OneShotFactory(protocolOrFactory)
    else:
        raise TypeError(
            f"connectWithTimeout needs a protocol or a protocol factory, got {protocolOrFactory!r}")
    if clock is None:
        from twisted.internet import reactor

        clock = reactor
    try:
        attemptClass = _attempts[providedBy(factory)]
    except (KeyError, TypeError):
        attemptClass = _offering(_Attempt, factory, _attempts)
    attempt = attemptClass(endpoint, factory, seconds, clock, name)
    attempt.timer = clock.callLater(seconds, attempt._expire)
    try:
        pending = endpoint.connect(attempt)
    except Exception:
        attempt._failed(Failure())  # type: ignore[no-untyped-call]
        return attempt.result
    except BaseException:
        attempt._close()
        raise
    if not isinstance(pending, Deferred):
        pending = maybeDeferred(lambda: pending)
    if not pending.called:
        attempt.pending = pending
    pending.addCallbacks(attempt._connected, attempt._failed)
    return attempt.result


_attempts: dict[Any, type[_Attempt]] = {}


def connectWithTimeout(
    endpoint: IStreamClientEndpoint,
    protocolOrFactory: IProtocol | IProtocolFactory,
    timeout: float,
    clock: IReactorTime | None = None,
) -> Deferred[IProtocol]:
    """
    Connect C{endpoint}, giving up after C{timeout} seconds.

    C{protocolOrFactory} is a protocol instance (as for L{connectProtocol}) or
    a factory (as for C{endpoint.connect}); the L{Deferred} fires with the
    connected protocol, or fails with the endpoint's own error, or, when the
    deadline passes first, cancels the attempt and fails with
    L{ConnectTimeout}.  Its delayed call never outlives the attempt.  A
    connection that the endpoint completes after the deadline anyway (an
    endpoint that ignores cancellation) is closed before its protocol sees
    C{connectionMade}.  Cancelling the L{Deferred} cancels the attempt.

    @param timeout: seconds, a positive finite number.
    @param clock: the L{IReactorTime} for the deadline; the global reactor
        when not given.
    """
    return _connect(endpoint, protocolOrFactory, _checkTimeout(timeout), clock, None)


@implementer(IStreamClientEndpoint)
class TimeoutEndpoint:
    """
    Another client endpoint, with a deadline on each connection attempt
    (L{connectWithTimeout}); what C{timeout:} builds.

    @ivar endpoint: the endpoint it wraps.
    @ivar timeout: the deadline, in seconds.
    @ivar innerDescription: the description of C{endpoint}, secrets masked,
        when it was built from one.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, timeout: float,
                 clock: IReactorTime | None = None,
                 innerDescription: str | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = _checkTimeout(timeout)
        self.clock = clock
        self.innerDescription = innerDescription

    @property
    def description(self) -> str | None:
        """
        Its own description, when its inner endpoint's is known.
        """
        if self.innerDescription is None:
            return None
        return buildDescription("timeout", self.timeout, endpoint=self.innerDescription)

    def __repr__(self) -> str:
        description = self.description
        if description is not None:
            return f"<TimeoutEndpoint {description}>"
        return f"<TimeoutEndpoint {_formatSeconds(self.timeout)} s around {self.endpoint!r}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return _connect(self.endpoint, protocolFactory, self.timeout, self.clock,
                        self.innerDescription)


def _buildTimeout(reactor: Any, parsed: Parsed) -> TimeoutEndpoint:
    inner = parsed.values["endpoint"]
    assert isinstance(inner, Parsed)
    return TimeoutEndpoint(inner.build(reactor), parsed.values["seconds"], reactor,
                           inner.description(masked=True))


timeoutType = EndpointType(
    "timeout", "client",
    (
        Arg("seconds", Seconds(), help="deadline for each connection attempt (fractions allowed)",
            positional=True),
        Arg("endpoint", Nested("client"), help="the client description it puts a deadline on"),
    ),
    "a deadline around any client description: an attempt still connecting after SECONDS "
    "is cancelled and fails with ConnectTimeout",
    build=_buildTimeout,
)


def _buildHostname(reactor: Any, host: str, port: int, timeout: float,
                   bindAddress: str | None, attemptDelay: float | None) -> HostnameEndpoint:
    return HostnameEndpoint(reactor, host, port, timeout=timeout, bindAddress=bindAddress,
                            attemptDelay=attemptDelay)


hostnameType = EndpointType(
    "hostname", "client",
    (
        Arg("host", Host(), help="host name (IDNA allowed) or IP address ([::1]) to connect to",
            positional=True),
        Arg("port", Port(), help="TCP port to connect to", positional=True),
        Arg("timeout", Seconds(), 30, "seconds to wait for each address's connection attempt"),
        Arg("bindAddress", Host(what="local address"), None, "local address to connect from"),
        Arg("attemptDelay", Seconds(allowZero=True), None,
            "seconds before trying the next address (default 0.3)"),
    ),
    "TCP to a host name over IPv6 and IPv4 at once (RFC 8305 happy eyeballs), "
    "or to an IP address",
    factory=_buildHostname,
)
