"""
What C{fallback:} and C{race:} cost: connect-and-close latency through them
against connecting to the live member alone, all rows interleaved round by
round in one run.

  - C{fallback:} whose first member is dead, after the first failure (the
    cooldown then skips it): refused (a port nobody listens on), and
    blackholed (a listener whose accept queue is full, so an attempt only
    ends at C{attemptTimeout}).  Target: at most 1.1x the live member alone.
  - C{race:} with a member whose connect takes 0.5 s and a fast one.  The
    fast one wins and the slow attempt is cancelled.  Target: at most 1.1x
    the fast member alone, for the two orders where the race need not wait:
    the slow member first with the members started together (C{delay=0}),
    and the fast member first with the default stagger (its stagger timer
    is set and cancelled).  The slow member first with the default stagger
    waits the stagger (0.25 s) by design before starting the fast one, so
    it is shown for reference and not held to the target.

Every endpoint is built from its description, as users build them
(C{attemptTimeout=1}: whole seconds, as the default 10, so that C{tcp:}
members keep the attempt deadline in their own connector).  The slow member
is the C{tcp:} member of its C{race:} description behind a wait of 0.5 s (a
delayed call cancelled with the attempt), standing in for a network whose
handshake takes that long.

One round: connect, close as soon as connected, wait until the connection
is lost.  The live listener is a separate process (accept, read to the end,
close), so that only the client's side is measured here.  Each row shows
the median wall-clock time of a round and the median CPU time the client
spent in it (steadier than the wall clock on a busy machine); the ratios are
of medians, per run, and with C{--runs} above 1 their spread is shown.

    .venv/bin/python bench/bench_failover.py                # 3 runs of 2,000 rounds
    .venv/bin/python bench/bench_failover.py --quick        # 1 run of 200 rounds
    .venv/bin/python bench/bench_failover.py --runs 5 --rounds 3000
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prometheus_client import CollectorRegistry
from twisted.internet import defer, reactor

from bench._common import DRAIN, freePort, interleaved, listener, runReactor, timedRound
from endpointkit._grammar import buildDescription
from endpointkit._parse import clientFromString
from endpointkit.metrics import failoverMetrics

SLOW = 0.5


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


class ByHand:
    """
    What C{race:} with C{delay=0} does at the least, written out: start
    both members, and cancel the slow one once the fast one connects.
    """

    def __init__(self, slow: Any, fast: Any) -> None:
        self.slow = slow
        self.fast = fast

    def connect(self, factory: Any) -> Any:
        slow = self.slow.connect(factory)
        slow.addErrback(lambda failure: None)

        def won(protocol: Any) -> Any:
            slow.cancel()
            return protocol

        return self.fast.connect(factory).addCallback(won)


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


def oneRound(endpoint: Any) -> Any:
    return timedRound(endpoint).addCallback(lambda timed: timed[:2])


TARGETS = ("fallback: refused first", "fallback: blackholed first",
           "race: slow + fast, delay=0", "race: fast + slow, delay=0.25")
STAGGERED = "race: slow + fast, delay=0.25 (ref)"
BY_HAND = "slow + fast started by hand (ref)"


@defer.inlineCallbacks
def measure(rounds: int, live: int, dark: int) -> Any:
    registry = CollectorRegistry()
    metrics = failoverMetrics(registry)
    alive = buildDescription("tcp", "127.0.0.1", live)
    refused = buildDescription("tcp", "127.0.0.1", freePort())
    blackholed = buildDescription("tcp", "127.0.0.1", dark)

    def counted(endpoint: Any) -> Any:
        endpoint.metrics = metrics.bind(endpoint.description, endpoint.descriptions)
        return endpoint

    def fallback(first: str) -> Any:
        return counted(clientFromString(reactor, buildDescription(
            "fallback", first, alive, attemptTimeout=1, cooldown=3600)))

    def race(slow: int, delay: float) -> Any:
        # The slow member is told apart by its own timeout (above the
        # attempt's, so the attempt's is the one it keeps).
        members = [alive, alive]
        members[slow] = buildDescription("tcp", "127.0.0.1", live, timeout=20)
        endpoint = counted(clientFromString(reactor, buildDescription(
            "race", *members, delay=delay, attemptTimeout=1)))
        member = endpoint.timed[slow]
        member.endpoint = Slow(member.endpoint)
        return endpoint

    together = race(0, 0)
    endpoints = {
        "tcp: live member alone": clientFromString(reactor, alive),
        "fallback: refused first": fallback(refused),
        "fallback: blackholed first": fallback(blackholed),
        "race: slow + fast, delay=0": together,
        "race: fast + slow, delay=0.25": race(1, 0.25),
        BY_HAND: ByHand(together.timed[0].endpoint, together.timed[1].endpoint),
    }
    # The first failure of each dead member (the blackholed one takes its
    # attemptTimeout), then warm-up.
    for endpoint in endpoints.values():
        yield oneRound(endpoint)
    times = yield interleaved(endpoints, rounds, min(100, rounds), oneRound)
    # The slow member first, with the stagger: it waits 0.25 s by design.
    staggered = race(0, 0.25)
    waited: list[tuple[float, float]] = []
    for _ in range(5):
        waited.append((yield oneRound(staggered)))
    times[STAGGERED] = waited
    for name in ("fallback: refused first", "fallback: blackholed first"):
        assert endpoints[name].failedAt[0] is not None, name
    for name in TARGETS[2:]:
        wins = registry.get_sample_value("endpointkit_failover_wins_total", {
            "description": endpoints[name].description,
            "member": alive})
        assert wins == rounds + min(100, rounds) + 1, (name, wins)
    return times


def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return (statistics.median(s[0] for s in samples),
            statistics.median(s[1] for s in samples))


def report(runs: list[dict[str, list[tuple[float, float]]]], rounds: int) -> None:
    print(f"connect-and-close over loopback, {rounds} rounds each, interleaved "
          f"(after each dead member's first failure); {len(runs)} run(s)")
    ratios: dict[str, list[tuple[float, float]]] = {}
    for number, times in enumerate(runs, 1):
        bareName, bare = next(iter(times.items()))
        bareWall, bareCPU = medians(bare)
        print(f"run {number}")
        print(f"  {'endpoint':<38}{'median us':>11}{'p90 us':>10}{'CPU us':>10}"
              f"{'ratio':>9}{'CPU ratio':>11}")
        for name, samples in times.items():
            wall, cpu = medians(samples)
            ordered = sorted(s[0] for s in samples)
            ratio = (wall / bareWall, cpu / bareCPU)
            if name != bareName:
                ratios.setdefault(name, []).append(ratio)
            print(f"  {name:<38}{wall * 1e6:>11.1f}{ordered[int(len(ordered) * 0.9)] * 1e6:>10.1f}"
                  f"{cpu * 1e6:>10.1f}{ratio[0]:>9.3f}{ratio[1]:>11.3f}")
        wall, cpu = medians(times[TARGETS[2]])
        handWall, handCPU = medians(times[BY_HAND])
        ratios.setdefault(f"{TARGETS[2]} / by hand", []).append(
            (wall / handWall, cpu / handCPU))
    print(f"ratio of medians to {bareName!r} over the runs (min / median / max); "
          "target at most 1.1 for the first four; the last line: race: with "
          "delay=0 to its two attempts made by hand")
    for name, each in ratios.items():
        wall = sorted(r[0] for r in each)
        cpu = sorted(r[1] for r in each)
        print(f"  {name:<38} wall {wall[0]:.3f} / {statistics.median(wall):.3f} / "
              f"{wall[-1]:.3f}   CPU {cpu[0]:.3f} / {statistics.median(cpu):.3f} / "
              f"{cpu[-1]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="1 run of 200 rounds")
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    rounds, runs = (200, 1) if options.quick else (options.rounds, options.runs)
    dark, held = blackhole()
    try:
        with listener(DRAIN) as port:

            @defer.inlineCallbacks
            def allRuns() -> Any:
                done = []
                for _ in range(runs):
                    done.append((yield measure(rounds, port, dark)))
                return done

            results = runReactor(allRuns)
    finally:
        for s in held:
            s.close()
    report(results, rounds)


if __name__ == "__main__":
    main()
