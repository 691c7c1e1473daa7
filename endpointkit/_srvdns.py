"""
The DNS side of C{srv:} (L{endpointkit.srv}): the query client, the cache
and the name resolver of the targets' addresses.

A question (L{_Lookup}) is asked of the name servers with L{twisted.names}'s
wire format over a UDP socket the reactor reads (L{_DatagramSocket}: a
random port and a random ID per query, the next server every C{interval}
seconds until the deadline), and again over TCP (L{_Stream}) when the answer
is truncated.  L{_Resolver} is one endpoint's DNS side: which servers (the
given ones, or the system's C{resolv.conf}, L{_SystemServers}), the cache
(L{SRVCache}) and the sharing of lookups under way (L{_Shared}).
L{_AddressResolver} resolves the targets' names through the given servers
for Twisted's L{HostnameEndpoint<twisted.internet.endpoints.HostnameEndpoint>}.

This module imports nothing of L{endpointkit.srv}: the family's own types
(its targets and its errors) are passed in as an L{_Outcomes}.
"""

from __future__ import annotations

import ipaddress
import os
import random as _random
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IReadDescriptor,
    IResolutionReceiver,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.names import dns
from twisted.python.failure import Failure
from zope.interface import implementer

# Twisted's failure module is untyped; called through this.
_Failure: Any = Failure

RESOLV_CONF = "/etc/resolv.conf"
MAX_TTL = 86400
"""
The longest an answer is kept, whatever its TTL says.
"""


@dataclass(frozen=True)
class _Outcomes:
    """
    What the DNS side builds its results with, given by the family
    (L{endpointkit.srv}) so that this module need not import it.

    @ivar target: makes one target of an SRV record from its host, port,
        priority and weight (L{endpointkit.srv.SRVTarget}).
    @ivar lookupFailed: makes the error of a lookup the name servers
        answered with an error, from the record, the reason and what was
        asked (L{endpointkit.srv.SRVLookupFailed}).
    @ivar resolveTimeout: makes the error of a lookup no server answered in
        time, from the record, the deadline, the servers and what was asked
        (L{endpointkit.srv.SRVResolveTimeout}).
    """

    target: Callable[[str, int, int, int], Any]
    lookupFailed: Callable[[str, str, str], Exception]
    resolveTimeout: Callable[[str, float, Sequence[tuple[str, int]], str], Exception]


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
    target: Callable[[str, int, int, int], Any] = field(kw_only=True, compare=False,
                                                        repr=False)

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
    def targets(self) -> list[Any]:
        """
        The SRV records of the answer as targets (the C{.} target with an
        empty host), in the order given.
        """
        return [self.target(str(payload.target).rstrip("."), payload.port,
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
                 qtype: int, timeout: float, record: str, what: str,
                 outcomes: _Outcomes) -> None:
        self.reactor = reactor
        self.outcomes = outcomes
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
            self.finish(_Failure(self.outcomes.lookupFailed(
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
            self.finish(_Answer((), nameExists=False, negativeTTL=negativeTTL,
                                target=self.outcomes.target))
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
        self.finish(_Answer(records, additional, negativeTTL=negativeTTL,
                            target=self.outcomes.target))

    def failWithErrors(self) -> None:
        self.finish(_Failure(self.outcomes.lookupFailed(
            self.record, "; ".join(self.errors.values()), self.what)))

    def expire(self) -> None:
        if self.errors:
            self.failWithErrors()
        else:
            self.finish(_Failure(self.outcomes.resolveTimeout(
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
                 cache: SRVCache | None, timeout: float, outcomes: _Outcomes) -> None:
        self.reactor = reactor
        self.outcomes = outcomes
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
                           what, self.outcomes).start()
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
                                    record, what, self.outcomes).start()
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
    Resolves a target's name for L{HostnameEndpoint
    <twisted.internet.endpoints.HostnameEndpoint>} through the name
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
    what each target's L{HostnameEndpoint
    <twisted.internet.endpoints.HostnameEndpoint>} is built with.
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

