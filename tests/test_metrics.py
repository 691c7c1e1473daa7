"""
Tests for L{endpointkit.metrics}: exact values after known traffic, masked
labels, and the served text checked by C{promtool} and scraped with C{curl}
over TCP and a UNIX socket.
"""

from __future__ import annotations

import os
import shutil
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
from endpointkit.lifecycle import DrainResult, gracefulStop, listen, stopAll, stopListening
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


# The wiring: the relay, limit: and the lifecycle helpers count real traffic.

UP = 3000
DOWN = 50000


class _Backend(Protocol):
    """
    Reads L{UP} bytes, then answers L{DOWN} bytes and waits for the close.
    """

    def __init__(self) -> None:
        self.received = 0

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received == UP:
            self.transport.write(b"d" * DOWN)  # type: ignore[union-attr]


class _Client(Protocol):
    """
    Sends L{UP} bytes; C{answered} fires once L{DOWN} came back, C{lost}
    when the connection is gone.
    """

    def __init__(self) -> None:
        self.received = 0
        self.answered: defer.Deferred[None] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"u" * UP)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= DOWN and not self.answered.called:
            self.answered.callback(None)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.lost.called:
            self.lost.callback(None)


def _within(d: defer.Deferred[Any], seconds: float = 30.0) -> defer.Deferred[Any]:
    return d.addTimeout(seconds, _reactor)


async def _until(condition: Any, what: str, seconds: float = 30.0) -> None:
    from twisted.internet import task

    deadline = _reactor.seconds() + seconds
    while not condition():
        if _reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(_reactor, 0.01, lambda: None)


