"""
What the benchmarks under bench/ share: loopback ports, the peer processes
they start and stop, the listener processes that only serve the other side,
the protocols of one measured round, the interleaved rounds and the
latency table.

Each benchmark runs as a script (C{.venv/bin/python bench/bench_x.py}) with
the repository's root on C{sys.path}, and imports this as C{bench._common}.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

LOOPBACK = "127.0.0.1"

# A listener process that prints its port, then accepts connections one at a
# time, doing ANSWER with what it reads until the end, and closes each.
_LISTENER = r"""
import socket
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(128)
print(server.getsockname()[1], flush=True)
while True:
    connection, _ = server.accept()
    while data := connection.recv(65536):
        ANSWER
    connection.close()
"""

# A listener that reads to the end and closes, and one that writes back what
# it reads.
DRAIN = _LISTENER.replace("ANSWER", "pass")
ECHO = _LISTENER.replace("ANSWER", "connection.sendall(data)")


def freePort() -> int:
    """
    A loopback TCP port nothing listens on just now.
    """
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def waitForPort(port: int, process: subprocess.Popen[bytes] | None = None,
                timeout: float = 15.0) -> None:
    """
    Wait until something accepts connections on loopback C{port}, at most
    C{timeout} seconds; stop the benchmark if C{process} (the one that
    should listen) exits first or the time runs out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited with {process.returncode} "
                             f"before listening on {port}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listened on {LOOPBACK}:{port} within {timeout:g} s")


def program(name: str, packages: str | None = None) -> str:
    """
    The path of the installed program C{name} (on C{PATH} or in
    C{/usr/sbin}); stop the benchmark, naming the Debian C{packages} to
    install, if there is none.
    """
    found = shutil.which(name) or (f"/usr/sbin/{name}" if os.access(f"/usr/sbin/{name}", os.X_OK)
                                   else None)
    if found is None:
        raise SystemExit(f"{name} is not installed (apt-get install {packages or name})")
    return found


def spawn(argv: Sequence[str], **options: Any) -> subprocess.Popen[bytes]:
    """
    Start a peer process with no input and its output thrown away, in a
    session of its own (so that a signal to the benchmark is not sent to it).
    """
    options.setdefault("stdout", subprocess.DEVNULL)
    options.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, **options)


def stopProcesses(processes: Iterable[subprocess.Popen[bytes] | None],
                  timeout: float = 5.0) -> None:
    """
    Ask each process still running to stop (C{SIGTERM}), then wait for
    each, killing one that has not stopped within C{timeout} seconds.
    """
    running = [process for process in processes if process is not None]
    for process in running:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


@contextlib.contextmanager
def listener(script: str) -> Iterator[int]:
    """
    Run a listener C{script} (L{DRAIN}, L{ECHO}) in a process of its own, so
    that only the client's side is measured in this one; the port it
    listens on.  The process is killed on the way out.
    """
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()


def cpuSeconds(pid: int) -> float:
    """
    The user and system CPU time process C{pid} has used so far.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runReactor(start: Callable[[], defer.Deferred[Any]]) -> Any:
    """
    Run the reactor until the Deferred C{start()} returns has fired; its
    result, or its failure raised.
    """
    from twisted.internet import reactor

    outcome: list[Any] = []
    d = start()
    d.addBoth(outcome.append).addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


class CloseAtOnce(Protocol):
    """
    Closes the connection as soon as it is made, and says when it is gone.
    """

    def __init__(self) -> None:
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(None)


class EchoOnce(Protocol):
    """
    Sends a small C{message}, closes when it has come back, and says when
    the connection is gone; C{noDelay} turns Nagle's algorithm off first
    (on a TCP transport).
    """

    def __init__(self, message: bytes = b"ping", noDelay: bool = False) -> None:
        self.message = message
        self.noDelay = noDelay
        self.done: defer.Deferred[None] = defer.Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.noDelay:
            self.transport.setTcpNoDelay(True)  # type: ignore[attr-defined]
        self.transport.write(self.message)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.message) and self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(None)


class Keeping(Factory):
    """
    Builds C{make()} protocols and keeps the last one.
    """

    noisy = False

    def __init__(self, make: Callable[[], Protocol]) -> None:
        self.make = make
        self.last: Any = None

    def buildProtocol(self, addr: Any) -> Protocol:
        self.last = self.make()
        return self.last  # type: ignore[no-any-return]


class Download(Protocol):
    """
    Sends C{request} once connected, counts the bytes that come back, and
    fires C{done} with the count when the connection is gone.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = 0
        self.done: defer.Deferred[int] = defer.Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.received)


@defer.inlineCallbacks
def timedDownload(endpoint: Any, request: bytes) -> Any:
    """
    Connect a L{Download} of C{request} through C{endpoint}; (the bytes it
    received, the seconds from connecting until the connection was gone).
    """
    from twisted.internet.endpoints import connectProtocol

    client = Download(request)
    start = time.perf_counter()
    yield connectProtocol(endpoint, client)
    received = yield client.done
    return received, time.perf_counter() - start


@defer.inlineCallbacks
def timedRound(endpoint: Any, make: Callable[[], Protocol] = CloseAtOnce) -> Any:
    """
    One measured round: connect through C{endpoint} a C{make()} protocol
    and wait until its connection is gone; (wall-clock seconds, this
    thread's CPU seconds, the protocol).
    """
    factory = Keeping(make)
    start = time.perf_counter()
    cpu = time.thread_time()
    yield endpoint.connect(factory)
    yield factory.last.done
    return time.perf_counter() - start, time.thread_time() - cpu, factory.last


@defer.inlineCallbacks
def interleaved(endpoints: dict[str, Any], rounds: int, warmUp: int,
                once: Callable[[Any], defer.Deferred[Any]]) -> Any:
    """
    C{warmUp} rounds of C{once} through each of C{endpoints}, then
    C{rounds} measured ones, the endpoints taking turns round by round (in
    the other order every other round, so that none always follows
    another); each endpoint's name with the list of what C{once} gave.
    """
    import gc

    names = list(endpoints)
    for _ in range(warmUp):
        for name in names:
            yield once(endpoints[name])
    times: dict[str, list[Any]] = {name: [] for name in names}
    gc.collect()
    for i in range(rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append((yield once(endpoints[name])))
    return times


def printLatencies(times: dict[str, list[float]], width: int) -> None:
    """
    A row each: the name, then the median, mean and 90th percentile of its
    seconds, in microseconds.
    """
    print(f"{'endpoint':<{width}}{'median us':>11}{'mean us':>11}{'p90 us':>11}")
    for name, samples in times.items():
        ordered = sorted(samples)
        print(f"{name:<{width}}{statistics.median(ordered) * 1e6:>11.1f}"
              f"{statistics.fmean(ordered) * 1e6:>11.1f}"
              f"{ordered[int(len(ordered) * 0.9)] * 1e6:>11.1f}")
