"""
What a deadline costs: connect-and-close latency through
C{timeout:30:endpoint=tcp...} against bare C{tcp:} to the same loopback
listener, the two interleaved connection by connection.

One round: connect, close as soon as connected, wait until the connection is
lost.  Around C{tcp:} with whole seconds, C{timeout:} has C{tcp:} keep the
deadline itself (its connector's own timer, set to those seconds) rather
than setting a second one.  Two more rows show the rest: the deadline with a
timer of its own, as C{connectWithTimeout} and C{timeout:} give around any
other endpoint (L{TimeoutEndpoint} around the same C{tcp:}), and, for
reference, the least a second timer costs: a bare timer set and cancelled
around C{connect}.  The listener is a separate process (accept, read to the
end, close), so that only the client's side is measured in this process.

    /tmp/venv/bin/python bench/bench_deadline.py            # 2,000 each
    /tmp/venv/bin/python bench/bench_deadline.py --quick    # 200 each
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, reactor

from bench._common import DRAIN, interleaved, listener, printLatencies, runReactor, timedRound
from endpointkit._grammar import buildDescription
from endpointkit._parse import clientFromString
from endpointkit.deadline import TimeoutEndpoint


def oneRound(endpoint: Any) -> Any:
    return timedRound(endpoint).addCallback(lambda timed: timed[0])


class TimerOnly:
    """
    The least any per-attempt deadline can cost, for reference: Twisted's
    documented C{callLater(seconds, attempt.cancel)} around C{connect}, with
    the timer cancelled when the attempt ends.  It reports a
    C{CancelledError}, not a timeout, and does nothing about an endpoint
    that ignores cancellation.
    """

    def __init__(self, endpoint: Any, seconds: float) -> None:
        self.endpoint = endpoint
        self.seconds = seconds

    def connect(self, factory: Any) -> Any:
        attempt = self.endpoint.connect(factory)
        timer = reactor.callLater(self.seconds, attempt.cancel)

        def stop(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return attempt.addBoth(stop)


@defer.inlineCallbacks
def measure(rounds: int, port: int) -> Any:
    bare = buildDescription("tcp", "127.0.0.1", port)
    endpoints = {
        "tcp:": clientFromString(reactor, bare),
        "timeout:30:endpoint=tcp:": clientFromString(
            reactor, buildDescription("timeout", 30, endpoint=bare)),
        "own timer: TimeoutEndpoint(tcp:)": TimeoutEndpoint(
            clientFromString(reactor, bare), 30, reactor),
        "callLater+cancel (reference)": TimerOnly(clientFromString(reactor, bare), 30),
    }
    return (yield interleaved(endpoints, rounds, min(100, rounds), oneRound))


def report(times: dict[str, list[float]], rounds: int) -> None:
    (bareName, bare), *others = times.items()
    print(f"connect-and-close over loopback, {rounds} rounds each, interleaved")
    printLatencies(times, 34)
    for name, samples in others:
        medianRatio = statistics.median(samples) / statistics.median(bare)
        meanRatio = statistics.fmean(samples) / statistics.fmean(bare)
        print(f"ratio {name} / {bareName}: median {medianRatio:.3f}, mean {meanRatio:.3f}")
    print("target for timeout:: at most 1.05")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="200 rounds each")
    parser.add_argument("--rounds", type=int, default=2000)
    options = parser.parse_args()
    rounds = 200 if options.quick else options.rounds
    with listener(DRAIN) as port:
        times = runReactor(lambda: measure(rounds, port))
    report(times, rounds)


if __name__ == "__main__":
    main()
