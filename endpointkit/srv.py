"""
C{srv:} -- connect to a service found through DNS SRV records (RFC 2782)::

    srv:_imaps._tcp:example.com
    srv:imaps:example.com
    srv:_xmpp-client._tcp:example.org:attemptTimeout=5
    srv:_http._tcp:service.consul:resolver=127.0.0.1\\:8600
    srv:ldap:example.com:fallbackPort=389:cache=no

The record C{_SERVICE._PROTO.DOMAIN} is looked up with L{twisted.names}'s
wire format, over a UDP socket the reactor reads (a random port and a random
ID; the query goes to the next server every second, or every third of
C{resolveTimeout=} when that is shorter, until the deadline), and over TCP
when an answer is truncated; the reactor is never blocked.  Answers with
records are kept by their TTL, answers without records as their SOA allows
(RFC 2308), and lookups of the same name under way are shared.  Without
C{resolver=} the name servers are those of the system's C{/etc/resolv.conf}
(re-read when it changes); with C{resolver=HOST:PORT} (C{|}-separated,
colons escaped) those servers are asked instead, and the targets' addresses
(A and AAAA) are asked of them too, so that names only they know (Consul's
C{.consul}) work.  Asked of the system, targets are resolved as C{hostname:}
resolves them.

Targets are tried in RFC 2782 order (L{orderTargets}): lowest priority
first, weighted random order within a priority.  Each target is connected
as C{hostname:} connects (Twisted's L{HostnameEndpoint}: IPv6 and IPv4, RFC
8305 happy eyeballs), with its own deadline (C{attemptTimeout=}); a target
that fails or times out moves on to the next, and when every one has failed
the connection fails with L{AllTargetsFailed}, which lists each target and
its reason.  A single target C{.} is L{ServiceNotAvailable}.  No record at
all is L{NoSRVRecords}, or, with C{fallbackPort=}, a connection to DOMAIN on
that port (as RFC 2782 allows).  A name server that does not answer within
C{resolveTimeout=} is L{SRVResolveTimeout}; one that answers with an error
is L{SRVLookupFailed}.

The cache (L{SRVCache}) is bounded and shared by the endpoints of one
process; C{cache=no} turns it off (one query per connection).  A busy
client asks once per TTL, not once per connection; within a TTL nothing is
built per connection but the attempt itself.

The lookup always happens in this process: inside a proxy
(C{socks5:...:endpoint=srv\\:...}) it finds the proxy, and the proxy is never
asked to resolve SRV records.

TLS: the name a TLS wrapper should verify is the SRV domain, as RFC 6125
(section 6.2.1) recommends.  C{tlswrap:endpoint=srv\\:...} verifies it
without C{hostname=}: the domain is C{srv:}'s C{domain} argument, where
C{tlswrap:} looks (L{endpointkit.tlswrap.targetHost}); from Python it is
L{SRVClientEndpoint.tlsHostname}.  The domain is what the user asked for,
while the targets come from DNS, which an attacker may forge without
DNSSEC.  A wrapper that verifies each target instead (when a
deployment's certificates name the target hosts) wraps each target's
endpoint through L{SRVClientEndpoint.wrapTargets}, as C{tlswrap:}'s
C{verifyTarget=yes} does.

The chosen target is logged at debug level; L{targetOf} gives it for a
connected protocol (as L{endpointkit.failover.servedBy} gives a member), and
L{SRVClientEndpoint.lastTarget} is the latest.
"""

from __future__ import annotations

import random as _random
import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.names import dns
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit._grammar import buildDescription, formatDuration
from endpointkit._kinds import Bool, Host, Int, Invalid, Kind, Port, Seconds
from endpointkit._schema import Arg, EndpointType
from endpointkit._srvdns import MAX_TTL as MAX_TTL
from endpointkit._srvdns import RESOLV_CONF as RESOLV_CONF
from endpointkit._srvdns import SRVCache as SRVCache
from endpointkit._srvdns import (
    _AddressResolver,
    _Answer,
    _ipLiteral,
    _Outcomes,
    _Resolver,
    _ResolvingReactor,
    _serverText,
)
from endpointkit.deadline import connectWithTimeout

__all__ = [
    "AllTargetsFailed",
    "NoSRVRecords",
    "SRVCache",
    "SRVClientEndpoint",
    "SRVError",
    "SRVLookupFailed",
    "SRVResolveTimeout",
    "SRVTarget",
    "ServiceNotAvailable",
    "orderTargets",
    "srvType",
    "targetOf",
]

