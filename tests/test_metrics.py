"""
Tests for L{endpointkit.metrics}: exact values after known traffic, masked
labels, and the served text checked by C{promtool} and scraped with C{curl}
over TCP and a UNIX socket.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from twisted.internet import defer, reactor, utils
from twisted.internet.error import ConnectionRefusedError, DNSLookupError, TimeoutError
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

import endpointkit
from endpointkit import ProxyRefused, buildDescription
from endpointkit.deadline import ConnectTimeout
from endpointkit.failover import AllMembersFailed
from endpointkit.lifecycle import DrainResult, gracefulStop, listen
from endpointkit.metrics import (
    FailoverMetrics,
    LifecycleMetrics,
    LimitMetrics,
    RelayMetrics,
    failoverMetrics,
    failureReason,
    maskedDescription,
    serveMetrics,
)
from tests._support import freePort, requirePeer

_reactor: Any = reactor
SECRET = "hunter2-secret"
PROXIED = buildDescription("socks5", "example.com", 80, endpoint="tcp:127.0.0.1:1080",
                           user="u", password=SECRET)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


class RelayMetricsTests(SynchronousTestCase):
    def test_knownTraffic(self) -> None:
        """
        10 connections, 1 refused, 2 failed connects, N bytes each way: the
        samples say exactly that.
        """
        registry = CollectorRegistry()
        metrics = RelayMetrics("tcp:8080:interface=127.0.0.1", "tcp:127.0.0.1:80", registry)
        labels = {"listen": "tcp:8080:interface=127.0.0.1", "connect": "tcp:127.0.0.1:80"}
        for i in range(10):
            metrics.connectionOpened()
            metrics.connected(0.002 * (i + 1))
            metrics.bytesUp(100)
            metrics.bytesDown(1000 + i)
        for _ in range(7):
            metrics.connectionClosed()
        metrics.refused()
        metrics.spliced()
        self.assertEqual(metrics.connectFailed(Failure(ConnectionRefusedError())), "refused")
        self.assertEqual(metrics.connectFailed(ConnectTimeout(None, 1, "x")), "timeout")
        self.assertEqual(value(registry, "endpointkit_relay_connections_total", **labels), 10)
        self.assertEqual(value(registry, "endpointkit_relay_open_connections", **labels), 3)
        self.assertEqual(value(registry, "endpointkit_relay_bytes_total", direction="up",
                               **labels), 1000)
        self.assertEqual(value(registry, "endpointkit_relay_bytes_total", direction="down",
                               **labels), 10045)
        self.assertEqual(value(registry, "endpointkit_relay_refused_connections_total",
                               **labels), 1)
        self.assertEqual(value(registry, "endpointkit_relay_spliced_connections_total",
                               **labels), 1)
        self.assertEqual(value(registry, "endpointkit_relay_connect_failures_total",
                               reason="refused", **labels), 1)
        self.assertEqual(value(registry, "endpointkit_relay_connect_failures_total",
                               reason="timeout", **labels), 1)
        self.assertEqual(value(registry, "endpointkit_relay_connect_seconds_count", **labels), 10)
        self.assertEqual(value(registry, "endpointkit_relay_connect_seconds_bucket",
                               le="0.01", **labels), 5)
        self.assertAlmostEqual(value(registry, "endpointkit_relay_connect_seconds_sum",
                                     **labels) or 0, 0.11)

    def test_twoRelaysToldApartSecretsMasked(self) -> None:
        registry = CollectorRegistry()
        one = RelayMetrics("tcp:8080", PROXIED, registry)
        two = RelayMetrics("tcp:8081", "tcp:127.0.0.1:80", registry)
        one.connectionOpened()
        two.connectionOpened()
        two.connectionOpened()
        self.assertNotIn(SECRET, one.connect)
        self.assertIn("password=***", one.connect)
        text = generate_latest(registry).decode()
        self.assertNotIn(SECRET, text)
        self.assertEqual(value(registry, "endpointkit_relay_connections_total",
                               listen="tcp:8080", connect=one.connect), 1)
        self.assertEqual(value(registry, "endpointkit_relay_connections_total",
                               listen="tcp:8081", connect="tcp:127.0.0.1:80"), 2)

    def test_sameDescriptionSharesSeries(self) -> None:
        registry = CollectorRegistry()
        RelayMetrics("tcp:1", "tcp:127.0.0.1:2", registry).connectionOpened()
        RelayMetrics("tcp:1", "tcp:127.0.0.1:2", registry).connectionOpened()
        self.assertEqual(value(registry, "endpointkit_relay_connections_total",
                               listen="tcp:1", connect="tcp:127.0.0.1:2"), 2)

    def test_defaultRegistry(self) -> None:
        metrics = RelayMetrics("tcp:65001", "tcp:127.0.0.1:65002")
        before = value(REGISTRY, "endpointkit_relay_connections_total",
                       listen="tcp:65001", connect="tcp:127.0.0.1:65002") or 0
        metrics.connectionOpened()
        self.assertEqual(value(REGISTRY, "endpointkit_relay_connections_total",
                               listen="tcp:65001", connect="tcp:127.0.0.1:65002"), before + 1)

    def test_failureReasons(self) -> None:
        cases: list[tuple[Any, str]] = [
            (ConnectionRefusedError(), "refused"),
            (TimeoutError(), "timeout"),
            (ConnectTimeout(None, 2, "x"), "timeout"),
            (DNSLookupError(), "dns"),
            (defer.CancelledError(), "cancelled"),
            (AllMembersFailed("fallback", [("x", ConnectionRefusedError())]),
             "all_members_failed"),
            (ProxyRefused("SOCKS5", 2), "proxy"),
            (ValueError("strange"), "other"),
        ]
        for error, reason in cases:
            self.assertEqual(failureReason(error), reason, error)
            self.assertEqual(failureReason(Failure(error)), reason, error)


class CollectorTests(SynchronousTestCase):
    """
    The families are collectors read at scrape time: what prometheus_client
    registers, finds duplicated and writes is as for its own metrics.
    """

    def test_childCalls(self) -> None:
        registry = CollectorRegistry()
        family = failoverMetrics(registry).attempts
        child = family.labels("fallback:x", "x")
        child.inc()
        child.inc(2)
        self.assertIs(family.labels("fallback:x", "x"), child)
        self.assertEqual(value(registry, "endpointkit_failover_attempts_total",
                               description="fallback:x", member="x"), 3)
        self.assertIsNotNone(value(registry, "endpointkit_failover_attempts_created",
                                   description="fallback:x", member="x"))
        with self.assertRaises(ValueError):
            family.labels("only one")

    def test_duplicateNameRefused(self) -> None:
        from prometheus_client import Counter

        registry = CollectorRegistry()
        Counter("endpointkit_relay_connections", "someone else's", registry=registry)
        with self.assertRaises(ValueError):
            RelayMetrics("tcp:1", "tcp:127.0.0.1:2", registry)

    def test_createdSeriesFollowPrometheusClient(self) -> None:
        from prometheus_client import disable_created_metrics, enable_created_metrics

        registry = CollectorRegistry()
        RelayMetrics("tcp:1", "tcp:127.0.0.1:2", registry).connected(0.1)
        disable_created_metrics()
        try:
            text = generate_latest(registry).decode()
        finally:
            enable_created_metrics()
        self.assertNotIn("_created", text)
        self.assertIn("_created", generate_latest(registry).decode())


class LimitMetricsTests(SynchronousTestCase):
    def test_knownEvents(self) -> None:
        registry = CollectorRegistry()
        description = "limit:max=2:perPeer=1:endpoint=tcp\\:8080"
        metrics = LimitMetrics(description, registry)
        label = metrics.description
        for _ in range(5):
            metrics.opened()
        metrics.closed()
        metrics.refused("max")
        metrics.refused("perPeer")
        metrics.refused("perPeer")
        metrics.timedOut()
        metrics.setPaused(True)
        metrics.setPaused(True)
        self.assertEqual(value(registry, "endpointkit_limit_paused", description=label), 1)
        metrics.setPaused(False)
        metrics.setPaused(True)
        self.assertEqual(value(registry, "endpointkit_limit_open_connections",
                               description=label), 4)
        self.assertEqual(value(registry, "endpointkit_limit_refused_connections_total",
                               description=label, reason="max"), 1)
        self.assertEqual(value(registry, "endpointkit_limit_refused_connections_total",
                               description=label, reason="perPeer"), 2)
        self.assertEqual(value(registry, "endpointkit_limit_timed_out_connections_total",
                               description=label), 1)
        self.assertEqual(value(registry, "endpointkit_limit_pauses_total", description=label), 2)
        self.assertEqual(value(registry, "endpointkit_limit_paused", description=label), 1)
        with self.assertRaises(ValueError) as caught:
            metrics.refused("full")
        self.assertIn("max, perPeer", str(caught.exception))

    def test_zeroSeriesBeforeEvents(self) -> None:
        registry = CollectorRegistry()
        metrics = LimitMetrics("limit:max=1:endpoint=tcp\\:1", registry)
        self.assertEqual(value(registry, "endpointkit_limit_refused_connections_total",
                               description=metrics.description, reason="max"), 0)


class LifecycleMetricsTests(TestCase):
    async def test_listenAndDrain(self) -> None:
        """
        Counted around a real listen and graceful stop with one connection
        that ends by itself.
        """
        registry = CollectorRegistry()
        description = "tcp:0:interface=127.0.0.1"
        metrics = LifecycleMetrics(description, registry)
        port = await listen(description, Factory.forProtocol(Protocol))
        metrics.listened()
        self.assertEqual(value(registry, "endpointkit_listening", description=description), 1)
        started = _reactor.seconds()
        result = await gracefulStop(port, 5)
        metrics.drained(result, _reactor.seconds() - started)
        metrics.listenFailed()
        self.assertEqual(result, DrainResult(0, 0, 0))
        self.assertEqual(value(registry, "endpointkit_listens_total", description=description,
                               result="ok"), 1)
        self.assertEqual(value(registry, "endpointkit_listens_total", description=description,
                               result="failed"), 1)
        self.assertEqual(value(registry, "endpointkit_listening", description=description), 0)
        self.assertEqual(value(registry, "endpointkit_drains_total", description=description), 1)
        self.assertEqual(value(registry, "endpointkit_drain_seconds_count",
                               description=description), 1)

    def test_drainOutcomes(self) -> None:
        registry = CollectorRegistry()
        metrics = LifecycleMetrics("unix:/run/x.sock", registry)
        metrics.drained(DrainResult(finished=7, closed=3, aborted=1), 2.5)
        metrics.stopped()
        for outcome, count in (("finished", 7), ("closed", 3), ("aborted", 1)):
            self.assertEqual(value(registry, "endpointkit_drain_connections_total",
                                   description="unix:/run/x.sock", outcome=outcome), count)


class FailoverMetricsTests(TestCase):
    def test_sharedPerRegistry(self) -> None:
        registry = CollectorRegistry()
        self.assertIs(failoverMetrics(registry), failoverMetrics(registry))
        self.assertIs(failoverMetrics(), failoverMetrics(REGISTRY))
        # A second family object on the same registry shares the families.
        FailoverMetrics(registry).bind("fallback:a", ["a"]).attempt(0)
        failoverMetrics(registry).bind("fallback:a", ["a"]).attempt(0)
        self.assertEqual(value(registry, "endpointkit_failover_attempts_total",
                               description="fallback:a", member="a"), 2)

    async def test_knownTraffic(self) -> None:
        """
        10 connects through C{fallback:} with a refused first member: one
        attempt and one failure on it, 9 cooldown skips, 10 wins for the
        live member; the served text shows no secret.
        """
        registry = CollectorRegistry()
        server = await TCPEcho.listen(self)
        dead = f"tcp:127.0.0.1:{freePort()}"
        live = f"tcp:127.0.0.1:{server}"
        endpoint = endpointkit.FallbackClientEndpoint(
            _reactor, [endpointkit.clientFromString(_reactor, dead),
                       endpointkit.clientFromString(_reactor, live)],
            [dead, live], metrics=failoverMetrics(registry), description="fallback-known")
        for _ in range(10):
            protocol = await endpoint.connect(Factory.forProtocol(Protocol)).addTimeout(
                10, _reactor)
            protocol.transport.abortConnection()
        labels = {"description": "fallback-known"}
        self.assertEqual(value(registry, "endpointkit_failover_attempts_total", member=dead,
                               **labels), 1)
        self.assertEqual(value(registry, "endpointkit_failover_failures_total", member=dead,
                               **labels), 1)
        self.assertEqual(value(registry, "endpointkit_failover_cooldown_skips_total",
                               member=dead, **labels), 9)
        self.assertEqual(value(registry, "endpointkit_failover_wins_total", member=live,
                               **labels), 10)
        self.assertEqual(value(registry, "endpointkit_failover_wins_total", member=dead,
                               **labels), 0)

    def test_descriptionLabelMasked(self) -> None:
        registry = CollectorRegistry()
        endpoint = endpointkit.clientFromString(_reactor, buildDescription("race", PROXIED))
        endpoint.metrics = failoverMetrics(registry).bind(endpoint.description,
                                                          endpoint.descriptions)
        endpoint.metrics.attempt(0)
        text = generate_latest(registry).decode()
        self.assertNotIn(SECRET, text)
        self.assertIn("password\\\\=***", text)
        self.assertEqual(maskedDescription(PROXIED, "client"), endpoint.descriptions[0])


class TCPEcho(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    @staticmethod
    async def listen(test: TestCase) -> int:
        port = await listen("tcp:0:interface=127.0.0.1", Factory.forProtocol(TCPEcho))
        test.addCleanup(port.stopListening)
        number: int = port.getHost().port
        return number


def populated() -> CollectorRegistry:
    registry = CollectorRegistry()
    relay = RelayMetrics("tcp:8080:interface=127.0.0.1", PROXIED, registry)
    for _ in range(10):
        relay.connectionOpened()
        relay.connected(0.003)
    relay.refused()
    relay.bytesUp(12345)
    relay.connectFailed(ConnectionRefusedError())
    limit = LimitMetrics("limit:max=5:endpoint=tcp\\:8080", registry)
    limit.opened()
    limit.refused("max")
    limit.setPaused(True)
    lifecycle = LifecycleMetrics("unix:/run/app.sock", registry)
    lifecycle.listened()
    lifecycle.drained(DrainResult(1, 2, 0), 0.5)
    bound = failoverMetrics(registry).bind(
        buildDescription("fallback", "unix:/run/app.sock", "tcp:127.0.0.1:80"),
        ["unix:/run/app.sock", "tcp:127.0.0.1:80"])
    bound.attempt(0)
    bound.failure(0)
    bound.skip(0)
    bound.win(1)
    return registry


class ServeTests(TestCase):
    """
    L{serveMetrics} on a UNIX socket and on TCP, scraped with curl; the text
    passes C{promtool check metrics}.
    """

    timeout = 60

    async def scrape(self, *curlArgs: str) -> str:
        curl = requirePeer("curl")
        out, err, code = await utils.getProcessOutputAndValue(
            curl, ["-sS", "--max-time", "20", *curlArgs], env=os.environ)
        self.assertEqual(code, 0, err)
        return out.decode()  # type: ignore[no-any-return]

    async def promtool(self, text: str) -> None:
        promtool = requirePeer("promtool", "prometheus")
        directory = tempfile.mkdtemp(prefix="ekit-prom-")
        path = os.path.join(directory, "metrics.txt")
        self.addCleanup(lambda: (os.remove(path), os.rmdir(directory)))
        with open(path, "w") as f:
            f.write(text)
        out, err, code = await utils.getProcessOutputAndValue(
            "/bin/sh", ["-c", f'"{promtool}" check metrics < "{path}"'], env=os.environ)
        self.assertEqual(code, 0, (out + err).decode())

    async def test_unixSocket(self) -> None:
        registry = populated()
        directory = tempfile.mkdtemp(prefix="ekit-m-")
        path = os.path.join(directory, "m.sock")
        port = await serveMetrics(buildDescription("unix", path), registry)
        self.addCleanup(lambda: port.stopListening().addBoth(lambda _: os.rmdir(directory)))
        text = await self.scrape("--unix-socket", path, "http://localhost/metrics")
        self.assertIn('endpointkit_relay_connections_total{connect="socks5:example.com:80:'
                      'endpoint=tcp\\\\:127.0.0.1\\\\:1080:user=u:password=***",'
                      'listen="tcp:8080:interface=127.0.0.1"} 10.0', text)
        # Labels hold the canonical description: positional first, then keywords.
        self.assertIn('endpointkit_limit_refused_connections_total{description="limit:'
                      'endpoint=tcp\\\\:8080:max=5",reason="max"} 1.0', text)
        self.assertNotIn(SECRET, text)
        await self.promtool(text)
        openMetrics = await self.scrape("--unix-socket", path, "-H",
                                        "Accept: application/openmetrics-text; version=1.0.0",
                                        "http://localhost/metrics")
        self.assertTrue(openMetrics.rstrip().endswith("# EOF"), openMetrics[-200:])

    async def test_tcp(self) -> None:
        registry = populated()
        port = await serveMetrics("tcp:0:interface=127.0.0.1", registry)
        self.addCleanup(port.stopListening)
        text = await self.scrape(f"http://127.0.0.1:{port.getHost().port}/metrics")
        self.assertIn("endpointkit_failover_wins_total", text)
        self.assertIn('endpointkit_drain_connections_total{description="unix:/run/app.sock",'
                      'outcome="closed"} 2.0', text)
        await self.promtool(text)

    def test_badDescription(self) -> None:
        with self.assertRaises(endpointkit.DescriptionError):
            serveMetrics("tcp:notaport", CollectorRegistry())
