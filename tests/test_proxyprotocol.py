"""
proxyprotocol: the sans-I/O header core, the server wrapper (trust,
deadline, bounds, what the application sees), the client wrapper, and both
against real peers: haproxy sending v1 and v2 in front of two twistd
processes, haproxy and nginx receiving what the client wrapper sends.
"""

from __future__ import annotations

import ipaddress
import os
import re
import struct
import subprocess
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, endpoints, protocol, reactor, ssl
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

import endpointkit
from endpointkit import (
    DescriptionError,
    InvalidProxyHeader,
    IProxyHeaderTransport,
    OriginalConnection,
    ProxyHeaderTooLarge,
    ProxyProtocolClientEndpoint,
    ProxyProtocolServerEndpoint,
    buildDescription,
    parseDescription,
    recordOriginalConnection,
    sendProxyDescription,
)
from endpointkit import proxyprotocol as pp
from endpointkit._compat import wrapServerTLS
from endpointkit._proxyheader import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    V2_SIGNATURE,
    HeaderParser,
    ProxySSLInfo,
    buildHeader,
    crc32c,
)
from endpointkit.limit import LimitingFactory
from tests._support import (
    PYTHON,
    cleanEnvironment,
    freePort,
    requirePeer,
    selfSignedCertificate,
    stopProcess,
    waitForPort,
)

HERE = os.path.dirname(os.path.abspath(__file__))
V4 = IPv4Address
V6 = IPv6Address


def a4(host: str, port: int) -> IPv4Address:
    return IPv4Address("TCP", host, port)


def a6(host: str, port: int) -> IPv6Address:
    return IPv6Address("TCP", host, port)


# The core.


