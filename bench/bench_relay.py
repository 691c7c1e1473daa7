"""
Bulk throughput and connection rate through C{endpointkit relay} (splice and
copying paths) against C{socat}, C{twistd portforward} and a direct
connection, in one run, with the same source and sink processes.

Each stream sends a fixed number of bytes and waits for the sink's
acknowledgement (a fixed-size exchange: C{twistd portforward} loses replies
after a half-close, so nothing here relies on one).

The connection-rate row: 4 client threads, each connecting, sending 100
bytes, reading their echo and closing, as fast as they can for a while;
every relay (the two endpointkit paths, C{twistd portforward}, C{socat
fork}) runs at once and they take turns, in interleaved rounds; the median
round counts.

    .venv/bin/python bench/bench_relay.py            # 1 GiB, 1 and 16 streams; rate
    .venv/bin/python bench/bench_relay.py --quick    # 256 MiB, 1 and 4 streams; rate
    .venv/bin/python bench/bench_relay.py --rate-only
    .venv/bin/python bench/bench_relay.py --metrics-only [--quick]

The metrics rows (C{--metrics-only}): the relay with C{--metrics} (counting
into prometheus_client and serving on a UNIX socket) against the same relay
without, on both paths, all running at once: bulk throughput (one stream)
and connection rate, in interleaved rounds, median per relay, and the
ratio with metrics to without; the same ratios of the relay process's own
CPU time per GiB and per connection; and the counting timed directly in
this process (C{Relay.count} with metrics against without, and the metrics
calls of one connection) as a share of what a chunk and a connection take
through the relay in those rounds.  On a shared machine the rounds of one
relay vary far more than the few per cent the targets allow; the direct
timing does not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import cpuSeconds, freePort, waitForPort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PYTHON = sys.executable
CHUNK = 1 << 20


def _recvExactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = s.recv(n - len(data))
        if not more:
            raise ConnectionError("closed early")
        data += more
    return data


def sink(port: int) -> None:
    """
    Accept connections; each says how many bytes follow, and gets C{ok}
    once they have all arrived.
    """
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(128)
    print("ready", flush=True)

    def serve(s: socket.socket) -> None:
        with s:
            try:
                (size,) = struct.unpack("!Q", _recvExactly(s, 8))
            except OSError:
                return  # a readiness probe
            buffer = bytearray(CHUNK)
            view = memoryview(buffer)
            left = size
            while left:
                n = s.recv_into(view[: min(CHUNK, left)])
                if not n:
                    return
                left -= n
            s.sendall(b"ok")

    while True:
        s, _ = server.accept()
        threading.Thread(target=serve, args=(s,), daemon=True).start()


def source(port: int, total: int, streams: int) -> None:
    """
    Send C{total} bytes over C{streams} parallel connections; print the
    seconds it took until every stream was acknowledged.
    """
    block = os.urandom(CHUNK)
    each = total // streams
    errors: list[BaseException] = []
    barrier = threading.Barrier(streams + 1)

    def send() -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
                barrier.wait()
                s.sendall(struct.pack("!Q", each))
                left = each
                while left:
                    n = min(CHUNK, left)
                    s.sendall(block[:n])
                    left -= n
                if _recvExactly(s, 2) != b"ok":
                    raise ConnectionError("bad acknowledgement")
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=send) for _ in range(streams)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        print(f"error {errors[0]!r}", flush=True)
        sys.exit(1)
    print(f"{elapsed:.6f}", flush=True)


def echo(port: int) -> None:
    """
    An echo server (one thread, epoll): what it reads it writes back; it
    closes a connection at its end of stream.
    """
    import selectors

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(1024)
    server.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is server:
                for _ in range(64):
                    try:
                        conn, _ = server.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    selector.register(conn, selectors.EVENT_READ)
                continue
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
                if data:
                    sock.sendall(data)
                    continue
            except OSError:
                pass
            selector.unregister(sock)
            sock.close()


RATE_THREADS = 4
RATE_PAYLOAD = 100


def rateSource(port: int, seconds: float) -> None:
    """
    Short connections from 4 threads for C{seconds}: connect, send 100
    bytes, read them back, close.  Prints connections per second.
    """
    payload = os.urandom(RATE_PAYLOAD)
    counts = [0] * RATE_THREADS
    errors: list[BaseException] = []
    deadline = time.perf_counter() + seconds

    def run(index: int) -> None:
        try:
            while time.perf_counter() < deadline:
                with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                    s.sendall(payload)
                    got = 0
                    while got < RATE_PAYLOAD:
                        more = s.recv(RATE_PAYLOAD - got)
                        if not more:
                            raise ConnectionError("closed early")
                        got += len(more)
                counts[index] += 1
        except BaseException as e:
            errors.append(e)

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(RATE_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        print(f"error {errors[0]!r}", flush=True)
        sys.exit(1)
    print(f"{sum(counts) / elapsed:.1f}", flush=True)


def rateRelays(target: int, tmp: str) -> list[tuple[str, list[str]]]:
    """
    The relays the connection-rate row compares, each with its port.
    """
    relay = [PYTHON, "-c",
             "import sys; from endpointkit._relaycli import main; sys.exit(main(sys.argv[1:]))"]
    back = f"tcp:127.0.0.1:{target}"
    twistd = os.path.join(os.path.dirname(PYTHON), "twistd")
    found: list[tuple[str, list[str]]] = []
    port = freePort()
    found.append(("endpointkit relay (splice)",
                  [*relay, f"tcp:{port}:interface=127.0.0.1:backlog=1024", back, str(port)]))
    port = freePort()
    found.append(("endpointkit relay --no-splice",
                  [*relay, "--no-splice", f"tcp:{port}:interface=127.0.0.1:backlog=1024", back,
                   str(port)]))
    port = freePort()
    found.append(("twistd portforward",
                  [twistd, "-n", "--pidfile=", "-l", os.path.join(tmp, f"pf{port}.log"),
                   "portforward", "-p", f"tcp:{port}:interface=127.0.0.1", "-h", "127.0.0.1",
                   "-d", str(target), str(port)]))
    if shutil.which("socat"):
        port = freePort()
        found.append(("socat fork", ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,"
                                     "fork,backlog=1024", f"TCP:127.0.0.1:{target}", str(port)]))
    return found


def runRate(seconds: float, rounds: int) -> dict[str, float]:
    """
    The connection-rate row: every relay at once, taking turns for
    C{rounds} interleaved rounds of C{seconds}; the median per relay.
    """
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    target = freePort()
    echoProcess = subprocess.Popen([PYTHON, __file__, "--echo", str(target)],
                                   stdout=subprocess.PIPE, env=env)
    assert echoProcess.stdout is not None
    echoProcess.stdout.readline()
    results: dict[str, list[float]] = {}
    processes: list[tuple[str, int, subprocess.Popen[bytes]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name, argv in rateRelays(target, tmp):
                port = int(argv[-1])
                process = subprocess.Popen(argv[:-1], stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, env=env, cwd=tmp)
                processes.append((name, port, process))
            for _name, port, process in processes:
                waitForPort(port, process)
            for round in range(rounds):
                order = processes if round % 2 == 0 else processes[::-1]
                for name, port, _ in order:
                    out = subprocess.run([PYTHON, __file__, "--rate-source", str(port),
                                          str(seconds)], capture_output=True, env=env,
                                         timeout=seconds + 120)
                    text = out.stdout.decode().strip()
                    if out.returncode:
                        raise RuntimeError(f"{name}: {text} {out.stderr.decode()}")
                    results.setdefault(name, []).append(float(text))
                    print(f"  {name:32} round {round + 1}: {float(text):8.0f} connections/s",
                          file=sys.stderr, flush=True)
                    # Let TIME_WAIT and the relays' own clean-up settle.
                    time.sleep(0.5)
        finally:
            for _, _, process in processes:
                process.send_signal(signal.SIGTERM)
            for _, _, process in processes:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            echoProcess.kill()
            echoProcess.wait()
    medians = {name: sorted(values)[len(values) // 2] for name, values in results.items()}
    print(f"\nconnection rate: connect, {RATE_PAYLOAD}-byte echo, close; {RATE_THREADS} client "
          f"threads; median of {rounds} interleaved rounds of {seconds:g} s "
          "(ratio to twistd portforward / socat fork)")
    for name, value in medians.items():
        ratios = "/".join(f"{value / medians[base]:.2f}" if base in medians else "-"
                          for base in ("twistd portforward", "socat fork"))
        print(f"{name:32} {value:8.0f} connections/s ({ratios})")
    print("target: both endpointkit paths >= 1.2x twistd portforward")
    return medians


def spliceLoop(listenPort: int, target: int) -> None:
    """
    The reference for the splice path: the plainest relay that splices, one
    blocking thread per direction moving bytes socket -> pipe -> socket,
    with no event loop at all.  What the reactor-driven path can hope for on
    this machine.
    """
    import fcntl

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listenPort))
    server.listen(128)

    def pump(source: socket.socket, destination: socket.socket) -> None:
        readEnd, writeEnd = os.pipe()
        fcntl.fcntl(writeEnd, 1031, CHUNK)  # F_SETPIPE_SZ
        try:
            while True:
                n = os.splice(source.fileno(), writeEnd, CHUNK)
                if not n:
                    destination.shutdown(socket.SHUT_WR)
                    return
                while n:
                    n -= os.splice(readEnd, destination.fileno(), n)
        except OSError:
            return
        finally:
            os.close(readEnd)
            os.close(writeEnd)

    def serve(client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", target)) as backend:
            back = threading.Thread(target=pump, args=(backend, client), daemon=True)
            back.start()
            pump(client, backend)
            back.join()

    while True:
        client, _ = server.accept()
        threading.Thread(target=serve, args=(client,), daemon=True).start()


def metricsConfigs(tmp: str) -> list[tuple[str, list[str]]]:
    """
    The relays the metrics rows compare: each path without and with
    C{--metrics}.
    """
    found: list[tuple[str, list[str]]] = []
    for path, flags in (("splice", []), ("--no-splice", ["--no-splice"])):
        found.append((f"relay ({path})", flags))
        sock = os.path.join(tmp, f"m{len(found)}.sock")
        found.append((f"relay ({path}) --metrics", [*flags, "--metrics", f"unix:{sock}"]))
    return found


def runMetrics(total: int, seconds: float, rounds: int) -> None:
    """
    The metrics rows: bulk throughput and connection rate through each
    relay of L{metricsConfigs}, interleaved rounds, medians and ratios.
    """
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    relay = [PYTHON, "-c",
             "import sys; from endpointkit._relaycli import main; sys.exit(main(sys.argv[1:]))"]
    sinkPort, echoPort = freePort(), freePort()
    helpers = [subprocess.Popen([PYTHON, __file__, "--sink", str(sinkPort)],
                                stdout=subprocess.PIPE, env=env),
               subprocess.Popen([PYTHON, __file__, "--echo", str(echoPort)],
                                stdout=subprocess.PIPE, env=env)]
    for helper in helpers:
        assert helper.stdout is not None
        helper.stdout.readline()
    bulk: dict[str, list[float]] = {}
    rate: dict[str, list[float]] = {}
    bulkCPU: dict[str, list[float]] = {}
    rateCPU: dict[str, list[float]] = {}
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ports: list[tuple[str, int, int]] = []
            pids: dict[tuple[str, int], int] = {}
            for name, flags in metricsConfigs(tmp):
                pair = []
                for target in (sinkPort, echoPort):
                    port = freePort()
                    extra = flags if target == sinkPort else [
                        f.replace(".sock", "e.sock") for f in flags]
                    process = subprocess.Popen(
                        [*relay, *extra, f"tcp:{port}:interface=127.0.0.1:backlog=1024",
                         f"tcp:127.0.0.1:{target}"], stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp)
                    processes.append(process)
                    waitForPort(port, process)
                    pair.append(port)
                    pids[name, port] = process.pid
                ports.append((name, pair[0], pair[1]))
            for round in range(rounds):
                order = ports if round % 2 == 0 else ports[::-1]
                for name, bulkPort, ratePort in order:
                    before = cpuSeconds(pids[name, bulkPort])
                    out = subprocess.run([PYTHON, __file__, "--source", str(bulkPort),
                                          str(total), "1"], capture_output=True, env=env,
                                         timeout=300)
                    if out.returncode:
                        raise RuntimeError(f"{name}: {out.stdout!r} {out.stderr!r}")
                    bulk.setdefault(name, []).append(total / float(out.stdout) / 1e6)
                    bulkCPU.setdefault(name, []).append(
                        (cpuSeconds(pids[name, bulkPort]) - before) / (total / 2**30))
                    before = cpuSeconds(pids[name, ratePort])
                    out = subprocess.run([PYTHON, __file__, "--rate-source", str(ratePort),
                                          str(seconds)], capture_output=True, env=env,
                                         timeout=seconds + 120)
                    if out.returncode:
                        raise RuntimeError(f"{name}: {out.stdout!r} {out.stderr!r}")
                    rate.setdefault(name, []).append(float(out.stdout))
                    rateCPU.setdefault(name, []).append(
                        (cpuSeconds(pids[name, ratePort]) - before)
                        / max(1.0, float(out.stdout) * seconds))
                    print(f"  {name:32} round {round + 1}: {bulk[name][-1]:8.0f} MB/s "
                          f"{rate[name][-1]:8.0f} connections/s", file=sys.stderr, flush=True)
                    time.sleep(0.5)
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for helper in helpers:
                helper.kill()
            for process in [*processes, *helpers]:
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    print(f"\nrelay with --metrics vs without: bulk {total / 2**20:.0f} MiB over 1 stream and "
          f"connection rate ({RATE_THREADS} threads, {RATE_PAYLOAD}-byte echo, {seconds:g} s), "
          f"median of {rounds} interleaved rounds")
    for name, _ in metricsConfigs("x")[::2]:
        withMetrics = f"{name} --metrics"
        for what, table, unit in (("bulk", bulk, "MB/s"), ("rate", rate, "connections/s")):
            base, measured = median(table[name]), median(table[withMetrics])
            print(f"{withMetrics:32} {what}: {measured:8.0f} {unit:14} vs {base:8.0f} "
                  f"without: {measured / base:.3f}x")
        for what, table, unit, scale in (("bulk", bulkCPU, "CPU s/GiB", 1.0),
                                         ("rate", rateCPU, "CPU us/conn", 1e6)):
            base, measured = median(table[name]), median(table[withMetrics])
            print(f"{withMetrics:32} {what}: {measured * scale:8.2f} {unit:14} vs "
                  f"{base * scale:8.2f} without: {base / measured:.3f}x "
                  f"(the relay process's own CPU)")
    print("targets: bulk >= 0.97x, connections/s >= 0.95x (throughput, or the relay's own CPU "
          "per GiB and per connection, which a shared machine disturbs less)")
    copying = "relay (--no-splice)"
    countingCost(65536 / (median(bulk[copying]) * 1e6),
                 1 / median(rate[copying]))


def countingCost(chunkSeconds: float, connectionSeconds: float,
                 rounds: int = 5, count: int = 200000) -> None:
    """
    What counting into the metrics costs by itself, timed directly in this
    process: C{Relay.count} (called once per chunk moved) with metrics
    against without, and the metrics calls one connection makes, each as a
    share of what a chunk and a connection take through the relay
    (C{chunkSeconds}, C{connectionSeconds}: measured in the rounds above).
    """
    from prometheus_client import CollectorRegistry
    from twisted.internet.task import Clock

    from endpointkit.metrics import RelayMetrics
    from endpointkit.relay import Relay, RelayFactory

    def relayWith(metrics: RelayMetrics | None) -> Relay:
        factory = RelayFactory(Clock(), None, "tcp:127.0.0.1:1", metrics=metrics)
        return Relay(factory, None)  # type: ignore[arg-type]

    metrics = RelayMetrics("tcp:8080", "tcp:127.0.0.1:1", CollectorRegistry())
    plain, counted = relayWith(None), relayWith(metrics)

    def perConnection() -> None:
        metrics.connectionOpened()
        metrics.connected(0.0005)
        metrics.spliced()
        metrics.connectionClosed()

    def timed(call: Callable[[], None], n: int) -> float:
        best = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(n):
                call()
            best.append((time.perf_counter() - start) / n)
        return sorted(best)[len(best) // 2]

    without = timed(lambda: plain.count(0, 65536), count)
    withMetrics = timed(lambda: counted.count(0, 65536), count)
    connection = timed(perConnection, count // 10)
    chunk = withMetrics - without
    print(f"counting timed directly: {chunk * 1e6:.3f} us more per chunk with metrics "
          f"({chunk / chunkSeconds * 100:.3f}% of a 64 KiB chunk through the copying path, "
          f"{chunkSeconds * 1e6:.1f} us at its median rate); {connection * 1e6:.2f} us of "
          f"metrics calls per connection ({connection / connectionSeconds * 100:.2f}% of a "
          f"connection, {connectionSeconds * 1e6:.0f} us of the relay's time at the copying "
          f"path's median rate)")


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakRSS:
    """
    Samples the summed RSS of a process and its children (socat forks).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, sum(_rss(p) for p in _tree(self.pid)))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def relays(target: int, tmp: str) -> list[tuple[str, Callable[[int], list[str]]]]:
    relay = [PYTHON, "-c",
             "import sys; from endpointkit._relaycli import main; sys.exit(main(sys.argv[1:]))"]
    back = f"tcp:127.0.0.1:{target}"
    found: list[tuple[str, Callable[[int], list[str]]]] = [
        ("direct", lambda port: []),
        ("endpointkit relay (splice)",
         lambda port: [*relay, f"tcp:{port}:interface=127.0.0.1", back]),
        ("endpointkit relay --no-splice",
         lambda port: [*relay, "--no-splice", f"tcp:{port}:interface=127.0.0.1", back]),
    ]
    if shutil.which("socat"):
        found.append(("socat -b 65536", lambda port: [
            "socat", "-b", "65536", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
            f"TCP:127.0.0.1:{target}"]))
    if hasattr(os, "splice"):
        found.append(("blocking splice loop", lambda port: [
            PYTHON, __file__, "--splice-loop", str(port), str(target)]))
    twistd = os.path.join(os.path.dirname(PYTHON), "twistd")
    found.append(("twistd portforward", lambda port: [
        twistd, "-n", "--pidfile=", "-l", os.path.join(tmp, f"pf{port}.log"), "portforward",
        "-p", f"tcp:{port}:interface=127.0.0.1", "-h", "127.0.0.1", "-d", str(target)]))
    return found


