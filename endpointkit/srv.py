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

import ipaddress
import os
import random as _random
import re
import socket
import struct
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IProtocol,
    IProtocolFactory,
    IReactorPluggableNameResolver,
    IReadDescriptor,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.names import dns
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit._grammar import buildDescription, formatDuration
from endpointkit._kinds import Bool, Host, Int, Invalid, Kind, Port, Seconds
from endpointkit._schema import Arg, EndpointType
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
RESOLV_CONF = "/etc/resolv.conf"
MAX_TTL = 86400
"""
The longest an answer is kept, whatever its TTL says.
"""


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


def _serverText(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# The cache.


class SRVCache:
    """
    DNS answers by TTL, at most C{maxEntries} of them (the least recently
    used go first).  Entries expire lazily, by the reactor's clock: nothing
    is scheduled.
    """

    def __init__(self, maxEntries: int = 1024) -> None:
        if maxEntries < 1:
            raise ValueError(f"maxEntries must be at least 1, got {maxEntries!r}")
        self.maxEntries = maxEntries
        self._entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Any, now: float) -> Any:
        """
        The value kept for C{key}, or L{None} when there is none or it has
        expired.
        """
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: Any, value: Any, ttl: float, now: float) -> None:
        """
        Keep C{value} for C{ttl} seconds (nothing for a TTL of 0).
        """
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (now + min(ttl, MAX_TTL), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxEntries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """
        Forget everything.
        """
        self._entries.clear()


_sharedCache = SRVCache()


# One DNS question on the wire.


@dataclass(frozen=True)
class _Answer:
    """
    What a name server answered: the records of the type asked for (with
    their TTLs), the additional addresses it gave, and whether the name
    exists.
    """

    records: tuple[tuple[Any, int], ...]
    additional: tuple[tuple[str, int, str, int], ...] = ()
    nameExists: bool = True
    negativeTTL: int = 0

    @property
    def ttl(self) -> int:
        """
        How long the answer may be kept: the least TTL of its records and
        additional addresses; for an answer without records, what its SOA
        allows (RFC 2308: the lesser of the SOA's TTL and its minimum), and
        0 (not kept) without a SOA.
        """
        if not self.records:
            return self.negativeTTL
        return min([ttl for _, ttl in self.records] + [a[3] for a in self.additional])

    @cached_property
    def targets(self) -> list[SRVTarget]:
        """
        The SRV records of the answer as targets (the C{.} target with an
        empty host), in the order given.
        """
        return [SRVTarget(str(payload.target).rstrip("."), payload.port,
                          payload.priority, payload.weight)
                for payload, _ in self.records if isinstance(payload, dns.Record_SRV)]

    @cached_property
    def hints(self) -> dict[str, list[str]]:
        """
        The additional addresses, by lower-case name.
        """
        found: dict[str, list[str]] = {}
        for name, _, address, _ in self.additional:
            found.setdefault(name.rstrip("."), []).append(address)
        return found


@implementer(IReadDescriptor)
class _DatagramSocket:
    """
    A UDP socket of one lookup, on a random port, read by the reactor.
    (Twisted's UDP port logs two lines for every socket, which would be a
    pair of log lines per connection with C{cache=no}.)
    """

    def __init__(self, reactor: Any, family: int, lookup: _Lookup) -> None:
        self.reactor = reactor
        self.lookup = lookup
        self.socket: socket.socket | None = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.socket.setblocking(False)
            self.socket.bind(("::" if family == socket.AF_INET6 else "", 0))
        except BaseException:
            self.socket.close()
            raise
        reactor.addReader(self)

    def fileno(self) -> int:
        return -1 if self.socket is None else self.socket.fileno()

    def logPrefix(self) -> str:
        return "srv"

    def write(self, datagram: bytes, address: tuple[str, int]) -> None:
        assert self.socket is not None
        self.socket.sendto(datagram, address)

    def doRead(self) -> None:
        # A bounded number of datagrams per turn of the reactor.
        for _ in range(16):
            if self.socket is None:
                return
            try:
                datagram, source = self.socket.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                # An ICMP error for an earlier datagram (port unreachable).
                continue
            self.lookup.received(datagram, (source[0], source[1]))

    def stopListening(self) -> None:
        sock, self.socket = self.socket, None
        if sock is not None:
            self.reactor.removeReader(self)
            sock.close()

    def connectionLost(self, reason: Failure) -> None:
        self.stopListening()


def _openDatagramSocket(reactor: Any, family: int, lookup: _Lookup) -> Any:
    return _DatagramSocket(reactor, family, lookup)


class _Stream(Protocol):
    """
    One DNS query over TCP (two-byte length, then the message).
    """

    def __init__(self, lookup: _Lookup, query: bytes) -> None:
        self.lookup = lookup
        self.query = query
        self.buffer = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(struct.pack("!H", len(self.query)) + self.query)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= 2:
            (size,) = struct.unpack("!H", self.buffer[:2])
            if len(self.buffer) >= 2 + size:
                transport: Any = self.transport
                transport.loseConnection()
                self.lookup.streamed(self.buffer[2:2 + size])
        if len(self.buffer) > 65537 and self.transport is not None:
            aborting: Any = self.transport
            aborting.abortConnection()


class _OneProtocol(Factory):
    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self.built = protocol

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return self.built


class _Lookup:
    """
    One question asked of a list of name servers: sent to the first, then
    to the next every C{interval} seconds (round robin), each time with a
    fresh random ID, from one socket per address family on a random port;
    the first valid answer from a server that was asked wins.  A truncated
    answer is asked again over TCP of the server that gave it.  After
    C{timeout} seconds it fails; cancelled, it closes everything at once.
    """

    def __init__(self, reactor: Any, servers: Sequence[tuple[str, int]], name: str,
                 qtype: int, timeout: float, record: str, what: str) -> None:
        self.reactor = reactor
        self.servers = list(servers)
        self.name = name
        self.qtype = qtype
        self.timeout = timeout
        self.record = record
        self.what = what
        self.interval = min(1.0, timeout / 3)
        self.sent: dict[int, tuple[str, int]] = {}
        self.ports: dict[int, Any] = {}
        self.errors: dict[tuple[str, int], str] = {}
        self.stream: _Stream | None = None
        self.streamID = 0
        self.streamServer = self.servers[0] if self.servers else ("", 0)
        self.connecting: Deferred[Any] | None = None
        self.closed = False
        self.calls: list[Any] = []
        self.result: Deferred[_Answer] = Deferred(lambda d: self.close())
        self.next = 0
        self.ids = _random.SystemRandom()

    def start(self) -> Deferred[_Answer]:
        if not self.servers:
            self.finish(_Failure(SRVLookupFailed(
                self.record, "no name servers are configured", self.what)))
            return self.result
        self.calls.append(self.reactor.callLater(self.timeout, self.expire))
        self.send()
        return self.result

    def message(self, id: int) -> bytes:
        message = dns.Message(id=id, recDes=1)
        message.queries = [dns.Query(self.name, self.qtype, dns.IN)]
        data: bytes = message.toStr()
        return data

    def send(self) -> None:
        if self.closed:
            return
        # The next server that has not answered with an error.
        for _ in range(len(self.servers)):
            server = self.servers[self.next % len(self.servers)]
            self.next += 1
            if server not in self.errors:
                break
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        try:
            port = self.ports.get(family)
            if port is None:
                port = self.ports[family] = _openDatagramSocket(self.reactor, family, self)
            id = self.ids.randrange(1, 65536)
            while id in self.sent:
                id = self.ids.randrange(1, 65536)
            self.sent[id] = server
            port.write(self.message(id), server)
        except Exception as e:
            self.errors[server] = f"could not send to {_serverText(server)}: {e}"
            if len(self.errors) >= len(self.servers):
                self.failWithErrors()
                return
        self.resend()

    def resend(self) -> None:
        if not self.closed and self.stream is None:
            self.calls = [call for call in self.calls if call.active()]
            self.calls.append(self.reactor.callLater(self.interval, self.send))

    def parse(self, datagram: bytes) -> dns.Message | None:
        message = dns.Message()
        try:
            message.fromStr(datagram)
        except Exception:
            return None
        if not message.answer or len(message.queries) != 1:
            return None
        query = message.queries[0]
        if query.type != self.qtype or str(query.name).lower() != self.name.lower():
            return None
        return message

    def received(self, datagram: bytes, source: tuple[str, int]) -> None:
        if self.closed or len(datagram) < 2:
            return
        (id,) = struct.unpack("!H", datagram[:2])
        server = self.sent.get(id)
        if server is None or not _sameAddress(server, source):
            return
        message = self.parse(datagram)
        if message is None:
            return
        if message.trunc:
            if self.stream is None:
                self.askOverTCP(server)
            return
        self.answered(server, message)

    def askOverTCP(self, server: tuple[str, int]) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint

        kind = TCP6ClientEndpoint if ":" in server[0] else TCP4ClientEndpoint
        endpoint = kind(self.reactor, server[0], server[1], timeout=max(1, int(self.timeout)))
        id = self.ids.randrange(1, 65536)
        protocol = _Stream(self, self.message(id))
        self.streamID = id
        self.streamServer = server
        self.stream = protocol
        self.cancelSends()

        def failed(failure: Failure) -> None:
            self.connecting = None
            if not self.closed:
                self.errors[server] = f"TCP to {_serverText(server)}: {failure.getErrorMessage()}"
                self.failWithErrors()

        def connected(_: object) -> None:
            self.connecting = None

        self.connecting = defer.maybeDeferred(endpoint.connect, _OneProtocol(protocol))
        self.connecting.addCallbacks(connected, failed)

    def cancelSends(self) -> None:
        for call in self.calls:
            if call.active() and call.func == self.send:
                call.cancel()

    def streamed(self, data: bytes) -> None:
        if self.closed:
            return
        message = self.parse(data)
        if message is None or message.id != self.streamID:
            self.errors[self.streamServer] = "a malformed answer over TCP"
            self.failWithErrors()
            return
        self.answered(self.streamServer, message)

    def answered(self, server: tuple[str, int], message: dns.Message) -> None:
        code = message.rCode
        negativeTTL = min((min(rr.ttl, _soaMinimum(rr)) for rr in message.authority
                           if rr.type == dns.SOA), default=0)
        if code == dns.ENAME:
            self.finish(_Answer((), nameExists=False, negativeTTL=negativeTTL))
            return
        if code != dns.OK:
            self.errors[server] = (f"{_serverText(server)} answered "
                                   f"{_RCODES.get(code, f'error code {code}')}")
            if len(self.errors) >= len(self.servers):
                self.failWithErrors()
            elif self.stream is None:
                # Ask the next server now rather than at the next interval.
                self.cancelSends()
                self.send()
            return
        records = tuple((rr.payload, rr.ttl) for rr in message.answers if rr.type == self.qtype)
        additional = tuple(
            (str(rr.name).lower(), rr.type, _addressOf(rr), rr.ttl)
            for rr in message.additional if rr.type in (dns.A, dns.AAAA))
        self.finish(_Answer(records, additional, negativeTTL=negativeTTL))

    def failWithErrors(self) -> None:
        self.finish(_Failure(SRVLookupFailed(
            self.record, "; ".join(self.errors.values()), self.what)))

    def expire(self) -> None:
        if self.errors:
            self.failWithErrors()
        else:
            self.finish(_Failure(SRVResolveTimeout(
                self.record, self.timeout, self.servers, self.what)))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        calls, self.calls = self.calls, []
        for call in calls:
            if call.active():
                call.cancel()
        ports, self.ports = self.ports, {}
        for port in ports.values():
            port.stopListening()
        connecting, self.connecting = self.connecting, None
        if connecting is not None:
            connecting.cancel()
        stream = self.stream
        if stream is not None and stream.transport is not None:
            transport: Any = stream.transport
            transport.abortConnection()

    def finish(self, result: Any) -> None:
        self.close()
        if not self.result.called:
            if isinstance(result, Failure):
                self.result.errback(result)
            else:
                self.result.callback(result)


_RCODES = {dns.EFORMAT: "FORMERR", dns.ESERVER: "SERVFAIL", dns.ENOTIMP: "NOTIMP",
           dns.EREFUSED: "REFUSED"}


def _sameAddress(a: tuple[str, int], b: tuple[str, int]) -> bool:
    if a[1] != b[1]:
        return False
    try:
        return ipaddress.ip_address(a[0]) == ipaddress.ip_address(b[0])
    except ValueError:
        return a[0] == b[0]


def _soaMinimum(rr: Any) -> int:
    minimum: int = rr.payload.minimum
    return minimum


def _addressOf(rr: Any) -> str:
    return _payloadAddress(rr.payload)


def _systemServers(path: str = RESOLV_CONF) -> tuple[tuple[str, int], ...]:
    """
    The name servers of a C{resolv.conf} file (127.0.0.1 when it names
    none, as the C library does).
    """
    servers = []
    try:
        with open(path, "rb") as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == b"nameserver":
                    host = words[1].decode("ascii", "replace").partition("%")[0]
                    try:
                        ipaddress.ip_address(host)
                    except ValueError:
                        continue
                    servers.append((host, dns.PORT))
    except OSError:
        pass
    return tuple(servers) or (("127.0.0.1", dns.PORT),)


class _SystemServers:
    """
    The system's name servers, read again when C{resolv.conf} changes.
    """

    def __init__(self, path: str = RESOLV_CONF) -> None:
        self.path = path
        self.stamp: Any = object()
        self.servers: tuple[tuple[str, int], ...] = ()

    def __call__(self) -> tuple[tuple[str, int], ...]:
        try:
            info = os.stat(self.path)
            stamp: Any = (info.st_mtime_ns, info.st_ino, info.st_size)
        except OSError:
            stamp = None
        if stamp != self.stamp:
            self.stamp = stamp
            self.servers = _systemServers(self.path)
        return self.servers


_system = _SystemServers()


class _Shared:
    """
    One lookup, and everyone waiting for it.
    """

    def __init__(self) -> None:
        self.lookup: Deferred[Any] | None = None
        self.waiting: list[Deferred[_Answer]] = []

    def wait(self) -> Deferred[_Answer]:
        waiter: Deferred[_Answer] = Deferred(self.leave)
        self.waiting.append(waiter)
        return waiter

    def leave(self, waiter: Deferred[_Answer]) -> None:
        if waiter in self.waiting:
            self.waiting.remove(waiter)
        if not self.waiting and self.lookup is not None and not self.lookup.called:
            self.lookup.cancel()

    def fire(self, result: Any) -> None:
        waiting, self.waiting = self.waiting, []
        for waiter in waiting:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)


