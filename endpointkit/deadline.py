"""
Deadlines for client connections, and happy-eyeballs TCP from a description::

    timeout:5:endpoint=tcp\\:example.com\\:80
    timeout:2.5:endpoint=tls\\:example.com\\:443
    hostname:example.com:443
    hostname:[::1]:8080:timeout=10:bindAddress=[::1]

Twisted's endpoint interface does not promise a timeout, and the usual
C{reactor.callLater(30, attempt.cancel)} leaks its delayed call when the
connection succeeds, reports a C{CancelledError} instead of a timeout, and
cannot stop an endpoint that ignores cancellation.  L{connectWithTimeout} does
all three right for any endpoint; C{timeout:} puts it around any client
description (around C{tcp:} and C{unix:}, whose connectors keep a deadline
of their own, it sets that one instead of adding a second timer).
C{hostname:} is Twisted's L{HostnameEndpoint} (RFC 8305 over IPv4 and
IPv6), which no built-in description gives.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
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
from zope.interface.declarations import objectSpecificationDescriptor

from endpointkit._builtin import _PROVIDER as _TWISTED
from endpointkit._grammar import buildDescription, formatDuration
from endpointkit._kinds import Host, Nested, Port, Seconds
from endpointkit._schema import Arg, EndpointType, Parsed

__all__ = [
    "ConnectTimeout",
    "TimeoutEndpoint",
    "connectWithTimeout",
    "describeEndpoint",
    "hostnameType",
    "timeoutType",
]

_log = Logger()


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
            f"connecting to {self.description} timed out after {formatDuration(seconds)}")

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


# What an attempt is doing.
_LIVE = 0  # connecting
_CLOSED = 1  # ended by the caller's cancellation or the endpoint's failure
_EXPIRING = 2  # its deadline passed: cancelling the endpoint's attempt
_EXPIRED = 3  # its deadline passed, and the endpoint's canceller has returned


@implementer(IProtocolFactory)
class _Attempt:
    """
    One connection attempt with a deadline, and the factory it hands to the
    inner endpoint.

    The caller gets the endpoint's own L{Deferred}, with the attempt's
    callbacks first on it: they stop the timer, and turn what a cancellation
    at the deadline gives into L{ConnectTimeout}.  (L{Deferred.cancel} always
    fires a L{Deferred} that has not fired, whatever its canceller does, so
    the caller has its timeout on time even from an endpoint that ignores
    cancellation.)

    While the attempt is live it builds the caller's protocols and hands
    them to the endpoint as they are: nothing stands between a transport
    and the caller's protocol.  Once it has ended without a connection
    (deadline, cancellation, failure) it closes every connection it made
    that the endpoint had not delivered, and every connection that still
    arrives.

    It provides L{IProtocolFactory} and whatever the caller's factory
    provides.  Asked what it provides (L{providedBy}), it becomes an
    instance of the subclass made for that kind of factory (see
    L{_attemptClass}), which declares those interfaces and reads their names
    from the caller's factory: so a TLS wrapper still finds, say, the ALPN
    protocols of an L{IProtocolNegotiationFactory}.  Most endpoints never
    ask, and their attempts cost no more than the base class.  An attempt
    is made for every connection, so it is kept small and has no
    C{__getattr__} (which would slow down every attribute it has).

    @ivar state: L{_LIVE}, L{_CLOSED}, L{_EXPIRING} or L{_EXPIRED}.
    @ivar built: what was built for the caller but not yet delivered: no
        protocol (L{None}), one, or a list of them (almost every attempt
        builds exactly one).
    @ivar owner: the L{TimeoutEndpoint} making it.
    @ivar pending: the endpoint's L{Deferred} until it fires; while the
        endpoint's canceller runs at the deadline, the L{Deferred} the
        caller's callbacks wait on.
    """

    __slots__ = ("built", "factory", "owner", "pending", "state", "timer")

    def __init__(self, owner: TimeoutEndpoint, factory: Any) -> None:
        self.owner = owner
        self.factory = factory
        self.state = _LIVE
        self.timer: Any = None
        self.pending: Deferred[Any] | None = None
        self.built: Any = None

    def __repr__(self) -> str:
        return (f"<deadline of {formatDuration(self.owner.timeout)} "
                f"around {self.factory!r}>")

    @property
    def __providedBy__(self) -> Any:
        self.__class__ = _attemptClass(self.factory)
        return providedBy(self)

    # The factory.

    def buildProtocol(self, addr: IAddress) -> Any:
        if self.state:
            return _Discarded()
        protocol = self.factory.buildProtocol(addr)
        built = self.built
        if built is None:
            self.built = protocol
        elif protocol is not None:
            if isinstance(built, list):
                built.append(protocol)
            else:
                self.built = [built, protocol]
        return protocol

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()

    def discarded(self) -> None:
        _log.info("closed a connection to {endpoint} that completed after its attempt ended",
                  endpoint=self.describe())

    def describe(self) -> str:
        owner = self.owner
        if owner.innerDescription is None:
            return describeEndpoint(owner.endpoint)
        return owner.innerDescription

    # The attempt (started by TimeoutEndpoint.connect): the first callbacks on
    # the endpoint's Deferred, and the deadline.

    def _connected(self, protocol: Any) -> Any:
        self.pending = None
        if self.state:
            # Delivered by a canceller, after the attempt ended.
            if not isinstance(protocol, _Discarded):
                self._shut(protocol)
            if self.state >= _EXPIRING:
                return self._timedOut()
            return protocol
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        self.built = None
        return protocol

    def _failed(self, failure: Failure) -> Any:
        self.pending = None
        if self.state >= _EXPIRING:
            return self._timedOut()
        self._close(_CLOSED)
        return failure

    def _close(self, state: int) -> None:
        self.state = state
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        built, self.built = self.built, None
        if built is None:
            return
        for protocol in built if isinstance(built, list) else [built]:
            self._shut(protocol)

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

    def _timedOut(self) -> Any:
        """
        What the caller gets once the deadline has passed: L{ConnectTimeout},
        after the endpoint's canceller has returned (Twisted's own fire their
        L{Deferred} first and close their socket after), so that by then the
        attempt has let go of everything.
        """
        if self.state == _EXPIRING:
            self.pending = Deferred()
            return self.pending
        return Failure(self._timeout())  # type: ignore[no-untyped-call]

    def _timeout(self) -> ConnectTimeout:
        return ConnectTimeout(self.owner.endpoint, self.owner.timeout, self.describe())

    def _expire(self) -> None:
        self.timer = None
        if self.state:
            return
        self._close(_EXPIRING)
        pending, self.pending = self.pending, None
        try:
            if pending is not None:
                pending.cancel()
        finally:
            self.state = _EXPIRED
            timedOut, self.pending = self.pending, None
            if timedOut is not None:
                timedOut.errback(self._timeout())


def _forwarding(name: str) -> property:
    return property(lambda attempt: getattr(attempt.factory, name),
                    doc=f"The caller's factory's C{{{name}}}.")


def _attemptClass(factory: object) -> type[_Attempt]:
    """
    The attempt class for C{factory}: a subclass of L{_Attempt} that provides
    what C{factory} provides, and reads from C{factory} every name of those
    interfaces (and every public name of C{factory}'s class) that an attempt
    does not have itself.  Classes are made once per class of factory and
    what it provides, and kept.
    """
    spec = providedBy(factory)
    key = (type(factory), spec)
    try:
        return _attemptClasses[key]
    except KeyError:
        cacheable = True
    except TypeError:
        cacheable = False
    names = {name for name in dir(type(factory)) if not name.startswith("_")}
    for interface in spec.flattened():
        names.update(interface.names(all=True))
    namespace: dict[str, Any] = {
        name: _forwarding(name) for name in sorted(names) if not hasattr(_Attempt, name)}
    namespace.update({"__module__": _Attempt.__module__, "__slots__": (),
                      "__providedBy__": objectSpecificationDescriptor})
    attemptClass = type(_Attempt.__name__, (_Attempt,), namespace)
    _declare(attemptClass, spec)
    if cacheable:
        _attemptClasses[key] = attemptClass
    return attemptClass


# The interfaces offered are only known at run time.
_declare: Any = classImplements

# Every attempt class, by class of factory and what it provides.
_attemptClasses: dict[Any, type[_Attempt]] = {}


def _asFactory(protocolOrFactory: Any) -> Any:
    """
    C{protocolOrFactory} as a factory: itself when it is one, a factory of
    just it when it is a protocol.  Classes whose instances are factories
    are remembered, so that the next of them is known at once.
    """
    if IProtocolFactory.providedBy(protocolOrFactory):
        if IProtocolFactory.implementedBy(type(protocolOrFactory)):
            _factoryClasses.add(type(protocolOrFactory))
        return protocolOrFactory
    if IProtocol.providedBy(protocolOrFactory):
        return _OneShotFactory(protocolOrFactory)
    raise TypeError(
        f"connectWithTimeout needs a protocol or a protocol factory, got {protocolOrFactory!r}")


_factoryClasses: set[type] = set()


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
    return TimeoutEndpoint(endpoint, timeout, clock).connect(protocolOrFactory)


@implementer(IStreamClientEndpoint)
class TimeoutEndpoint:
    """
    Another client endpoint, with a deadline on each connection attempt
    (L{connectWithTimeout}); what C{timeout:} builds.

    @ivar endpoint: the endpoint it wraps.
    @ivar timeout: the deadline, in seconds.
    @ivar innerDescription: the description of C{endpoint}, secrets masked,
        when it was built from one.
    @ivar innerTimesOut: C{endpoint} keeps this deadline itself: it is
        Twisted's TCP or UNIX client endpoint, whose connector fails an
        attempt with L{TimeoutError} after exactly C{timeout} seconds,
        cancels its own delayed call when the attempt ends and closes its
        socket.  No second timer is then set: that error becomes
        L{ConnectTimeout}, and everything else is passed on as it is.
        C{timeout:} sets this when it builds C{tcp:} or C{unix:} with whole
        seconds no more than their own C{timeout}, which it sets to them.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, timeout: float,
                 clock: IReactorTime | None = None,
                 innerDescription: str | None = None, *,
                 innerTimesOut: bool = False) -> None:
        self.endpoint = endpoint
        self.timeout = _checkTimeout(timeout)
        self.clock = clock
        self.innerDescription = innerDescription
        self.innerTimesOut = innerTimesOut

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
        return f"<TimeoutEndpoint {formatDuration(self.timeout)} around {self.endpoint!r}>"

    def connect(self, protocolFactory: IProtocolFactory | IProtocol) -> Deferred[IProtocol]:
        """
        Connect the inner endpoint with C{protocolFactory} (or a protocol
        instance), with the deadline; see L{connectWithTimeout}.
        """
        factory: Any = protocolFactory
        if type(factory) not in _factoryClasses:
            factory = _asFactory(factory)
        if self.innerTimesOut:
            return self.endpoint.connect(factory).addErrback(self._timedOut)
        attempt = _Attempt(self, factory)
        try:
            pending: Any = self.endpoint.connect(attempt)
        except BaseException as error:
            attempt._close(_CLOSED)
            if not isinstance(error, Exception):
                raise
            return fail()
        if not isinstance(pending, Deferred):
            result = pending
            pending = maybeDeferred(lambda: result)
        attempt.pending = pending
        pending.addCallbacks(attempt._connected, attempt._failed)
        if attempt.pending is not None:
            # Still connecting: the deadline starts now (an endpoint that
            # connects within connect() needs no delayed call at all).
            clock: Any = self.clock
            if clock is None:
                from twisted.internet import reactor as clock
            attempt.timer = clock.callLater(self.timeout, attempt._expire)
        started: Deferred[IProtocol] = pending
        return started


    def _timedOut(self, failure: Failure) -> Failure:
        """
        The inner endpoint's own deadline passed (see C{innerTimesOut}).
        """
        if type(failure.value) is TimeoutError:
            description = self.innerDescription
            if description is None:
                description = describeEndpoint(self.endpoint)
            return Failure(  # type: ignore[no-untyped-call]
                ConnectTimeout(self.endpoint, self.timeout, description))
        return failure