class CoreTests(SynchronousTestCase):
    def parse(self, data: bytes, maxHeader: int = 4096) -> Any:
        parser = HeaderParser(maxHeader)
        header = parser.feed(data)
        return header, parser.rest

    def test_v1RoundTrip(self) -> None:
        data = buildHeader(1, a4("192.0.2.7", 5555), a4("198.51.100.1", 80))
        self.assertEqual(data, b"PROXY TCP4 192.0.2.7 198.51.100.1 5555 80\r\n")
        header, rest = self.parse(data + b"GET /")
        self.assertEqual((header.version, header.local, header.source, header.destination),
                         (1, False, a4("192.0.2.7", 5555), a4("198.51.100.1", 80)))
        self.assertEqual(rest, b"GET /")

    def test_v1IPv6AndUnknown(self) -> None:
        header, _ = self.parse(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n")
        self.assertEqual(header.source, a6("2001:db8::1", 1))
        self.assertEqual(header.destination, a6("::1", 65535))
        header, rest = self.parse(b"PROXY UNKNOWN ffff::1 whatever\r\nX")
        self.assertTrue(header.local)
        self.assertIsNone(header.source)
        self.assertEqual(rest, b"X")
        self.assertEqual(buildHeader(1), b"PROXY UNKNOWN\r\n")

    def test_v1Malformed(self) -> None:
        for bad in [b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",           # LF only
                    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",        # leading zero
                    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",     # port range
                    b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",        # double space
                    b"PROXY TCP4 ::1 ::1 1 2\r\n",                 # family mismatch
                    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                    b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
                    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                    b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2\r\n",
                    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"]:
            self.assertRaises(InvalidProxyHeader, self.parse, bad)

    def test_v1TooLong(self) -> None:
        """
        107 bytes without the end of the line is over the limit, without
        waiting for more.
        """
        parser = HeaderParser()
        self.assertIsNone(parser.feed(b"PROXY TCP6 " + b"a" * 95))
        self.assertRaises(ProxyHeaderTooLarge, parser.feed, b"a")
        longest = b"PROXY TCP6 " + b"f" * 4 + b":" + b"0" * 0
        self.assertTrue(len(longest) < 107)

    def test_v1LongestValid(self) -> None:
        line = (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
        self.assertEqual(len(line), 104)
        header, _ = self.parse(line)
        self.assertEqual(header.source.port, 65535)

    def test_garbageFailsAtOnce(self) -> None:
        """
        Bytes that cannot start a header fail on the first byte, without
        waiting for the rest of a header.
        """
        for first in [b"G", b"\r\n\r\n\x01", b"PROXX", b"\x00"]:
            self.assertRaises(InvalidProxyHeader, HeaderParser().feed, first)

    def test_v2RoundTripTLVs(self) -> None:
        ssl = ProxySSLInfo(client=0x07, verified=True, version="TLSv1.3", commonName="alice",
                           cipher="TLS_AES_128_GCM_SHA256")
        tlvs = [(PP2_TYPE_ALPN, b"h2"), (PP2_TYPE_AUTHORITY, b"example.com"),
                (PP2_TYPE_UNIQUE_ID, b"id-1"), (PP2_TYPE_SSL, ssl.pack()), (0xE0, b"custom")]
        data = buildHeader(2, a6("2001:db8::7", 40000), a6("::1", 443), tlvs, checksum=True)
        header, rest = self.parse(data + b"\x16\x03")
        self.assertEqual(rest, b"\x16\x03")
        self.assertEqual(header.source, a6("2001:db8::7", 40000))
        self.assertEqual(header.alpn, b"h2")
        self.assertEqual(header.authority, "example.com")
        self.assertEqual(header.uniqueId, b"id-1")
        self.assertEqual(header.ssl, ssl)
        self.assertTrue(header.ssl.verified and header.ssl.ssl and header.ssl.clientCertificate)
        self.assertEqual(header.tlv(0xE0), b"custom")

    def test_v2Local(self) -> None:
        header, _ = self.parse(buildHeader(2, tlvs=[(PP2_TYPE_UNIQUE_ID, b"u")]))
        self.assertTrue(header.local)
        self.assertIsNone(header.source)
        self.assertEqual(header.uniqueId, b"u")

    def test_v2Unix(self) -> None:
        data = buildHeader(2, UNIXAddress(b"/run/a.sock"), UNIXAddress(b"/run/b.sock"))
        header, _ = self.parse(data)
        self.assertEqual(header.source, UNIXAddress(b"/run/a.sock"))
        self.assertRaises(ValueError, buildHeader, 1, UNIXAddress(b"/a"), UNIXAddress(b"/b"))

    def test_v2MixedFamiliesMapped(self) -> None:
        header, _ = self.parse(buildHeader(2, a4("192.0.2.1", 1), a6("::1", 2)))
        # The mapped address as this Python writes it (3.13 writes the
        # IPv4 part dotted: ::ffff:192.0.2.1).
        mapped = str(ipaddress.IPv6Address("::ffff:192.0.2.1"))
        self.assertEqual(header.source, a6(mapped, 1))

    def test_v2BadChecksum(self) -> None:
        data = bytearray(buildHeader(2, a4("1.2.3.4", 1), a4("5.6.7.8", 2), checksum=True))
        data[20] ^= 1
        self.assertRaisesRegex(InvalidProxyHeader, "CRC32C", self.parse, bytes(data))

    def test_crc32cKnownValue(self) -> None:
        # The check value of CRC-32C (RFC 3720, iSCSI).
        self.assertEqual(crc32c(b"123456789"), 0xE3069283)

    def test_v2TooLargeFromFixedPart(self) -> None:
        """
        The length field is checked against maxHeader as soon as the 16
        fixed bytes are in.
        """
        fixed = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 5000)
        parser = HeaderParser(4096)
        self.assertRaises(ProxyHeaderTooLarge, parser.feed, fixed)
        big = buildHeader(2, a4("1.2.3.4", 1), a4("5.6.7.8", 2), [(0xE1, b"x" * 300)])
        self.assertRaises(ProxyHeaderTooLarge, self.parse, big, 300)
        self.assertIsNotNone(self.parse(big, 400)[0])

    def test_v2Malformed(self) -> None:
        good = buildHeader(2, a4("1.2.3.4", 1), a4("5.6.7.8", 2))
        cases = {
            "version": good[:12] + b"\x11" + good[13:],
            "command": good[:12] + b"\x2f" + good[13:],
            "family": good[:13] + b"\x41" + good[14:],
            "short block": good[:14] + struct.pack("!H", 4) + good[16:20],
            "udp": good[:13] + b"\x12" + good[14:],
            "tlv truncated": good[:14] + struct.pack("!H", 14) + good[16:] + b"\xe0\x00",
            "tlv value short": good[:14] + struct.pack("!H", 17) + good[16:] + b"\xe0\x00\x09ab",
            "ssl short": good[:14] + struct.pack("!H", 16) + good[16:] + b"\x20\x00\x01\x01",
        }
        for name, data in cases.items():
            try:
                self.parse(data)
            except InvalidProxyHeader:
                continue
            self.fail(f"{name}: no InvalidProxyHeader")

    def test_truncatedIsIncomplete(self) -> None:
        """
        A header cut short is not a header: the parser keeps waiting (the
        server's deadline ends it), and holds only what it was given.
        """
        data = buildHeader(2, a4("1.2.3.4", 1), a4("5.6.7.8", 2))
        for cut in range(1, len(data)):
            parser = HeaderParser()
            self.assertIsNone(parser.feed(data[:cut]))
            self.assertEqual(parser.buffered, data[:cut])


ADDRESS4 = st.builds(a4, st.ip_addresses(v=4).map(str), st.integers(0, 65535))
ADDRESS6 = st.builds(a6, st.ip_addresses(v=6).map(str).filter(lambda s: "%" not in s),
                     st.integers(0, 65535))
TLVS = st.lists(st.tuples(st.sampled_from([PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY,
                                           PP2_TYPE_UNIQUE_ID, 0xE0, 0xEF, 0xF0]),
                          st.binary(max_size=64)), max_size=6)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([1, 2]), st.one_of(st.tuples(ADDRESS4, ADDRESS4),
                                                st.tuples(ADDRESS6, ADDRESS6), st.none()),
           TLVS, st.booleans(), st.lists(st.integers(1, 40), max_size=8), st.binary(max_size=20))
    def test_buildThenParse(self, version: int, addresses: Any, tlvs: Any, checksum: bool,
                            cuts: list[int], after: bytes) -> None:
        """
        Whatever is built parses back to the same addresses and TLVs, fed in
        any chunks, and the bytes after it are left for the application.
        """
        if version == 1:
            tlvs, checksum = [], False
        source, destination = addresses if addresses else (None, None)
        data = buildHeader(version, source, destination, tlvs, checksum) + after
        parser = HeaderParser()
        header = None
        offset = 0
        for cut in [*cuts, len(data)]:
            if header is not None:
                break
            header = parser.feed(data[offset:offset + cut])
            offset += cut
        if header is None:
            header = parser.feed(data[offset:])
        self.assertIsNotNone(header)
        assert header is not None
        self.assertEqual((header.source, header.destination), (source, destination))
        self.assertEqual(list(header.tlvs), [tuple(t) for t in tlvs])
        self.assertEqual(parser.rest + data[offset:] if offset < len(data) else parser.rest,
                         after)

    @settings(max_examples=500, deadline=None)
    @given(st.one_of(st.binary(max_size=300),
                     st.binary(max_size=300).map(lambda b: V2_SIGNATURE + b),
                     st.binary(max_size=120).map(lambda b: b"PROXY " + b)))
    def test_randomBytesOnlyRejected(self, data: bytes) -> None:
        """
        Random bytes give a header, need more, or raise InvalidProxyHeader;
        nothing else.
        """
        parser = HeaderParser(512)
        try:
            parser.feed(data)
        except InvalidProxyHeader:
            pass
        self.assertLessEqual(len(parser.buffered), 512)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(min_size=1, max_size=300).filter(lambda b: not b.startswith(b"PROXY ")
                                                     and not b.startswith(V2_SIGNATURE)))
    def test_randomBytesNeverReachApplication(self, data: bytes) -> None:
        """
        Through the server wrapper, bytes that are not a header are never
        seen by the application, which is never even built.
        """
        harness = Harness(self)
        transport = harness.connect(a4("127.0.0.1", 1234))
        harness.protocol.dataReceived(data)
        self.assertEqual(harness.built, [])
        harness.clock.advance(10)
        self.assertTrue(transport.disconnecting or harness.aborted(transport))
        harness.protocol.connectionLost(protocol.connectionDone)
        self.assertEqual(harness.clock.getDelayedCalls(), [])


