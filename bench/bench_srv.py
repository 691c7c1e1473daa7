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
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from endpointkit._grammar import buildDescription
from endpointkit._parse import clientFromString
from endpointkit.srv import SRVClientEndpoint, SRVTarget

ECHO = r"""
import socket
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(128)
print(server.getsockname()[1], flush=True)
while True:
    connection, _ = server.accept()
    while data := connection.recv(65536):
        connection.sendall(data)
    connection.close()
"""

MESSAGE = b"ping"


class EchoOnce(Protocol):
    """
    Sends a small message, closes when it has come back, and says when the
    connection is gone.
    """

    def __init__(self) -> None:
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(MESSAGE)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(MESSAGE) and self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class Echoing(Factory):
    noisy = False

    def __init__(self) -> None:
        self.last: EchoOnce | None = None

    def buildProtocol(self, addr: Any) -> EchoOnce:
        self.last = EchoOnce()
        return self.last


@defer.inlineCallbacks
def oneRound(endpoint: Any) -> Any:
    factory = Echoing()
    start = time.perf_counter()
    yield endpoint.connect(factory)
    assert factory.last is not None
    yield factory.last.lost
    elapsed = time.perf_counter() - start
    if factory.last.received != MESSAGE:
        raise AssertionError(f"echo came back as {factory.last.received!r}")
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
    program = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.access(program, os.X_OK):
        raise SystemExit("dnsmasq is not installed (apt-get install dnsmasq-base)")
    port = freeDNSPort()
    process = subprocess.Popen([
        program, "-k", "--no-resolv", "--no-hosts", "-p", str(port),
        "--listen-address=127.0.0.1", "--bind-interfaces",
        f"--pid-file={directory}/dnsmasq.pid", "--local=/example.test/", "--local-ttl=3600",
        "--host-record=a.example.test,127.0.0.1",
        f"--srv-host=_echo._tcp.example.test,a.example.test,{target},0,10",
    ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.05)
    process.kill()
    raise SystemExit("dnsmasq did not start")


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
    times: dict[str, list[float]] = {name: [] for name in endpoints}
    names = list(endpoints)
    for _ in range(min(50, rounds)):
        for name in names:
            yield oneRound(endpoints[name])
    gc.collect()
    for i in range(rounds):
        # Alternate which goes first, so that neither always follows the other.
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append((yield oneRound(endpoints[name])))
    return times


def report(times: dict[str, list[float]], rounds: int) -> None:
    (baseName, base), *others = times.items()
    print(f"connect, {len(MESSAGE)}-byte echo, close over loopback; {rounds} rounds each, "
          "interleaved")
    print(f"{'endpoint':<32}{'median us':>11}{'mean us':>11}{'p90 us':>11}")
    for name, samples in times.items():
        ordered = sorted(samples)
        print(f"{name:<32}{statistics.median(ordered) * 1e6:>11.1f}"
              f"{statistics.fmean(ordered) * 1e6:>11.1f}"
              f"{ordered[int(len(ordered) * 0.9)] * 1e6:>11.1f}")
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
    echo = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE)
    dnsmasq: subprocess.Popen[bytes] | None = None
    try:
        assert echo.stdout is not None
        target = int(echo.stdout.readline())
        dnsmasq, dns = startDnsmasq(directory, target)
        outcome: list[Any] = []
        d = measure(rounds, target, dns)
        d.addBoth(outcome.append).addBoth(lambda _: reactor.stop())
        reactor.run()
    finally:
        for process in (echo, dnsmasq):
            if process is not None:
                process.kill()
                process.wait()
        shutil.rmtree(directory, ignore_errors=True)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    report(outcome[0], rounds)


if __name__ == "__main__":
    main()
