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

    .venv/bin/python bench/bench_proxyprotocol.py [--quick]
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APP = os.path.join(ROOT, "tests", "pp_app.tac")
MESSAGE = b"hi\n"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def waitForPort(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            try:
                s.connect(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.1)
    raise SystemExit(f"nothing listened on 127.0.0.1:{port} within {timeout:g} s")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 s")
    options = parser.parse_args()
    if options.quick:
        options.seconds, options.rounds = 1.0, 2
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(haproxy, os.X_OK):
        raise SystemExit("haproxy is not installed (apt-get install haproxy)")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    workdir = tempfile.mkdtemp(prefix="bench-pp-")
    processes: list[subprocess.Popen[bytes]] = []
    try:
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
            waitForPort(port)
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
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