def run(total: int, streamCounts: Sequence[int], repeat: int) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    target = freePort()
    sinkProcess = subprocess.Popen([PYTHON, __file__, "--sink", str(target)],
                                   stdout=subprocess.PIPE, env=env)
    assert sinkProcess.stdout is not None
    sinkProcess.stdout.readline()
    results: dict[tuple[str, int], float] = {}
    peaks: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name, argv in relays(target, tmp):
                port = freePort()
                command = argv(port)
                process = None
                if command:
                    process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL, env=env,
                                               cwd=tmp)
                    waitForPort(port, process)
                else:
                    port = target
                sampler = PeakRSS(process.pid) if process else None
                try:
                    for streams in streamCounts:
                        best = 0.0
                        for _ in range(repeat):
                            out = subprocess.run(
                                [PYTHON, __file__, "--source", str(port), str(total),
                                 str(streams)], capture_output=True, env=env, timeout=300)
                            text = out.stdout.decode().strip()
                            if out.returncode:
                                raise RuntimeError(f"{name}: {text} {out.stderr.decode()}")
                            best = max(best, total / float(text) / 1e6)
                        results[name, streams] = best
                        print(f"  {name:32} {streams:3} stream(s) {best:8.0f} MB/s",
                              file=sys.stderr, flush=True)
                finally:
                    if sampler is not None:
                        peaks[name] = sampler.stop()
                    if process is not None:
                        process.send_signal(signal.SIGTERM)
                        try:
                            process.wait(15)
                        except subprocess.TimeoutExpired:
                            process.kill()
                            process.wait()
        finally:
            sinkProcess.kill()
            sinkProcess.wait()
    report(results, peaks, total, streamCounts)