class RelayWiringMixin:
    """
    A relay (in this process) counts known traffic exactly, on the path the
    subclass chooses.
    """

    splice: bool

    async def backend(self) -> str:
        test: Any = self
        port = await listen("tcp:0:interface=127.0.0.1", Factory.forProtocol(_Backend),
                            registry=CollectorRegistry())
        test.addCleanup(port.stopListening)
        return f"tcp:127.0.0.1:{port.getHost().port}"

    async def relay(self, listenOn: str, connect: str, **kwargs: Any) -> Any:
        from endpointkit.relay import RelayService

        test: Any = self
        service = RelayService(listenOn, connect, splice=self.splice, reactor=_reactor,
                               **kwargs)
        service.startService()
        test.addCleanup(lambda: service.running and service.stopService())
        await _within(service.listening)
        return service

    async def client(self, port: int) -> _Client:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        test: Any = self
        protocol = _Client()
        await _within(connectProtocol(TCP4ClientEndpoint(_reactor, "127.0.0.1", port),
                                      protocol))
        test.addCleanup(lambda: protocol.lost.called
                        or protocol.transport.abortConnection())  # type: ignore[union-attr]
        return protocol

    async def test_knownTraffic(self) -> None:
        """
        10 relayed connections with C{UP} bytes up and C{DOWN} down each,
        behind C{limit:max=10}, and an 11th that C{limit:} refuses: the
        relay's, C{limit:}'s and the listen's samples say exactly that.
        """
        test: Any = self
        registry = CollectorRegistry()
        port = freePort()
        listenOn = f"limit:max=10:endpoint=tcp\\:{port}\\:interface=127.0.0.1"
        service = await self.relay(listenOn, await self.backend(), registry=registry)
        labels = {"listen": service.metrics.listen, "connect": service.metrics.connect}
        limitLabel = maskedDescription(listenOn, "server")
        limitRefused = ("endpointkit_limit_refused_connections_total",
                        {"description": limitLabel, "reason": "max"})
        refusedBefore = REGISTRY.get_sample_value(*limitRefused) or 0
        clients = [await self.client(port) for _ in range(10)]
        await _within(defer.gatherResults([c.answered for c in clients]))
        self.assertEqual(value(registry, "endpointkit_relay_open_connections", **labels), 10)
        self.assertEqual(REGISTRY.get_sample_value("endpointkit_limit_open_connections",
                                                   {"description": limitLabel}), 10)
        refused = await self.client(port)
        await _within(refused.lost)
        for c in clients:
            c.transport.loseConnection()  # type: ignore[union-attr]
        await _within(defer.gatherResults([c.lost for c in clients]))
        await _until(lambda: value(registry, "endpointkit_relay_open_connections",
                                   **labels) == 0, "every relay to end")
        self.assertEqual([c.received for c in clients], [DOWN] * 10)
        self.assertEqual(value(registry, "endpointkit_relay_connections_total", **labels), 10)
        self.assertEqual(value(registry, "endpointkit_relay_bytes_total", direction="up",
                               **labels), 10 * UP)
        self.assertEqual(value(registry, "endpointkit_relay_bytes_total", direction="down",
                               **labels), 10 * DOWN)
        self.assertEqual(value(registry, "endpointkit_relay_spliced_connections_total",
                               **labels), 10 if service.factory.splice else 0)
        self.assertEqual(value(registry, "endpointkit_relay_connect_seconds_count", **labels),
                         10)
        self.assertEqual(REGISTRY.get_sample_value(*limitRefused), refusedBefore + 1)
        self.assertEqual(REGISTRY.get_sample_value("endpointkit_limit_open_connections",
                                                   {"description": limitLabel}), 0)
        self.assertEqual(service.stats.up, 10 * UP)
        self.assertEqual(service.stats.down, 10 * DOWN)
        self.assertEqual(value(registry, "endpointkit_listens_total",
                               description=service.metrics.listen, result="ok"), 1)
        self.assertEqual(value(registry, "endpointkit_listening",
                               description=service.metrics.listen), 1)
        await service.stopService()
        self.assertEqual(value(registry, "endpointkit_listening",
                               description=service.metrics.listen), 0)
        test.assertFalse(service.running)

    async def test_refusedAndFailed(self) -> None:
        """
        The relay's own cap counts a refusal; a backend that refuses counts
        a connect failure by reason.
        """
        registry = CollectorRegistry()
        capped = await self.relay("tcp:0:interface=127.0.0.1", await self.backend(),
                                  registry=registry, maxConnections=1)
        labels = {"listen": capped.metrics.listen, "connect": capped.metrics.connect}
        number = capped.port.getHost().port
        first = await self.client(number)
        await _within(first.answered)
        second = await self.client(number)
        await _within(second.lost)
        self.assertEqual(value(registry, "endpointkit_relay_refused_connections_total",
                               **labels), 1)
        self.assertEqual(value(registry, "endpointkit_relay_connections_total", **labels), 1)
        dead = f"tcp:127.0.0.1:{freePort()}"
        failing = await self.relay("tcp:0:interface=127.0.0.1", dead, registry=registry)
        lost = await self.client(failing.port.getHost().port)
        await _within(lost.lost)
        await _until(lambda: failing.stats.open == 0, "the failed relay to end")
        self.assertEqual(value(registry, "endpointkit_relay_connect_failures_total",
                               listen=failing.metrics.listen, connect=dead,
                               reason="refused"), 1)

    async def test_servedByInStatsLine(self) -> None:
        """
        Through C{fallback:}, the stats line names the member that served
        the connections, and the default registry is used when none is
        given.
        """
        live = await self.backend()
        dead = f"tcp:127.0.0.1:{freePort()}"
        service = await self.relay("tcp:0:interface=127.0.0.1",
                                   buildDescription("fallback", dead, live))
        labels = {"listen": service.metrics.listen, "connect": service.metrics.connect}
        before = REGISTRY.get_sample_value("endpointkit_relay_connections_total", labels) or 0
        for _ in range(2):
            c = await self.client(service.port.getHost().port)
            await _within(c.answered)
            c.transport.loseConnection()  # type: ignore[union-attr]
            await _within(c.lost)
        await _until(lambda: service.stats.open == 0, "the relays to end")
        self.assertIn(f"; served by {live} (2)", service.stats.line())
        self.assertEqual(REGISTRY.get_sample_value("endpointkit_relay_connections_total",
                                                   labels), before + 2)

    async def test_metricsOff(self) -> None:
        """
        C{metrics=False} counts nothing into any registry (the relay still
        keeps its stats).
        """
        registry = CollectorRegistry()
        service = await self.relay("tcp:0:interface=127.0.0.1", await self.backend(),
                                   registry=registry, metrics=False)
        c = await self.client(service.port.getHost().port)
        await _within(c.answered)
        self.assertIsNone(service.metrics)
        self.assertEqual(service.stats.total, 1)
        self.assertNotIn("endpointkit_relay_", generate_latest(registry).decode())


class SpliceRelayWiringTests(RelayWiringMixin, TestCase):
    splice = True

    def setUp(self) -> None:
        from endpointkit import _splice

        if not _splice.spliceAvailable():  # pragma: no cover - Linux has it
            self.splice = False


class CopyRelayWiringTests(RelayWiringMixin, TestCase):
    splice = False


