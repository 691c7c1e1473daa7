"""
Benchmark of C{ssh:} and C{exec:}, each against its baseline in the same run
(interleaved rounds, median).

  - bulk: download SIZE bytes from a loopback source through C{ssh:} versus
    OpenSSH's own C{ssh -L} forwarding through the same sshd, with the same
    cipher and MAC (the sshd allows only aes128-ctr and hmac-sha2-256), the
    same source and the same Twisted sink;
  - connect latency (connect, 4-byte echo, close) over a shared connection
    versus C{share=no} (a new SSH connection each time), and versus spawning
    C{ssh -W} per connection;
  - C{exec:cat} connect-and-echo latency versus a C{socat ... EXEC:cat}
    listener (a fork and exec per connection).

Run: .venv/bin/python bench/bench_ssh.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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
from endpointkit import buildDescription, clientFromString, closeSharedConnections

MiB = 1024 * 1024
CIPHER = "aes128-ctr"
MAC = "hmac-sha2-256"
_reactor: Any = reactor

# A source (8-byte size in, that many bytes out) and an echo server, in their
# own process, so that this process only runs the client side.
SERVERS = r"""
import socket, socketserver, struct, sys
chunk = b"x" * (1 << 20)

class Source(socketserver.BaseRequestHandler):
    def handle(self):
        data = b""
        while len(data) < 8:
            more = self.request.recv(8 - len(data))
            if not more:
                return
            data += more
        size = struct.unpack(">Q", data)[0]
        while size > 0:
            n = min(size, len(chunk))
            self.request.sendall(chunk[:n])
            size -= n
        self.request.shutdown(socket.SHUT_WR)

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)

class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

