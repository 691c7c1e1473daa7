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
import gc
import statistics
import subprocess
import sys
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from endpointkit._grammar import buildDescription
from endpointkit._parse import clientFromString
from endpointkit.deadline import TimeoutEndpoint

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


class CloseAtOnce(Protocol):
    """
    Closes the connection as soon as it is made, and says when it is gone.
    """

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


@defer.inlineCallbacks
def oneRound(endpoint: Any) -> Any:
    factory = Closing()
    start = time.perf_counter()
    yield endpoint.connect(factory)
    assert factory.last is not None
    yield factory.last.lost
    return time.perf_counter() - start


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
    times: dict[str, list[float]] = {name: [] for name in endpoints}
    names = list(endpoints)
    for _ in range(min(100, rounds)):
        for name in names:
            yield oneRound(endpoints[name])
    gc.collect()
    for i in range(rounds):
        # Alternate which goes first, so that neither always follows the other.
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append((yield oneRound(endpoints[name])))
    return times


def report(times: dict[str, list[float]], rounds: int) -> None:
    (bareName, bare), *others = times.items()
    print(f"connect-and-close over loopback, {rounds} rounds each, interleaved")
    print(f"{'endpoint':<34}{'median us':>11}{'mean us':>11}{'p90 us':>11}")
    for name, samples in times.items():
        ordered = sorted(samples)
        print(f"{name:<34}{statistics.median(ordered) * 1e6:>11.1f}"
              f"{statistics.fmean(ordered) * 1e6:>11.1f}"
              f"{ordered[int(len(ordered) * 0.9)] * 1e6:>11.1f}")
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
    listener = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE)
    try:
        assert listener.stdout is not None
        port = int(listener.stdout.readline())
        outcome: list[Any] = []
        d = measure(rounds, port)
        d.addBoth(outcome.append).addBoth(lambda _: reactor.stop())
        reactor.run()
    finally:
        listener.kill()
        listener.wait()
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    report(outcome[0], rounds)


if __name__ == "__main__":
    main()
