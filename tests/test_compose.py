"""
Composition: every wrapper around every type (Twisted's built-ins,
endpointkit's own), through both parse APIs; server wrappers listened on
and connected through for real; and no prefix taken from a known
third-party plugin.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

import endpointkit
from endpointkit import buildDescription, clientDescriptionsFor, listen, stopListening
from endpointkit._grammar import SIDES
from endpointkit._lookup import ourTypes
from tests._support import Exchange

# Prefixes that well-known third-party packages register: daphne's fd,
# txtorcon's tor and onion, txsni, txacme's le and lets, txi2p, autobahn.
THIRD_PARTY_PREFIXES = {"fd", "tor", "onion", "txsni", "le", "lets", "i2p", "autobahn"}

CLIENT_INNER = [
    "tcp:127.0.0.1:80",
    # Escaped, not bracketed: Twisted's own tls: parses its inner
    # description with Twisted's tokenizer, which splits brackets.
    "tcp:\\:\\:1:80",
    "unix:/tmp/app.sock",
    "ssl:127.0.0.1:443",
    "tls:example.com:443",
    "hostname:localhost:80",
    "memory:compose",
    "timeout:3:endpoint=tcp\\:127.0.0.1\\:80",
    "socks5:example.com:443:endpoint=tcp\\:127.0.0.1\\:1080",
    "socks4a:example.com:443:endpoint=tcp\\:127.0.0.1\\:1080",
    "httpconnect:example.com:443:endpoint=tcp\\:127.0.0.1\\:3128",
    "fallback:tcp\\:127.0.0.1\\:80:unix\\:/tmp/app.sock",
    "race:tcp\\:127.0.0.1\\:80:memory\\:compose:delay=0.1",
    "ssh:db.internal:5432:endpoint=tcp\\:127.0.0.1\\:22:hostKey=SHA256\\:"
    + "A" * 43,
    "sshexec:cat:endpoint=tcp\\:127.0.0.1\\:22:hostKeyAlias=bastion",
    "exec:cat",
    "srv:_imaps._tcp:example.com",
    "srv:imaps:example.com:resolver=127.0.0.1\\:5353:cache=no",
]

CLIENT_WRAPPERS = {
    "timeout": lambda inner: buildDescription("timeout", 5, endpoint=inner),
    "tls": lambda inner: buildDescription("tls", "example.com", 443, endpoint=inner),
    "socks5": lambda inner: buildDescription("socks5", "example.com", 443, endpoint=inner),
    "socks4a": lambda inner: buildDescription("socks4a", "example.com", 443, endpoint=inner),
    "httpconnect": lambda inner: buildDescription("httpconnect", "example.com", 443,
                                                  endpoint=inner),
    "fallback": lambda inner: buildDescription("fallback", inner, "tcp:127.0.0.1:81"),
    "race": lambda inner: buildDescription("race", "tcp:127.0.0.1:81", inner),
    # An inner description without a host (unix:, memory:, exec:) names
    # the host key by hostKeyAlias.
    "ssh": lambda inner: buildDescription("ssh", "example.com", 443, endpoint=inner,
                                          hostKeyAlias="bastion"),
    "sshexec": lambda inner: buildDescription("sshexec", "cat", endpoint=inner,
                                              hostKeyAlias="bastion"),
    "tlswrap": lambda inner: buildDescription("tlswrap", hostname="example.com", endpoint=inner),
    "proxyprotocol": lambda inner: buildDescription("proxyprotocol", endpoint=inner),
}

SERVER_INNER = [
    "tcp:0:interface=127.0.0.1",
    "tcp6:0:interface=\\:\\:1",
    "unix:/tmp/compose.sock",
    "reuseport:0:interface=127.0.0.1",
    "memory:compose",
    "limit:max=3:endpoint=tcp\\:0",
    "multi:tcp\\:0:unix\\:/tmp/compose2.sock",
]

SERVER_WRAPPERS = {
    "limit": lambda inner: buildDescription("limit", endpoint=inner, max=10),
    "multi": lambda inner: buildDescription("multi", inner, "memory:compose-other"),
    "haproxy": lambda inner: f"haproxy:{inner}",
    "proxyprotocol": lambda inner: buildDescription("proxyprotocol", trusted="127.0.0.1|::1",
                                                    endpoint=inner),
}


class PrefixTests(SynchronousTestCase):
    def test_noKnownThirdPartyPrefix(self) -> None:
        ours = {prefix for side in SIDES for prefix in ourTypes(side)}
        self.assertEqual(ours & THIRD_PARTY_PREFIXES, set())
        self.assertEqual(ours & {"tcp", "tcp6", "ssl", "unix", "systemd", "stdio", "tls",
                                 "haproxy"}, set())


class BuildMatrixTests(SynchronousTestCase):
    """
    Every wrapper builds around every type, through endpointkit's parse API
    and through Twisted's plugin discovery.
    """

    def test_clientWrappers(self) -> None:
        reactor = MemoryReactorClock()
        for name, wrap in CLIENT_WRAPPERS.items():
            for inner in CLIENT_INNER:
                description = wrap(inner)
                for parse in (endpointkit.clientFromString, endpoints.clientFromString):
                    built = parse(reactor, description)
                    self.assertTrue(IStreamClientEndpoint.providedBy(built), (name, inner))

    def test_serverWrappers(self) -> None:
        reactor = MemoryReactorClock()
        for name, wrap in SERVER_WRAPPERS.items():
            for inner in SERVER_INNER:
                description = wrap(inner)
                for parse in (endpointkit.serverFromString, endpoints.serverFromString):
                    built = parse(reactor, description)
                    self.assertTrue(IStreamServerEndpoint.providedBy(built), (name, inner))


class TLSWrapBuildTests(SynchronousTestCase):
    """
    C{tlswrap:} (its server side needs a certificate file) around every
    listenable type, and inside every server wrapper.
    """

    def test_aroundAndInside(self) -> None:
        from tests._support import selfSignedCertificate

        certificate, key = selfSignedCertificate("localhost")
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(certificate + key)
        reactor = MemoryReactorClock()
        for inner in SERVER_INNER:
            tls = buildDescription("tlswrap", cert=path, endpoint=inner)
            for description in [tls] + [wrap(tls) for wrap in SERVER_WRAPPERS.values()]:
                for parse in (endpointkit.serverFromString, endpoints.serverFromString):
                    built = parse(reactor, description)
                    self.assertTrue(IStreamServerEndpoint.providedBy(built), description)


class SRVCompositionTests(SynchronousTestCase):
    """
    C{srv:} inside the wrappers (C{timeout:}, and the proxies, where it finds
    the proxy, looked up locally) and as the relay's CONNECT, built without
    a lookup.
    """

    def test_insideWrappers(self) -> None:
        from endpointkit.proxy import SOCKS5ClientEndpoint
        from endpointkit.srv import SRVClientEndpoint

        reactor = MemoryReactorClock()
        inner = "srv:imaps:example.com:resolver=127.0.0.1\\:5353"
        timed = endpointkit.clientFromString(
            reactor, buildDescription("timeout", 5, endpoint=inner))
        self.assertIsInstance(timed.endpoint, SRVClientEndpoint)  # type: ignore[attr-defined]
        proxied = endpointkit.clientFromString(
            reactor, buildDescription("socks5", "example.com", 443, endpoint=inner))
        self.assertIsInstance(proxied, SOCKS5ClientEndpoint)
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_relayConnect(self) -> None:
        from endpointkit.relay import RelayService
        from endpointkit.srv import SRVClientEndpoint

        reactor = MemoryReactorClock()
        service = RelayService("tcp:0:interface=127.0.0.1",
                               "srv:_http._tcp:example.com:resolver=127.0.0.1\\:5353",
                               reactor=reactor)
        endpoint = service.factory.connectEndpoint
        self.assertIsInstance(endpoint, SRVClientEndpoint)
        self.assertEqual(endpoint.recordName, "_http._tcp.example.com")  # type: ignore[attr-defined]


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class ServeMatrixTests(TestCase):
    """
    C{limit:} and C{multi:} around each listenable type: listen, derive the
    client description, connect through C{timeout:}, exchange data.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="endpointkit-compose-")
        self.addCleanup(os.rmdir, self.directory)

    def inners(self) -> list[str]:
        sock = os.path.join(self.directory, "s.sock")
        return [
            "tcp:0:interface=127.0.0.1",
            "tcp6:0:interface=[::1]",
            buildDescription("unix", sock),
            "reuseport:0:interface=127.0.0.1",
            "memory:compose-live",
        ]

    @defer.inlineCallbacks
    def exchangeThrough(self, description: str) -> Any:
        port = yield listen(description, protocol.Factory.forProtocol(Echo))
        try:
            targets = clientDescriptionsFor(port)
            self.assertEqual(len(targets), 2 if "multi" in description else 1)
            for target in targets:
                client = Exchange()
                yield endpoints.connectProtocol(
                    endpointkit.clientFromString(
                        reactor, buildDescription("timeout", 10, endpoint=target)), client)
                received = yield client.done.addTimeout(10, reactor)
                self.assertEqual(received, b"ping", (description, target))
        finally:
            yield stopListening(port)

    @defer.inlineCallbacks
    def test_limitAroundEach(self) -> Any:
        for inner in self.inners():
            yield self.exchangeThrough(buildDescription("limit", endpoint=inner, max=5))

    @defer.inlineCallbacks
    def test_multiAroundEach(self) -> Any:
        for inner in self.inners():
            yield self.exchangeThrough(buildDescription("multi", inner, "memory:compose-second"))

    @defer.inlineCallbacks
    def test_tlswrapAroundEach(self) -> Any:
        """
        C{tlswrap:} around each listenable type, and C{limit:} around it:
        the port's own client descriptions (trusting the test CA) connect.
        """
        from tests._support import TestCA

        ca = TestCA()
        certificate, key = ca.issue("localhost", addresses=["127.0.0.1", "::1"])
        cert = os.path.join(self.directory, "tls.pem")
        roots = os.path.join(self.directory, "ca.pem")
        for path, data in ((cert, certificate + key), (roots, ca.certificatePEM)):
            with open(path, "wb") as f:
                f.write(data)
            self.addCleanup(os.remove, path)
        for inner in self.inners():
            tls = buildDescription("tlswrap", cert=cert, endpoint=inner)
            for description in (tls, buildDescription("limit", endpoint=tls, max=5)):
                port = yield listen(description, protocol.Factory.forProtocol(Echo))
                try:
                    # The lifecycle's description sees through limit: to
                    # the TLS port, which names the host to verify.
                    for target in clientDescriptionsFor(port, trustRoots=roots):
                        client = Exchange()
                        yield endpoints.connectProtocol(
                            endpointkit.clientFromString(reactor, target), client)
                        received = yield client.done.addTimeout(10, reactor)
                        self.assertEqual(received, b"ping", (description, target))
                finally:
                    yield stopListening(port)

    @defer.inlineCallbacks
    def test_proxyprotocolAroundEach(self) -> Any:
        """
        proxyprotocol: around each listenable type; its port's client
        description sends a LOCAL header, served as a direct connection from
        a trusted peer (memory: peers have no IP address: trusted=any).
        """
        for inner in self.inners():
            trusted = "any" if inner.startswith("memory:") else "127.0.0.1|::1|unix"
            yield self.exchangeThrough(buildDescription("proxyprotocol", trusted=trusted,
                                                        endpoint=inner))

    @defer.inlineCallbacks
    def test_limitAndMultiAroundProxyprotocol(self) -> Any:
        inner = buildDescription("proxyprotocol", trusted="127.0.0.1",
                                 endpoint="tcp:0:interface=127.0.0.1")
        yield self.exchangeThrough(buildDescription("limit", endpoint=inner, perPeer=2))
        yield self.exchangeThrough(buildDescription("multi", inner, buildDescription(
            "proxyprotocol", trusted="any", endpoint="memory:compose-pp")))

    def test_proxyprotocolAroundSystemd(self) -> None:
        # systemd: reads LISTEN_FDS when built and adopts descriptor 3 when
        # listened on; here it only builds (tests/lifecycle_systemd.py runs
        # the real systemd-socket-activate).
        from twisted.python.systemd import ListenFDs

        self.patch(endpoints._SystemdParser, "_sddaemon", ListenFDs([3], ["web"]))
        for parse in (endpointkit.serverFromString, endpoints.serverFromString):
            built = parse(reactor, buildDescription(
                "proxyprotocol", trusted="127.0.0.1", endpoint="systemd:domain=INET:index=0"))
            self.assertTrue(IStreamServerEndpoint.providedBy(built))

    @defer.inlineCallbacks
    def test_limitAroundMultiAroundLimit(self) -> Any:
        inner = buildDescription("multi", buildDescription("limit", endpoint="tcp:0:interface=127.0.0.1",
                                                           perPeer=2), "memory:compose-third")
        yield self.exchangeThrough(buildDescription("limit", endpoint=inner, max=5))


