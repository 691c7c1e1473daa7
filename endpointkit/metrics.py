"""
Prometheus metrics for endpointkit's relay, wrappers and lifecycle helpers,
on prometheus_client, and a function that serves them on any server
description::

    from endpointkit.metrics import RelayMetrics, serveMetrics

    metrics = RelayMetrics("tcp:8080", "fallback:tcp\\\\:a\\\\:80:tcp\\\\:b\\\\:80")
    metrics.connectionOpened()
    ...
    port = yield serveMetrics("unix:/run/relay-metrics.sock")
    # curl --unix-socket /run/relay-metrics.sock http://localhost/metrics

Each object here is the small API that one instrumented part calls
(L{RelayMetrics}, L{LimitMetrics}, L{LifecycleMetrics}, and
L{FailoverMetrics} bound to one endpoint for C{fallback:} and C{race:}).  It
registers its metric families into the L{CollectorRegistry} the
application passes in, prometheus_client's global C{REGISTRY} by default;
families are made once per registry and shared, and every series is
labelled with the description it belongs to, secrets masked (a string is
parsed to mask it; an endpoint's own C{Parsed} may be given instead), so
that two listeners or two CONNECT endpoints are told apart.  Objects made
with the same description add to the same series.  Series are made, at
zero, when the object is made, so that a scrape shows them before the first
event.

Counting costs an addition: each series is a plain number that the object
changes in place, with no lock and no call into prometheus_client, and each
family is a collector of its own that the registry reads when it is scraped
(the text is what prometheus_client's own counters, gauges and histograms
give, C{_created} series included).  Count in the reactor's thread, where
endpointkit's code runs; a scrape may come from any thread.

The metric names (each with a C{description} label, and the relay's with
C{listen} and C{connect} instead):

  - relay: C{endpointkit_relay_open_connections} (gauge),
    C{endpointkit_relay_connections_total}, C{endpointkit_relay_bytes_total}
    by C{direction} (C{up}: client to backend, C{down}: backend to client),
    C{endpointkit_relay_connect_failures_total} by C{reason} (see
    L{failureReason}), C{endpointkit_relay_connect_seconds} (histogram),
    C{endpointkit_relay_refused_connections_total},
    C{endpointkit_relay_spliced_connections_total};
  - C{limit:}: C{endpointkit_limit_open_connections} (gauge),
    C{endpointkit_limit_refused_connections_total} by C{reason} (C{max} or
    C{perPeer}), C{endpointkit_limit_timed_out_connections_total},
    C{endpointkit_limit_paused} (gauge, 0 or 1),
    C{endpointkit_limit_pauses_total};
  - C{fallback:} and C{race:}: C{endpointkit_failover_attempts_total},
    C{endpointkit_failover_failures_total},
    C{endpointkit_failover_cooldown_skips_total} and
    C{endpointkit_failover_wins_total}, each by C{member}, and
    C{endpointkit_failover_all_failed_total};
  - lifecycle: C{endpointkit_listens_total} by C{result} (C{ok} or
    C{failed}), C{endpointkit_listening} (gauge),
    C{endpointkit_drains_total}, C{endpointkit_drain_connections_total} by
    C{outcome} (C{finished}, C{closed}, C{aborted}),
    C{endpointkit_drain_seconds} (histogram).
"""

from __future__ import annotations

import math
import time
import weakref
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import metrics as _prometheusMetrics
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString
from twisted.internet import defer, error
from twisted.internet.interfaces import IListeningPort

from endpointkit._grammar import DescriptionError, Side
from endpointkit._schema import Parsed

__all__ = [
    "BoundFailoverMetrics",
    "FailoverMetrics",
    "LifecycleMetrics",
    "LimitMetrics",
    "RelayMetrics",
    "failoverMetrics",
    "failureReason",
    "maskedDescription",
    "metricsResource",
    "serveMetrics",
]

