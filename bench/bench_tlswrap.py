"""
Benchmark of C{tlswrap:}'s server side.

1. Handshakes per second: connect, TLS handshake, one small HTTP/1.0
   request and reply, close; measured by C{openssl s_time -new} (one
   connection after the other).
2. Bulk MB/s: one C{curl} download of C{--mib} MiB over TLS.

for C{tlswrap:} around C{tcp:} (the default reload=60, reload=0 and
reload=1, which looks at the certificate file every second) versus
Twisted's own C{ssl:} server with the same certificate and key (EC P-256),
and nginx terminating TLS (one worker) as a native-code reference.  All
servers run at once, each in its own process; the measurements interleave
over C{--rounds} rounds and the table shows each one's median.

Then the same handshakes in this process over memory BIOs (no sockets,
steadier), and the reload check timed directly: the check every handshake
makes when nothing is due, as a share of a handshake, and a look at the
files (what a due check does, once per C{reload} seconds) as a share of the
server's time.

    .venv/bin/python bench/bench_tlswrap.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import freePort, stopProcesses, waitForPort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHUNK = 256 * 1024


def serve(description: str, bulkBytes: int) -> None:
    """
    The server process: a minimal HTTP/1.0 server on C{description};
    C{/ping} answers C{pong}, C{/bulk} streams C{bulkBytes} bytes.
    """
    from twisted.internet import protocol, reactor
    from twisted.internet.interfaces import IPullProducer
    from zope.interface import implementer

    import endpointkit

    block = b"x" * CHUNK

    @implementer(IPullProducer)
    class Bulk:
        def __init__(self, transport: Any, remaining: int) -> None:
            self.transport = transport
            self.remaining = remaining

        def resumeProducing(self) -> None:
            if self.remaining <= 0:
                self.transport.unregisterProducer()
                self.transport.loseConnection()
                return
            size = min(CHUNK, self.remaining)
            self.remaining -= size
            self.transport.write(block if size == CHUNK else block[:size])

        def stopProducing(self) -> None:
            self.remaining = 0

    class HTTP(protocol.Protocol):
        buffer = b""

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            if b"\r\n\r\n" not in self.buffer:
                return
            transport: Any = self.transport
            if self.buffer.startswith(b"GET /bulk"):
                transport.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % bulkBytes)
                transport.registerProducer(Bulk(transport, bulkBytes), False)
            else:
                transport.write(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\npong")
                transport.loseConnection()
            self.buffer = b""

    factory = protocol.Factory.forProtocol(HTTP)
    factory.noisy = False
    endpointkit.serverFromString(reactor, description).listen(factory)
    reactor.run()


def makeCertificate(directory: str) -> tuple[str, str, str]:
    from tests._support import TestCA

    ca = TestCA("bench CA")
    certificate, key = ca.issue("localhost", addresses=["127.0.0.1"])
    paths = []
    for name, data in (("ca.pem", ca.certificatePEM), ("server.crt", certificate),
                       ("server.key", key)):
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    combined = os.path.join(directory, "server.pem")
    with open(combined, "wb") as f:
        f.write(certificate + key)
    return paths[0], combined, paths[1]


def startNginx(directory: str, port: int, crt: str, key: str, bulk: str) -> subprocess.Popen[bytes]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    home = os.path.join(directory, "nginx")
    os.mkdir(home)
    temp = "".join(f"{t}_temp_path {home}/{t};\n" for t in
                   ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    with open(os.path.join(home, "nginx.conf"), "w") as f:
        f.write(f"""
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  {temp}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {crt};
    ssl_certificate_key {key};
    location = /ping {{ return 200 "pong"; }}
    location = /bulk {{ alias {bulk}; }}
  }}
}}
""")
    return subprocess.Popen([nginx, "-p", home, "-c", os.path.join(home, "nginx.conf"),
                             "-g", "daemon off; master_process off;"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def handshakes(port: int, ca: str, seconds: float) -> float:
    start = time.monotonic()
    result = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time",
         str(int(seconds)), "-www", "/ping", "-CAfile", ca],
        capture_output=True, text=True, timeout=seconds + 60)
    elapsed = time.monotonic() - start
    found = re.search(r"(\d+) connections in [\d.]+s;", result.stdout)
    if found is None:
        raise SystemExit(f"s_time printed no count: {result.stdout[-500:]} {result.stderr[-500:]}")
    return int(found.group(1)) / elapsed


def bulk(port: int, ca: str, size: int) -> float:
    result = subprocess.run(
        # --no-alpn: Twisted 26's ssl: server answers an ALPN offer it has no
        # protocols for with an internal_error alert (tlswrap: negotiates none).
        ["curl", "-sS", "--no-alpn", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}",
         "--cacert", ca, "--resolve", f"localhost:{port}:127.0.0.1",
         f"https://localhost:{port}/bulk"], capture_output=True, text=True, timeout=300)
    speed, got = result.stdout.split()
    if int(float(got)) != size:
        raise SystemExit(f"bulk on {port}: got {got} bytes, not {size}: {result.stderr}")
    return float(speed) / 1e6


def inProcess(pem: str, count: int) -> dict[str, float]:
    """
    Seconds per handshake in this process, no sockets: a server connection
    from C{tlswrap:}'s L{ServerCertificates} (reload 0, 60 and 1 s) or from
    Twisted's L{CertificateOptions} as C{ssl:} makes it, against one client
    connection, over memory BIOs.
    """
    import types

    from OpenSSL import SSL
    from twisted.internet.ssl import PrivateCertificate

    from endpointkit.tlswrap import ServerCertificates

    with open(pem, "rb") as f:
        load: Any = PrivateCertificate.loadPEM
        private = load(f.read())
    twisted = private.options()
    standIn = types.SimpleNamespace(factory=types.SimpleNamespace(wrappedFactory=None))
    makers: dict[str, Any] = {"ssl: (Twisted)": twisted.serverConnectionForTLS}
    for reload in (0.0, 60.0, 1.0):
        makers[f"tlswrap: reload={reload:g}"] = ServerCertificates(
            cert=pem, reload=reload).serverConnectionForTLS
    clientContext = SSL.Context(SSL.TLS_METHOD)

    def once(make: Any) -> None:
        server = make(standIn)
        server.set_accept_state()
        client = SSL.Connection(clientContext, None)
        client.set_connect_state()
        for _ in range(20):
            for a, b in ((client, server), (server, client)):
                try:
                    a.do_handshake()
                except SSL.WantReadError:
                    pass
                try:
                    b.bio_write(a.bio_read(65536))
                except SSL.WantReadError:
                    pass
            if server.get_peer_finished() is not None and client.get_peer_finished() is not None:
                return

    results: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(5):
        for name, make in makers.items():
            start = time.perf_counter()
            for _ in range(count):
                once(make)
            results[name].append((time.perf_counter() - start) / count)
    return {name: statistics.median(values) for name, values in results.items()}


def reloadCheckCost(pem: str, rounds: int = 5, count: int = 20000) -> tuple[float, float]:
    """
    What the reload check costs by itself, timed directly: seconds per call
    of the check every handshake makes (C{reload=60}, nothing due), and
    seconds per look at the files (what a due check does, at most once per
    C{reload} seconds), medians of C{rounds}.
    """
    from endpointkit.tlswrap import ServerCertificates

    certificates = ServerCertificates(cert=pem, reload=60.0)
    check: Any = certificates._maybeReload
    look = certificates.reload
    perCheck: list[float] = []
    perLook: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            check()
        perCheck.append((time.perf_counter() - start) / count)
        start = time.perf_counter()
        for _ in range(count // 100):
            look()
        perLook.append((time.perf_counter() - start) / (count // 100))
    return statistics.median(perCheck), statistics.median(perLook)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 rounds, 2 s, 64 MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--mib", type=int, default=128)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--bulk-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.bulk_bytes)
        return
    if args.quick:
        args.rounds, args.seconds, args.mib = 2, 2.0, 64
    size = args.mib * 1024 * 1024
    directory = tempfile.mkdtemp(prefix="bench-tlswrap-")
    ca, combined, crt = makeCertificate(directory)
    key = os.path.join(directory, "server.key")
    bulkFile = os.path.join(directory, "bulk.bin")
    with open(bulkFile, "wb") as f:
        for _ in range(size // CHUNK):
            f.write(b"x" * CHUNK)
    configs: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    python = sys.executable
    env = {**os.environ, "PYTHONPATH": ROOT}
    try:
        for name, template in (
                ("ssl: (Twisted)", "ssl:{port}:privateKey={pem}:interface=127.0.0.1"),
                ("tlswrap: (reload=60)",
                 "tlswrap:cert={pem}:endpoint=tcp\\:{port}\\:interface=127.0.0.1"),
                ("tlswrap: reload=0",
                 "tlswrap:cert={pem}:reload=0:endpoint=tcp\\:{port}\\:interface=127.0.0.1"),
                ("tlswrap: reload=1",
                 "tlswrap:cert={pem}:reload=1:endpoint=tcp\\:{port}\\:interface=127.0.0.1")):
            port = freePort()
            description = template.format(port=port, pem=combined)
            process = subprocess.Popen(
                [python, os.path.abspath(__file__), "--serve", description,
                 "--bulk-bytes", str(size)], env=env, stdin=subprocess.DEVNULL)
            configs[name] = (port, process)
            waitForPort(port, process, 20)
        port = freePort()
        nginx = startNginx(directory, port, crt, key, bulkFile)
        configs["nginx (reference)"] = (port, nginx)
        waitForPort(port, nginx, 20)
        rates: dict[str, list[float]] = {name: [] for name in configs}
        speeds: dict[str, list[float]] = {name: [] for name in configs}
        for round in range(args.rounds):
            order = list(configs) if round % 2 == 0 else list(reversed(configs))
            for name in order:
                rates[name].append(handshakes(configs[name][0], ca, args.seconds))
            for name in order:
                speeds[name].append(bulk(configs[name][0], ca, size))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        stopProcesses([process for _, process in configs.values()], 10)
    base = "ssl: (Twisted)"
    medianRate = {name: statistics.median(values) for name, values in rates.items()}
    medianSpeed = {name: statistics.median(values) for name, values in speeds.items()}
    print(f"{args.rounds} interleaved rounds, medians; handshakes: openssl s_time -new "
          f"{args.seconds:g} s; bulk: curl {args.mib} MiB; EC P-256, TLS 1.3")
    print(f"{'server':24} {'handshakes/s':>13} {'vs ssl:':>8} {'bulk MB/s':>10} {'vs ssl:':>8}")
    for name in configs:
        print(f"{name:24} {medianRate[name]:13.1f} {medianRate[name] / medianRate[base]:7.3f}x "
              f"{medianSpeed[name]:10.1f} {medianSpeed[name] / medianSpeed[base]:7.3f}x")
    perHandshake = inProcess(combined, 100 if args.quick else 300)
    print("in-process handshake (memory BIOs, no sockets), median of 5 interleaved rounds:")
    baseline = perHandshake["ssl: (Twisted)"]
    for name, seconds in perHandshake.items():
        print(f"  {name:24} {seconds * 1e6:8.0f} us  {baseline / seconds:6.3f}x handshakes/s")
    off = medianRate["tlswrap: reload=0"]
    for name in ("tlswrap: (reload=60)", "tlswrap: reload=1"):
        print(f"reload cost, {name} vs reload=0: "
              f"{(off - medianRate[name]) / off * 100:+.1f}% of handshakes/s")
    for name in ("tlswrap: reload=60", "tlswrap: reload=1"):
        cost = perHandshake[name] / perHandshake["tlswrap: reload=0"] - 1
        print(f"reload cost in-process, {name} vs reload=0: {cost * 100:+.2f}% per handshake")
    perCheck, perLook = reloadCheckCost(combined)
    handshake = perHandshake["tlswrap: reload=0"]
    print(f"reload check timed directly: {perCheck * 1e6:.2f} us per handshake, "
          f"{perCheck / handshake * 100:.3f}% of an in-process handshake; a look at the files "
          f"{perLook * 1e6:.1f} us, once per interval: {perLook / 60 * 100:.5f}% of the "
          f"server's time with reload=60, {perLook * 100:.4f}% with reload=1 "
          f"(target: the check at most 2% of handshakes/s)")
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
