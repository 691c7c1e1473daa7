"""
What C{fallback:} and C{race:} cost: connect-and-close latency through them
against connecting to the live member alone, all rows interleaved round by
round in one run.

  - C{fallback:} whose first member is dead, after the first failure (the
    cooldown then skips it): refused (a port nobody listens on), and
    blackholed (a listener whose accept queue is full, so an attempt only
    ends at C{attemptTimeout}).  Target: at most 1.1x the live member alone.
  - C{race:} with a member whose connect takes 0.5 s and a fast one, the two
    started together (C{delay=0}): the fast one wins and the slow attempt is
    cancelled.  Target: at most 1.1x the fast member alone.  Two more rows
    for reference: the fast member first with the default stagger (its
    timer is set and cancelled), and the slow member first with the default
    stagger, which waits the stagger (0.25 s) by design before starting the
    fast one, so it is shown and not held to the target.

One round: connect, close as soon as connected, wait until the connection
is lost.  The live listener is a separate process (accept, read to the end,
close), so that only the client's side is measured here.

    .venv/bin/python bench/bench_failover.py            # 2,000 rounds each
    .venv/bin/python bench/bench_failover.py --quick    # 200 rounds each
"""

from __future__ import annotations

import argparse
import gc
import select
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from endpointkit._grammar import buildDescription
from endpointkit._parse import clientFromString
from endpointkit.failover import RaceClientEndpoint
from endpointkit.metrics import failoverMetrics

LISTENER = r"""
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(128)
print(server.getsockname()[1], flush=True)
while True:
    connection, _ = server.accept()
    while connection.recv(65536):
        pass
    connection.close()
"""

SLOW = 0.5


class CloseAtOnce(Protocol):
    def __init__(self) -> None:
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class Closing(Factory):
    noisy = False

    def __init__(self) -> None:
        self.last: CloseAtOnce | None = None

    def buildProtocol(self, addr: Any) -> CloseAtOnce:
        self.last = CloseAtOnce()
        return self.last


class Slow:
    """
    A member whose connect takes C{SLOW} seconds before it even starts;
    cancelling it stops the wait.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def connect(self, factory: Any) -> Any:
        def cancel(d: Any) -> None:
            if call.active():
                call.cancel()

        d: defer.Deferred[Any] = defer.Deferred(cancel)

        def go() -> None:
            self.inner.connect(factory).chainDeferred(d)

        call = reactor.callLater(SLOW, go)
        return d


def blackhole() -> tuple[int, list[socket.socket]]:
    """
    A loopback port whose accept queue is full, and the sockets that keep
    it so.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    held = [listener]
    for _ in range(64):
        raw = socket.socket()
        raw.setblocking(False)
        raw.connect_ex(("127.0.0.1", port))
        held.append(raw)
        _, writable, _ = select.select([], [raw], [], 0.3)
        if not writable:
            return port, held
    raise SystemExit("could not fill a listen queue")


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@defer.inlineCallbacks
def oneRound(endpoint: Any) -> Any:
    factory = Closing()
    start = time.perf_counter()
    yield endpoint.connect(factory)
    assert factory.last is not None
    yield factory.last.lost
    return time.perf_counter() - start


@defer.inlineCallbacks
def measure(rounds: int, live: int, dark: int) -> Any:
    registry = CollectorRegistry()
    metrics = failoverMetrics(registry)
    alive = buildDescription("tcp", "127.0.0.1", live)
    refused = buildDescription("tcp", "127.0.0.1", freePort())
    blackholed = buildDescription("tcp", "127.0.0.1", dark)

    def fallback(first: str) -> Any:
        endpoint = clientFromString(reactor, buildDescription(
            "fallback", first, alive, attemptTimeout=0.5, cooldown=3600))
        endpoint.metrics = metrics.bind(endpoint.description, endpoint.descriptions)
        return endpoint

    def fast() -> Any:
        return TCP4ClientEndpoint(reactor, "127.0.0.1", live)

    def race(members: list[Any], names: list[str], delay: float) -> Any:
        return RaceClientEndpoint(reactor, members, names, delay=delay, metrics=metrics)

    endpoints = {
        "tcp: live member alone": clientFromString(reactor, alive),
        "fallback: refused first": fallback(refused),
        "fallback: blackholed first": fallback(blackholed),
        "race: slow + fast, delay=0": race([Slow(fast()), fast()], ["slow", "fast"], 0),
        "race: fast + slow, delay=0.25 (ref)": race([fast(), Slow(fast())],
                                                    ["fast", "slow"], 0.25),
    }
    # The first failure of each dead member (the blackholed one takes its
    # attemptTimeout), then warm-up.
    for endpoint in endpoints.values():
        yield oneRound(endpoint)
    names = list(endpoints)
    for _ in range(min(100, rounds)):
        for name in names:
            yield oneRound(endpoints[name])
    times: dict[str, list[float]] = {name: [] for name in endpoints}
    gc.collect()
    for i in range(rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append((yield oneRound(endpoints[name])))
    # The slow member first, with the stagger: it waits 0.25 s by design.
    staggered = race([Slow(fast()), fast()], ["slow", "fast"], 0.25)
    waited: list[float] = []
    for _ in range(5):
        waited.append((yield oneRound(staggered)))
    times["race: slow + fast, delay=0.25 (ref)"] = waited
    for name in ("fallback: refused first", "fallback: blackholed first"):
        assert endpoints[name].failedAt[0] is not None, name
    return times


def report(times: dict[str, list[float]], rounds: int) -> None:
    (bareName, bare), *others = times.items()
    print(f"connect-and-close over loopback, {rounds} rounds each, interleaved "
          "(after each dead member's first failure)")
    print(f"{'endpoint':<40}{'median us':>11}{'mean us':>11}{'p90 us':>11}")
    for name, samples in times.items():
        ordered = sorted(samples)
        print(f"{name:<40}{statistics.median(ordered) * 1e6:>11.1f}"
              f"{statistics.fmean(ordered) * 1e6:>11.1f}"
              f"{ordered[int(len(ordered) * 0.9)] * 1e6:>11.1f}")
    for name, samples in others:
        ratio = statistics.median(samples) / statistics.median(bare)
        print(f"ratio {name} / {bareName}: median {ratio:.3f}")
    print("target: fallback: rows and race: slow + fast, delay=0 at most 1.1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="200 rounds each")
    parser.add_argument("--rounds", type=int, default=2000)
    options = parser.parse_args()
    rounds = 200 if options.quick else options.rounds
    listener = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE)
    dark, held = blackhole()
    try:
        assert listener.stdout is not None
        port = int(listener.stdout.readline())
        outcome: list[Any] = []
        d = measure(rounds, port, dark)
        d.addBoth(outcome.append).addBoth(lambda _: reactor.stop())
        reactor.run()
    finally:
        listener.kill()
        listener.wait()
        for s in held:
            s.close()
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    report(outcome[0], rounds)


if __name__ == "__main__":
    main()