class ChosenTargetTests(SynchronousTestCase):
    def test_exposed(self) -> None:
        from endpointkit.relay import RelayStats, chosenTarget

        class Endpoint:
            chosenTarget = "db1.example.com:5432"

        class ByProtocol:
            def chosenTarget(self, protocol: object) -> str:
                return f"for {protocol}"

        self.assertEqual(chosenTarget(Endpoint(), None), "db1.example.com:5432")
        self.assertEqual(chosenTarget(ByProtocol(), "p"), "for p")
        self.assertIsNone(chosenTarget(object(), None))
        stats = RelayStats(targets={"db1.example.com:5432": 3})
        self.assertTrue(stats.line().endswith("; targets db1.example.com:5432 (3)"))


class LimitWiringTests(SynchronousTestCase):
    def test_events(self) -> None:
        """
        C{limit:}'s factory counts opens, refusals by cap, idle closes and
        pauses into the metrics it is given.
        """
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock
        from twisted.test.proto_helpers import StringTransport

        from endpointkit.limit import LimitingFactory

        registry = CollectorRegistry()
        metrics = LimitMetrics("limit:max=2:perPeer=1:idle=5:endpoint=tcp\\:8080", registry)
        clock = Clock()
        factory = LimitingFactory(Factory.forProtocol(Protocol), 2, 1, idle=5, clock=clock,
                                  metrics=metrics)
        label = {"description": metrics.description}

        def peer(host: str) -> Any:
            protocol = factory.buildProtocol(IPv4Address("TCP", host, 1234))
            protocol.makeConnection(StringTransport())
            return protocol

        first = peer("127.0.0.1")
        peer("127.0.0.1")  # over perPeer
        peer("127.0.0.2")
        peer("127.0.0.3")  # over max
        self.assertEqual(value(registry, "endpointkit_limit_open_connections", **label), 2)
        self.assertEqual(value(registry, "endpointkit_limit_refused_connections_total",
                               reason="perPeer", **label), 1)
        self.assertEqual(value(registry, "endpointkit_limit_refused_connections_total",
                               reason="max", **label), 1)
        clock.advance(5)
        self.assertEqual(value(registry, "endpointkit_limit_timed_out_connections_total",
                               **label), 2)
        first.connectionLost(Failure(ConnectionRefusedError()))
        self.assertEqual(value(registry, "endpointkit_limit_open_connections", **label), 1)

    def test_paused(self) -> None:
        """
        With C{pause=yes}, reaching the cap counts one pause and sets the
        gauge; the next close clears it.
        """
        from twisted.internet.task import Clock
        from twisted.test.proto_helpers import StringTransport

        from endpointkit.limit import LimitingFactory

        class Acceptor:
            reading = True

            def stopReading(self) -> None:
                self.reading = False

            def startReading(self) -> None:
                self.reading = True

        registry = CollectorRegistry()
        metrics = LimitMetrics("limit:max=1:pause=yes:endpoint=tcp\\:8080", registry)
        factory = LimitingFactory(Factory.forProtocol(Protocol), 1, pause=True, clock=Clock(),
                                  metrics=metrics)
        acceptor = Acceptor()
        factory.port = acceptor
        label = {"description": metrics.description}
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.assertFalse(acceptor.reading)
        self.assertEqual(value(registry, "endpointkit_limit_paused", **label), 1)
        self.assertEqual(value(registry, "endpointkit_limit_pauses_total", **label), 1)
        protocol.connectionLost(Failure(ConnectionRefusedError()))
        self.assertTrue(acceptor.reading)
        self.assertEqual(value(registry, "endpointkit_limit_paused", **label), 0)
        self.assertEqual(value(registry, "endpointkit_limit_pauses_total", **label), 1)

    def test_fromDescription(self) -> None:
        """
        A C{limit:} built from its description counts under its masked
        description in the default registry.
        """
        from endpointkit._lookup import parseDescription

        description = "limit:max=3:endpoint=tcp\\:0\\:interface=127.0.0.1"
        endpoint = parseDescription(description, "server").build(_reactor)
        self.assertIsInstance(endpoint.metrics, LimitMetrics)
        self.assertEqual(endpoint.metrics.description, maskedDescription(description, "server"))