# The server wrapper, with a Clock and string transports.


class App(protocol.Protocol):
    def __init__(self, factory: AppFactory, addr: Any) -> None:
        self.factory = factory
        self.addr = addr
        self.received = b""
        self.lost: Any = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.peerAtStart = self.transport.getPeer()
        self.hostAtStart = self.transport.getHost()
        proxied = IProxyHeaderTransport(self.transport, None)
        self.header = proxied.proxyHeader if proxied is not None else "not provided"

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = reason


class AppFactory(protocol.Factory):
    noisy = False

    def __init__(self) -> None:
        self.built: list[App] = []

    def buildProtocol(self, addr: Any) -> App:
        app = App(self, addr)
        self.built.append(app)
        return app


class Harness:
    def __init__(self, test: SynchronousTestCase, trusted: str = "127.0.0.1",
                 untrusted: str = "reject", require: bool = True, maxHeader: int = 4096,
                 wrap: Any = None) -> None:
        self.clock = Clock()
        self.app = AppFactory()
        inner = wrap(self.app, self.clock) if wrap else self.app
        self.factory = pp.ProxyHeaderFactory(inner, pp._Trusted().convert(trusted),
                                             untrusted == "direct", require, 5.0, maxHeader,
                                             clock=self.clock)
        self.events: list[dict[str, Any]] = []
        logger = Logger(observer=self.events.append)
        test.patch(pp, "_log", logger)

    @property
    def built(self) -> list[App]:
        return self.app.built

    def connect(self, peer: Any, host: Any = None) -> StringTransport:
        self.protocol = self.factory.buildProtocol(peer)
        transport = StringTransport(hostAddress=host or a4("127.0.0.1", 8080),
                                    peerAddress=peer)
        self.protocol.makeConnection(transport)
        return transport

    @staticmethod
    def aborted(transport: StringTransport) -> bool:
        return bool(getattr(transport, "aborted", False)) or transport.disconnecting


class ServerTests(SynchronousTestCase):
    def test_applicationSeesClientFromTheStart(self) -> None:
        """
        buildProtocol gets the header's source; getPeer/getHost are the
        header's in connectionMade; the header bytes never reach the
        application, the bytes after them do.
        """
        harness = Harness(self)
        harness.connect(a4("127.0.0.1", 40000))
        self.assertEqual(harness.built, [])
        data = buildHeader(2, a4("192.0.2.9", 5555), a4("198.51.100.2", 443),
                           [(PP2_TYPE_AUTHORITY, b"shop.example")]) + b"hello"
        harness.protocol.dataReceived(data[:10])
        self.assertEqual(harness.built, [])
        harness.protocol.dataReceived(data[10:])
        [app] = harness.built
        self.assertEqual(app.addr, a4("192.0.2.9", 5555))
        self.assertEqual(app.peerAtStart, a4("192.0.2.9", 5555))
        self.assertEqual(app.hostAtStart, a4("198.51.100.2", 443))
        self.assertEqual(app.header.authority, "shop.example")
        self.assertEqual(app.received, b"hello")
        self.assertEqual(harness.protocol.realPeer, a4("127.0.0.1", 40000))
        self.assertEqual(harness.clock.getDelayedCalls(), [])

    def test_untrustedRejectedAndLoggedOnceAMinute(self) -> None:
        harness = Harness(self)
        for n in range(3):
            transport = harness.connect(a4("127.0.0.5", 1000 + n))
            harness.protocol.dataReceived(buildHeader(1, a4("6.6.6.6", 1), a4("7.7.7.7", 2)))
            self.assertTrue(harness.aborted(transport))
        self.assertEqual(harness.built, [])
        self.assertEqual(len(harness.events), 1)
        self.assertEqual(harness.events[0]["peer"], "127.0.0.5:1000")
        harness.clock.advance(61)
        harness.connect(a4("127.0.0.5", 2000))
        self.assertEqual(len(harness.events), 2)
        self.assertEqual(harness.events[1]["count"], 3)

    def test_untrustedDirect(self) -> None:
        """
        untrusted=direct serves the peer with its real address; a forged
        header is its data, not an address.
        """
        harness = Harness(self, untrusted="direct")
        harness.connect(a4("127.0.0.5", 1000))
        forged = buildHeader(1, a4("6.6.6.6", 1), a4("7.7.7.7", 2))
        harness.protocol.dataReceived(forged)
        [app] = harness.built
        self.assertEqual(app.peerAtStart, a4("127.0.0.5", 1000))
        self.assertIsNone(app.header)
        self.assertEqual(app.received, forged)

    def test_headerTimeout(self) -> None:
        harness = Harness(self)
        transport = harness.connect(a4("127.0.0.1", 1000))
        harness.protocol.dataReceived(b"PROXY TCP4 1.2")
        harness.clock.advance(4.9)
        self.assertFalse(harness.aborted(transport))
        harness.clock.advance(0.2)
        self.assertTrue(harness.aborted(transport))
        self.assertEqual(harness.built, [])
        self.assertIn("no complete header", harness.events[0]["reason"])

    def test_requireNo(self) -> None:
        """
        With require=no a trusted peer may connect directly: bytes that
        cannot start a header, or nothing until the deadline.
        """
        harness = Harness(self, require=False)
        harness.connect(a4("127.0.0.1", 1000))
        harness.protocol.dataReceived(b"GET / HTTP/1.0\r\n")
        [app] = harness.built
        self.assertEqual((app.peerAtStart, app.received),
                         (a4("127.0.0.1", 1000), b"GET / HTTP/1.0\r\n"))
        harness.connect(a4("127.0.0.1", 1001))
        harness.clock.advance(5)
        self.assertEqual(harness.built[1].peerAtStart, a4("127.0.0.1", 1001))
        harness.connect(a4("127.0.0.1", 1002))
        harness.protocol.dataReceived(buildHeader(1, a4("192.0.2.1", 7), a4("192.0.2.2", 8)))
        self.assertEqual(harness.built[2].peerAtStart, a4("192.0.2.1", 7))

    def test_localIsDirectFromBalancer(self) -> None:
        harness = Harness(self)
        harness.connect(a4("127.0.0.1", 1000))
        harness.protocol.dataReceived(buildHeader(2) + b"ping")
        [app] = harness.built
        self.assertEqual(app.peerAtStart, a4("127.0.0.1", 1000))
        self.assertTrue(app.header.local)
        self.assertEqual(app.received, b"ping")

    def test_malformedAndOversizedClosed(self) -> None:
        harness = Harness(self, maxHeader=300)
        for data in [b"garbage\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
                     buildHeader(2, a4("1.2.3.4", 1), a4("5.6.7.8", 2), [(0xE0, b"x" * 400)])]:
            transport = harness.connect(a4("127.0.0.1", 1000))
            harness.protocol.dataReceived(data)
            self.assertTrue(harness.aborted(transport), data[:20])
            harness.protocol.connectionLost(protocol.connectionDone)
        self.assertEqual(harness.built, [])
        self.assertEqual(harness.clock.getDelayedCalls(), [])

    def test_trustNetworksAndMapped(self) -> None:
        trust = pp._Trusted().convert("10.0.0.0/8|fd00\\:\\:/8|unix".replace("\\", ""))
        self.assertTrue(trust.trusts(a4("10.1.2.3", 1)))
        self.assertTrue(trust.trusts(a6("::ffff:10.0.0.1", 1)))
        self.assertTrue(trust.trusts(a6("fd00::5", 1)))
        self.assertTrue(trust.trusts(UNIXAddress(b"/x")))
        self.assertFalse(trust.trusts(a4("11.0.0.1", 1)))
        self.assertFalse(trust.trusts(None))
        self.assertTrue(pp._Trusted().convert("any").trusts(None))

    def test_limitAroundCountsRealClients(self) -> None:
        """
        limit:perPeer=1 around the wrapper counts the header's clients, not
        the balancer.
        """
        harness = Harness(self, wrap=lambda app, clock: LimitingFactory(app, perPeer=1,
                                                                        clock=clock))
        transports = []
        for client in ["192.0.2.2", "192.0.2.3", "192.0.2.2"]:
            transports.append(harness.connect(a4("127.0.0.1", 1000)))
            harness.protocol.dataReceived(buildHeader(2, a4(client, 9), a4("127.0.0.1", 80)))
        self.assertEqual([app.peerAtStart.host for app in harness.built],
                         ["192.0.2.2", "192.0.2.3"])
        self.assertEqual(harness.factory.wrappedFactory.perPeerCounts,
                         {"192.0.2.2": 1, "192.0.2.3": 1})
        self.assertTrue(transports[2].disconnecting)