class FailoverMatrixTests(TestCase):
    """
    C{fallback:} and C{race:} around live members (TCP, UNIX, C{memory:},
    through C{timeout:}) with a refused member first, and inside
    C{timeout:}: each connects through the live member and exchanges data.
    """

    @defer.inlineCallbacks
    def test_liveExchange(self) -> Any:
        directory = tempfile.mkdtemp(prefix="ekit-fo-")
        self.addCleanup(os.rmdir, directory)
        ports = []
        try:
            targets = []
            for description in ("tcp:0:interface=127.0.0.1",
                                buildDescription("unix", os.path.join(directory, "s")),
                                "memory:compose-failover"):
                port = yield listen(description, protocol.Factory.forProtocol(Echo))
                ports.append(port)
                targets.append(clientDescriptionsFor(port)[0])
            targets.append(buildDescription("timeout", 5, endpoint=targets[0]))
            dead = "unix:" + os.path.join(directory, "nothing-listens")
            for target in targets:
                for outer in (buildDescription("fallback", dead, target),
                              buildDescription("race", dead, target, delay=0.05)):
                    for description in (outer, buildDescription("timeout", 10, endpoint=outer)):
                        client = Exchange()
                        yield endpoints.connectProtocol(
                            endpointkit.clientFromString(reactor, description), client)
                        received = yield client.done.addTimeout(10, reactor)
                        self.assertEqual(received, b"ping", description)
        finally:
            for port in ports:
                yield stopListening(port)