_log = Logger()

# Twisted's failure module is untyped; called through this.
_Failure: Any = Failure

DEFAULT_ATTEMPT_TIMEOUT = 10.0
DEFAULT_RESOLVE_TIMEOUT = 5.0


# Targets and their order.


@dataclass(frozen=True)
class SRVTarget:
    """
    One SRV record: a target host and port, with its priority and weight.

    @ivar host: the target's name, without the trailing dot (empty for the
        C{.} target).
    """

    host: str
    port: int
    priority: int = 0
    weight: int = 0

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def orderTargets(targets: Iterable[SRVTarget], random: _random.Random) -> list[SRVTarget]:
    """
    The order in which to try C{targets}, as RFC 2782 says: by priority,
    lowest first; within one priority, a weighted random order (each pick
    chooses a remaining target with probability proportional to its weight;
    targets of weight 0 are shuffled and put first, where they are chosen
    rarely, as the RFC's running-sum selection does).

    @param random: the source of randomness (seeded, for a repeatable order).
    """
    byPriority: dict[int, list[SRVTarget]] = {}
    for target in targets:
        byPriority.setdefault(target.priority, []).append(target)
    ordered: list[SRVTarget] = []
    for priority in sorted(byPriority):
        group = byPriority[priority]
        random.shuffle(group)
        group.sort(key=lambda t: t.weight != 0)
        while group:
            total = sum(t.weight for t in group)
            chosen = random.randint(0, total)
            running = 0
            index = 0
            while index < len(group) - 1:
                running += group[index].weight
                if running >= chosen:
                    break
                index += 1
            ordered.append(group.pop(index))
    return ordered


# Errors.


class SRVError(ConnectError):
    """
    An C{srv:} connection failed; the message says why.

    @ivar record: the record name that was looked up, like
        C{_imaps._tcp.example.com}.
    """

    def __init__(self, record: str, message: str) -> None:
        Exception.__init__(self, message)
        self.osError = None
        self.record = record
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(kind: type[SRVError], state: dict[str, Any]) -> SRVError:
    error = kind.__new__(kind)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class AllTargetsFailed(SRVError):
    """
    Every target of the record was tried, and none connected.

    @ivar failures: each target tried, in order, with the reason it failed.
    """

    def __init__(self, record: str, failures: Sequence[tuple[SRVTarget, BaseException]]) -> None:
        self.failures = list(failures)
        reasons = "; ".join(f"{target} ({_reasonText(reason)})" for target, reason in failures)
        count = len(self.failures)
        SRVError.__init__(
            self, record,
            f"srv: could not connect to {record}: "
            f"{'the only target' if count == 1 else f'all {count} targets'} failed: {reasons}")


def _reasonText(reason: BaseException) -> str:
    text = str(reason).strip() or type(reason).__name__
    return text.rstrip(".")


class ServiceNotAvailable(SRVError):
    """
    The record's only target is C{.}: the service is decidedly not available
    at this domain (RFC 2782).
    """

    def __init__(self, record: str) -> None:
        SRVError.__init__(
            self, record,
            f"srv: {record} says the service is decidedly not available there "
            "(its only target is '.')")


class NoSRVRecords(SRVError):
    """
    There is no SRV record of that name (and no C{fallbackPort=}).

    @ivar nameExists: L{False} when the name does not exist at all
        (NXDOMAIN), L{True} when it exists without SRV records.
    """

    def __init__(self, record: str, nameExists: bool = False) -> None:
        self.nameExists = nameExists
        what = "has no SRV records" if nameExists else "does not exist (NXDOMAIN)"
        SRVError.__init__(
            self, record,
            f"srv: no SRV records for {record}: the name {what}; "
            "fallbackPort= connects to the domain on a port of your choice instead")


class SRVResolveTimeout(SRVError):
    """
    No name server answered in time.

    @ivar seconds: the deadline (C{resolveTimeout=}).
    @ivar servers: the name servers that were asked, as C{(host, port)}.
    """

    def __init__(self, record: str, seconds: float,
                 servers: Sequence[tuple[str, int]], what: str = "SRV") -> None:
        self.seconds = seconds
        self.servers = tuple(servers)
        asked = ", ".join(_serverText(s) for s in self.servers)
        SRVError.__init__(
            self, record,
            f"srv: no answer to the {what} query for {record} within "
            f"{formatDuration(seconds)} (resolveTimeout) from {asked}")