class LifecycleWiringTests(TestCase):
    async def test_listenAndGracefulStop(self) -> None:
        """
        L{listen} counts the listen into the registry it is given, and
        L{gracefulStop} the drain and the end of listening.
        """
        registry = CollectorRegistry()
        description = "tcp:0:interface=127.0.0.1"
        port = await listen(description, Factory.forProtocol(Protocol), registry=registry)
        self.assertEqual(value(registry, "endpointkit_listens_total", description=description,
                               result="ok"), 1)
        self.assertEqual(value(registry, "endpointkit_listening", description=description), 1)
        result = await gracefulStop(port, 5)
        self.assertEqual(result, DrainResult(0, 0, 0))
        self.assertEqual(value(registry, "endpointkit_drains_total", description=description),
                         1)
        self.assertEqual(value(registry, "endpointkit_drain_seconds_count",
                               description=description), 1)
        self.assertEqual(value(registry, "endpointkit_listening", description=description), 0)

    async def _stoppedBy(self, stop: Any) -> tuple[CollectorRegistry, str, list[None]]:
        """
        Listen through L{listen} with metrics, stop the port with C{stop}
        (called with it), and count the calls to its metrics' C{stopped}.
        """
        registry = CollectorRegistry()
        description = "tcp:0:interface=127.0.0.1"
        port = await listen(description, Factory.forProtocol(Protocol), registry=registry)
        self.addCleanup(stopListening, port)
        calls: list[None] = []
        counted = port.metrics.stopped

        def stopped() -> None:
            calls.append(None)
            counted()

        port.metrics.stopped = stopped
        self.assertEqual(value(registry, "endpointkit_listening", description=description), 1)
        await _within(defer.ensureDeferred(stop(port)))
        return registry, description, calls

    def _assertStoppedOnce(self, registry: CollectorRegistry, description: str,
                           calls: list[None]) -> None:
        self.assertEqual(value(registry, "endpointkit_listening", description=description), 0)
        self.assertEqual(len(calls), 1)
        self.assertEqual(value(registry, "endpointkit_listens_total", description=description,
                               result="ok"), 1)
        self.assertEqual(value(registry, "endpointkit_listens_total", description=description,
                               result="failed"), 0)
        self.assertEqual(value(registry, "endpointkit_drains_total", description=description),
                         0)

    async def test_stopListeningMethod(self) -> None:
        """
        The port's own C{stopListening} ends listening in the metrics, once
        however often it is called.
        """
        async def stop(port: Any) -> None:
            await port.stopListening()
            await port.stopListening()

        self._assertStoppedOnce(*await self._stoppedBy(stop))

    async def test_stopListeningFunction(self) -> None:
        """
        L{endpointkit.lifecycle.stopListening} ends listening in the metrics.
        """
        async def stop(port: Any) -> None:
            await stopListening(port)

        self._assertStoppedOnce(*await self._stoppedBy(stop))

    async def test_stopAll(self) -> None:
        """
        L{endpointkit.lifecycle.stopAll} ends listening in the metrics.
        """
        async def stop(port: Any) -> None:
            await stopAll([port])

        self._assertStoppedOnce(*await self._stoppedBy(stop))

    async def test_stoppedEveryWay(self) -> None:
        """
        A port stopped by its method, then by L{stopListening} and
        L{stopAll} while or after it stops, ends listening once.
        """
        async def stop(port: Any) -> None:
            first = port.stopListening()
            await stopAll([port])
            await first
            await stopListening(port)
            await stopAll([port])

        self._assertStoppedOnce(*await self._stoppedBy(stop))

    async def test_wrappedPortStoppedFirst(self) -> None:
        """
        A port whose socket was closed underneath it (its C{wrappedPort}
        stopped directly) ends listening in the metrics when it is stopped.
        """
        async def stop(port: Any) -> None:
            await port.wrappedPort.stopListening()
            await stopAll([port])

        self._assertStoppedOnce(*await self._stoppedBy(stop))

    async def test_multiStoppedByStopAll(self) -> None:
        """
        A C{multi:} port from L{listen}, stopped with L{stopAll}, ends
        listening once, and its addresses are free again.
        """
        registry = CollectorRegistry()
        first, second = freePort(), freePort()
        description = buildDescription("multi", f"tcp:{first}:interface=127.0.0.1",
                                       f"tcp:{second}:interface=127.0.0.1")
        port = await listen(description, Factory.forProtocol(Protocol), registry=registry)
        self.addCleanup(stopListening, port)
        shown = port.metrics.description
        self.assertEqual(value(registry, "endpointkit_listening", description=shown), 1)
        await _within(stopAll([port]))
        self.assertEqual(value(registry, "endpointkit_listening", description=shown), 0)
        again = await listen(description, Factory.forProtocol(Protocol), registry=registry)
        self.assertEqual(value(registry, "endpointkit_listening", description=shown), 1)
        self.assertEqual(value(registry, "endpointkit_listens_total", description=shown,
                               result="ok"), 2)
        await _within(stopAll([again]))
        self.assertEqual(value(registry, "endpointkit_listening", description=shown), 0)

    async def test_listenFailed(self) -> None:
        registry = CollectorRegistry()
        port = await listen("tcp:0:interface=127.0.0.1", Factory.forProtocol(Protocol))
        self.addCleanup(port.stopListening)
        taken = f"tcp:{port.getHost().port}:interface=127.0.0.1"
        with self.assertRaises(endpointkit.ListenError):
            await listen(taken, Factory.forProtocol(Protocol), registry=registry)
        self.assertEqual(value(registry, "endpointkit_listens_total", description=taken,
                               result="failed"), 1)