def report(results: dict[tuple[str, int], float], peaks: dict[str, int], total: int,
           streamCounts: Sequence[int]) -> None:
    names = list(dict.fromkeys(name for name, _ in results))
    print(f"\nrelay throughput, {total / 2**20:.0f} MiB per run over loopback, "
          f"best of runs, MB/s (ratio to socat -b 65536 / twistd portforward / direct)")
    header = f"{'relay':32}" + "".join(f"{f'{s} stream(s)':>34}" for s in streamCounts)
    print(header + f"{'peak RSS':>12}")
    for name in names:
        cells = []
        for streams in streamCounts:
            value = results.get((name, streams), 0.0)
            ratios = []
            for base in ("socat -b 65536", "twistd portforward", "direct"):
                reference = results.get((base, streams))
                ratios.append(f"{value / reference:.2f}" if reference else "-")
            cells.append(f"{value:8.0f} ({'/'.join(ratios)})")
        rss = peaks.get(name)
        rssText = f"{rss / 2**20:.0f} MiB" if rss else "-"
        print(f"{name:32}" + "".join(f"{c:>34}" for c in cells) + f"{rssText:>12}")
    for streams in streamCounts:
        ours = results.get(("endpointkit relay (splice)", streams))
        loop = results.get(("blocking splice loop", streams))
        if ours and loop:
            print(f"splice path / blocking splice loop, {streams} stream(s): {ours / loop:.2f}")
    print("\ntargets: --no-splice >= 1.2x twistd portforward; splice >= 1.5x socat -b 65536 "
          "and >= 0.75x direct")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="256 MiB, 1 and 4 streams")
    parser.add_argument("--bytes", type=int, default=None, help="bytes per run")
    parser.add_argument("--streams", default=None, help="comma-separated stream counts")
    parser.add_argument("--repeat", type=int, default=None, help="runs per cell (best kept)")
    parser.add_argument("--rate-only", action="store_true", help="only the connection-rate row")
    parser.add_argument("--no-rate", action="store_true", help="no connection-rate row")
    parser.add_argument("--rate-seconds", type=float, default=2.0,
                        help="seconds per connection-rate round (default 2)")
    parser.add_argument("--rate-rounds", type=int, default=5,
                        help="interleaved connection-rate rounds (default 5)")
    parser.add_argument("--metrics-only", action="store_true",
                        help="only the rows of the relay with --metrics vs without")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--echo", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate-source", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--source", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--splice-loop", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        sink(args.sink)
        return 0
    if args.echo:
        echo(args.echo)
        return 0
    if args.rate_source:
        rateSource(int(args.rate_source[0]), float(args.rate_source[1]))
        return 0
    if args.rate_only:
        runRate(args.rate_seconds, args.rate_rounds)
        return 0
    if args.metrics_only:
        total = args.bytes or ((128 if args.quick else 512) << 20)
        runMetrics(total, args.rate_seconds / 2 if args.quick else args.rate_seconds,
                   args.rate_rounds)
        return 0
    if args.splice_loop:
        spliceLoop(*args.splice_loop)
        return 0
    if args.source:
        source(*args.source)
        return 0
    total = args.bytes or ((256 if args.quick else 1024) << 20)
    streams = [int(s) for s in (args.streams or ("1,4" if args.quick else "1,16")).split(",")]
    run(total, streams, args.repeat or (1 if args.quick else 3))
    if not args.no_rate:
        runRate(args.rate_seconds, args.rate_rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
