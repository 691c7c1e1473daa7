"""
Benchmark of the proxy endpoints, each against its baseline in the same run.

  - latency: connect, send 4 bytes, read them back, close; through socks5:
    (microsocks) and httpconnect: (tinyproxy), versus a direct tcp: connect
    to the same echo server;
  - bulk: download 256 MiB from a loopback source through each tunnel,
    versus direct, and versus curl through the same proxy (the proxy's own
    limit: C{curl --socks5-hostname} and C{curl -p -x}).

Run: /tmp/venv/bin/python bench/bench_proxy.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import defer, reactor

from bench._common import (
    EchoOnce,
    freePort,
    program,
    spawn,
    stopProcesses,
    timedDownload,
    timedRound,
    waitForPort,
)
from endpointkit import buildDescription, clientFromString

MiB = 1024 * 1024

# A source and an echo server in their own process, so that the process
# under test only runs the client side.
SERVERS = r"""
import socket, socketserver, sys, threading
chunk = b"x" * (1 << 20)

class Source(socketserver.BaseRequestHandler):
    def handle(self):
        data = b""
        while b"\r\n\r\n" not in data:
            more = self.request.recv(65536)
            if not more:
                return
            data += more
        path = data.split(b" ", 2)[1]
        size = int(path.strip(b"/") or b"0")
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n" % size)
        while size > 0:
            n = min(size, len(chunk))
            self.request.sendall(chunk[:n])
            size -= n
        self.request.shutdown(socket.SHUT_WR)
        while self.request.recv(65536):
            pass

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)

socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
source = socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Source)
echo = socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[2])), Echo)
threading.Thread(target=source.serve_forever, daemon=True).start()
echo.serve_forever()
"""


class Peers:
    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.directory = tempfile.mkdtemp(prefix="bench_proxy")

    def start(self, argv: list[str], *ports: int) -> None:
        process = spawn(argv)
        self.processes.append(process)
        for port in ports:
            waitForPort(port, process, 10)

    def stop(self) -> None:
        stopProcesses(self.processes)
        shutil.rmtree(self.directory, ignore_errors=True)


@defer.inlineCallbacks
def latency(description: str, count: int) -> Any:
    endpoint = clientFromString(reactor, description)
    times = []
    for _ in range(count):
        elapsed, _, client = yield timedRound(endpoint, partial(EchoOnce, noDelay=True))
        if client.received != b"ping":
            raise SystemExit(f"{description}: echo returned {client.received!r}")
        times.append(elapsed)
    times.sort()
    return times[len(times) // 2]


@defer.inlineCallbacks
def bulk(description: str, size: int) -> Any:
    received, elapsed = yield timedDownload(clientFromString(reactor, description),
                                            b"GET /%d HTTP/1.1\r\nHost: source\r\n\r\n" % size)
    if received < size:
        raise SystemExit(f"{description}: got {received} of {size} bytes")
    return size / elapsed / MiB


def curl(args: list[str], url: str, size: int) -> float:
    start = time.perf_counter()
    result = subprocess.run([program("curl"), "-s", "-o", "/dev/null", "-w", "%{size_download}",
                             *args, url], capture_output=True, check=True, timeout=300)
    elapsed = time.perf_counter() - start
    if int(float(result.stdout.decode())) != size:
        raise SystemExit(f"curl {args}: got {result.stdout!r} bytes")
    return size / elapsed / MiB


def best(run: Callable[[], Any], repeat: int) -> Any:
    """
    The best of C{repeat} runs (a Deferred of it): the machine is shared, so
    the best run is the one least disturbed.
    """
    @defer.inlineCallbacks
    def go() -> Any:
        results = []
        for _ in range(repeat):
            results.append((yield run()))
        return max(results)

    return go()


@defer.inlineCallbacks
def main(options: argparse.Namespace) -> Any:
    peers = Peers()
    try:
        sourcePort, echoPort, socksPort, httpPort = (freePort() for _ in range(4))
        peers.start([sys.executable, "-c", SERVERS, str(sourcePort), str(echoPort)],
                    sourcePort, echoPort)
        peers.start([program("microsocks"), "-i", "127.0.0.1", "-p", str(socksPort)], socksPort)
        config = os.path.join(peers.directory, "tinyproxy.conf")
        with open(config, "w") as f:
            f.write(f"Port {httpPort}\nListen 127.0.0.1\nAllow 127.0.0.1\nMaxClients 100\n"
                    f'LogFile "{peers.directory}/tinyproxy.log"\nLogLevel Error\n')
        peers.start([program("tinyproxy"), "-d", "-c", config], httpPort)

        def tcp(port: int) -> str:
            return buildDescription("tcp", "127.0.0.1", port)

        def socks5(port: int) -> str:
            return buildDescription("socks5", "127.0.0.1", port, endpoint=tcp(socksPort))

        def http(port: int) -> str:
            return buildDescription("httpconnect", "127.0.0.1", port, endpoint=tcp(httpPort))

        count = 50 if options.quick else 300
        size = (32 if options.quick else 256) * MiB
        repeat = 1 if options.quick else 3

        rows = []
        direct = yield latency(tcp(echoPort), count)
        viaSocks = yield latency(socks5(echoPort), count)
        viaHTTP = yield latency(http(echoPort), count)
        rows.append(("connect+echo, direct tcp:", f"{direct * 1e3:.3f} ms", "1.00x"))
        rows.append(("connect+echo, socks5: (microsocks)", f"{viaSocks * 1e3:.3f} ms",
                     f"{viaSocks / direct:.2f}x direct"))
        rows.append(("connect+echo, httpconnect: (tinyproxy)", f"{viaHTTP * 1e3:.3f} ms",
                     f"{viaHTTP / direct:.2f}x direct"))

        url = f"http://127.0.0.1:{sourcePort}/{size}"
        directBulk = yield best(lambda: bulk(tcp(sourcePort), size), repeat)
        socksBulk = yield best(lambda: bulk(socks5(sourcePort), size), repeat)
        httpBulk = yield best(lambda: bulk(http(sourcePort), size), repeat)
        curlDirect = max(curl([], url, size) for _ in range(repeat))
        curlSocks = max(curl(["--socks5-hostname", f"127.0.0.1:{socksPort}"], url, size)
                        for _ in range(repeat))
        curlHTTP = max(curl(["-p", "-x", f"http://127.0.0.1:{httpPort}"], url, size)
                       for _ in range(repeat))
        mib = size // MiB
        rows.append((f"{mib} MiB, direct tcp:", f"{directBulk:.0f} MiB/s", "1.00x"))
        rows.append((f"{mib} MiB, socks5:", f"{socksBulk:.0f} MiB/s",
                     f"{socksBulk / directBulk:.2f}x direct, "
                     f"{socksBulk / curlSocks:.2f}x curl via proxy"))
        rows.append((f"{mib} MiB, httpconnect:", f"{httpBulk:.0f} MiB/s",
                     f"{httpBulk / directBulk:.2f}x direct, "
                     f"{httpBulk / curlHTTP:.2f}x curl via proxy"))
        rows.append((f"{mib} MiB, curl direct", f"{curlDirect:.0f} MiB/s", ""))
        rows.append((f"{mib} MiB, curl --socks5-hostname (microsocks)",
                     f"{curlSocks:.0f} MiB/s", "the proxy's own limit"))
        rows.append((f"{mib} MiB, curl -p -x (tinyproxy)", f"{curlHTTP:.0f} MiB/s",
                     "the proxy's own limit"))
        width = max(len(r[0]) for r in rows)
        print(f"{'measure':<{width}}  {'value':>12}  ratio")
        for name, value, ratio in rows:
            print(f"{name:<{width}}  {value:>12}  {ratio}")
        print(f"(latency: median of {count}; bulk: best of {repeat}; {os.cpu_count()} CPUs, "
              "shared machine)")
    finally:
        peers.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="a short run")
    options = parser.parse_args()
    failures: list[Any] = []
    d = main(options)
    d.addErrback(failures.append)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if failures:
        failures[0].printTraceback()
        sys.exit(1)