# The types whose endpoints keep a deadline of whole seconds themselves
# (Twisted's connectors), as their "timeout" argument.
_KEEP_THEIR_OWN = frozenset({"tcp", "unix"})


def _buildTimeout(reactor: Any, parsed: Parsed) -> TimeoutEndpoint:
    inner = parsed.values["endpoint"]
    assert isinstance(inner, Parsed)
    return _withDeadline(reactor, inner, parsed.values["seconds"])


def _withDeadline(reactor: Any, inner: Parsed, seconds: float) -> TimeoutEndpoint:
    """
    C{inner} built with a deadline of C{seconds} on each attempt, as
    C{timeout:} builds it: Twisted's C{tcp:} or C{unix:}, given whole
    seconds no more than their own C{timeout}, keep it in their connector
    (L{TimeoutEndpoint.innerTimesOut}).
    """
    seconds = float(seconds)
    description = inner.description(masked=True)
    own = inner.values.get("timeout")
    if (inner.type is not None and inner.type.provider == _TWISTED
            and inner.prefix in _KEEP_THEIR_OWN and seconds.is_integer()
            and isinstance(own, int) and own >= seconds):
        timed = replace(inner, values={**inner.values, "timeout": int(seconds)},
                        given=(*inner.given, "timeout") if "timeout" not in inner.given
                        else inner.given)
        return TimeoutEndpoint(timed.build(reactor), seconds, reactor, description,
                               innerTimesOut=True)
    return TimeoutEndpoint(inner.build(reactor), seconds, reactor, description)


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
    # A (host, 0) pair: Twisted before 26.4 binds a bare string as it is,
    # which an IPv6 socket refuses.
    local = None if bindAddress is None else (bindAddress, 0)
    return HostnameEndpoint(reactor, host, port, timeout=timeout, bindAddress=local,
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
