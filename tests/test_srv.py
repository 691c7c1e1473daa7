"""
Tests for L{endpointkit.srv}: the RFC 2782 order, the description, the DNS
lookup on a fake clock, and connections through a real dnsmasq.
"""

from __future__ import annotations

import math
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor, ssl, task, threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    connectProtocol,
    wrapClientTLS,
)
from twisted.internet.interfaces import IListeningPort, IStreamClientEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase, TestCase

import endpointkit
from endpointkit import DescriptionError, _srvdns, buildDescription
from endpointkit.deadline import ConnectTimeout
from endpointkit.relay import chosenTarget as relayChosenTarget
from endpointkit.srv import (
    AllTargetsFailed,
    NoSRVRecords,
    ServiceNotAvailable,
    SRVCache,
    SRVClientEndpoint,
    SRVLookupFailed,
    SRVResolveTimeout,
    SRVTarget,
    orderTargets,
    targetOf,
)
from endpointkit.tlswrap import TLSHandshakeError
from tests._support import (
    Exchange,
    freePort,
    requirePeer,
    selfSignedCertificate,
    startMicrosocks,
    startPeer,
)
from tests.test_relay import RelayProcess

_reactor: Any = reactor
WAIT = 30.0


def within(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    return d.addTimeout(seconds, _reactor)


# The order.


class OrderTests(SynchronousTestCase):
    def test_prioritiesFirst(self) -> None:
        """
        Every target of a lower priority comes before every target of a
        higher one, whatever the weights.
        """
        targets = [SRVTarget("c", 3, 20, 1000), SRVTarget("a", 1, 0, 1),
                   SRVTarget("b", 2, 10, 50), SRVTarget("a2", 4, 0, 5)]
        rng = random.Random(7)
        for _ in range(200):
            order = orderTargets(targets, rng)
            self.assertEqual([t.priority for t in order], [0, 0, 10, 20])
            self.assertEqual(sorted(order, key=lambda t: t.port), sorted(targets, key=lambda t: t.port))

    def test_weightDistribution(self) -> None:
        """
        Over 2,000 seeded draws, each target comes first in proportion to its
        weight, within five standard deviations.
        """
        weights = {"a": 10, "b": 20, "c": 70}
        targets = [SRVTarget(name, 1, 0, weight) for name, weight in weights.items()]
        rng = random.Random(2782)
        draws = 2000
        firsts = Counter(orderTargets(targets, rng)[0].host for _ in range(draws))
        total = sum(weights.values())
        for name, weight in weights.items():
            p = weight / total
            sigma = math.sqrt(p * (1 - p) / draws)
            self.assertLess(abs(firsts[name] / draws - p), 5 * sigma, (name, firsts))

    def test_secondPlaceFollowsRemainingWeights(self) -> None:
        """
        After the first pick, the next is drawn from the remaining weights:
        with weights 1 and 1000 first, the light one is almost always second.
        """
        targets = [SRVTarget("light", 1, 0, 1), SRVTarget("heavy", 2, 0, 1000)]
        rng = random.Random(1)
        seconds = Counter(orderTargets(targets, rng)[1].host for _ in range(2000))
        self.assertGreater(seconds["light"], 1950)

    def test_zeroWeightsAllReached(self) -> None:
        """
        Targets all of weight 0 are shuffled: each comes first sometimes.
        """
        targets = [SRVTarget(name, 1, 0, 0) for name in "abc"]
        rng = random.Random(3)
        firsts = Counter(orderTargets(targets, rng)[0].host for _ in range(600))
        self.assertEqual(set(firsts), {"a", "b", "c"})
        self.assertTrue(all(n > 100 for n in firsts.values()), firsts)

    def test_seedRepeats(self) -> None:
        targets = [SRVTarget(name, 1, 0, 10) for name in "abcdef"]
        self.assertEqual([orderTargets(targets, random.Random(5)) for _ in range(3)],
                         [orderTargets(targets, random.Random(5))] * 3)

    def test_targetText(self) -> None:
        self.assertEqual(str(SRVTarget("a.example", 443)), "a.example:443")


# The description.


class DescriptionTests(SynchronousTestCase):
    def build(self, description: str) -> SRVClientEndpoint:
        endpoint = endpointkit.clientFromString(Clock(), description)
        assert isinstance(endpoint, SRVClientEndpoint)
        return endpoint

    def test_longForm(self) -> None:
        endpoint = self.build("srv:_imaps._tcp:example.com")
        self.assertEqual(endpoint.recordName, "_imaps._tcp.example.com")
        self.assertEqual(endpoint.tlsHostname, "example.com")
        self.assertEqual(endpoint.resolvers, None)
        self.assertEqual((endpoint.attemptTimeout, endpoint.resolveTimeout), (10.0, 5.0))

    def test_shortForm(self) -> None:
        self.assertEqual(self.build("srv:imaps:example.com").recordName,
                         "_imaps._tcp.example.com")
        self.assertEqual(self.build("srv:sip:example.com:proto=udp").recordName,
                         "_sip._udp.example.com")

    def test_arguments(self) -> None:
        endpoint = self.build(
            "srv:ldap:Example.COM.:resolver=127.0.0.1\\:5353|[\\:\\:1]\\:53|10.1.1.1"
            ":attemptTimeout=2.5:fallbackPort=389:cache=no:resolveTimeout=1:seed=4")
        self.assertEqual(endpoint.resolvers, (("127.0.0.1", 5353), ("::1", 53), ("10.1.1.1", 53)))
        self.assertEqual(endpoint.recordName, "_ldap._tcp.Example.COM")
        self.assertEqual(endpoint.attemptTimeout, 2.5)
        self.assertEqual(endpoint.fallbackPort, 389)
        self.assertIsNone(endpoint.cache)
        self.assertEqual(endpoint.resolveTimeout, 1.0)
        self.assertEqual(endpoint.seed, 4)

    def test_descriptionRoundTrip(self) -> None:
        endpoint = self.build(
            "srv:ldap:example.com:resolver=127.0.0.1\\:5353|[\\:\\:1]\\:53:cache=no:seed=4")
        again = self.build(endpoint.description)
        self.assertEqual(again.description, endpoint.description)
        self.assertEqual(again.resolvers, endpoint.resolvers)
        self.assertIn("_ldap._tcp.example.com", repr(endpoint))

    def test_twistedFindsIt(self) -> None:
        from twisted.internet.endpoints import clientFromString

        endpoint = clientFromString(Clock(), "srv:imaps:example.com")
        self.assertIsInstance(endpoint, SRVClientEndpoint)

    def assertRefused(self, description: str, *words: str) -> DescriptionError:
        with self.assertRaises(DescriptionError) as caught:
            endpointkit.clientFromString(Clock(), description)
        for word in ("srv:", *words):
            self.assertIn(word, str(caught.exception))
        return caught.exception

    def test_errors(self) -> None:
        self.assertRefused("srv:imaps", "missing required argument 'domain'")
        self.assertRefused("srv:_imaps._udp:example.com:proto=tcp", "proto", "udp")
        self.assertRefused("srv:imaps:192.0.2.1", "domain", "not an address")
        self.assertRefused("srv:im aps:example.com", "service")
        self.assertRefused("srv:_a._b._c:example.com", "service")
        self.assertRefused("srv:imaps:example.com:resolver=ns.example.com", "resolver",
                           "not an IP address")
        self.assertRefused("srv:imaps:example.com:resolver=127.0.0.1\\:0", "resolver")
        self.assertRefused("srv:imaps:example.com:resolveTimeout=0", "resolveTimeout")
        self.assertRefused("srv:imaps:example.com:atemptTimeout=1", "did you mean 'attemptTimeout'")
        error = self.assertRefused("srv:imaps:example.com:cache=maybe", "cache")
        self.assertEqual(error.argument, "cache")

    def test_typesListsIt(self) -> None:
        from endpointkit.cli import readmeTable

        table = readmeTable()
        self.assertIn("``srv:``", table)
        self.assertIn("_SERVICE._PROTO.DOMAIN", table)

    def test_checkShowsQuery(self) -> None:
        """
        C{endpointkit check} shows the parse, with the service, protocol and
        domain that make up the record name.
        """
        import io

        from endpointkit.cli import main

        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(main(["check", "--client", "srv:imaps:example.com"], out, err), 0)
        text = out.getvalue()
        self.assertIn("srv:imaps:example.com", text)
        self.assertIn("service = 'imaps'", text)
        self.assertIn("proto = 'tcp'", text)
        self.assertIn("domain = 'example.com'", text)
        self.assertIn("-> queries the SRV records of _imaps._tcp.example.com", text)
        out = io.StringIO()
        main(["check", "--client", "srv:_xmpp-client._tcp:example.org."], out, err)
        self.assertIn("-> queries the SRV records of _xmpp-client._tcp.example.org",
                      out.getvalue())

    def test_systemServersReread(self) -> None:
        """
        The system's name servers are read again when resolv.conf changes.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("nameserver 10.0.0.2\n")
        servers = _srvdns._SystemServers(path)
        self.assertEqual(servers(), (("10.0.0.2", 53),))
        with open(path, "w") as f:
            f.write("nameserver 10.0.0.3\nnameserver 10.0.0.4\n")
        self.assertEqual(servers(), (("10.0.0.3", 53), ("10.0.0.4", 53)))

    def test_errorsPickle(self) -> None:
        import pickle

        error = AllTargetsFailed("_a._tcp.example", [(SRVTarget("x", 1), OSError("refused"))])
        again = pickle.loads(pickle.dumps(error))
        self.assertIsInstance(again, AllTargetsFailed)
        self.assertEqual(str(again), str(error))
        self.assertEqual(again.record, "_a._tcp.example")

    def test_systemServers(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# comment\nnameserver 10.0.0.2\nsearch x\nnameserver fe80::1%eth0\n"
                    "nameserver not-an-address\n")
        self.assertEqual(_srvdns._systemServers(path), (("10.0.0.2", 53), ("fe80::1", 53)))
        self.assertEqual(_srvdns._systemServers(path + ".missing"), (("127.0.0.1", 53),))


# The lookup, on a fake clock.


class FakeUDPPort:
    def __init__(self, lookup: Any, family: int) -> None:
        self.lookup = lookup
        self.family = family
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False

    def write(self, data: bytes, address: tuple[str, int]) -> None:
        assert not self.stopped
        self.sent.append((data, address))

    def stopListening(self) -> None:
        self.stopped = True


class FakeReactor(Clock):
    """
    A clock, with the lookups' UDP sockets recording what they send.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        Clock.__init__(self)
        self.ports: list[FakeUDPPort] = []

        def open(reactor: Any, family: int, lookup: Any) -> FakeUDPPort:
            assert reactor is self
            udp = FakeUDPPort(lookup, family)
            self.ports.append(udp)
            return udp

        test.patch(_srvdns, "_openDatagramSocket", open)

    def sent(self) -> list[tuple[dns.Message, tuple[str, int]]]:
        found = []
        for port in self.ports:
            for data, address in port.sent:
                message = dns.Message()
                message.fromStr(data)
                found.append((message, address))
        return found

    def answer(self, index: int = -1, records: list[tuple[int, int, int, str]] = (),  # type: ignore[assignment]
               ttl: int = 30, rCode: int = dns.OK, source: tuple[str, int] | None = None,
               idDelta: int = 0, trunc: bool = False, soa: tuple[int, int] | None = None) -> None:
        query, address = self.sent()[index]
        reply = dns.Message(id=query.id + idDelta, answer=1, rCode=rCode, trunc=trunc)
        reply.queries = query.queries
        name = query.queries[0].name.name
        if soa is not None:
            soaTTL, minimum = soa
            reply.authority = [dns.RRHeader(b"example.test", dns.SOA, ttl=soaTTL, payload=dns.Record_SOA(
                b"ns.example.test", b"admin.example.test", minimum=minimum, ttl=soaTTL))]
        reply.answers = [
            dns.RRHeader(name, dns.SRV, ttl=ttl,
                         payload=dns.Record_SRV(priority, weight, port, target, ttl=ttl))
            for priority, weight, port, target in records]
        sender = [port for port in self.ports for _ in port.sent][index]
        sender.lookup.received(reply.toStr(), source or address)


SERVERS = "127.0.0.1\\:5301|127.0.0.2\\:5302"


class LookupTests(SynchronousTestCase):
    def endpoint(self, extra: str = "", servers: str = SERVERS) -> tuple[FakeReactor, SRVClientEndpoint]:
        clock = FakeReactor(self)
        endpoint = endpointkit.clientFromString(
            clock, f"srv:svc:example.test:resolver={servers}:cache=no:seed=1{extra}")
        assert isinstance(endpoint, SRVClientEndpoint)
        return clock, endpoint

    def assertClean(self, clock: FakeReactor) -> None:
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(all(port.stopped for port in clock.ports))

    def test_queryAndAnswer(self) -> None:
        clock, endpoint = self.endpoint()
        d = endpoint.resolveTargets()
        [(query, address)] = clock.sent()
        self.assertEqual(address, ("127.0.0.1", 5301))
        self.assertEqual(query.queries[0].name.name, b"_svc._tcp.example.test")
        self.assertEqual(query.queries[0].type, dns.SRV)
        self.assertTrue(query.recDes)
        clock.answer(records=[(1, 0, 80, "b.example.test"), (0, 0, 81, "a.example.test")])
        self.assertEqual(self.successResultOf(d),
                         [SRVTarget("a.example.test", 81, 0, 0),
                          SRVTarget("b.example.test", 80, 1, 0)])
        self.assertClean(clock)

    def test_resolveTimeout(self) -> None:
        """
        A query nobody answers is sent again, to each server in turn, every
        second (at most a third of the deadline), and fails with
        L{SRVResolveTimeout} at exactly C{resolveTimeout}, leaving nothing
        behind.
        """
        clock, endpoint = self.endpoint(":resolveTimeout=5")
        d = endpoint.resolveTargets()
        clock.pump([1, 1, 1, 1, 0.999])
        self.assertNoResult(d)
        self.assertEqual([address[1] for _, address in clock.sent()],
                         [5301, 5302, 5301, 5302, 5301])
        self.assertEqual(len({m.id for m, _ in clock.sent()}), 5)
        clock.advance(0.001)
        error = self.failureResultOf(d, SRVResolveTimeout).value
        self.assertIn("_svc._tcp.example.test", str(error))
        self.assertIn("5 s", str(error))
        self.assertIn("127.0.0.2:5302", str(error))
        self.assertClean(clock)

    def test_lateAnswerToEarlierQueryCounts(self) -> None:
        clock, endpoint = self.endpoint()
        d = endpoint.resolveTargets()
        clock.pump([1, 1, 0.5])
        self.assertEqual(len(clock.sent()), 3)
        clock.answer(index=0, records=[(0, 0, 80, "a.example.test")])
        self.assertEqual(self.successResultOf(d), [SRVTarget("a.example.test", 80)])
        self.assertClean(clock)

    def test_spoofedAnswersIgnored(self) -> None:
        """
        An answer from another address, or with an ID that was not sent, is
        ignored.
        """
        clock, endpoint = self.endpoint()
        d = endpoint.resolveTargets()
        clock.answer(records=[(0, 0, 1, "evil.example")], source=("127.0.0.9", 5301))
        clock.answer(records=[(0, 0, 1, "evil.example")], idDelta=1)
        self.assertNoResult(d)
        clock.answer(records=[(0, 0, 80, "a.example.test")])
        self.assertEqual(self.successResultOf(d), [SRVTarget("a.example.test", 80)])

    def test_cancelLeavesNothing(self) -> None:
        clock, endpoint = self.endpoint()
        d = endpoint.connect(Factory.forProtocol(Protocol))
        clock.advance(1.5)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertClean(clock)

    def test_errorFromOneServerThenAnswer(self) -> None:
        clock, endpoint = self.endpoint()
        d = endpoint.resolveTargets()
        clock.answer(rCode=dns.ESERVER)
        # The next query goes to the other server at once.
        self.assertEqual([address for _, address in clock.sent()],
                         [("127.0.0.1", 5301), ("127.0.0.2", 5302)])
        clock.answer(records=[(0, 0, 80, "a.example.test")])
        self.assertEqual(self.successResultOf(d), [SRVTarget("a.example.test", 80)])

    def test_errorsFromEveryServer(self) -> None:
        clock, endpoint = self.endpoint()
        d = endpoint.resolveTargets()
        clock.answer(rCode=dns.ESERVER)
        clock.advance(1)
        clock.answer(rCode=dns.EREFUSED)
        error = self.failureResultOf(d, SRVLookupFailed).value
        self.assertIn("SERVFAIL", str(error))
        self.assertIn("REFUSED", str(error))
        self.assertClean(clock)

    def test_noRecords(self) -> None:
        clock, endpoint = self.endpoint()
        d = endpoint.resolveTargets()
        clock.answer(rCode=dns.ENAME)
        error = self.failureResultOf(d, NoSRVRecords).value
        self.assertFalse(error.nameExists)
        self.assertIn("_svc._tcp.example.test", str(error))
        self.assertIn("fallbackPort", str(error))
        clock, endpoint = self.endpoint()
        d = endpoint.resolveTargets()
        clock.answer(records=[])
        self.assertTrue(self.failureResultOf(d, NoSRVRecords).value.nameExists)

    def test_noRecordsFallbackPort(self) -> None:
        clock, endpoint = self.endpoint(":fallbackPort=8443")
        d = endpoint.resolveTargets()
        clock.answer(rCode=dns.ENAME)
        self.assertEqual(self.successResultOf(d), [SRVTarget("example.test", 8443)])

    def test_dotTarget(self) -> None:
        clock, endpoint = self.endpoint()
        d = endpoint.resolveTargets()
        clock.answer(records=[(0, 0, 0, "")])
        error = self.failureResultOf(d, ServiceNotAvailable).value
        self.assertIn("decidedly not available", str(error))

    def test_ttlCache(self) -> None:
        """
        With a cache, the answer is used for its TTL without a query, and
        asked for again after it.
        """
        clock = FakeReactor(self)
        endpoint = SRVClientEndpoint(clock, "svc", "example.test",
                                     resolvers=[("127.0.0.1", 5301)], cache=SRVCache())
        d = endpoint.resolveTargets()
        clock.answer(records=[(0, 0, 80, "a.example.test")], ttl=30)
        self.successResultOf(d)
        clock.advance(29.9)
        self.assertEqual(self.successResultOf(endpoint.resolveTargets()),
                         [SRVTarget("a.example.test", 80)])
        self.assertEqual(len(clock.sent()), 1)
        clock.advance(0.1)
        d = endpoint.resolveTargets()
        self.assertNoResult(d)
        self.assertEqual(len(clock.sent()), 2)

    def test_ttlZeroNotCached(self) -> None:
        clock = FakeReactor(self)
        endpoint = SRVClientEndpoint(clock, "svc", "example.test",
                                     resolvers=[("127.0.0.1", 5301)], cache=SRVCache())
        d = endpoint.resolveTargets()
        clock.answer(records=[(0, 0, 80, "a.example.test")], ttl=0)
        self.successResultOf(d)
        self.assertNoResult(endpoint.resolveTargets())

    def cachedEndpoint(self, clock: FakeReactor, **kwargs: Any) -> SRVClientEndpoint:
        return SRVClientEndpoint(clock, "svc", "example.test",
                                 resolvers=[("127.0.0.1", 5301)], cache=SRVCache(), **kwargs)

    def test_negativeAnswerCachedBySOA(self) -> None:
        """
        An answer without records is kept as long as its SOA allows (the
        lesser of the SOA's TTL and minimum, RFC 2308), so that a client
        with C{fallbackPort=} does not ask for every connection.
        """
        clock = FakeReactor(self)
        endpoint = self.cachedEndpoint(clock, fallbackPort=80)
        d = endpoint.resolveTargets()
        clock.answer(rCode=dns.ENAME, soa=(300, 20))
        self.assertEqual(self.successResultOf(d), [SRVTarget("example.test", 80)])
        clock.advance(19)
        self.successResultOf(endpoint.resolveTargets())
        self.assertEqual(len(clock.sent()), 1)
        clock.advance(1)
        self.assertNoResult(endpoint.resolveTargets())
        self.assertEqual(len(clock.sent()), 2)

    def test_negativeAnswerWithoutSOANotCached(self) -> None:
        clock = FakeReactor(self)
        endpoint = self.cachedEndpoint(clock)
        d = endpoint.resolveTargets()
        clock.answer(rCode=dns.ENAME)
        self.failureResultOf(d, NoSRVRecords)
        self.assertNoResult(endpoint.resolveTargets())
        self.assertEqual(len(clock.sent()), 2)

    def test_concurrentLookupsShareOneQuery(self) -> None:
        clock = FakeReactor(self)
        endpoint = self.cachedEndpoint(clock)
        waiting = [endpoint.resolveTargets() for _ in range(5)]
        self.assertEqual(len(clock.sent()), 1)
        clock.answer(records=[(0, 0, 80, "a.example.test")])
        for d in waiting:
            self.assertEqual(self.successResultOf(d), [SRVTarget("a.example.test", 80)])

    def test_sharedLookupCancelledWhenNoOneWaits(self) -> None:
        """
        One waiter cancelling leaves the query to the others; when the last
        one cancels, the query is cancelled and leaves nothing behind.
        """
        clock = FakeReactor(self)
        endpoint = self.cachedEndpoint(clock)
        first, second = endpoint.resolveTargets(), endpoint.resolveTargets()
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        self.assertFalse(clock.ports[0].stopped)
        second.cancel()
        self.failureResultOf(second, defer.CancelledError)
        self.assertClean(clock)
        # A new lookup starts afresh.
        third = endpoint.resolveTargets()
        self.assertEqual(len(clock.sent()), 2)
        clock.answer(records=[(0, 0, 80, "a.example.test")])
        self.assertEqual(self.successResultOf(third), [SRVTarget("a.example.test", 80)])

    def test_cacheBounded(self) -> None:
        cache = SRVCache(maxEntries=3)
        for n in range(10):
            cache.put(n, n, 60, 0.0)
        self.assertEqual(len(cache), 3)
        self.assertEqual([cache.get(n, 1.0) for n in range(10)], [None] * 7 + [7, 8, 9])
        cache.get(7, 1.0)
        cache.put("new", 1, 60, 1.0)
        self.assertEqual(cache.get(8, 1.0), None)
        self.assertEqual(cache.get(7, 1.0), 7)


# Through a real dnsmasq.


def freeDNSPort(ipv6: bool = False) -> int:
    """
    A port free on 127.0.0.1 (and ::1) for both TCP and UDP.
    """
    for _ in range(100):
        port = freePort()
        try:
            for family, host in [(socket.AF_INET, "127.0.0.1")] + (
                    [(socket.AF_INET6, "::1")] if ipv6 else []):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(family, kind) as probe:
                        probe.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError("no port free for both TCP and UDP")


class Dnsmasq:
    """
    A real dnsmasq on loopback for the length of a test, authoritative for
    C{example.test}, logging its queries.
    """

    def __init__(self, test: TestCase, *options: str, ttl: int = 60, ipv6: bool = False) -> None:
        program = requirePeer("dnsmasq", "dnsmasq-base")
        self.port = freeDNSPort(ipv6)
        directory = os.path.abspath(test.mktemp())
        os.makedirs(directory)
        self.log = os.path.join(directory, "queries.log")
        startPeer(test, [
            program, "-k", "--no-resolv", "--no-hosts", "-p", str(self.port),
            "--listen-address=127.0.0.1", *(["--listen-address=::1"] if ipv6 else []),
            "--bind-interfaces",
            f"--pid-file={directory}/dnsmasq.pid", "--local=/example.test/",
            f"--local-ttl={ttl}", "--log-queries", f"--log-facility={self.log}",
            "--host-record=example.test,127.0.0.1",
            *options], self.port)

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def queries(self, name: str, kind: str = "SRV") -> int:
        with open(self.log) as f:
            return sum(1 for line in f if f"query[{kind}] {name} " in line)


def srvRecord(service: str, target: str, port: int, priority: int = 0, weight: int = 10) -> str:
    return f"--srv-host={service}.example.test,{target},{port},{priority},{weight}"


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Server(Factory):
    """
    An echo listener that counts its connections.
    """

    noisy = False

    def __init__(self) -> None:
        self.accepted = 0
        self.peers: list[Any] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        self.accepted += 1
        self.peers.append(addr)
        return Echo()


class DnsmasqTests(TestCase):
    async def listen(self, host: str = "127.0.0.1") -> tuple[Server, int]:
        server = Server()
        endpoint = (TCP6ServerEndpoint(_reactor, 0, interface=host) if ":" in host
                    else TCP4ServerEndpoint(_reactor, 0, interface=host))
        port: IListeningPort = await endpoint.listen(server)
        self.addCleanup(port.stopListening)
        number: int = port.getHost().port  # type: ignore[attr-defined]
        return server, number

    def srv(self, dnsmasq: Dnsmasq, extra: str = "", service: str = "svc") -> SRVClientEndpoint:
        endpoint = endpointkit.clientFromString(
            _reactor, buildDescription("srv", service, "example.test", resolver=dnsmasq.resolver)
            + extra)
        assert isinstance(endpoint, SRVClientEndpoint)
        return endpoint

    async def exchange(self, endpoint: IStreamClientEndpoint) -> Exchange:
        client = Exchange()
        await within(connectProtocol(endpoint, client))
        received = await within(client.done)
        self.assertEqual(received, b"ping")
        return client

    async def test_prioritiesHonoured(self) -> None:
        first, firstPort = await self.listen()
        second, secondPort = await self.listen()
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1",
                          "--host-record=b.example.test,127.0.0.1",
                          srvRecord("_svc._tcp", "b.example.test", secondPort, 10, 1000),
                          srvRecord("_svc._tcp", "a.example.test", firstPort, 0, 1))
        endpoint = self.srv(dnsmasq, ":cache=no")
        for _ in range(5):
            client = await self.exchange(endpoint)
            self.assertEqual(targetOf(client), SRVTarget("a.example.test", firstPort, 0, 1))
            # What the relay names in its stats line for this connection.
            self.assertEqual(relayChosenTarget(endpoint, client), f"a.example.test:{firstPort}")
        self.assertEqual((first.accepted, second.accepted), (5, 0))
        self.assertEqual(endpoint.lastTarget, SRVTarget("a.example.test", firstPort, 0, 1))
        self.assertIsNone(targetOf(Exchange()))

    async def test_weightsThroughDnsmasq(self) -> None:
        """
        Targets of one priority share the connections by weight (a few
        connections through dnsmasq; L{OrderTests} counts 2,000 draws).
        """
        heavy, heavyPort = await self.listen()
        light, lightPort = await self.listen()
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1",
                          "--host-record=b.example.test,127.0.0.1",
                          srvRecord("_svc._tcp", "a.example.test", heavyPort, 0, 90),
                          srvRecord("_svc._tcp", "b.example.test", lightPort, 0, 10))
        endpoint = self.srv(dnsmasq, ":seed=11")
        for _ in range(40):
            await self.exchange(endpoint)
        self.assertEqual(heavy.accepted + light.accepted, 40)
        # Expected 36 and 4; the bounds are over five standard deviations.
        self.assertGreater(heavy.accepted, 28)
        self.assertGreater(light.accepted, 0)

    async def test_deadTargetMovesOn(self) -> None:
        live, livePort = await self.listen()
        dead = freePort()
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1",
                          "--host-record=b.example.test,127.0.0.1",
                          srvRecord("_svc._tcp", "a.example.test", dead, 0),
                          srvRecord("_svc._tcp", "b.example.test", livePort, 1))
        events = captureLog(self)
        endpoint = self.srv(dnsmasq)
        await self.exchange(endpoint)
        self.assertEqual(live.accepted, 1)
        self.assertEqual(endpoint.lastTarget, SRVTarget("b.example.test", livePort, 1, 10))
        texts = [formatted(event) for event in events]
        self.assertTrue(any(f"a.example.test:{dead} failed" in text for text in texts), texts)
        chosen = [event for event in events
                  if f"connected to target b.example.test:{livePort}" in formatted(event)]
        self.assertEqual(len(chosen), 1, texts)
        self.assertEqual(chosen[0]["log_level"].name, "debug")

    async def test_allDeadListed(self) -> None:
        dead1, dead2 = freePort(), freePort()
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1",
                          "--host-record=nowhere.example.test,127.0.0.1",
                          srvRecord("_svc._tcp", "a.example.test", dead1, 0),
                          srvRecord("_svc._tcp", "nowhere.example.test", dead2, 5),
                          srvRecord("_svc._tcp", "unknown.example.test", 80, 9))
        endpoint = self.srv(dnsmasq)
        with self.assertRaises(AllTargetsFailed) as caught:
            await within(connectProtocol(endpoint, Protocol()))
        error = caught.exception
        self.assertEqual([str(target) for target, _ in error.failures],
                         [f"a.example.test:{dead1}", f"nowhere.example.test:{dead2}",
                          "unknown.example.test:80"])
        message = str(error)
        self.assertIn("_svc._tcp.example.test", message)
        self.assertIn("all 3 targets failed", message)
        self.assertIn(f"a.example.test:{dead1} (Connection was refused", message)
        self.assertIn("unknown.example.test:80 (DNS lookup failed", message)

    async def test_attemptTimeoutPerTarget(self) -> None:
        """
        A target whose attempt never ends is given up after
        C{attemptTimeout}, and the next target is tried.
        """
        live, livePort = await self.listen()
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1",
                          "--host-record=slow.example.test,127.0.0.1",
                          srvRecord("_svc._tcp", "slow.example.test", 80, 0),
                          srvRecord("_svc._tcp", "a.example.test", livePort, 1))
        endpoint = self.srv(dnsmasq, ":attemptTimeout=0.3")

        def never(inner: IStreamClientEndpoint, target: SRVTarget) -> IStreamClientEndpoint:
            if target.host == "slow.example.test":
                return NeverConnects()
            return inner

        endpoint = endpoint.wrapTargets(never)
        started = time.monotonic()
        await self.exchange(endpoint)
        self.assertGreaterEqual(time.monotonic() - started, 0.3)
        self.assertEqual(live.accepted, 1)

    async def test_dotTarget(self) -> None:
        dnsmasq = Dnsmasq(self, "--srv-host=_svc._tcp.example.test")
        with self.assertRaises(ServiceNotAvailable) as caught:
            await within(connectProtocol(self.srv(dnsmasq), Protocol()))
        self.assertIn("_svc._tcp.example.test", str(caught.exception))

    async def test_noRecords(self) -> None:
        dnsmasq = Dnsmasq(self)
        with self.assertRaises(NoSRVRecords) as caught:
            await within(connectProtocol(self.srv(dnsmasq), Protocol()))
        self.assertIn("no SRV records for _svc._tcp.example.test", str(caught.exception))

    async def test_noRecordsFallbackPort(self) -> None:
        server, port = await self.listen()
        dnsmasq = Dnsmasq(self)
        endpoint = self.srv(dnsmasq, f":fallbackPort={port}")
        await self.exchange(endpoint)
        self.assertEqual(server.accepted, 1)
        self.assertEqual(endpoint.lastTarget, SRVTarget("example.test", port))

    async def test_resolverNeverAnswers(self) -> None:
        """
        A name server that reads every query and drops it: the connection
        fails with L{SRVResolveTimeout} after C{resolveTimeout}, not later.
        """
        sink = Sink()
        port = _reactor.listenUDP(0, sink, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        endpoint = endpointkit.clientFromString(
            _reactor, buildDescription("srv", "svc", "example.test",
                                       resolver=f"127.0.0.1:{number}", resolveTimeout=0.6))
        started = time.monotonic()
        with self.assertRaises(SRVResolveTimeout) as caught:
            await within(connectProtocol(endpoint, Protocol()))
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.59)
        self.assertLess(elapsed, 3.0)
        self.assertGreaterEqual(sink.count, 2)
        self.assertIn("0.6 s", str(caught.exception))

    async def test_timeoutAroundSrv(self) -> None:
        """
        C{timeout:} around C{srv:} cancels a lookup still waiting, and
        nothing of it is left (the reactor is clean at the end).
        """
        sink = Sink()
        port = _reactor.listenUDP(0, sink, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        inner = buildDescription("srv", "svc", "example.test",
                                 resolver=f"127.0.0.1:{port.getHost().port}")
        endpoint = endpointkit.clientFromString(
            _reactor, buildDescription("timeout", 0.3, endpoint=inner))
        with self.assertRaises(ConnectTimeout) as caught:
            await within(connectProtocol(endpoint, Protocol()))
        self.assertIn("connecting to srv:svc:example.test:", str(caught.exception))

    async def test_ttlCache(self) -> None:
        """
        Many connections, one query (dnsmasq's log counts them); with
        C{cache=no}, one query per connection.
        """
        server, port = await self.listen()
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1",
                          srvRecord("_svc._tcp", "a.example.test", port),
                          srvRecord("_nocache._tcp", "a.example.test", port))
        cached = self.srv(dnsmasq)
        for _ in range(8):
            await self.exchange(cached)
        uncached = self.srv(dnsmasq, ":cache=no", service="nocache")
        for _ in range(4):
            await self.exchange(uncached)
        self.assertEqual(server.accepted, 12)
        self.assertEqual(dnsmasq.queries("_svc._tcp.example.test"), 1)
        self.assertEqual(dnsmasq.queries("_nocache._tcp.example.test"), 4)
        # The targets' addresses came with the SRV answers.
        self.assertEqual(dnsmasq.queries("a.example.test", "A"), 0)

    async def test_ipv6OnlyTarget(self) -> None:
        server, port = await self.listen("::1")
        dnsmasq = Dnsmasq(self, "--host-record=v6.example.test,::1",
                          srvRecord("_svc._tcp", "v6.example.test", port))
        await self.exchange(self.srv(dnsmasq))
        self.assertEqual(server.peers[0].host, "::1")

    async def test_ipv6NameServer(self) -> None:
        """
        A name server on IPv6 (C{resolver=[::1]:PORT}) is asked over IPv6.
        """
        server, port = await self.listen()
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1",
                          srvRecord("_svc._tcp", "a.example.test", port), ipv6=True)
        endpoint = endpointkit.clientFromString(_reactor, buildDescription(
            "srv", "svc", "example.test", resolver=f"[::1]:{dnsmasq.port}"))
        await self.exchange(endpoint)
        self.assertEqual(server.accepted, 1)
        with open(dnsmasq.log) as f:
            self.assertIn("query[SRV] _svc._tcp.example.test from ::1", f.read())

    async def test_targetAddressesAsked(self) -> None:
        """
        A target whose addresses the SRV answer does not give (a name of
        another zone) is resolved with AAAA and A queries to the same
        server.
        """
        server, port = await self.listen()
        dnsmasq = Dnsmasq(self, "--address=/a.other.test/127.0.0.1",
                          srvRecord("_svc._tcp", "a.other.test", port))
        await self.exchange(self.srv(dnsmasq))
        self.assertEqual(server.accepted, 1)
        self.assertEqual(dnsmasq.queries("a.other.test", "A"), 1)
        self.assertEqual(dnsmasq.queries("a.other.test", "AAAA"), 1)

    async def test_truncatedAnswerOverTCP(self) -> None:
        """
        An answer too big for a 512-byte datagram comes truncated, and is
        asked again over TCP.
        """
        server, port = await self.listen()
        records = [srvRecord("_big._tcp", f"host{n}.example.test", 9, 5) for n in range(40)]
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1", *records,
                          srvRecord("_big._tcp", "a.example.test", port, 0))
        endpoint = self.srv(dnsmasq, service="big")
        targets = await within(endpoint.resolveTargets())
        self.assertEqual(len(targets), 41)
        self.assertEqual(targets[0], SRVTarget("a.example.test", port, 0, 10))
        await self.exchange(endpoint)
        self.assertEqual(server.accepted, 1)

    async def test_tlsVerifiesDomain(self) -> None:
        """
        TLS around C{srv:} verifies the SRV domain (L{tlsHostname}) by
        default; through L{wrapTargets}, each target's own name.
        """
        certificate, key = selfSignedCertificate("example.test")
        server = Server()
        options = ssl.PrivateCertificate.loadPEM(certificate + key).options()
        port = _reactor.listenSSL(0, server, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1",
                          srvRecord("_svc._tcp", "a.example.test", port.getHost().port))
        endpoint = self.srv(dnsmasq)
        trust = ssl.Certificate.loadPEM(certificate)
        secure = wrapClientTLS(ssl.optionsForClientTLS(endpoint.tlsHostname, trust), endpoint)
        await self.exchange(secure)

        perTarget = endpoint.wrapTargets(
            lambda inner, target: wrapClientTLS(ssl.optionsForClientTLS(target.host, trust), inner))
        client = Exchange()
        await within(connectProtocol(perTarget, client))
        self.assertEqual(await within(client.done), b"")

    async def tlsServer(self, name: str) -> tuple[int, str]:
        """
        A TLS echo listener whose self-signed certificate names only
        C{name}; its port and the certificate's file.
        """
        certificate, key = selfSignedCertificate(name)
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(certificate)
        options = ssl.PrivateCertificate.loadPEM(certificate + key).options()
        port = _reactor.listenSSL(0, Server(), options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port, path

    async def tlswrapAroundSrv(
            self, good: str, bad: str, **options: Any,
    ) -> tuple[Callable[[str, str], IStreamClientEndpoint], str, str]:
        """
        Two TLS echo targets of C{_good._tcp.example.test} and
        C{_bad._tcp.example.test}, both at a.example.test, whose
        certificates name only C{good} and only C{bad}; a function of a
        service name and a trust file that makes C{tlswrap:} (with
        C{options}) around C{srv:} to it, and the two certificates' files.
        """
        forGood, goodCA = await self.tlsServer(good)
        forBad, badCA = await self.tlsServer(bad)
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1",
                          srvRecord("_good._tcp", "a.example.test", forGood),
                          srvRecord("_bad._tcp", "a.example.test", forBad))

        def described(service: str, trust: str) -> IStreamClientEndpoint:
            inner = buildDescription("srv", service, "example.test", resolver=dnsmasq.resolver)
            endpoint: IStreamClientEndpoint = endpointkit.clientFromString(
                _reactor, buildDescription("tlswrap", endpoint=inner, trustRoots=trust,
                                           **options))
            return endpoint

        return described, goodCA, badCA

    async def test_tlswrapVerifiesDomain(self) -> None:
        """
        C{tlswrap:} around C{srv:} verifies the SRV domain by default: a
        certificate for the domain is accepted, one for the target only is
        refused.
        """
        described, domainCA, targetCA = await self.tlswrapAroundSrv(
            "example.test", "a.example.test")
        await self.exchange(described("good", domainCA))
        with self.assertRaises(TLSHandshakeError) as caught:
            await within(connectProtocol(described("bad", targetCA), Exchange()))
        self.assertEqual(caught.exception.hostname, "example.test")

    async def test_tlswrapVerifyTarget(self) -> None:
        """
        C{tlswrap:verifyTarget=yes} around C{srv:} verifies each target's
        own name: a certificate for the target is accepted, one for the
        domain only is refused.
        """
        described, targetCA, domainCA = await self.tlswrapAroundSrv(
            "a.example.test", "example.test", verifyTarget=True)
        await self.exchange(described("good", targetCA))
        with self.assertRaises(AllTargetsFailed) as caught:
            await within(connectProtocol(described("bad", domainCA), Exchange()))
        self.assertIn("a.example.test", str(caught.exception))
        self.assertIsInstance(caught.exception.failures[0][1], TLSHandshakeError)

    def test_verifyTargetNeedsSrv(self) -> None:
        """
        C{verifyTarget=} is refused around anything but C{srv:}, and with
        C{hostname=}.
        """
        e = self.assertRaises(DescriptionError, endpointkit.parseDescription,
                              "tlswrap:verifyTarget=yes:endpoint=tcp\\:example.com\\:443",
                              "client")
        self.assertIn("verifyTarget", str(e))
        self.assertIn("srv", str(e))
        e = self.assertRaises(DescriptionError, endpointkit.parseDescription,
                              "tlswrap:verifyTarget=yes:hostname=x.test:"
                              "endpoint=srv\\:svc\\:example.test", "client")
        self.assertIn("leave hostname= out", str(e))

    async def test_relayToSrv(self) -> None:
        """
        C{endpointkit relay} with C{srv:} as CONNECT; the relay's log names
        the chosen target.
        """
        server, port = await self.listen()
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1",
                          srvRecord("_svc._tcp", "a.example.test", port))
        listen = freePort()
        connect = buildDescription("srv", "svc", "example.test", resolver=dnsmasq.resolver)
        relay = RelayProcess(self, [f"tcp:{listen}:interface=127.0.0.1", connect], listen)

        def roundTrip() -> bytes:
            with socket.create_connection(("127.0.0.1", listen), timeout=WAIT) as s:
                s.sendall(b"through srv")
                received = b""
                while len(received) < len(b"through srv"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                return received

        received = await threads.deferToThread(roundTrip)
        code, output = await threads.deferToThread(relay.stop)
        self.assertEqual(received, b"through srv", output)
        self.assertEqual(code, 0, output)
        self.assertIn(f"connected to target a.example.test:{port}", output)
        # The wait for the relay's port made a connection of its own.
        self.assertGreaterEqual(server.accepted, 1)

    async def test_proxyFoundBySrv(self) -> None:
        """
        C{srv:} inside a proxy finds the proxy (the lookup is local), and the
        proxy connects to its target.
        """
        server, port = await self.listen()
        proxy = startMicrosocks(self)
        dnsmasq = Dnsmasq(self, "--host-record=proxy.example.test,127.0.0.1",
                          srvRecord("_socks._tcp", "proxy.example.test", proxy))
        description = buildDescription(
            "socks5", "127.0.0.1", port,
            endpoint=buildDescription("srv", "socks", "example.test", resolver=dnsmasq.resolver))
        await self.exchange(endpointkit.clientFromString(_reactor, description))
        self.assertEqual(server.accepted, 1)
        self.assertEqual(dnsmasq.queries("_socks._tcp.example.test"), 1)

    async def test_insideFallback(self) -> None:
        """
        C{fallback:} moves on from an C{srv:} member whose record does not
        exist, and C{race:} is won by the C{srv:} member that connects.
        """
        server, port = await self.listen()
        dnsmasq = Dnsmasq(self, "--host-record=a.example.test,127.0.0.1",
                          srvRecord("_svc._tcp", "a.example.test", port))
        missing = buildDescription("srv", "missing", "example.test", resolver=dnsmasq.resolver)
        present = buildDescription("srv", "svc", "example.test", resolver=dnsmasq.resolver)
        direct = buildDescription("tcp", "127.0.0.1", port)
        await self.exchange(endpointkit.clientFromString(
            _reactor, buildDescription("fallback", missing, direct)))
        client = await self.exchange(endpointkit.clientFromString(
            _reactor, buildDescription("race", present, buildDescription("tcp", "127.0.0.1",
                                                                          freePort()))))
        self.assertEqual(targetOf(client), SRVTarget("a.example.test", port, 0, 10))
        self.assertEqual(server.accepted, 2)

    async def test_cancelDuringTargetAttempt(self) -> None:
        dnsmasq = Dnsmasq(self, "--host-record=slow.example.test,127.0.0.1",
                          srvRecord("_svc._tcp", "slow.example.test", 80))
        endpoint = self.srv(dnsmasq).wrapTargets(lambda inner, target: NeverConnects())
        d = endpoint.connect(Factory.forProtocol(Protocol))
        await task.deferLater(_reactor, 0.2, lambda: None)
        d.cancel()
        with self.assertRaises(defer.CancelledError):
            await d


class Sink(DatagramProtocol):
    """
    A name server that reads every query and answers none.
    """

    count = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.count += 1


class NeverConnects:
    """
    An endpoint whose attempts never end until cancelled.
    """

    def connect(self, factory: Any) -> Deferred[Any]:
        return Deferred()


def captureLog(test: TestCase) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def formatted(event: dict[str, Any]) -> str:
    from twisted.logger import formatEvent

    return formatEvent(event)
