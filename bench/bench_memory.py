"""
Benchmark of C{memory:} against loopback C{tcp:}, in one run on the same
reactor: round trips per second of a 100-byte ping-pong, and bulk transfer
in MB/s through a streaming producer that honours flow control.

    /tmp/venv/bin/python bench/bench_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from zope.interface import implementer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol

from endpointkit._parse import clientFromString, serverFromString

MESSAGE = b"x" * 100
CHUNK = 64 * 1024


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Pinger(Protocol):
    """
    Sends 100 bytes, waits for them to come back, sends again, until the
    deadline; counts the round trips.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.trips = 0
        self.pending = 0
        self.done: defer.Deferred[int] = defer.Deferred()

    def connectionMade(self) -> None:
        self.started = time.perf_counter()
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.pending = len(MESSAGE)
        self.transport.write(MESSAGE)

    def dataReceived(self, data: bytes) -> None:
        self.pending -= len(data)
        if self.pending:
            return
        self.trips += 1
        if self.trips % 64 == 0 and time.perf_counter() >= self.deadline:
            self.elapsed = time.perf_counter() - self.started
            assert self.transport is not None
            self.transport.loseConnection()
            self.done.callback(self.trips)
            return
        self._send()


class Sink(Protocol):
    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.done: defer.Deferred[float] = defer.Deferred()

    def connectionMade(self) -> None:
        self.started = time.perf_counter()

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)
        if self.count >= self.total and not self.done.called:
            self.done.callback(time.perf_counter() - self.started)


@implementer(IPushProducer)
class Source(Protocol):
    """
    Writes C{total} bytes in 64 KiB chunks as fast as flow control allows.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self.paused = False
        self.chunk = b"y" * CHUNK

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        transport: Any = self.transport
        while not self.paused and self.sent < self.total:
            transport.write(self.chunk)
            self.sent += CHUNK
        if self.sent >= self.total and transport.producer is not None:
            transport.unregisterProducer()
            transport.loseConnection()

    def stopProducing(self) -> None:
        self.paused = True


def descriptions(kind: str, name: str) -> tuple[str, Any]:
    if kind == "memory":
        return f"memory:{name}", lambda port: f"memory:{name}"
    return "tcp:0:interface=127.0.0.1", lambda port: f"tcp:127.0.0.1:{port.getHost().port}"


@defer.inlineCallbacks
def pingPong(kind: str, seconds: float) -> Any:
    server, client = descriptions(kind, "bench-ping")
    port = yield serverFromString(reactor, server).listen(Factory.forProtocol(Echo))
    pinger = Pinger(time.perf_counter() + seconds)
    factory = Factory.forProtocol(lambda: pinger)
    yield clientFromString(reactor, client(port)).connect(factory)
    trips = yield pinger.done
    yield port.stopListening()
    return trips / pinger.elapsed


@defer.inlineCallbacks
def bulk(kind: str, megabytes: int) -> Any:
    total = megabytes * 1024 * 1024
    sink = Sink(total)
    server, client = descriptions(kind, "bench-bulk")
    port = yield serverFromString(reactor, server).listen(
        Factory.forProtocol(lambda: sink))
    yield clientFromString(reactor, client(port)).connect(
        Factory.forProtocol(lambda: Source(total)))
    elapsed = yield sink.done
    yield port.stopListening()
    return total / elapsed / 1e6


@defer.inlineCallbacks
def main(quick: bool) -> Any:
    seconds = 0.5 if quick else 3.0
    megabytes = 64 if quick else 512
    rows = []
    results: dict[tuple[str, str], float] = {}
    for kind in ("memory", "tcp"):
        results[("rt", kind)] = yield pingPong(kind, seconds)
        results[("mb", kind)] = yield bulk(kind, megabytes)
    rows.append(("100-byte round trips/s", results[("rt", "memory")], results[("rt", "tcp")]))
    rows.append((f"bulk MB/s ({megabytes} MiB)", results[("mb", "memory")], results[("mb", "tcp")]))
    print(f"{'measure':<26} {'memory:':>12} {'tcp:':>12} {'ratio':>8}")
    for label, memory, tcp in rows:
        print(f"{label:<26} {memory:>12,.0f} {tcp:>12,.0f} {memory / tcp:>7.1f}x")


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run")
    options = parser.parse_args()
    failures: list[Any] = []

    def stop(result: object) -> None:
        if not isinstance(result, type(None)):
            failures.append(result)
        reactor.stop()

    reactor.callWhenRunning(lambda: main(options.quick).addBoth(stop))
    reactor.run()
    if failures:
        failures[0].printTraceback()
        sys.exit(1)


if __name__ == "__main__":
    run()
