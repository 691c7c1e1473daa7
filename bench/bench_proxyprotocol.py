"""
Benchmark of the C{proxyprotocol:} server wrapper against Twisted's own
C{haproxy:}: connections per second, each with a small request and reply,
through a real haproxy that sends a PROXY v2 header (C{send-proxy-v2}).

Two twistd processes run the same application (tests/pp_app.tac: it
answers a line with the peer seen in C{connectionMade}), one listening on
C{proxyprotocol:trusted=127.0.0.1:endpoint=tcp:...}, the other on
C{haproxy:tcp:...}; one haproxy has a frontend for each.  The load, in this
process, is C{--concurrency} non-blocking clients that each connect to a
frontend, send a line, read the reply and close with a reset.  The two
configurations alternate over C{--rounds} rounds of C{--seconds}; the table
shows the median of each and the ratio of the medians (target: at least
1.0, proxyprotocol: over haproxy:).

The relay rows (C{--relay-only} runs them alone; they are part of every
run): C{endpointkit relay --send-proxy v2} against the same relay without
it, connect-and-echo latency, on each path.  Four relay processes in front
of one twistd backend on C{proxyprotocol:trusted=127.0.0.1:require=no} (it
takes a connection with a header and one without alike): C{--send-proxy v2}
and the relay by default (both splice: the header is sent before any
relayed byte), and the same two with C{--no-splice} (copying).  One client
at a time connects, sends a line, reads the reply and closes; each round
makes C{--connections} of these through each relay, taking turns
connection by connection (so that a change in the machine's load falls on
all of them alike).  The table shows the median latency (the median of the
rounds' medians) and the relay process's own CPU time per connection (from
C{/proc}, less sensitive to a shared machine), and for each path the ratios
(target: at most 1.05, --send-proxy over the same relay without it).

    .venv/bin/python bench/bench_proxyprotocol.py [--quick] [--relay-only]
"""

from __future__ import annotations

import argparse
import errno
import os
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import cpuSeconds, freePort, program, stopProcesses, waitForPort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = os.path.join(ROOT, "tests", "pp_app.tac")
MESSAGE = b"hi\n"


def load(port: int, seconds: float, concurrency: int) -> tuple[int, int]:
    """
    C{concurrency} clients, each connecting, sending L{MESSAGE}, reading a
    line and closing with a reset, for C{seconds}; (done, failed).
    """
    selector = selectors.DefaultSelector()
    linger = struct.pack("ii", 1, 0)
    done = failed = 0
    end = time.monotonic() + seconds
    state: dict[socket.socket, list[Any]] = {}

    def begin() -> None:
        s = socket.socket()
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        error = s.connect_ex(("127.0.0.1", port))
        if error not in (0, errno.EINPROGRESS):
            s.close()
            raise OSError(error, os.strerror(error))
        state[s] = [False, b""]
        selector.register(s, selectors.EVENT_WRITE)

    def finish(s: socket.socket) -> None:
        selector.unregister(s)
        del state[s]
        s.close()

    for _ in range(concurrency):
        begin()
    while state:
        now = time.monotonic()
        for key, _ in selector.select(timeout=max(0.0, min(1.0, end - now + 1))):
            s: Any = key.fileobj
            entry = state[s]
            try:
                if not entry[0]:
                    s.send(MESSAGE)
                    entry[0] = True
                    selector.modify(s, selectors.EVENT_READ)
                    continue
                data = s.recv(4096)
            except OSError:
                failed += 1
                finish(s)
            else:
                if not data:
                    failed += 1
                    finish(s)
                else:
                    entry[1] += data
                    if not entry[1].endswith(b"\n"):
                        continue
                    done += 1
                    finish(s)
            if time.monotonic() < end:
                begin()
        if time.monotonic() > end + 10:
            break
    for s in list(state):
        finish(s)
    return done, failed


