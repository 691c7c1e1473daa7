"""
Prometheus metrics for endpointkit's relay, wrappers and lifecycle helpers,
on prometheus_client, and a function that serves them on any server
description.

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

import weakref
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
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


_M = TypeVar("_M", Counter, Gauge, Histogram)

_families: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Any]] = (
    weakref.WeakKeyDictionary())


def _family(registry: CollectorRegistry, kind: type[_M], name: str, documentation: str,
            labels: Sequence[str], **options: Any) -> _M:
    """
    The metric family C{name} in C{registry}, made on first use: one family
    per registry, whatever number of objects label into it.
    """
    known = _families.setdefault(registry, {})
    family = known.get(name)
    if family is None:
        family = kind(name, documentation, list(labels), registry=registry, **options)
        known[name] = family
    elif not isinstance(family, kind):
        raise TypeError(f"{name} is already registered as a {type(family).__name__}")
    found: _M = family
    return found


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
        self._open = _family(registry, Gauge, "endpointkit_relay_open_connections",
                             "Relayed connections open now", names).labels(*labels)
        self._total = _family(registry, Counter, "endpointkit_relay_connections",
                              "Connections the relay accepted and relayed", names
                              ).labels(*labels)
        transferred = _family(registry, Counter, "endpointkit_relay_bytes",
                              "Bytes relayed (up: client to backend, down: backend to client)",
                              (*names, "direction"))
        self._up = transferred.labels(*labels, "up")
        self._down = transferred.labels(*labels, "down")
        self._failures = _family(registry, Counter, "endpointkit_relay_connect_failures",
                                 "Backend connects that failed, by reason",
                                 (*names, "reason"))
        self._latency = _family(registry, Histogram, "endpointkit_relay_connect_seconds",
                                "Seconds from accepting a client to the backend connection",
                                names, buckets=CONNECT_BUCKETS).labels(*labels)
        self._refused = _family(registry, Counter, "endpointkit_relay_refused_connections",
                                "Connections the relay refused (over its caps)", names
                                ).labels(*labels)
        self._spliced = _family(registry, Counter, "endpointkit_relay_spliced_connections",
                                "Relayed connections that moved their bytes with splice()",
                                names).labels(*labels)
        self._labels = labels

    def connectionOpened(self) -> None:
        """
        A client was accepted and is being relayed.
        """
        self._open.inc()
        self._total.inc()

    def connectionClosed(self) -> None:
        """
        A relayed connection ended (both sides closed).
        """
        self._open.dec()

    def bytesUp(self, count: int) -> None:
        """
        C{count} bytes went from a client to the backend.
        """
        self._up.inc(count)

    def bytesDown(self, count: int) -> None:
        """
        C{count} bytes went from the backend to a client.
        """
        self._down.inc(count)

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
        self._failures.labels(*self._labels, reason).inc()
        return reason

    def refused(self) -> None:
        """
        A client was refused over a cap.
        """
        self._refused.inc()

    def spliced(self) -> None:
        """
        A relayed connection moves its bytes with C{splice()}.
        """
        self._spliced.inc()


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
        self._open = _family(registry, Gauge, "endpointkit_limit_open_connections",
                             "Connections open now under limit:", ("description",)
                             ).labels(label)
        refused = _family(registry, Counter, "endpointkit_limit_refused_connections",
                          "Connections limit: refused, by the cap they were over",
                          ("description", "reason"))
        self._refused = {reason: refused.labels(label, reason) for reason in LIMIT_REASONS}
        self._timedOut = _family(registry, Counter, "endpointkit_limit_timed_out_connections",
                                 "Connections limit: closed for being idle", ("description",)
                                 ).labels(label)
        self._paused = _family(registry, Gauge, "endpointkit_limit_paused",
                               "1 while limit: has stopped accepting at its cap",
                               ("description",)).labels(label)
        self._pauses = _family(registry, Counter, "endpointkit_limit_pauses",
                               "Times limit: stopped accepting at its cap", ("description",)
                               ).labels(label)
        self._isPaused = False

    def opened(self) -> None:
        """
        A connection was accepted under the caps.
        """
        self._open.inc()

    def closed(self) -> None:
        """
        An accepted connection ended.
        """
        self._open.dec()

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
        counter.inc()

    def timedOut(self) -> None:
        """
        A connection was closed for being idle.
        """
        self._timedOut.inc()

    def setPaused(self, paused: bool) -> None:
        """
        Accepting stopped (C{True}) or resumed (C{False}); a pause is counted
        once however often it is reported.
        """
        if paused and not self._isPaused:
            self._pauses.inc()
        self._isPaused = paused
        self._paused.set(1 if paused else 0)


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
        self._attempts[index].inc()

    def failure(self, index: int) -> None:
        """
        Member C{index}'s attempt failed (or timed out).
        """
        self._failures[index].inc()

    def skip(self, index: int) -> None:
        """
        Member C{index} was skipped, cooling down after a failure.
        """
        self._skips[index].inc()

    def win(self, index: int) -> None:
        """
        Member C{index} made the connection.
        """
        self._wins[index].inc()

    def allFailed(self) -> None:
        """
        A connect failed with every member.
        """
        self._allFailed.inc()


class FailoverMetrics:
    """
    The metric families of C{fallback:} and C{race:} in one registry; get it
    with L{failoverMetrics}, and L{bind} it to one endpoint.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = _registry(registry)
        self.registry = registry
        labels = ("description", "member")
        self.attempts = _family(registry, Counter, "endpointkit_failover_attempts",
                                "Attempts started through each member", labels)
        self.failures = _family(registry, Counter, "endpointkit_failover_failures",
                                "Attempts through each member that failed or timed out",
                                labels)
        self.cooldownSkips = _family(registry, Counter, "endpointkit_failover_cooldown_skips",
                                     "Times a member was skipped, cooling down after a failure",
                                     labels)
        self.wins = _family(registry, Counter, "endpointkit_failover_wins",
                            "Connections made through each member", labels)
        self.allFailed = _family(registry, Counter, "endpointkit_failover_all_failed",
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
        listens = _family(registry, Counter, "endpointkit_listens",
                          "Listen attempts, by result", ("description", "result"))
        self._listened = listens.labels(label, "ok")
        self._listenFailed = listens.labels(label, "failed")
        self._listening = _family(registry, Gauge, "endpointkit_listening",
                                  "1 while the description is listening", ("description",)
                                  ).labels(label)
        self._drains = _family(registry, Counter, "endpointkit_drains",
                               "Graceful stops that completed", ("description",)).labels(label)
        outcomes = _family(registry, Counter, "endpointkit_drain_connections",
                           "Connections at a graceful stop, by how they ended",
                           ("description", "outcome"))
        self._finished = outcomes.labels(label, "finished")
        self._closed = outcomes.labels(label, "closed")
        self._aborted = outcomes.labels(label, "aborted")
        self._drainSeconds = _family(registry, Histogram, "endpointkit_drain_seconds",
                                     "Seconds a graceful stop took", ("description",),
                                     buckets=DRAIN_BUCKETS).labels(label)

    def listened(self) -> None:
        """
        The description listens now.
        """
        self._listened.inc()
        self._listening.set(1)

    def listenFailed(self) -> None:
        """
        Listening on the description failed.
        """
        self._listenFailed.inc()

    def stopped(self) -> None:
        """
        The description stopped listening.
        """
        self._listening.set(0)

    def drained(self, result: _DrainResult, seconds: float) -> None:
        """
        A graceful stop ended with C{result} (a
        L{endpointkit.lifecycle.DrainResult}) after C{seconds}.  The closed
        connections count those aborted too, as C{DrainResult} does.
        """
        self._drains.inc()
        self._finished.inc(result.finished)
        self._closed.inc(result.closed)
        self._aborted.inc(result.aborted)
        self._drainSeconds.observe(seconds)
        self._listening.set(0)


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