class SRVLookupFailed(SRVError):
    """
    The name servers answered the query with an error (SERVFAIL, REFUSED,
    ...), or the lookup could not be sent at all.

    @ivar reason: what they answered.
    """

    def __init__(self, record: str, reason: str, what: str = "SRV") -> None:
        self.reason = reason
        SRVError.__init__(self, record, f"srv: the {what} lookup of {record} failed: {reason}")






_sharedCache = SRVCache()

# What the DNS side (endpointkit._srvdns) builds its targets and errors with.
_outcomes = _Outcomes(SRVTarget, SRVLookupFailed, SRVResolveTimeout)





# The endpoint.


_targetOf: weakref.WeakKeyDictionary[object, SRVTarget] = weakref.WeakKeyDictionary()


def targetOf(protocol: object) -> SRVTarget | None:
    """
    The target that C{protocol} (as the connect L{Deferred} of an
    L{SRVClientEndpoint} gave it) was connected to, or L{None} when it was
    not connected by one (or cannot be weakly referenced): for a relay's log
    line or a metric, per connection (L{SRVClientEndpoint.lastTarget} is only
    the latest).
    """
    try:
        return _targetOf.get(protocol)
    except TypeError:
        return None


TargetWrapper = Callable[[IStreamClientEndpoint, SRVTarget], IStreamClientEndpoint]
"""
What L{SRVClientEndpoint.wrapTargets} takes: given one target's endpoint and
the target, the endpoint to connect instead (a TLS wrapper verifying the
target's name, for example).
"""


