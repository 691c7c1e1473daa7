"""
Benchmark of the server endpoints.

1. Connections accepted per second by an echo service: one process on
   C{tcp:} versus two processes sharing the port with C{reuseport:}.
2. The per-connection cost of C{limit:} versus bare C{tcp:}: end to end
   (the same echo service behind C{limit:}), and in-process (building,
   connecting and losing one wrapped protocol, no sockets).

The load comes from a separate process on loopback: C{--concurrency}
non-blocking clients on one epoll loop that each connect, send five bytes,
read the echo and close with a reset (so that no TIME_WAIT piles up), for
C{--seconds} each round.
Configurations alternate over C{--rounds} rounds; the table shows the best
round of each.

    /tmp/venv/bin/python bench/bench_servers.py [--quick]
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import freePort, stopProcesses

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PIDECHO = os.path.join(ROOT, "tests", "servers_pidecho.py")
MESSAGE = b"ping\n"


def loadMain(port: int, seconds: float, concurrency: int) -> None:
    """
    The load process: C{concurrency} non-blocking clients on one epoll
    loop, each connecting, sending L{MESSAGE}, reading the echo and closing
    with a reset, until C{seconds} have passed; prints the counts as JSON.
    """
    selector = selectors.DefaultSelector()
    address = ("127.0.0.1", port)
    linger = struct.pack("ii", 1, 0)
    counts = {"done": 0, "failed": 0}
    start = time.monotonic()
    end = start + seconds

    def begin() -> None:
        s = socket.socket()
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        if s.connect_ex(address) not in (0, errno.EINPROGRESS):
            s.close()
            counts["failed"] += 1
            return
        selector.register(s, selectors.EVENT_WRITE, [b""])

    def finish(s: socket.socket, ok: bool) -> None:
        selector.unregister(s)
        s.close()
        counts["done" if ok else "failed"] += 1
        if time.monotonic() < end:
            begin()

    for _ in range(concurrency):
        begin()
    while selector.get_map():
        events = selector.select(10)
        if not events:
            break
        for key, mask in events:
            s: Any = key.fileobj
            if mask & selectors.EVENT_WRITE:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    finish(s, False)
                    continue
                s.send(MESSAGE)
                selector.modify(s, selectors.EVENT_READ, key.data)
                continue
            try:
                data = s.recv(64)
            except OSError:
                finish(s, False)
                continue
            if not data:
                finish(s, False)
                continue
            key.data[0] += data
            if len(key.data[0]) >= len(MESSAGE):
                finish(s, True)
    sys.stdout.write(json.dumps(dict(counts, elapsed=time.monotonic() - start)) + "\n")


def startServers(description: str, count: int, workdir: str) -> list[subprocess.Popen[bytes]]:
    env = dict(os.environ, EKIT_GREET="no", PYTHONPATH=ROOT)
    processes = []
    readies = []
    for i in range(count):
        ready = os.path.join(workdir, f"ready-{time.monotonic_ns()}-{i}")
        readies.append(ready)
        processes.append(subprocess.Popen(
            [sys.executable, PIDECHO, description, ready], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
    deadline = time.monotonic() + 30
    for process, ready in zip(processes, readies, strict=True):
        while not os.path.exists(ready):
            if process.poll() is not None or time.monotonic() > deadline:
                stopProcesses(processes, 10)
                raise SystemExit(f"server for {description} did not start")
            time.sleep(0.05)
    return processes


def measure(description: str, processes: int, port: int, seconds: float,
            concurrency: int, workdir: str) -> float:
    servers = startServers(description, processes, workdir)
    try:
        output = subprocess.run(
            [sys.executable, __file__, "--load", str(port), str(seconds), str(concurrency)],
            capture_output=True, check=True, timeout=seconds + 60).stdout
    finally:
        stopProcesses(servers, 10)
    result: dict[str, Any] = json.loads(output)
    if result["failed"]:
        sys.stderr.write(f"  {description}: {result['failed']} failed connections\n")
    rate: float = result["done"] / result["elapsed"]
    return rate


def inProcessCost(count: int) -> tuple[float, float]:
    """
    Microseconds per connection for building, connecting and losing a bare
    protocol and the same behind LimitingFactory (caps and idle timeout).
    """
    from twisted.internet import protocol
    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.python.failure import Failure

    from endpointkit.limit import LimitingFactory

    bare = protocol.Factory.forProtocol(protocol.Protocol)
    limited = LimitingFactory(bare, maxConnections=count + 1, perPeer=count + 1, idle=60,
                              clock=Clock())
    reason = Failure(Exception("done"))  # type: ignore[no-untyped-call]

    def run(factory: Any) -> float:
        start = time.perf_counter()
        for i in range(count):
            address = IPv4Address("TCP", "127.0.0.1", 1024 + i % 60000)
            p = factory.buildProtocol(address)
            p.makeConnection(StringTransport(peerAddress=address))  # type: ignore[no-untyped-call]
            p.dataReceived(b"x")
            p.connectionLost(reason)
        return (time.perf_counter() - start) / count * 1e6

    run(bare)
    run(limited)
    return min(run(bare) for _ in range(3)), min(run(limited) for _ in range(3))


CONFIGURATIONS = (
    ("tcp: 1 process", 1, "tcp:{port}:interface=127.0.0.1:backlog=1024"),
    ("reuseport: 2 processes", 2, "reuseport:{port}:interface=127.0.0.1:backlog=1024"),
    ("limit: around tcp: 1 process", 1, "limit:max=100000:perPeer=100000:idle=60:endpoint="
     "tcp\\:{port}\\:interface=127.0.0.1\\:backlog=1024"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--load", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.load:
        loadMain(int(options.load[0]), float(options.load[1]), int(options.load[2]))
        return
    seconds = options.seconds or (2.0 if options.quick else 8.0)
    rounds = options.rounds or (1 if options.quick else 3)
    cores = os.cpu_count()
    print(f"cores: {cores}; {rounds} round(s) of {seconds:g} s per configuration; "
          f"{options.concurrency} concurrent clients in one load process")
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(rounds):
            for name, count, template in CONFIGURATIONS:
                port = freePort()
                rate = measure(template.format(port=port), count, port, seconds,
                               options.concurrency, workdir)
                best[name] = max(best.get(name, 0.0), rate)
    base = best["tcp: 1 process"]
    print(f"\n{'configuration':32} {'conn/s':>10} {'ratio':>7}")
    for name, rate in best.items():
        print(f"{name:32} {rate:10.0f} {rate / base:7.2f}")
    bareCost, limitCost = inProcessCost(20000 if options.quick else 100000)
    endToEnd = (1 / best["limit: around tcp: 1 process"] - 1 / base) * 1e6
    print(f"\nlimit: cost per connection, end to end: {endToEnd:+.1f} us "
          f"({1e6 / base:.1f} us per connection on bare tcp:)")
    print(f"limit: in process (build, connect, one read, lose): bare {bareCost:.1f} us, "
          f"limit {limitCost:.1f} us, ratio {limitCost / bareCost:.2f}, "
          f"+{limitCost - bareCost:.1f} us")


if __name__ == "__main__":
    main()