class DescriptionTests(SynchronousTestCase):
    def test_trustedRequiredSaysWhy(self) -> None:
        e = self.assertRaises(DescriptionError, parseDescription,
                              "proxyprotocol:endpoint=tcp\\:0", "server")
        self.assertIn("'trusted'", str(e))
        self.assertIn("nobody else can claim a client address", str(e))

    def test_badValues(self) -> None:
        for description, argument in [
                ("proxyprotocol:trusted=10.0.0.x:endpoint=tcp\\:0", "trusted"),
                ("proxyprotocol:trusted=any|10.0.0.1:endpoint=tcp\\:0", "trusted"),
                ("proxyprotocol:trusted=127.0.0.1:untrusted=drop:endpoint=tcp\\:0", "untrusted"),
                ("proxyprotocol:trusted=127.0.0.1:maxHeader=10:endpoint=tcp\\:0", "maxHeader"),
                ("proxyprotocol:trusted=127.0.0.1:headerTimeout=0:endpoint=tcp\\:0",
                 "headerTimeout")]:
            e = self.assertRaises(DescriptionError, parseDescription, description, "server")
            self.assertEqual(e.argument, argument, description)
        for description, argument in [
                ("proxyprotocol:version=3:endpoint=tcp\\:h\\:1", "version"),
                ("proxyprotocol:source=1.2.3.4\\:5:endpoint=tcp\\:h\\:1", "destination"),
                ("proxyprotocol:source=\\:\\:1\\:5:destination=1.2.3.4\\:5:endpoint=tcp\\:h\\:1",
                 "source"),
                ("proxyprotocol:version=1:uniqueId=yes:endpoint=tcp\\:h\\:1", "uniqueId")]:
            e = self.assertRaises(DescriptionError, parseDescription, description, "client")
            self.assertEqual(e.argument, argument, description)

    def test_trustedAnyWarns(self) -> None:
        warnings = parseDescription("proxyprotocol:trusted=any:endpoint=tcp\\:0",
                                    "server").warnings()
        self.assertEqual(len(warnings), 1)
        self.assertIn("trusted=any", warnings[0])
        self.assertEqual(parseDescription("proxyprotocol:trusted=127.0.0.1:endpoint=tcp\\:0",
                                          "server").warnings(), [])

    def test_canonicalText(self) -> None:
        parsed = parseDescription(
            "proxyprotocol:trusted=127.0.0.1|\\:\\:1|10.0.0.0/8:endpoint=tcp\\:0", "server")
        again = parseDescription(parsed.description(), "server")
        self.assertEqual(again.values["trusted"], parsed.values["trusted"])
        client = parseDescription("proxyprotocol:source=[\\:\\:1]\\:5:destination="
                                  "[\\:\\:2]\\:6:endpoint=tcp\\:h\\:1", "client")
        self.assertEqual(client.values["source"], a6("::1", 5))
        self.assertEqual(parseDescription(client.description(), "client").values, client.values)

    def test_sendProxyDescription(self) -> None:
        for version, expected in [("v1", 1), ("v2", 2), (2, 2), ("1", 1)]:
            parsed = parseDescription(sendProxyDescription("tcp:127.0.0.1:80", version),
                                      "client")
            self.assertEqual(parsed.values["version"], expected)
            self.assertEqual(parsed.values["endpoint"].description(), "tcp:127.0.0.1:80")
        self.assertRaises(ValueError, sendProxyDescription, "tcp:127.0.0.1:80", "v3")

    def test_bothParsers(self) -> None:
        for parse in (endpointkit.serverFromString, endpoints.serverFromString):
            built = parse(reactor, "proxyprotocol:trusted=127.0.0.1:endpoint=tcp\\:0")
            self.assertIsInstance(built, ProxyProtocolServerEndpoint)
        for cparse in (endpointkit.clientFromString, endpoints.clientFromString):
            client = cparse(reactor, "proxyprotocol:endpoint=tcp\\:127.0.0.1\\:80")
            self.assertIsInstance(client, ProxyProtocolClientEndpoint)