CONNECT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0)
"""
The buckets of the relay's connect latency, in seconds.
"""

DRAIN_BUCKETS = (0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""
The buckets of the drain duration, in seconds.
"""


def maskedDescription(description: str | Parsed, side: Side) -> str:
    """
    The text of C{description} with its secrets shown as C{***}: a
    L{Parsed} description gives its masked text; a string is parsed for
    C{side} to find them (a string that is not a description is taken as it
    is).
    """
    if isinstance(description, Parsed):
        return description.description(masked=True)
    from endpointkit._lookup import parseDescription

    try:
        return parseDescription(description, side).description(masked=True)
    except DescriptionError:
        return description


def failureReason(failure: object) -> str:
    """
    A short, bounded name for why a connect failed, for a C{reason} label:
    C{refused}, C{timeout}, C{dns}, C{unreachable}, C{cancelled},
    C{all_members_failed} (C{fallback:}, C{race:}), C{proxy} (a proxy
    refused or broke the handshake), C{tls}, or C{other}.

    @param failure: a L{twisted.python.failure.Failure} or an exception.
    """
    value = getattr(failure, "value", failure)
    from endpointkit._handshake import ProxyError
    from endpointkit.failover import AllMembersFailed

    if isinstance(value, AllMembersFailed):
        return "all_members_failed"
    if isinstance(value, ProxyError):
        return "proxy"
    if isinstance(value, error.ConnectionRefusedError):
        return "refused"
    if isinstance(value, error.TimeoutError):
        return "timeout"
    if isinstance(value, error.DNSLookupError):
        return "dns"
    if isinstance(value, error.NoRouteError):
        return "unreachable"
    if isinstance(value, defer.CancelledError):
        return "cancelled"
    try:
        from OpenSSL.SSL import Error as TLSError
    except ImportError:  # pragma: no cover - pyOpenSSL is a dependency
        return "other"
    if isinstance(value, TLSError):
        return "tls"
    return "other"


class _Value:
    """
    The value of one series: a number the instrumented code changes in
    place (C{value += 1}), read when the registry is scraped.  It has the
    calls of prometheus_client's children (C{inc}, C{dec}, C{set}) for code
    that prefers them.

    @ivar created: when the series was made (seconds since the epoch), shown
        as prometheus_client shows it (C{_created}) for counters.
    """

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value: float = 0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class _Buckets:
    """
    The value of one histogram series: a count per bucket (not cumulative:
    the scrape adds them up), and the sum.
    """

    __slots__ = ("counts", "created", "sum", "upper")

    def __init__(self, upper: tuple[float, ...]) -> None:
        self.upper = upper
        self.counts = [0] * (len(upper) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.upper, amount)] += 1
        self.sum += amount


_KINDS = ("counter", "gauge", "histogram")

# How prometheus_client writes a bucket's bound in its "le" label.
_goFloat: Any = floatToGoString


class _Family:
    """
    One metric family in one registry, as a collector of its own: its series
    are plain numbers (L{_Value}, L{_Buckets}) that the instrumented code
    changes without a lock or a call into prometheus_client, and that the
    registry reads only when it is scraped.  Counting is done in the
    reactor's thread (where endpointkit's code runs); a scrape from another
    thread reads numbers that are at most one event old.
    """

    def __init__(self, kind: str, name: str, documentation: str,
                 labelNames: Sequence[str], buckets: Sequence[float] = ()) -> None:
        self.kind = kind
        self.name = name
        self.documentation = documentation
        self.labelNames = tuple(labelNames)
        upper = tuple(float(b) for b in buckets if b != math.inf)
        self.buckets = upper
        self._bounds = [_goFloat(b) for b in upper] + ["+Inf"]
        self.series: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        """
        The series with these label values (in the order of the family's
        label names), made at zero on first use.
        """
        if len(values) != len(self.labelNames):
            raise ValueError(f"{self.name} takes the labels {', '.join(self.labelNames)}, "
                             f"got {len(values)} values")
        key = tuple(str(v) for v in values)
        found = self.series.get(key)
        if found is None:
            found = self.series[key] = (_Buckets(self.buckets) if self.kind == "histogram"
                                        else _Value())
        return found

    def _empty(self) -> Metric:
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.documentation, labels=self.labelNames)
        if self.kind == "gauge":
            return GaugeMetricFamily(self.name, self.documentation, labels=self.labelNames)
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelNames)

    def describe(self) -> list[Metric]:
        return [self._empty()]

    def collect(self) -> list[Metric]:
        family: Any = self._empty()
        created = getattr(_prometheusMetrics, "_use_created", True)
        for key, series in list(self.series.items()):
            if self.kind == "counter":
                family.add_metric(key, series.value, series.created if created else None)
            elif self.kind == "gauge":
                family.add_metric(key, series.value)
            else:
                running = 0
                cumulative = []
                for bound, count in zip(self._bounds, series.counts, strict=True):
                    running += count
                    cumulative.append((bound, running))
                family.add_metric(key, cumulative, series.sum)
                if created:
                    family.samples.append(Sample(
                        self.name + "_created", dict(zip(self.labelNames, key, strict=True)),
                        series.created))
        return [family]


_families: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Family]] = (
    weakref.WeakKeyDictionary())


def _family(registry: CollectorRegistry, kind: str, name: str, documentation: str,
            labels: Sequence[str], **options: Any) -> _Family:
    """
    The metric family C{name} in C{registry}, made and registered on first
    use: one family per registry, whatever number of objects label into it.
    """
    assert kind in _KINDS, kind
    known = _families.setdefault(registry, {})
    family = known.get(name)
    if family is None:
        family = _Family(kind, name, documentation, labels, **options)
        registry.register(family)
        known[name] = family
    elif family.kind != kind:
        raise TypeError(f"{name} is already registered as a {family.kind}")
    return family


def _registry(registry: CollectorRegistry | None) -> CollectorRegistry:
    return REGISTRY if registry is None else registry


class RelayMetrics:
    """
    The relay's metrics for one relay (one listen description and one
    connect description), and the calls that count into them.

    @param listen: the relay's server description.
    @param connect: the relay's client description (CONNECT).
    @param registry: where the families are registered (default:
        prometheus_client's global C{REGISTRY}).
    """

    def __init__(self, listen: str | Parsed, connect: str | Parsed,
                 registry: CollectorRegistry | None = None) -> None:
        registry = _registry(registry)
        self.listen = maskedDescription(listen, "server")
        self.connect = maskedDescription(connect, "client")
        names = ("listen", "connect")
        labels = (self.listen, self.connect)
        self._open = _family(registry, "gauge", "endpointkit_relay_open_connections",
                             "Relayed connections open now", names).labels(*labels)
        self._total = _family(registry, "counter", "endpointkit_relay_connections",
                              "Connections the relay accepted and relayed", names
                              ).labels(*labels)
        transferred = _family(registry, "counter", "endpointkit_relay_bytes",
                              "Bytes relayed (up: client to backend, down: backend to client)",
                              (*names, "direction"))
        self._up = transferred.labels(*labels, "up")
        self._down = transferred.labels(*labels, "down")
        self._failures = _family(registry, "counter", "endpointkit_relay_connect_failures",
                                 "Backend connects that failed, by reason",
                                 (*names, "reason"))
        self._latency = _family(registry, "histogram", "endpointkit_relay_connect_seconds",
                                "Seconds from accepting a client to the backend connection",
                                names, buckets=CONNECT_BUCKETS).labels(*labels)
        self._refused = _family(registry, "counter", "endpointkit_relay_refused_connections",
                                "Connections the relay refused (over its caps)", names
                                ).labels(*labels)
        self._spliced = _family(registry, "counter", "endpointkit_relay_spliced_connections",
                                "Relayed connections that moved their bytes with splice()",
                                names).labels(*labels)
        self._labels = labels
        self._failuresBy: dict[str, Any] = {}

    def connectionOpened(self) -> None:
        """
        A client was accepted and is being relayed.
        """
        self._open.value += 1
        self._total.value += 1

    def connectionClosed(self) -> None:
        """
        A relayed connection ended (both sides closed).
        """
        self._open.value -= 1

    def bytesUp(self, count: int) -> None:
        """
        C{count} bytes went from a client to the backend.
        """
        self._up.value += count

    def bytesDown(self, count: int) -> None:
        """
        C{count} bytes went from the backend to a client.
        """
        self._down.value += count

    def connected(self, seconds: float) -> None:
        """
        The backend connection was made, C{seconds} after the client was
        accepted.
        """
        self._latency.observe(seconds)

    def connectFailed(self, failure: object) -> str:
        """
        The backend connection failed with C{failure} (a failure or an
        exception).

        @return: the reason it was counted under (L{failureReason}).
        """
        reason = failureReason(failure)
        counter = self._failuresBy.get(reason)
        if counter is None:
            counter = self._failuresBy[reason] = self._failures.labels(*self._labels, reason)
        counter.value += 1
        return reason

    def refused(self) -> None:
        """
        A client was refused over a cap.
        """
        self._refused.value += 1

    def spliced(self) -> None:
        """
        A relayed connection moves its bytes with C{splice()}.
        """
        self._spliced.value += 1


LIMIT_REASONS = ("max", "perPeer")
"""
The reasons L{LimitMetrics.refused} counts: over the total cap, over the
per-peer cap (C{limit:}'s argument names).
"""


class LimitMetrics:
    """
    C{limit:}'s metrics for one C{limit:} description.

    @param description: the C{limit:} server description.
    @param registry: where the families are registered (default:
        prometheus_client's global C{REGISTRY}).
    """

    def __init__(self, description: str | Parsed,
                 registry: CollectorRegistry | None = None) -> None:
        registry = _registry(registry)
        self.description = maskedDescription(description, "server")
        label = self.description
        self._open = _family(registry, "gauge", "endpointkit_limit_open_connections",
                             "Connections open now under limit:", ("description",)
                             ).labels(label)
        refused = _family(registry, "counter", "endpointkit_limit_refused_connections",
                          "Connections limit: refused, by the cap they were over",
                          ("description", "reason"))
        self._refused = {reason: refused.labels(label, reason) for reason in LIMIT_REASONS}
        self._timedOut = _family(registry, "counter", "endpointkit_limit_timed_out_connections",
                                 "Connections limit: closed for being idle", ("description",)
                                 ).labels(label)
        self._paused = _family(registry, "gauge", "endpointkit_limit_paused",
                               "1 while limit: has stopped accepting at its cap",
                               ("description",)).labels(label)
        self._pauses = _family(registry, "counter", "endpointkit_limit_pauses",
                               "Times limit: stopped accepting at its cap", ("description",)
                               ).labels(label)
        self._isPaused = False

    def opened(self) -> None:
        """
        A connection was accepted under the caps.
        """
        self._open.value += 1

    def closed(self) -> None:
        """
        An accepted connection ended.
        """
        self._open.value -= 1

    def refused(self, reason: str) -> None:
        """
        A connection was refused over a cap.

        @param reason: one of L{LIMIT_REASONS}.
        @raise ValueError: for another reason.
        """
        counter = self._refused.get(reason)
        if counter is None:
            raise ValueError(f"limit: refusal reason must be one of {', '.join(LIMIT_REASONS)}, "
                             f"got {reason!r}")
        counter.value += 1

    def timedOut(self) -> None:
        """
        A connection was closed for being idle.
        """
        self._timedOut.value += 1

    def setPaused(self, paused: bool) -> None:
        """
        Accepting stopped (C{True}) or resumed (C{False}); a pause is counted
        once however often it is reported.
        """
        if paused and not self._isPaused:
            self._pauses.value += 1
        self._isPaused = paused
        self._paused.value = 1 if paused else 0


class BoundFailoverMetrics:
    """
    L{FailoverMetrics} for one C{fallback:} or C{race:} endpoint: each call
    takes the member's index, in description order.
    """

    def __init__(self, family: FailoverMetrics, description: str,
                 members: Sequence[str]) -> None:
        self.description = description
        self.members = list(members)
        self._attempts = [family.attempts.labels(description, m) for m in self.members]
        self._failures = [family.failures.labels(description, m) for m in self.members]
        self._skips = [family.cooldownSkips.labels(description, m) for m in self.members]
        self._wins = [family.wins.labels(description, m) for m in self.members]
        self._allFailed = family.allFailed.labels(description)

    def attempt(self, index: int) -> None:
        """
        An attempt through member C{index} started.
        """
        self._attempts[index].value += 1

    def failure(self, index: int) -> None:
        """
        Member C{index}'s attempt failed (or timed out).
        """
        self._failures[index].value += 1

    def skip(self, index: int) -> None:
        """
        Member C{index} was skipped, cooling down after a failure.
        """
        self._skips[index].value += 1

    def win(self, index: int) -> None:
        """
        Member C{index} made the connection.
        """
        self._wins[index].value += 1

    def allFailed(self) -> None:
        """
        A connect failed with every member.
        """
        self._allFailed.value += 1


class FailoverMetrics:
    """
    The metric families of C{fallback:} and C{race:} in one registry; get it
    with L{failoverMetrics}, and L{bind} it to one endpoint.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = _registry(registry)
        self.registry = registry
        labels = ("description", "member")
        self.attempts = _family(registry, "counter", "endpointkit_failover_attempts",
                                "Attempts started through each member", labels)
        self.failures = _family(registry, "counter", "endpointkit_failover_failures",
                                "Attempts through each member that failed or timed out",
                                labels)
        self.cooldownSkips = _family(registry, "counter", "endpointkit_failover_cooldown_skips",
                                     "Times a member was skipped, cooling down after a failure",
                                     labels)
        self.wins = _family(registry, "counter", "endpointkit_failover_wins",
                            "Connections made through each member", labels)
        self.allFailed = _family(registry, "counter", "endpointkit_failover_all_failed",
                                 "Connects that failed with every member", ("description",))

    def bind(self, description: str | Parsed, members: Sequence[str | Parsed]
             ) -> BoundFailoverMetrics:
        """
        The counters of one endpoint, with its description and its members'
        (masked).
        """
        return BoundFailoverMetrics(self, maskedDescription(description, "client"),
                                    [maskedDescription(m, "client") for m in members])


_failover: weakref.WeakKeyDictionary[CollectorRegistry, FailoverMetrics] = (
    weakref.WeakKeyDictionary())


def failoverMetrics(registry: CollectorRegistry | None = None) -> FailoverMetrics:
    """
    The L{FailoverMetrics} of C{registry} (default: prometheus_client's
    global C{REGISTRY}), made on first use.
    """
    registry = _registry(registry)
    found = _failover.get(registry)
    if found is None:
        found = _failover[registry] = FailoverMetrics(registry)
    return found


class _DrainResult(Protocol):
    @property
    def finished(self) -> int: ...

    @property
    def closed(self) -> int: ...

    @property
    def aborted(self) -> int: ...


class LifecycleMetrics:
    """
    Listen and drain events of one server description, for the lifecycle
    helpers (C{listen}, C{stopListening}, C{gracefulStop}).

    @param description: the server description.
    @param registry: where the families are registered (default:
        prometheus_client's global C{REGISTRY}).
    """

    def __init__(self, description: str | Parsed,
                 registry: CollectorRegistry | None = None) -> None:
        registry = _registry(registry)
        self.description = maskedDescription(description, "server")
        label = self.description
        listens = _family(registry, "counter", "endpointkit_listens",
                          "Listen attempts, by result", ("description", "result"))
        self._listened = listens.labels(label, "ok")
        self._listenFailed = listens.labels(label, "failed")
        self._listening = _family(registry, "gauge", "endpointkit_listening",
                                  "1 while the description is listening", ("description",)
                                  ).labels(label)
        self._drains = _family(registry, "counter", "endpointkit_drains",
                               "Graceful stops that completed", ("description",)).labels(label)
        outcomes = _family(registry, "counter", "endpointkit_drain_connections",
                           "Connections at a graceful stop, by how they ended",
                           ("description", "outcome"))
        self._finished = outcomes.labels(label, "finished")
        self._closed = outcomes.labels(label, "closed")
        self._aborted = outcomes.labels(label, "aborted")
        self._drainSeconds = _family(registry, "histogram", "endpointkit_drain_seconds",
                                     "Seconds a graceful stop took", ("description",),
                                     buckets=DRAIN_BUCKETS).labels(label)

    def listened(self) -> None:
        """
        The description listens now.
        """
        self._listened.value += 1
        self._listening.value = 1

    def listenFailed(self) -> None:
        """
        Listening on the description failed.
        """
        self._listenFailed.value += 1

    def stopped(self) -> None:
        """
        The description stopped listening.
        """
        self._listening.value = 0

    def drained(self, result: _DrainResult, seconds: float) -> None:
        """
        A graceful stop ended with C{result} (a
        L{endpointkit.lifecycle.DrainResult}) after C{seconds}.  The closed
        connections count those aborted too, as C{DrainResult} does.
        """
        self._drains.value += 1
        self._finished.value += result.finished
        self._closed.value += result.closed
        self._aborted.value += result.aborted
        self._drainSeconds.observe(seconds)
        self._listening.value = 0


def metricsResource(registry: CollectorRegistry | None = None) -> Any:
    """
    A Twisted web resource that serves C{registry} (default:
    prometheus_client's global C{REGISTRY}) at every path, in the format
    the scraper's C{Accept} header asks for (Prometheus text or
    OpenMetrics, through prometheus_client's C{choose_encoder}).

    It renders in the reactor's thread, as the counters are only changed
    there.  (prometheus_client's own C{prometheus_client.twisted.
    MetricsResource} is a WSGI resource that fails on a UNIX socket, where
    the peer address has no host, and renders in a thread pool.)
    """
    from twisted.web.resource import Resource

    served = _registry(registry)

    class MetricsResource(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            from prometheus_client.exposition import choose_encoder

            accept = request.getHeader(b"accept")
            encoder, contentType = choose_encoder(accept.decode("latin-1") if accept else "")
            request.setHeader(b"Content-Type", contentType.encode("ascii"))
            output: bytes = encoder(served)
            return output

    made: Any = MetricsResource
    return made()


def _quietSite() -> Any:
    from twisted.web.server import Site

    class QuietSite(Site):
        """
        A site that writes no access log line per scrape.
        """

        noisy = False
        displayTracebacks = False

        def log(self, request: Any) -> None:
            pass

    return QuietSite


def serveMetrics(description: str, registry: CollectorRegistry | None = None,
                 reactor: Any = None) -> defer.Deferred[IListeningPort]:
    """
    Serve C{registry}'s metrics over HTTP on any server description
    (C{tcp:9100:interface=127.0.0.1}, C{unix:/run/app-metrics.sock}, a TLS
    description), at every path (C{/metrics} by convention).

    @return: a L{Deferred} that fires with the listening port.
    @raise DescriptionError: for a bad description.
    """
    from endpointkit._parse import serverFromString

    if reactor is None:
        from twisted.internet import reactor as reactor
    site = _quietSite()(metricsResource(registry))
    endpoint = serverFromString(reactor, description)
    return defer.maybeDeferred(endpoint.listen, site)
