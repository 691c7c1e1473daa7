"""
What C{srv:} costs per connection: connect, a small echo, close, through
C{srv:} against C{hostname:} straight to the target it chooses, interleaved
connection by connection, medians compared.

The SRV records are served by a real dnsmasq on loopback (C{dnsmasq-base});
the echo listener is a separate process, so that only the client's side is
measured here.  Rows:

  - C{hostname:127.0.0.1:PORT}: the baseline, Twisted's L{HostnameEndpoint}
    straight to the target's address (C{hostname:} resolves it, even an IP
    literal, with C{getaddrinfo} in a thread);
  - C{srv:} with a warm cache (the SRV answer and the target's addresses
    from the cache: no DNS traffic);
  - C{srv:} with C{cache=no} (one SRV query to dnsmasq per connection);
  - for reference, the target's own endpoint as C{srv:} builds it (its
    resolver fed from the SRV answer), without C{srv:} around it, and
    C{tcp:} to the same address.

    python bench/bench_srv.py            # 1,000 rounds each
    python bench/bench_srv.py --quick    # 200 rounds each
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer, reactor

from bench._common import (
    ECHO,
    EchoOnce,
    interleaved,
    listener,
    printLatencies,
    program,
    runReactor,
    spawn,
    stopProcesses,
    timedRound,
    waitForPort,
)
from endpointkit._grammar import buildDescription
from endpointkit._parse import clientFromString
from endpointkit.srv import SRVClientEndpoint, SRVTarget

MESSAGE = b"ping"


@defer.inlineCallbacks
def oneRound(endpoint: Any) -> Any:
    elapsed, _, protocol = yield timedRound(endpoint, partial(EchoOnce, MESSAGE))
    if protocol.received != MESSAGE:
        raise AssertionError(f"echo came back as {protocol.received!r}")
    return elapsed


def freeDNSPort() -> int:
    for _ in range(100):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise SystemExit("no port free for both TCP and UDP")


def startDnsmasq(directory: str, target: int) -> tuple[subprocess.Popen[bytes], int]:
    port = freeDNSPort()
    process = spawn([
        program("dnsmasq", "dnsmasq-base"), "-k", "--no-resolv", "--no-hosts", "-p", str(port),
        "--listen-address=127.0.0.1", "--bind-interfaces",
        f"--pid-file={directory}/dnsmasq.pid", "--local=/example.test/", "--local-ttl=3600",
        "--host-record=a.example.test,127.0.0.1",
        f"--srv-host=_echo._tcp.example.test,a.example.test,{target},0,10",
    ])
    try:
        waitForPort(port, process, 10)
    except SystemExit:
        stopProcesses([process])
        raise SystemExit("dnsmasq did not start")
    return process, port


@defer.inlineCallbacks
def measure(rounds: int, target: int, dns: int) -> Any:
    resolver = f"127.0.0.1:{dns}"
    warm = clientFromString(reactor, buildDescription(
        "srv", "echo", "example.test", resolver=resolver))
    cold = clientFromString(reactor, buildDescription(
        "srv", "echo", "example.test", resolver=resolver, cache=False))
    assert isinstance(warm, SRVClientEndpoint)
    chosen: list[SRVTarget] = yield warm.resolveTargets()
    if chosen != [SRVTarget("a.example.test", target, 0, 10)]:
        raise AssertionError(f"dnsmasq gave {chosen}")
    endpoints = {
        "hostname:127.0.0.1:PORT": clientFromString(
            reactor, buildDescription("hostname", "127.0.0.1", target)),
        "srv: warm cache": warm,
        "srv: cache=no": cold,
        "target endpoint alone (ref.)": warm.targetEndpoint(
            chosen[0], {"a.example.test": ["127.0.0.1"]}),
        "tcp:127.0.0.1:PORT (ref.)": clientFromString(
            reactor, buildDescription("tcp", "127.0.0.1", target)),
    }
    return (yield interleaved(endpoints, rounds, min(50, rounds), oneRound))


def report(times: dict[str, list[float]], rounds: int) -> None:
    (baseName, base), *others = times.items()
    print(f"connect, {len(MESSAGE)}-byte echo, close over loopback; {rounds} rounds each, "
          "interleaved")
    printLatencies(times, 32)
    for name, samples in others:
        print(f"ratio {name} / {baseName}: median "
              f"{statistics.median(samples) / statistics.median(base):.3f}")
    warm, alone = times["srv: warm cache"], times["target endpoint alone (ref.)"]
    print("ratio srv: warm cache / target endpoint alone (what srv: itself adds): median "
          f"{statistics.median(warm) / statistics.median(alone):.3f}")
    print("target for srv: with a warm cache: at most 1.10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="200 rounds each")
    parser.add_argument("--rounds", type=int, default=1000)
    options = parser.parse_args()
    rounds = 200 if options.quick else options.rounds
    directory = tempfile.mkdtemp(prefix="bench-srv-")
    dnsmasq: subprocess.Popen[bytes] | None = None
    try:
        with listener(ECHO) as target:
            dnsmasq, dns = startDnsmasq(directory, target)
            times = runReactor(lambda: measure(rounds, target, dns))
    finally:
        stopProcesses([dnsmasq])
        shutil.rmtree(directory, ignore_errors=True)
    report(times, rounds)


if __name__ == "__main__":
    main()