# Real connections on loopback.


class Line(protocol.Protocol):
    """
    A client: sends a line, collects what comes back until closed or a
    newline.
    """

    def __init__(self, line: bytes = b"hello\n", waitForClose: bool = False) -> None:
        self.line = line
        self.waitForClose = waitForClose
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.line:
            self.transport.write(self.line)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.waitForClose and self.received.endswith(b"\n") and not self.done.called:
            self.done.callback(self.received)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(self.received)
        self.lost.callback(None)


class Reporter(protocol.Protocol):
    """
    A server: answers each chunk with the peer and host seen in
    connectionMade and the unique ID and authority of the header.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.peer = self.transport.getPeer()
        self.host = self.transport.getHost()
        self.factory.seen.append(self)  # type: ignore[attr-defined]
        header = IProxyHeaderTransport(self.transport).proxyHeader
        self.header = header

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(f"{self.peer.host}:{self.peer.port}\n".encode())  # type: ignore[attr-defined]


def reporterFactory() -> Any:
    factory = protocol.Factory.forProtocol(Reporter)
    factory.seen = []  # type: ignore[attr-defined]
    factory.noisy = False
    return factory


class LoopbackTests(TestCase):
    @defer.inlineCallbacks
    def listen(self, description: str, factory: Any = None) -> Any:
        factory = factory or reporterFactory()
        port = yield endpointkit.serverFromString(reactor, description).listen(factory)
        self.addCleanup(port.stopListening)
        return port, factory

    @defer.inlineCallbacks
    def exchange(self, endpoint: Any, client: Line | None = None) -> Any:
        client = client or Line()
        yield endpoint.connect(protocol.Factory.forProtocol(lambda: client))
        received = yield client.done.addTimeout(10, reactor)
        if client.transport is not None:
            client.transport.loseConnection()
        yield client.lost.addTimeout(10, reactor)
        return received

    def tcp(self, port: int, bind: str | None = None) -> Any:
        return endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5,
                                            bindAddress=(bind, 0) if bind else None)

    @defer.inlineCallbacks
    def test_clientToServerVersions(self) -> Any:
        port, factory = yield self.listen("proxyprotocol:trusted=127.0.0.1:endpoint="
                                          "tcp\\:0\\:interface=127.0.0.1")
        number = port.getHost().port
        for version in (1, 2):
            endpoint = ProxyProtocolClientEndpoint(self.tcp(number), version,
                                                   a4("192.0.2.44", 4444), a4("192.0.2.1", 80))
            received = yield self.exchange(endpoint)
            self.assertEqual(received, b"192.0.2.44:4444\n")
            self.assertEqual(factory.seen[-1].host, a4("192.0.2.1", 80))
            self.assertEqual(factory.seen[-1].header.version, version)
        # LOCAL / UNKNOWN: served as a direct connection from the client.
        for version in (1, 2):
            received = yield self.exchange(ProxyProtocolClientEndpoint(self.tcp(number), version))
            self.assertRegex(received, rb"^127\.0\.0\.1:\d+\n$")
            self.assertTrue(factory.seen[-1].header.local)

    @defer.inlineCallbacks
    def test_headerSentAtOnce(self) -> Any:
        """
        Over a socket, the header is sent when the connection is made, in
        one send, before the wrapped protocol is connected: nothing is left
        queued in the transport when the wrapped protocol starts, and that
        protocol writes to the socket's own transport, so its bytes follow
        the header with no layer in between.  The sending protocol provides
        the wrapped protocol's half-close interface from its class, with
        nothing declared per connection.
        """
        from twisted.internet import tcp
        from twisted.internet.interfaces import IHalfCloseableProtocol
        from zope.interface import directlyProvidedBy, implementer

        port, _factory = yield self.listen("proxyprotocol:trusted=127.0.0.1:endpoint="
                                          "tcp\\:0\\:interface=127.0.0.1")
        seen: dict[str, Any] = {}

        @implementer(IHalfCloseableProtocol)
        class Checking(Line):
            def connectionMade(self) -> None:
                transport: Any = self.transport
                seen["transport"] = transport
                seen["queued"] = (bytes(transport.dataBuffer), list(transport._tempDataBuffer))
                Line.connectionMade(self)

            def readConnectionLost(self) -> None:
                pass

            def writeConnectionLost(self) -> None:
                pass

        client = Checking()
        endpoint = ProxyProtocolClientEndpoint(self.tcp(port.getHost().port), 2,
                                               a4("192.0.2.7", 7777), a4("192.0.2.1", 80))
        yield endpoint.connect(protocol.Factory.forProtocol(lambda: client))
        received = yield client.done.addTimeout(10, reactor)
        self.assertEqual(received, b"192.0.2.7:7777\n")
        self.assertIsInstance(seen["transport"], tcp.Client)
        self.assertEqual(seen["queued"], (b"", []))
        sender = seen["transport"].protocol
        while not isinstance(sender, pp.ProxyHeaderSendingProtocol):
            sender = sender._wrappedProtocol
        self.assertIs(sender.inner, client)
        self.assertTrue(IHalfCloseableProtocol.providedBy(sender))
        self.assertEqual(list(directlyProvidedBy(sender)), [])
        client.transport.loseConnection()  # type: ignore[union-attr]
        yield client.lost.addTimeout(10, reactor)

    @defer.inlineCallbacks
    def test_originalConnectionAndTLVs(self) -> Any:
        """
        A connecting factory that provides IOriginalConnection has its
        addresses, authority and ALPN sent; uniqueId=yes sends a fresh ID
        per connection.
        """
        port, factory = yield self.listen("proxyprotocol:trusted=127.0.0.1:endpoint="
                                          "tcp\\:0\\:interface=127.0.0.1")
        endpoint = endpointkit.clientFromString(reactor, buildDescription(
            "proxyprotocol", uniqueId=True,
            endpoint=f"tcp:127.0.0.1:{port.getHost().port}"))
        ids = []
        for n in range(2):
            client = Line()
            clientFactory = protocol.Factory.forProtocol(lambda client=client: client)
            original = OriginalConnection(a6("2001:db8::5", 5000 + n), a6("2001:db8::1", 443),
                                          "www.example", b"h2")
            for name in ("originalPeer", "originalHost", "originalAuthority", "originalALPN"):
                setattr(clientFactory, name, getattr(original, name))
            from zope.interface import alsoProvides
            alsoProvides(clientFactory, endpointkit.IOriginalConnection)
            yield endpoint.connect(clientFactory)
            received = yield client.done.addTimeout(10, reactor)
            client.transport.loseConnection()  # type: ignore[union-attr]
            self.assertEqual(received, f"2001:db8::5:{5000 + n}\n".encode())
            header = factory.seen[-1].header
            self.assertEqual((header.authority, header.alpn), ("www.example", b"h2"))
            ids.append(header.uniqueId)
        self.assertEqual(len(set(ids)), 2)
        self.assertTrue(all(len(i) == 36 for i in ids))

    @defer.inlineCallbacks
    def test_recordOriginalConnection(self) -> Any:
        """
        recordOriginalConnection takes an accepted transport's addresses:
        what a relay calls on its backend factory.
        """
        backend, factory = yield self.listen("proxyprotocol:trusted=127.0.0.1:endpoint="
                                             "tcp\\:0\\:interface=127.0.0.1")
        forward = ProxyProtocolClientEndpoint(self.tcp(backend.getHost().port))
        results: list[bytes] = []

        class Front(protocol.Protocol):
            def connectionMade(self) -> None:
                upstream = Line()
                upstreamFactory = protocol.Factory.forProtocol(lambda: upstream)
                recordOriginalConnection(upstreamFactory, self.transport)
                d = forward.connect(upstreamFactory)
                d.addCallback(lambda _: upstream.done)
                d.addCallback(results.append)
                d.addCallback(lambda _: upstream.transport.loseConnection())  # type: ignore[union-attr]
                d.addBoth(lambda _: self.transport.write(b"ok\n"))  # type: ignore[union-attr]

        front = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(Front))
        self.addCleanup(front.stopListening)
        client = Line(b"", False)
        yield self.tcp(front.getHost().port, "127.0.0.3").connect(
            protocol.Factory.forProtocol(lambda: client))
        yield client.done.addTimeout(10, reactor)
        client.transport.loseConnection()  # type: ignore[union-attr]
        self.assertRegex(results[0], rb"^127\.0\.0\.3:\d+\n$")
        self.assertEqual(factory.seen[0].host, front.getHost())

    @defer.inlineCallbacks
    def test_untrustedForgedHeaderRejected(self) -> Any:
        port, factory = yield self.listen("proxyprotocol:trusted=127.0.0.1:endpoint="
                                          "tcp\\:0\\:interface=127.0.0.1")
        endpoint = ProxyProtocolClientEndpoint(self.tcp(port.getHost().port, "127.0.0.5"), 1,
                                               a4("6.6.6.6", 1), a4("7.7.7.7", 2))
        received = yield self.exchange(endpoint, Line(waitForClose=True))
        self.assertEqual(received, b"")
        self.assertEqual(factory.seen, [])

    @defer.inlineCallbacks
    def test_untrustedDirectRealAddress(self) -> Any:
        port, factory = yield self.listen("proxyprotocol:trusted=127.0.0.1:untrusted=direct:"
                                          "endpoint=tcp\\:0\\:interface=127.0.0.1")
        received = yield self.exchange(self.tcp(port.getHost().port, "127.0.0.5"))
        self.assertRegex(received, rb"^127\.0\.0\.5:\d+\n$")
        self.assertIsNone(factory.seen[0].header)

    @defer.inlineCallbacks
    def test_headerTimeoutReal(self) -> Any:
        port, factory = yield self.listen("proxyprotocol:trusted=127.0.0.1:headerTimeout=0.3:"
                                          "endpoint=tcp\\:0\\:interface=127.0.0.1")
        started = time.monotonic()
        received = yield self.exchange(self.tcp(port.getHost().port),
                                       Line(b"", waitForClose=True))
        elapsed = time.monotonic() - started
        self.assertEqual(received, b"")
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 8)
        self.assertEqual(factory.seen, [])

    @defer.inlineCallbacks
    def test_tlsOutsideAndInside(self) -> Any:
        """
        TLS around the wrapper (the header first, then TLS, as haproxy
        sends it) and inside it (the header inside TLS).  Twisted's TLS
        wrappers stand in for tlswrap:, which is not on main yet.
        """
        certificate, key = selfSignedCertificate("localhost", ["127.0.0.1"])
        server = ssl.PrivateCertificate.loadPEM(certificate + key).options()
        trust = ssl.Certificate.loadPEM(certificate)
        for outside in (True, False):
            tcp = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
            if outside:
                serverEndpoint: Any = wrapServerTLS(
                    server, ProxyProtocolServerEndpoint(tcp, "127.0.0.1"))
            else:
                serverEndpoint = ProxyProtocolServerEndpoint(
                    wrapServerTLS(server, tcp), "127.0.0.1")
            factory = reporterFactory()
            port = yield serverEndpoint.listen(factory)
            self.addCleanup(port.stopListening)
            number = port.getHost().port
            options = ssl.optionsForClientTLS("localhost", trust)
            if outside:
                clientEndpoint: Any = endpoints.wrapClientTLS(options, ProxyProtocolClientEndpoint(
                    self.tcp(number), 2, a4("192.0.2.8", 8), a4("192.0.2.1", 443)))
            else:
                clientEndpoint = ProxyProtocolClientEndpoint(
                    endpoints.wrapClientTLS(options, self.tcp(number)), 2,
                    a4("192.0.2.8", 8), a4("192.0.2.1", 443))
            received = yield self.exchange(clientEndpoint)
            self.assertEqual(received, b"192.0.2.8:8\n", outside)

    @defer.inlineCallbacks
    def test_portClientDescription(self) -> Any:
        port, _ = yield self.listen("proxyprotocol:trusted=127.0.0.1:endpoint="
                                          "tcp\\:0\\:interface=127.0.0.1")
        description = endpointkit.clientDescriptionFor(port)
        self.assertTrue(description.startswith("proxyprotocol:"))
        received = yield self.exchange(endpointkit.clientFromString(reactor, description))
        self.assertRegex(received, rb"^127\.0\.0\.1:\d+\n$")


# Real peers.


def startLogging(test: TestCase, argv: list[str], port: int, log: str,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "wb")
    test.addCleanup(out.close)
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, env=env, start_new_session=True)
    test.addCleanup(stopProcess, process, 10)
    try:
        waitForPort(port, process=process, timeout=30)
    except AssertionError:
        with open(log, "rb") as f:
            raise AssertionError(f"{argv[0]} did not listen: {f.read()[-2000:]!r}") from None
    return process


HAPROXY_HEAD = """global
    log stdout format raw local0
defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""


def startHaproxy(test: TestCase, body: str) -> tuple[int, str]:
    program = requirePeer("haproxy")
    directory = test.mktemp()
    os.mkdir(directory)
    port = freePort()
    config = os.path.join(directory, "haproxy.cfg")
    with open(config, "w") as f:
        f.write(HAPROXY_HEAD + body.replace("PORT", str(port)))
    log = os.path.join(directory, "log")
    startLogging(test, [program, "-f", config, "-db"], port, log)
    return port, log


def startHaproxyAcceptProxy(test: TestCase, target: int) -> tuple[int, str]:
    """
    haproxy with a frontend that takes a PROXY header (C{accept-proxy}),
    logs the client address it gave as C{client=ADDRESS:PORT} and passes
    the connection on to loopback port C{target}; its port and its log.
    """
    return startHaproxy(test, f"""
frontend fe
    bind 127.0.0.1:PORT accept-proxy
    log-format "client=%ci:%cp"
    default_backend be
backend be
    server s1 127.0.0.1:{target}
""")


def haproxyClientLines(log: str) -> list[str]:
    """
    The C{client=} lines of the log of L{startHaproxyAcceptProxy}'s haproxy.
    """
    with open(log, errors="replace") as f:
        return [line.strip() for line in f if line.startswith("client=")]