class RelayCommandMetricsTests(TestCase):
    """
    C{endpointkit relay --metrics unix:PATH}, a real subprocess: scraped
    with curl through the UNIX socket, checked by promtool, and C{SIGUSR1}
    logs the stats line at once.
    """

    timeout = 90
    scrape = ServeTests.scrape
    promtool = ServeTests.promtool

    async def test_unixSocket(self) -> None:
        import signal
        import socket

        from twisted.internet import threads

        from tests.test_relay import RelayProcess

        curl = requirePeer("curl")
        self.assertTrue(curl)
        backend = await TCPEcho.listen(self)
        directory = tempfile.mkdtemp(prefix="ekit-rm-")
        path = os.path.join(directory, "metrics.sock")
        self.addCleanup(shutil.rmtree, directory, True)
        port = freePort()
        relay = RelayProcess(self, ["--metrics", buildDescription("unix", path),
                                    f"tcp:{port}:interface=127.0.0.1",
                                    f"tcp:127.0.0.1:{backend}"], port)
        await _until(lambda: os.path.exists(path), "the metrics socket")

        def exchange() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(b"x" * 1000)
                got = b""
                while len(got) < 1000:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                return got

        # waitForPort's probe was one connection already.
        self.assertEqual(await threads.deferToThread(exchange), b"x" * 1000)
        labels = (f'connect="tcp:127.0.0.1:{backend}",'
                  f'listen="tcp:{port}:interface=127.0.0.1"')

        async def scraped() -> str:
            return await self.scrape("--unix-socket", path, "http://localhost/metrics")

        text = ""
        for _ in range(200):
            text = await scraped()
            if f'endpointkit_relay_open_connections{{{labels}}} 0.0' in text:
                break
        self.assertIn(f'endpointkit_relay_connections_total{{{labels}}} 2.0', text)
        for direction in ("up", "down"):
            self.assertIn(f'endpointkit_relay_bytes_total{{connect="tcp:127.0.0.1:{backend}",'
                          f'direction="{direction}",listen="tcp:{port}:interface=127.0.0.1"}}'
                          f' 1000.0', text)
        self.assertIn(f'endpointkit_relay_open_connections{{{labels}}} 0.0', text)
        await self.promtool(text)
        relay.process.send_signal(signal.SIGUSR1)
        await _until(lambda: "relay stats: open=0 total=2" in relay.output(),
                     "the stats line after SIGUSR1")
        self.assertIn("up=1000 B down=1000 B", relay.output())
        code, output = relay.stop()
        self.assertEqual(code, 0, output)
        self.assertFalse(os.path.exists(path))


class RelayOptionsTests(SynchronousTestCase):
    def test_twistdPlugin(self) -> None:
        """
        The twistd plugin's service serves the metrics with C{--metrics}
        and handles C{SIGUSR1}; without it the relay counts nothing.
        """
        from twisted.python import usage

        from endpointkit._relaycli import MetricsService, Options, StatsSignalService, makeService

        options = Options()
        options.parseOptions(["--metrics", "unix:/tmp/m.sock", "tcp:1", "tcp:127.0.0.1:2"])
        top: Any = makeService(options)
        kinds = [type(s) for s in top]
        self.assertIn(MetricsService, kinds)
        self.assertIn(StatsSignalService, kinds)
        relay = next(s for s in top if type(s).__name__ == "RelayService")
        self.assertIsNotNone(relay.metrics)
        plain = Options()
        plain.parseOptions(["tcp:1", "tcp:127.0.0.1:2"])
        top = makeService(plain)
        self.assertNotIn(MetricsService, [type(s) for s in top])
        self.assertIsNone(next(s for s in top if type(s).__name__ == "RelayService").metrics)
        bad = Options()
        with self.assertRaises(usage.UsageError) as caught:
            bad.parseOptions(["--metrics", "tcp:notaport", "tcp:1", "tcp:127.0.0.1:2"])
        self.assertIn("metrics:", str(caught.exception))