source = Server(("127.0.0.1", int(sys.argv[1])), Source)
echo = Server(("127.0.0.1", int(sys.argv[2])), Echo)
import threading
threading.Thread(target=echo.serve_forever, daemon=True).start()
source.serve_forever()
"""


PACKAGES = "openssh-server openssh-client socat"


@defer.inlineCallbacks
def bulk(description: str, size: int) -> Any:
    count, elapsed = yield timedDownload(clientFromString(_reactor, description),
                                         size.to_bytes(8, "big"))
    if count != size:
        raise SystemExit(f"{description}: got {count} of {size} bytes")
    return size / MiB / elapsed


@defer.inlineCallbacks
def ping(description: str) -> Any:
    elapsed, _, _ = yield timedRound(clientFromString(_reactor, description), EchoOnce)
    return elapsed


def sshW(argv: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, input=b"ping", capture_output=True, timeout=60)
    if result.stdout != b"ping":
        raise SystemExit(f"ssh -W: {result.stderr.decode(errors='replace')}")
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return statistics.median(values)


@defer.inlineCallbacks
def main(options: argparse.Namespace) -> Any:
    size = (64 if options.quick else 256) * MiB
    rounds = 3
    directory = tempfile.mkdtemp(prefix="bench-ssh-")
    processes: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        process = spawn(argv)
        processes.append(process)
        return process

    try:
        os.makedirs("/run/sshd", exist_ok=True)
        for name in ("host", "user"):
            subprocess.run([program("ssh-keygen", PACKAGES), "-q", "-t", "ed25519", "-N", "",
                            "-f", os.path.join(directory, name)], check=True)
        key = os.path.join(directory, "user")
        sshdPort, sourcePort, echoPort, socatPort, forwardPort = (freePort() for _ in range(5))
        config = os.path.join(directory, "sshd_config")
        with open(config, "w") as f:
            f.write(f"Port {sshdPort}\nListenAddress 127.0.0.1\nHostKey {directory}/host\n"
                    f"AuthorizedKeysFile {key}.pub\nUsePAM no\nStrictModes no\nPidFile none\n"
                    f"PasswordAuthentication no\nCiphers {CIPHER}\nMACs {MAC}\n"
                    "MaxStartups 100:30:200\n")
        start([program("sshd", PACKAGES), "-D", "-f", config,
               "-E", os.path.join(directory, "log")])
        start([sys.executable, "-c", SERVERS, str(sourcePort), str(echoPort)])
        start([program("socat", PACKAGES),
               f"TCP-LISTEN:{socatPort},bind=127.0.0.1,reuseaddr,fork", "EXEC:cat"])
        for port in (sshdPort, sourcePort, echoPort, socatPort):
            waitForPort(port)
        knownHosts = os.path.join(directory, "known_hosts")
        with open(knownHosts, "w") as f:
            f.write(subprocess.run([program("ssh-keyscan", PACKAGES), "-p", str(sshdPort),
                                    "127.0.0.1"], capture_output=True, check=True,
                                   text=True).stdout)
        sshOptions = ["-i", key, "-o", f"UserKnownHostsFile={knownHosts}", "-o",
                      "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-c", CIPHER, "-m", MAC,
                      "-p", str(sshdPort)]
        start([program("ssh", PACKAGES), "-N", "-L",
               f"127.0.0.1:{forwardPort}:127.0.0.1:{sourcePort}", *sshOptions, "127.0.0.1"])
        waitForPort(forwardPort)

        def ssh(target: int, **extra: Any) -> str:
            return buildDescription("ssh", "127.0.0.1", target,
                                    endpoint=f"tcp:127.0.0.1:{sshdPort}", identity=key,
                                    knownHosts=knownHosts, agent="no", **extra)

        # Bulk.
        ours: list[float] = []
        theirs: list[float] = []
        yield bulk(ssh(sourcePort), MiB)
        yield bulk(f"tcp:127.0.0.1:{forwardPort}", MiB)
        for _ in range(rounds):
            ours.append((yield bulk(ssh(sourcePort), size)))
            theirs.append((yield bulk(f"tcp:127.0.0.1:{forwardPort}", size)))
        print(f"bulk {size // MiB} MiB, {CIPHER} + {MAC}, median of {rounds}:")
        print(f"  ssh:            {median(ours):8.1f} MB/s")
        print(f"  ssh -L          {median(theirs):8.1f} MB/s")
        print(f"  ratio           {median(ours) / median(theirs):8.2f}x (target >= 0.5x)")

        # Connect latency.
        shared: list[float] = []
        fresh: list[float] = []
        spawned: list[float] = []
        count = 10 if options.quick else 20
        yield ping(ssh(echoPort))
        wArgv = [program("ssh", PACKAGES), "-W", f"127.0.0.1:{echoPort}", *sshOptions,
                 "127.0.0.1"]
        for _ in range(count):
            shared.append((yield ping(ssh(echoPort))))
            fresh.append((yield ping(ssh(echoPort, share="no"))))
            spawned.append(sshW(wArgv))
        print(f"connect + 4-byte echo + close, median of {count}:")
        print(f"  ssh: shared     {median(shared) * 1000:8.2f} ms")
        print(f"  ssh: share=no   {median(fresh) * 1000:8.2f} ms   "
              f"(shared/share=no {median(shared) / median(fresh):.3f}x, target <= 0.1x)")
        print(f"  ssh -W spawned  {median(spawned) * 1000:8.2f} ms   "
              f"(shared/ssh -W {median(shared) / median(spawned):.3f}x)")

        # exec: latency.
        execs: list[float] = []
        socats: list[float] = []
        for _ in range(count):
            execs.append((yield ping("exec:cat")))
            socats.append((yield ping(f"tcp:127.0.0.1:{socatPort}")))
        print(f"exec: connect + 4-byte echo + close, median of {count}:")
        print(f"  exec:cat        {median(execs) * 1000:8.2f} ms")
        print(f"  socat EXEC:cat  {median(socats) * 1000:8.2f} ms   "
              f"(ratio {median(execs) / median(socats):.2f}x)")
        print(f"({os.cpu_count()} CPUs, shared machine: indicative figures)")
        yield closeSharedConnections()
    finally:
        stopProcesses(processes)
        shutil.rmtree(directory, ignore_errors=True)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="64 MiB and fewer rounds")
    options = parser.parse_args()
    from twisted.internet.task import react

    def go(_: Any) -> Any:
        return main(options)

    react(go)


if __name__ == "__main__":
    run()