def startNginxProxyProtocol(test: TestCase) -> int:
    """
    nginx with a stream server that takes a PROXY header
    (C{listen ... proxy_protocol}) and answers with the client address it
    gave, C{ADDRESS:PORT} and a newline; its port.
    """
    program = requirePeer("nginx")
    directory = os.path.abspath(test.mktemp())
    os.mkdir(directory)
    port = freePort()
    with open(os.path.join(directory, "nginx.conf"), "w") as f:
        f.write(f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
pid {directory}/nginx.pid;
error_log {directory}/error.log;
worker_processes 1;
events {{ worker_connections 64; }}
stream {{
    server {{
        listen 127.0.0.1:{port} proxy_protocol;
        return "$proxy_protocol_addr:$proxy_protocol_port\\n";
    }}
}}
""")
    startLogging(test, [program, "-p", directory, "-c", f"{directory}/nginx.conf",
                        "-e", f"{directory}/error.log", "-g", "daemon off;"], port,
                 os.path.join(directory, "out"))
    return port


def startTwistd(test: TestCase, raw: str, web: str | None = None,
                rawPort: int | None = None) -> str:
    directory = os.path.abspath(test.mktemp())
    os.mkdir(directory)
    env = cleanEnvironment()
    env["PP_RAW"] = raw
    if web:
        env["PP_WEB"] = web
    log = os.path.join(directory, "twistd.log")
    assert rawPort is not None
    argv = [os.path.join(os.path.dirname(PYTHON), "twistd"), "-n", "--pidfile=", "-l", log, "-y",
            os.path.join(HERE, "pp_app.tac")]
    out = open(os.path.join(directory, "out"), "wb")
    test.addCleanup(out.close)
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, env=env, start_new_session=True,
                               cwd=directory)
    test.addCleanup(stopProcess, process, 10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            with open(os.path.join(directory, "out"), errors="replace") as f:
                text = f.read()
            if os.path.exists(log):
                with open(log, errors="replace") as f:
                    text += f.read()
            raise AssertionError(f"twistd exited: {text[-3000:]}")
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                text = f.read()
            if text.count("starting on") >= (2 if web else 1):
                return log
        time.sleep(0.1)
    raise AssertionError("twistd did not start listening within 30 s")


def reuse(port: int) -> str:
    return buildDescription("proxyprotocol", trusted="127.0.0.1",
                            endpoint=f"reuseport:{port}:interface=127.0.0.1")


class HaproxySendsTests(TestCase):
    """
    haproxy sends the header (send-proxy-v2, send-proxy) to two twistd
    processes that share a port with reuseport:.
    """

    timeout = 120

    def setUp(self) -> None:
        requirePeer("haproxy")

    def backends(self, web: bool = False) -> tuple[int, int]:
        raw = freePort()
        webPort = freePort() if web else 0
        for _ in range(2):
            startTwistd(self, reuse(raw), reuse(webPort) if web else None, rawPort=raw)
        return raw, webPort

    def haproxy(self, target: int, send: str) -> int:
        port, _ = startHaproxy(self, f"""
frontend fe
    bind 127.0.0.1:PORT
    default_backend be
backend be
    server s1 127.0.0.1:{target} {send}
""")
        return port

    @defer.inlineCallbacks
    def ask(self, port: int, bind: str, line: bytes = b"hi\n",
            waitForClose: bool = False) -> Any:
        client = Line(line, waitForClose)
        yield endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10,
                                           bindAddress=(bind, 0)).connect(
            protocol.Factory.forProtocol(lambda: client))
        received = yield client.done.addTimeout(20, reactor)
        return client, received

    @defer.inlineCallbacks
    def realClients(self, send: str) -> Any:
        raw, _ = self.backends()
        front = self.haproxy(raw, send)
        pids = set()
        for n in range(12):
            bind = "127.0.0.2" if n % 2 else "127.0.0.3"
            client, received = yield self.ask(front, bind)
            local = client.transport.getHost()  # type: ignore[union-attr]
            client.transport.loseConnection()  # type: ignore[union-attr]
            pid, seen, now = received.decode().split()
            self.assertEqual(seen, f"{bind}:{local.port}")
            self.assertEqual(now, bind)
            pids.add(pid)
        return pids

    @defer.inlineCallbacks
    def test_sendProxyV2(self) -> Any:
        pids = yield self.realClients("send-proxy-v2")
        # Both processes served (the kernel spreads 12 connections; all to
        # one of them has a chance of 1 in 2048).
        self.assertEqual(len(pids), 2)

    @defer.inlineCallbacks
    def test_sendProxyV1(self) -> Any:
        yield self.realClients("send-proxy")

    @defer.inlineCallbacks
    def test_twistedWebClientAddress(self) -> Any:
        _, web = self.backends(web=True)
        front = self.haproxy(web, "send-proxy-v2")
        for bind in ("127.0.0.2", "127.0.0.3"):
            _client, received = yield self.ask(
                front, bind, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", waitForClose=True)
            self.assertTrue(received.startswith(b"HTTP/1.0 200"), received)
            body = received.split(b"\r\n\r\n", 1)[-1].decode()
            self.assertRegex(body, rf"^\d+ {re.escape(bind)}:\d+$")

    @defer.inlineCallbacks
    def test_limitPerPeerAround(self) -> Any:
        """
        limit:perPeer=1 around proxyprotocol: (one twistd process, so one
        set of counters) refuses a second connection from the same real
        client, and not the first one of another.
        """
        raw = freePort()
        description = buildDescription("limit", perPeer=1, message="busy", endpoint=reuse(raw))
        startTwistd(self, description, rawPort=raw)
        front = self.haproxy(raw, "send-proxy-v2")
        first, received = yield self.ask(front, "127.0.0.2")
        self.assertIn(b"127.0.0.2", received)
        second, received = yield self.ask(front, "127.0.0.2")
        self.assertEqual(received, b"busy\r\n")
        third, received = yield self.ask(front, "127.0.0.3")
        self.assertIn(b"127.0.0.3", received)
        for client in (first, second, third):
            if client.transport is not None:
                client.transport.loseConnection()
        yield deferLater(reactor, 0.1, lambda: None)


class SendingTests(TestCase):
    """
    The client wrapper to haproxy (accept-proxy, logging the address it
    received) and to nginx (stream, answering with it).
    """

    timeout = 120

    @defer.inlineCallbacks
    def connectOnce(self, endpoint: Any, waitForClose: bool = True) -> Any:
        client = Line(b"x\n", waitForClose=waitForClose)
        yield endpoint.connect(protocol.Factory.forProtocol(lambda: client))
        received = yield client.done.addTimeout(20, reactor)
        if client.transport is not None:
            client.transport.loseConnection()
        return received

    @defer.inlineCallbacks
    def test_haproxyAcceptProxy(self) -> Any:
        echo = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(EchoLine))
        self.addCleanup(echo.stopListening)
        port, log = startHaproxyAcceptProxy(self, echo.getHost().port)
        tcp = f"tcp:127.0.0.1:{port}"
        cases = [(1, "192.0.2.71:7101", "192.0.2.71:7101"),
                 (2, "[2001:db8::72]:7102", "2001:db8::72:7102"),
                 (1, None, "127.0.0.1:"), (2, None, "127.0.0.1:")]
        for version, source, _expected in cases:
            description = buildDescription(
                "proxyprotocol", version=version, source=source,
                destination="127.0.0.1:80" if source and "[" not in source else
                ("[2001:db8::1]:80" if source else None), endpoint=tcp)
            received = yield self.connectOnce(endpointkit.clientFromString(reactor, description),
                                              waitForClose=False)
            self.assertEqual(received, b"x\n")
        deadline = time.monotonic() + 10
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = haproxyClientLines(log)
            if len(lines) >= len(cases):
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(lines), len(cases), lines)
        for line, (_, _, expected) in zip(lines, cases, strict=True):
            self.assertTrue(line.startswith("client=" + expected), (line, expected))

    @defer.inlineCallbacks
    def test_nginxProxyProtocol(self) -> Any:
        port = startNginxProxyProtocol(self)
        tcp = f"tcp:127.0.0.1:{port}"
        for version in (1, 2):
            for source, destination, expected in [
                    ("192.0.2.81:8101", "127.0.0.1:80", b"192.0.2.81:8101\n"),
                    ("[2001:db8::82]:8102", "[::1]:80", b"2001:db8::82:8102\n")]:
                description = buildDescription("proxyprotocol", version=version, source=source,
                                               destination=destination, endpoint=tcp)
                received = yield self.connectOnce(
                    endpointkit.clientFromString(reactor, description))
                self.assertEqual(received, expected, (version, source))
            # LOCAL / UNKNOWN: nginx has no address from the header.
            received = yield self.connectOnce(endpointkit.clientFromString(
                reactor, buildDescription("proxyprotocol", version=version, endpoint=tcp)))
            self.assertNotIn(b"192.0.2", received)


class EchoLine(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