class _Resolver:
    """
    The DNS side of one endpoint: which servers, the cache, and lookups of
    SRV records and of the targets' addresses.
    """

    def __init__(self, reactor: Any, servers: tuple[tuple[str, int], ...] | None,
                 cache: SRVCache | None, timeout: float) -> None:
        self.reactor = reactor
        self.given = servers
        self.cache = cache
        self.timeout = timeout
        self.pending: dict[Any, _Shared] = {}

    def servers(self) -> tuple[tuple[str, int], ...]:
        return self.given if self.given is not None else _system()

    def lookup(self, name: str, qtype: int, record: str, what: str) -> Deferred[_Answer]:
        """
        The answer to one question: from the cache, or from the lookup of
        the same question already under way (with a cache, connections that
        start together share one query), or from a new lookup.  A caller
        that cancels stops waiting; the lookup itself is cancelled when no
        one waits for it any more.
        """
        servers = self.servers()
        key = (servers, name.lower(), qtype)
        cache = self.cache
        if cache is None:
            return _Lookup(self.reactor, servers, name, qtype, self.timeout, record,
                           what).start()
        found = cache.get(key, self.reactor.seconds())
        if found is not None:
            return defer.succeed(found)
        shared = self.pending.get(key)
        if shared is None:
            shared = self.pending[key] = _Shared()

            def answered(answer: _Answer) -> _Answer:
                cache.put(key, answer, answer.ttl, self.reactor.seconds())
                return answer

            def done(result: Any) -> None:
                if self.pending.get(key) is shared:
                    del self.pending[key]
                shared.fire(result)

            shared.lookup = _Lookup(self.reactor, servers, name, qtype, self.timeout,
                                    record, what).start()
            shared.lookup.addCallback(answered).addBoth(done)
        return shared.wait()


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class _AddressResolver:
    """
    Resolves a target's name for L{HostnameEndpoint} through the name
    servers given with C{resolver=}: from the addresses their SRV answer
    gave for it when it gave some, else by asking for AAAA and A at once.
    """

    def __init__(self, resolver: _Resolver, hints: Mapping[str, Sequence[str]]) -> None:
        self.resolver = resolver
        self.hints = hints

    def resolveHostName(self, resolutionReceiver: IResolutionReceiver, hostName: str,
                        portNumber: int = 0, addressTypes: Any = None,
                        transportSemantics: str = "TCP") -> IHostResolution:
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        name = hostName.rstrip(".")
        known = self.hints.get(name.lower())
        if not known:
            literal = _ipLiteral(name)
            known = None if literal is None else [literal]
        if known:
            for address in known:
                resolutionReceiver.addressResolved(_address(address, portNumber))
            resolutionReceiver.resolutionComplete()
            return resolution
        lookups = [self.resolver.lookup(name, qtype, name, what)
                   for qtype, what in ((dns.AAAA, "AAAA"), (dns.A, "A"))]

        def done(results: list[tuple[bool, Any]]) -> None:
            for ok, answer in results:
                if ok:
                    for payload, _ in answer.records:
                        resolutionReceiver.addressResolved(
                            _address(_payloadAddress(payload), portNumber))
            resolutionReceiver.resolutionComplete()

        defer.DeferredList(lookups, consumeErrors=True).addCallback(done)
        return resolution


def _payloadAddress(payload: Any) -> str:
    packed: Any = payload.address
    if isinstance(payload, dns.Record_A):
        return socket.inet_ntop(socket.AF_INET, packed)
    return socket.inet_ntop(socket.AF_INET6, packed)


def _ipLiteral(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.partition("%")[0]))
    except ValueError:
        return None


def _address(host: str, port: int) -> IAddress:
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


@implementer(IReactorPluggableNameResolver)
class _ResolvingReactor:
    """
    The reactor, with the name resolver that asks the given name servers:
    what each target's L{HostnameEndpoint} is built with.
    """

    def __init__(self, reactor: Any, nameResolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self._nameResolver = nameResolver

    @property
    def nameResolver(self) -> IHostnameResolver:
        return self._nameResolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        previous, self._nameResolver = self._nameResolver, resolver
        return previous

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


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
        self._resolver = _Resolver(reactor, self.resolvers, cache, resolveTimeout)
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
        targets = answer.targets
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