@implementer(IStreamClientEndpoint)
class SRVClientEndpoint:
    """
    Connects to a service found through DNS SRV records; what C{srv:}
    builds.  See the module's documentation.

    @ivar service: the service label, with its underscore (C{_imaps}).
    @ivar proto: the protocol label, with its underscore (C{_tcp}).
    @ivar domain: the domain, without a trailing dot.
    @ivar recordName: the name looked up, C{SERVICE.PROTO.DOMAIN}.
    @ivar lastTarget: the target of the most recent connection, set just
        before its L{Deferred} fires (so a callback on it reads this
        connection's target); L{None} before the first.
    """

    def __init__(self, reactor: Any, service: str, domain: str, proto: str = "tcp", *,
                 resolvers: Sequence[tuple[str, int]] | None = None,
                 attemptTimeout: float = DEFAULT_ATTEMPT_TIMEOUT,
                 fallbackPort: int | None = None,
                 cache: SRVCache | None = _sharedCache,
                 resolveTimeout: float = DEFAULT_RESOLVE_TIMEOUT,
                 seed: int | None = None,
                 bindAddress: str | None = None,
                 wrapTarget: TargetWrapper | None = None) -> None:
        self.reactor = reactor
        self.service = "_" + service.lstrip("_")
        self.proto = "_" + proto.lstrip("_")
        self.domain = domain.rstrip(".")
        self.recordName = f"{self.service}.{self.proto}.{self.domain}"
        self.resolvers = None if resolvers is None else tuple(resolvers)
        self.attemptTimeout = attemptTimeout
        self.fallbackPort = fallbackPort
        self.cache = cache
        self.resolveTimeout = resolveTimeout
        self.seed = seed
        self.random = _random.Random(seed)
        self.bindAddress = bindAddress
        self.wrapTarget = wrapTarget
        self.lastTarget: SRVTarget | None = None
        self._resolver = _Resolver(reactor, self.resolvers, cache, resolveTimeout, _outcomes)
        # The targets' endpoints, built once per answer.
        self._answer: _Answer | None = None
        self._built: dict[SRVTarget, IStreamClientEndpoint] = {}

    @property
    def tlsHostname(self) -> str:
        """
        The host name a TLS wrapper verifies by default: the SRV domain, as
        RFC 6125 recommends (the name the user asked for, not a name that
        DNS gave).  To verify each target instead, see L{wrapTargets}.
        """
        return self.domain

    @property
    def description(self) -> str:
        """
        A description of this endpoint (the canonical long form).
        """
        resolver = None
        if self.resolvers is not None:
            resolver = "|".join(_serverText(s) for s in self.resolvers)

        def unless(value: Any, default: Any) -> Any:
            return None if value == default else value

        return buildDescription(
            "srv", self.service + "." + self.proto, self.domain, resolver=resolver,
            attemptTimeout=unless(self.attemptTimeout, DEFAULT_ATTEMPT_TIMEOUT),
            fallbackPort=self.fallbackPort,
            cache=None if self.cache is not None else False,
            resolveTimeout=unless(self.resolveTimeout, DEFAULT_RESOLVE_TIMEOUT),
            seed=self.seed, bindAddress=self.bindAddress)

    def __repr__(self) -> str:
        return f"<SRVClientEndpoint {self.recordName}>"

    def wrapTargets(self, wrap: TargetWrapper) -> SRVClientEndpoint:
        """
        A copy of this endpoint that connects each target through
        C{wrap(targetEndpoint, target)} (a wrapper already set is applied
        first).  A TLS wrapper that verifies each target rather than the
        domain (C{tlswrap:}'s C{verifyTarget=yes}) uses this to verify
        C{target.host} on the connection to that target.
        """
        previous = self.wrapTarget

        def both(endpoint: IStreamClientEndpoint, target: SRVTarget) -> IStreamClientEndpoint:
            if previous is not None:
                endpoint = previous(endpoint, target)
            return wrap(endpoint, target)

        return SRVClientEndpoint(
            self.reactor, self.service, self.domain, self.proto, resolvers=self.resolvers,
            attemptTimeout=self.attemptTimeout, fallbackPort=self.fallbackPort,
            cache=self.cache, resolveTimeout=self.resolveTimeout, seed=self.seed,
            bindAddress=self.bindAddress, wrapTarget=both)

    def chosenTarget(self, protocol: object) -> SRVTarget | None:
        """
        The target the connection of C{protocol} reached (L{targetOf}): the
        relay names it in its stats line and counts it.
        """
        return targetOf(protocol)

    def resolveTargets(self) -> Deferred[list[SRVTarget]]:
        """
        Look the record up (or take it from the cache) and give its targets
        in the order the next connection would try them (one draw of the
        random order).  Fails with L{NoSRVRecords} (or, with
        C{fallbackPort=}, gives the domain on that port),
        L{ServiceNotAvailable}, L{SRVResolveTimeout} or L{SRVLookupFailed}.
        """
        return self._resolve().addCallback(lambda found: found[0])

    def _resolve(self) -> Deferred[tuple[list[SRVTarget], _Answer]]:
        d = self._resolver.lookup(self.recordName, dns.SRV, self.recordName, "SRV")
        return d.addCallback(self._targetsOf)

    def _targetsOf(self, answer: _Answer) -> tuple[list[SRVTarget], _Answer]:
        targets: list[SRVTarget] = answer.targets
        if not targets:
            if self.fallbackPort is not None:
                return [SRVTarget(self.domain, self.fallbackPort)], answer
            raise NoSRVRecords(self.recordName, answer.nameExists)
        usable = [t for t in targets if t.host]
        if not usable:
            raise ServiceNotAvailable(self.recordName)
        return orderTargets(usable, self.random), answer

    def _endpointFor(self, target: SRVTarget, answer: _Answer) -> IStreamClientEndpoint:
        """
        The endpoint of C{target}, built once for each answer (a cached
        answer is the same object, so connections in its TTL share them).
        """
        if answer is not self._answer:
            self._answer = answer
            self._built = {}
        endpoint = self._built.get(target)
        if endpoint is None:
            endpoint = self._built[target] = self.targetEndpoint(target, answer.hints)
        return endpoint

    def targetEndpoint(self, target: SRVTarget,
                       addresses: Mapping[str, Sequence[str]] | None = None
                       ) -> IStreamClientEndpoint:
        """
        The endpoint that connects one target: Twisted's
        L{HostnameEndpoint}, as C{hostname:} builds it, through the target
        wrapper when there is one.  With C{resolver=}, the target's name is
        resolved through those name servers (C{addresses}: what their SRV
        answer already gave, by lower-case name); otherwise as
        C{hostname:} resolves it.
        """
        reactor: Any = self.reactor
        if self.resolvers is not None:
            reactor = _ResolvingReactor(reactor, _AddressResolver(self._resolver, addresses or {}))
        # A (host, 0) pair, as hostname: gives it: Twisted before 26.4 binds
        # a bare string as it is, which an IPv6 socket refuses.
        local = None if self.bindAddress is None else (self.bindAddress, 0)
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            reactor, target.host, target.port,
            # The attempt's own deadline (connectWithTimeout) comes first.
            timeout=self.attemptTimeout + 1, bindAddress=local)
        if self.wrapTarget is not None:
            endpoint = self.wrapTarget(endpoint, target)
        return endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Look the record up, then connect its targets in order until one
        connects; see the module's documentation.
        """
        return _Connection(self, protocolFactory).start()


class _Connection:
    """
    One C{connect}: the lookup, then each target in turn.
    """

    def __init__(self, endpoint: SRVClientEndpoint, factory: IProtocolFactory) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.current: Deferred[Any] | None = None
        self.cancelled = False
        self.targets: list[SRVTarget] = []
        self.answer: _Answer | None = None
        self.failures: list[tuple[SRVTarget, BaseException]] = []
        self.result: Deferred[IProtocol] = Deferred(self.cancel)

    def start(self) -> Deferred[IProtocol]:
        self.current = self.endpoint._resolve()
        self.current.addCallbacks(self.resolved, self.fail)
        return self.result

    def cancel(self, result: Deferred[IProtocol]) -> None:
        self.cancelled = True
        current, self.current = self.current, None
        if current is not None:
            current.cancel()

    def fail(self, failure: Failure) -> None:
        self.current = None
        if not self.cancelled:
            self.result.errback(failure)

    def resolved(self, found: tuple[list[SRVTarget], _Answer]) -> None:
        self.current = None
        if self.cancelled:
            return
        self.targets, self.answer = found
        self.tryNext()

    def tryNext(self) -> None:
        endpoint = self.endpoint
        if not self.targets:
            self.result.errback(AllTargetsFailed(endpoint.recordName, self.failures))
            return
        target = self.targets.pop(0)
        try:
            assert self.answer is not None
            inner = endpoint._endpointFor(target, self.answer)
            attempt: Deferred[Any] = connectWithTimeout(
                inner, self.factory, endpoint.attemptTimeout, clock=endpoint.reactor)
        except Exception as e:
            self.targetFailed(_Failure(e), target)
            return
        self.current = attempt
        attempt.addCallbacks(self.connected, self.targetFailed,
                             callbackArgs=(target,), errbackArgs=(target,))

    def connected(self, protocol: IProtocol, target: SRVTarget) -> None:
        self.current = None
        endpoint = self.endpoint
        endpoint.lastTarget = target
        try:
            _targetOf[protocol] = target
        except TypeError:
            pass
        _log.debug("srv: {record} connected to target {target}",
                   record=endpoint.recordName, target=str(target))
        self.result.callback(protocol)

    def targetFailed(self, failure: Failure, target: SRVTarget) -> None:
        self.current = None
        if self.cancelled:
            return
        _log.debug("srv: {record}: target {target} failed: {reason}",
                   record=self.endpoint.recordName, target=str(target),
                   reason=failure.getErrorMessage())
        reason = failure.value
        assert reason is not None
        self.failures.append((target, reason))
        self.tryNext()


# The description.


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,62}(?<!-)")


class _ServiceLabel(Kind):
    """
    C{_service._proto} (the long form), or C{service} (the short form, with
    C{proto=}).
    """

    name = "service"
    expected = "a service like _imaps._tcp, or imaps (with proto=, default tcp)"

    def convert(self, text: str) -> str:
        labels = text.split(".")
        if len(labels) == 2 and all(label.startswith("_") for label in labels):
            if all(_LABEL.fullmatch(label[1:]) for label in labels):
                return text
        elif len(labels) == 1:
            if _LABEL.fullmatch(text.removeprefix("_")):
                return text
        raise Invalid()


class _ProtoLabel(Kind):
    name = "label"
    expected = "a protocol label such as tcp"

    def convert(self, text: str) -> str:
        if not _LABEL.fullmatch(text.removeprefix("_")):
            raise Invalid()
        return text.removeprefix("_").lower()


class _Domain(Host):
    name = "domain"

    def __init__(self) -> None:
        Host.__init__(self)
        self.expected = "a domain name such as example.com"

    def convert(self, text: str) -> str:
        value = Host.convert(self, text)
        if _ipLiteral(value) is not None:
            raise Invalid(hint="SRV records belong to a domain name, not an address; "
                          "use tcp: or hostname: for an address")
        return value


class _Servers(Kind):
    """
    Name servers: C{HOST:PORT} or C{HOST} (port 53), C{|}-separated; IPv6 in
    brackets, C{[::1]:5353}.  Colons are escaped inside a description
    (L{buildDescription} does).
    """

    name = "servers"
    expected = ("name server addresses as HOST:PORT (IPv6 as [::1]:PORT), "
                "|-separated, colons escaped as \\:")

    def convert(self, text: str) -> tuple[tuple[str, int], ...]:
        servers = []
        for part in text.split("|"):
            part = part.strip()
            port = dns.PORT
            if part.startswith("["):
                host, bracket, rest = part[1:].partition("]")
                if not bracket or (rest and not rest.startswith(":")):
                    raise Invalid()
                if rest:
                    port = _portOf(rest[1:])
            elif part.count(":") == 1:
                host, _, number = part.partition(":")
                port = _portOf(number)
            else:
                host = part
            if _ipLiteral(host) is None:
                raise Invalid(hint=f"{host!r} is not an IP address (a name server "
                              "is given by its address)" if host else None)
            servers.append((host, port))
        return tuple(servers)

    def format(self, value: Any) -> str:
        return "|".join(_serverText(s) for s in value)


def _portOf(text: str) -> int:
    port: int = Port().convert(text)
    return port


def _validate(values: Mapping[str, Any], given: frozenset[str]) -> None:
    service: str = values["service"]
    if "." in service and "proto" in given:
        long = service.split(".")[1].removeprefix("_").lower()
        if long != values["proto"]:
            raise srvType.error(
                "proto", f"is {values['proto']!r} but the service {service!r} already "
                f"names the protocol {long!r}; give one of the two")


def _build(reactor: Any, service: str, domain: str, proto: str,
           resolver: tuple[tuple[str, int], ...] | None, attemptTimeout: float,
           fallbackPort: int | None, cache: bool, resolveTimeout: float,
           seed: int | None, bindAddress: str | None) -> SRVClientEndpoint:
    if "." in service:
        service, proto = service.split(".")
    return SRVClientEndpoint(
        reactor, service, domain, proto, resolvers=resolver, attemptTimeout=attemptTimeout,
        fallbackPort=fallbackPort, cache=_sharedCache if cache else None,
        resolveTimeout=resolveTimeout, seed=seed, bindAddress=bindAddress)


def _notes(values: Mapping[str, Any]) -> list[str]:
    service, proto = values["service"], values["proto"]
    if "." in service:
        service, proto = service.split(".")
    name = f"_{service.lstrip('_')}._{proto.lstrip('_')}.{values['domain'].rstrip('.')}"
    return [f"queries the SRV records of {name}"]


srvType = EndpointType(
    "srv", "client",
    (
        Arg("service", _ServiceLabel(),
            help="the service: _imaps._tcp, or imaps with proto=; the record queried is "
                 "_SERVICE._PROTO.DOMAIN", positional=True),
        # tlswrap: verifies this name (endpointkit.tlswrap.targetHost).
        Arg("domain", _Domain(), help="the DOMAIN whose SRV records are looked up; TLS "
            "around srv: verifies this name (RFC 6125)", positional=True),
        Arg("proto", _ProtoLabel(), "tcp",
            "the protocol label of the short form (the connection is always TCP)"),
        Arg("resolver", _Servers(), None,
            "name servers to ask, HOST:PORT|... with colons escaped (default: the "
            "system's resolv.conf); the targets' addresses are asked of them too"),
        Arg("attemptTimeout", Seconds(), DEFAULT_ATTEMPT_TIMEOUT,
            "deadline for each target's connection attempt"),
        Arg("fallbackPort", Port(), None,
            "with no SRV record, connect to DOMAIN on this port (RFC 2782)"),
        Arg("cache", Bool(), True, "keep answers for their TTL (shared, bounded)"),
        Arg("resolveTimeout", Seconds(), DEFAULT_RESOLVE_TIMEOUT,
            "deadline for the name servers' answer"),
        Arg("seed", Int(), None,
            "seed of the weighted random order (for tests; default: unpredictable)"),
        Arg("bindAddress", Host(what="local address"), None, "local address to connect from"),
    ),
    "TCP to a service found through DNS SRV records (RFC 2782: priority, then weight), "
    "each target as hostname: connects it, moving on when one fails; the lookup is "
    "always local (inside a proxy it finds the proxy)",
    factory=_build,
    validate=_validate,
    notes=_notes,
)