def connectAndEcho(port: int) -> tuple[float, bytes]:
    """
    One connection through a relay: connect, send L{MESSAGE}, read the
    reply line, close; the seconds it took and the reply.
    """
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(MESSAGE)
        reply = b""
        while not reply.endswith(b"\n"):
            data = s.recv(4096)
            if not data:
                break
            reply += data
        own = s.getsockname()[1]
    elapsed = time.perf_counter() - started
    if not reply.endswith(b"\n"):
        raise SystemExit(f"no reply through the relay on port {port}")
    return elapsed, reply + f" (client port {own})".encode()


def benchRelay(options: argparse.Namespace, twistd: str, workdir: str,
               processes: list[subprocess.Popen[bytes]]) -> None:
    """
    The relay row: C{--send-proxy v2} against the same relay without it.
    """
    backend = freePort()
    env = dict(os.environ, PP_RAW="proxyprotocol:trusted=127.0.0.1:require=no:endpoint=tcp\\:"
               f"{backend}\\:interface=127.0.0.1")
    env.pop("PYTHONPATH", None)
    processes.append(subprocess.Popen(
        [twistd, "-n", "--pidfile=", "-l", os.path.join(workdir, "relay-backend.log"), "-y", APP],
        env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL))
    relays = {"relay --send-proxy v2": ["--send-proxy", "v2"],
              "relay (default: splice)": [],
              "relay --send-proxy v2 --no-splice": ["--send-proxy", "v2", "--no-splice"],
              "relay --no-splice": ["--no-splice"]}
    ports = {name: freePort() for name in relays}
    relayEnv = dict(os.environ, PYTHONPATH=ROOT)
    for name, flags in relays.items():
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "endpointkit", "relay", *flags,
             f"tcp:{ports[name]}:interface=127.0.0.1", f"tcp:127.0.0.1:{backend}"],
            env=relayEnv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
    for port in [backend, *ports.values()]:
        waitForPort(port, timeout=30)
    # Warm up, and check that the header arrives: through --send-proxy the
    # backend sees the client's own port, otherwise the relay's.
    for name, port in ports.items():
        for _ in range(50):
            _, reply = connectAndEcho(port)
        words = reply.decode().split()
        sawClient = words[1].rsplit(":", 1)[1] == words[-1].rstrip(")")
        if sawClient != ("--send-proxy" in name):
            raise SystemExit(f"{name}: the backend saw {words[1]}: {reply!r}")
    pids = {name: process.pid for name, process in zip(relays, processes[-len(relays):], strict=True)}
    medians: dict[str, list[float]] = {name: [] for name in ports}
    cpu: dict[str, list[float]] = {name: [] for name in ports}
    for _ in range(options.rounds):
        times: dict[str, list[float]] = {name: [] for name in ports}
        before = {name: cpuSeconds(pid) for name, pid in pids.items()}
        for _ in range(options.connections):
            for name, port in ports.items():
                times[name].append(connectAndEcho(port)[0])
        for name in ports:
            medians[name].append(statistics.median(times[name]))
            cpu[name].append((cpuSeconds(pids[name]) - before[name]) / options.connections)
    print(f"\nrelay connect-and-echo, {options.rounds} round(s) of {options.connections} "
          f"sequential connections through each relay, interleaved connection by "
          f"connection; one backend (proxyprotocol:require=no)")
    print(f"{'relay':34} {'latency us':>11} {'relay CPU us/conn':>18}   round latency medians (us)")
    for name, values in medians.items():
        shown = " ".join(f"{v * 1e6:.0f}" for v in values)
        print(f"{name:34} {statistics.median(values) * 1e6:11.0f} "
              f"{statistics.median(cpu[name]) * 1e6:18.0f}   {shown}")
    for name, other in (("relay --send-proxy v2", "relay (default: splice)"),
                        ("relay --send-proxy v2 --no-splice", "relay --no-splice")):
        latency = statistics.median(medians[name]) / statistics.median(medians[other])
        perConnection = statistics.median(cpu[name]) / statistics.median(cpu[other])
        print(f"ratio {name} / {other}: latency {latency:.3f} (target <= 1.05), "
              f"relay CPU {perConnection:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--connections", type=int, default=300,
                        help="connections through each relay per round (the relay row)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 s")
    parser.add_argument("--relay-only", action="store_true", help="only the relay row")
    options = parser.parse_args()
    if options.quick:
        options.seconds, options.rounds, options.connections = 1.0, 2, 100
    haproxy = program("haproxy")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    workdir = tempfile.mkdtemp(prefix="bench-pp-")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if options.relay_only:
            print(f"cores: {os.cpu_count()} (shared with other work: figures are indicative)")
            benchRelay(options, twistd, workdir, processes)
            return
        backends = {"proxyprotocol:": freePort(), "haproxy: (Twisted)": freePort()}
        descriptions = {
            "proxyprotocol:": "proxyprotocol:trusted=127.0.0.1:endpoint=tcp\\:"
                              f"{backends['proxyprotocol:']}\\:interface=127.0.0.1",
            "haproxy: (Twisted)": f"haproxy:tcp:{backends['haproxy: (Twisted)']}:"
                                  "interface=127.0.0.1",
        }
        for name, description in descriptions.items():
            env = dict(os.environ, PP_RAW=description)
            env.pop("PYTHONPATH", None)
            log = os.path.join(workdir, f"{backends[name]}.log")
            processes.append(subprocess.Popen(
                [twistd, "-n", "--pidfile=", "-l", log, "-y", APP], env=env, cwd=workdir,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        fronts = {name: freePort() for name in backends}
        config = os.path.join(workdir, "haproxy.cfg")
        with open(config, "w") as f:
            f.write("global\n    maxconn 4096\ndefaults\n    mode tcp\n"
                    "    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n")
            for n, name in enumerate(backends):
                f.write(f"frontend f{n}\n    bind 127.0.0.1:{fronts[name]}\n"
                        f"    default_backend b{n}\nbackend b{n}\n"
                        f"    server s 127.0.0.1:{backends[name]} send-proxy-v2\n")
        processes.append(subprocess.Popen([haproxy, "-f", config, "-db"],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        for port in [*backends.values(), *fronts.values()]:
            waitForPort(port, timeout=30)
        # Warm up both, and check that each answers with the client's address.
        for name, port in fronts.items():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(MESSAGE)
                reply = s.recv(4096)
            if not reply:
                raise SystemExit(f"{name} did not answer through haproxy")
            load(port, 0.5, options.concurrency)
        rates: dict[str, list[float]] = {name: [] for name in fronts}
        failures = dict.fromkeys(fronts, 0)
        for _ in range(options.rounds):
            for name, port in fronts.items():
                started = time.monotonic()
                done, failed = load(port, options.seconds, options.concurrency)
                rates[name].append(done / (time.monotonic() - started))
                failures[name] += failed
        cores = os.cpu_count()
        print(f"cores: {cores} (shared with other work: figures are indicative); "
              f"{options.rounds} interleaved round(s) of {options.seconds:g} s, "
              f"{options.concurrency} clients; haproxy send-proxy-v2 in front")
        baseline = statistics.median(rates["haproxy: (Twisted)"])
        print(f"\n{'server wrapper':24} {'conn/s (median)':>16} {'rounds':>24} {'failed':>7}")
        for name, values in rates.items():
            shown = " ".join(f"{v:.0f}" for v in values)
            print(f"{name:24} {statistics.median(values):16.0f} {shown:>24} {failures[name]:7}")
        ratio = statistics.median(rates["proxyprotocol:"]) / baseline
        print(f"\nratio proxyprotocol: / haproxy: = {ratio:.2f} (target >= 1.0)")
        benchRelay(options, twistd, workdir, processes)
    finally:
        stopProcesses(processes, 10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
