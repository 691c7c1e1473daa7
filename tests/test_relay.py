"""
Tests for L{endpointkit.relay}: every relay test runs over both the splice
path and the copying path (L{SpliceRelayTests}, L{CopyRelayTests}).

C{ENDPOINTKIT_RELAY_INTEGRITY_BYTES} sets the bytes sent each way by the
integrity test (default 1 GiB).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor, task, threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    UNIXServerEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import IHalfCloseableProtocol, IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

import endpointkit
from endpointkit import _splice
from endpointkit._grammar import buildDescription
from endpointkit._relaycli import DEMO_BACKEND, Options, main
from endpointkit.proxyprotocol import sendProxyDescription
from endpointkit.relay import RelayService, RelayStats, describeAddress
from tests._support import (
    PYTHON,
    ROOT,
    LoggedProcess,
    TestCA,
    fileDescriptorNumbers,
    freePort,
    rootOnPath,
    startMicrosocks,
    startTinyproxy,
    waitForPort,
)

INTEGRITY_BYTES = int(os.environ.get("ENDPOINTKIT_RELAY_INTEGRITY_BYTES", str(1 << 30)))
WAIT = 30.0
"""
The longest any single network wait in these tests may take.
"""

_reactor: Any = reactor


def within(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    """
    C{d}, failing with a timeout after C{seconds} rather than hanging.
    """
    return d.addTimeout(seconds, _reactor)


async def until(condition: Callable[[], bool], what: str, seconds: float = WAIT,
                debug: Callable[[], object] = lambda: "") -> None:
    """
    Wait, on the reactor, until C{condition()} holds; fail after C{seconds}.
    """
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} {debug()}")
        await task.deferLater(_reactor, 0.01, lambda: None)


@implementer(IHalfCloseableProtocol)
class Recorder(Protocol):
    """
    A half-closeable protocol that records what it receives and when its
    reading side ends.
    """

    def __init__(self, greeting: bytes = b"", echo: bool = False,
                 replyOnEOF: bytes | None = None) -> None:
        self.received = bytearray()
        self.writeDone = False
        self.greeting = greeting
        self.echo = echo
        self.replyOnEOF = replyOnEOF
        self.made: Deferred[None] = Deferred()
        self.eof: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)  # type: ignore[union-attr]
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.echo:
            self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        if not self.eof.called:
            self.eof.callback(None)
        transport: Any = self.transport
        if self.replyOnEOF is not None:
            transport.write(self.replyOnEOF)
            transport.loseConnection()
        elif self.echo:
            transport.loseWriteConnection()
        elif self.writeDone:
            transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.writeDone = True
        if self.eof.called and self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.reason = reason
        if not self.eof.called:
            self.eof.callback(None)
        self.lost.callback(None)


class Backend:
    """
    An in-process TCP backend on loopback that records its connections.
    """

    def __init__(self, make: Callable[[], Recorder]) -> None:
        self.protocols: list[Recorder] = []
        self.make = make
        self.port: IListeningPort | None = None

    def buildProtocol(self, addr: object) -> Recorder:
        protocol = self.make()
        self.protocols.append(protocol)
        return protocol

    async def listen(self, test: TestCase, endpoint: Any = None) -> str:
        factory = Factory.forProtocol(self.make)
        factory.buildProtocol = self.buildProtocol  # type: ignore[method-assign,assignment]
        factory.noisy = False
        if endpoint is None:
            endpoint = TCP4ServerEndpoint(_reactor, 0, interface="127.0.0.1")
        self.port = await endpoint.listen(factory)
        test.addCleanup(self.port.stopListening)
        address: Any = self.port.getHost()
        if hasattr(address, "port"):
            return f"tcp:127.0.0.1:{address.port}"
        name = address.name
        return buildDescription("unix", name.decode() if isinstance(name, bytes) else name)

    def open(self) -> int:
        return sum(1 for p in self.protocols if not p.lost.called)


def captureLog(test: TestCase) -> list[dict[str, Any]]:
    """
    Log events emitted while the test runs.
    """
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def _stream(seed: int) -> Callable[[int], bytes]:
    """
    A deterministic stream of random bytes: a block whose length is not a
    power of two, repeated, so that a lost or repeated chunk changes the
    digest.
    """
    block = random.Random(seed).randbytes((1 << 20) + 4099)

    def chunk(offset: int) -> bytes:
        start = offset % len(block)
        return block[start:] + block[: start]

    return chunk


def _sendStream(sock: socket.socket, seed: int, total: int) -> str:
    chunk = _stream(seed)
    digest = hashlib.sha256()
    sent = 0
    while sent < total:
        data = chunk(sent)[: total - sent]
        sock.sendall(data)
        digest.update(data)
        sent += len(data)
    sock.shutdown(socket.SHUT_WR)
    return digest.hexdigest()


def _readStream(sock: socket.socket, slow: float = 0.0, slowFor: float = 0.0) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    slowUntil = time.monotonic() + slowFor
    while True:
        if slow and time.monotonic() < slowUntil:
            n = sock.recv_into(view[: int(slow / 10)])
            time.sleep(0.1)
        else:
            n = sock.recv_into(view)
        if not n:
            return count, digest.hexdigest()
        digest.update(view[:n])
        count += n


def _exchange(sock: socket.socket, seed: int, total: int, results: dict[str, Any],
              name: str) -> None:
    """
    Send our stream and read theirs at the same time, on one socket.
    """
    sock.settimeout(WAIT * 2)
    reader: dict[str, Any] = {}

    def read() -> None:
        try:
            reader["got"] = _readStream(sock)
        except BaseException as e:
            reader["error"] = e

    thread = threading.Thread(target=read)
    thread.start()
    try:
        results[f"{name}-sent"] = _sendStream(sock, seed, total)
    finally:
        thread.join(WAIT * 4)
    if "error" in reader:
        raise reader["error"]
    results[f"{name}-got"] = reader["got"]


def _reset(sock: socket.socket) -> None:
    """
    Close C{sock} with a reset (RST) rather than a clean end of stream.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _outcome(sock: socket.socket, seconds: float = WAIT) -> tuple[str, int]:
    """
    Read C{sock} to its end: C{("eof", n)} for a clean end of stream after
    C{n} bytes, C{("reset", n)} for a reset.
    """
    sock.settimeout(seconds)
    count = 0
    while True:
        try:
            data = sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            return "reset", count
        if not data:
            return "eof", count
        count += len(data)


def _waitReset(sock: socket.socket, seconds: float = 5.0) -> bool:
    """
    Whether a reset reaches C{sock} (which has read its end of stream
    already, so that C{recv} no longer reports errors) within C{seconds}:
    the socket's pending error, or its TCP state turning to CLOSE.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return True
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 7:  # TCP_CLOSE
            return True
        time.sleep(0.02)
    return False


def _cpuSeconds(pid: int) -> float:
    """
    The user and system CPU time process C{pid} has used so far.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")



def _vmRSS(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class RelayProcess(LoggedProcess):
    """
    C{endpointkit relay} as a real subprocess.
    """

    def __init__(self, test: TestCase, args: list[str], port: int | None,
                 command: list[str] | None = None) -> None:
        LoggedProcess.__init__(self, test, (command or [PYTHON, "-m", "endpointkit", "relay"])
                               + args, WAIT)
        if port is not None:
            waitForPort(port, process=self.process, timeout=WAIT)

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(WAIT)
        return code, self.output()


class RelayTestsMixin:
    """
    The relay's behaviour; subclasses choose the path.
    """

    splice: bool
    flags: list[str]

    # Helpers.

    async def relay(self, listen: str, connect: str, **kwargs: Any) -> RelayService:
        test: Any = self
        service = RelayService(listen, connect, splice=self.splice, reactor=_reactor, **kwargs)
        service.startService()
        test.addCleanup(lambda: service.running and service.stopService())
        await within(service.listening)
        return service

    def relayProcessToSocket(self) -> tuple[socket.socket, RelayProcess, int]:
        """
        A relay process in front of a plain blocking listening socket (which
        the test accepts on itself), both cleaned up with the test, and the
        port the relay listens on.
        """
        server = socket.socket()
        self.addCleanup(server.close)  # type: ignore[attr-defined]
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(WAIT)
        target = server.getsockname()[1]
        port = freePort()
        relay = RelayProcess(self, [*self.flags, f"tcp:{port}:interface=127.0.0.1",  # type: ignore[attr-defined]
                                    f"tcp:127.0.0.1:{target}"], port)
        return server, relay, port
    def relayAddress(self, service: RelayService) -> int:
        assert service.port is not None
        port: int = service.port.getHost().port  # type: ignore[attr-defined]
        return port

    async def connect(self, service: RelayService, protocol: Recorder) -> Recorder:
        endpoint = TCP4ClientEndpoint(_reactor, "127.0.0.1", self.relayAddress(service))
        await within(connectProtocol(endpoint, protocol))
        test: Any = self
        test.addCleanup(lambda: protocol.transport is not None and not protocol.lost.called
                        and protocol.transport.abortConnection())
        return protocol

    def assertPath(self, service: RelayService, relays: int) -> None:
        test: Any = self
        test.assertEqual(service.stats.spliced, relays if self.splice else 0)

    async def echoBackend(self, echo: bool = True, **kwargs: Any) -> tuple[Backend, str]:
        backend = Backend(lambda: Recorder(echo=echo, **kwargs))
        return backend, await backend.listen(self)  # type: ignore[arg-type]

    # Tests.

    async def test_halfClosePropagates(self) -> None:
        """
        A client's half-close reaches the backend, whose reply after it still
        reaches the client, followed by the end of the stream.
        """
        backend, target = await self.echoBackend(echo=False, replyOnEOF=b"bye")
        service = await self.relay("tcp:0:interface=127.0.0.1", target)
        client = await self.connect(service, Recorder())
        client.transport.write(b"hello")  # type: ignore[union-attr]
        client.transport.loseWriteConnection()  # type: ignore[union-attr]
        await within(client.eof)
        await within(client.lost)
        self.assertEqual(bytes(backend.protocols[0].received), b"hello")
        self.assertTrue(backend.protocols[0].eof.called)
        self.assertEqual(bytes(client.received), b"bye")
        self.assertPath(service, 1)
        await until(lambda: not service.factory.relays, "the relay to end")
        self.assertEqual(service.stats.up, 5)
        self.assertEqual(service.stats.down, 3)

    async def test_backendHalfCloseFirst(self) -> None:
        """
        The backend half-closes first (a greeting, then end of stream); the
        client can still send, and its bytes arrive.
        """
        @implementer(IHalfCloseableProtocol)
        class Greeter(Recorder):
            def connectionMade(self) -> None:
                Recorder.connectionMade(self)
                self.transport.loseWriteConnection()  # type: ignore[union-attr]

        backend = Backend(lambda: Greeter(greeting=b"220 hi"))
        target = await backend.listen(self)  # type: ignore[arg-type]
        service = await self.relay("tcp:0:interface=127.0.0.1", target)
        client = await self.connect(service, Recorder())
        await within(client.eof)
        self.assertEqual(bytes(client.received), b"220 hi")
        self.assertFalse(client.lost.called)
        client.transport.write(b"still here")  # type: ignore[union-attr]
        client.transport.loseWriteConnection()  # type: ignore[union-attr]
        await within(backend.protocols[0].eof)
        await within(client.lost)
        self.assertEqual(bytes(backend.protocols[0].received), b"still here")

    async def test_backendCloseFlushesToClient(self) -> None:
        """
        A backend that writes and closes at once: the client gets every byte,
        then the close.
        """
        payload = os.urandom(3 << 20)

        class Dumper(Recorder):
            def connectionMade(self) -> None:
                transport: Any = self.transport
                transport.write(payload)
                transport.loseConnection()

        backend = Backend(Dumper)
        target = await backend.listen(self)  # type: ignore[arg-type]
        service = await self.relay("tcp:0:interface=127.0.0.1", target)
        client = await self.connect(service, Recorder())
        await within(client.eof)
        client.transport.loseConnection()  # type: ignore[union-attr]
        await within(client.lost)
        self.assertEqual(bytes(client.received), payload)

    async def test_clientAbortClosesBackend(self) -> None:
        """
        A client that aborts takes the backend connection with it.
        """
        backend, target = await self.echoBackend()
        service = await self.relay("tcp:0:interface=127.0.0.1", target)
        client = await self.connect(service, Recorder())
        client.transport.write(b"ping")  # type: ignore[union-attr]
        await until(lambda: bytes(client.received) == b"ping", "the echo")
        client.transport.abortConnection()  # type: ignore[union-attr]
        await within(backend.protocols[0].lost)
        await until(lambda: not service.factory.relays, "the relay to end")
        self.assertEqual(service.stats.open, 0)

    async def test_backendResetClosesClient(self) -> None:
        """
        A backend that resets the connection while the client is sending
        takes the client's connection with it.
        """
        import struct

        class Resetter(Recorder):
            def dataReceived(self, data: bytes) -> None:
                transport: Any = self.transport
                transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                            struct.pack("ii", 1, 0))
                transport.abortConnection()

        backend = Backend(Resetter)
        target = await backend.listen(self)  # type: ignore[arg-type]
        service = await self.relay("tcp:0:interface=127.0.0.1", target)
        client = await self.connect(service, Recorder())
        client.transport.write(os.urandom(4 << 20))  # type: ignore[union-attr]
        await within(client.lost)
        await until(lambda: not service.factory.relays, "the relay to end")
        self.assertEqual(service.stats.open, 0)
        self.assertPath(service, 1)

    # A half-close does not keep the finished side in the read set.

    async def test_halfCloseStopsReading(self) -> None:
        """
        Once the client has half-closed and the backend has seen it, the
        relay no longer watches the client's socket for reading; the reply
        that comes later is still delivered.
        """
        backend, target = await self.echoBackend(echo=False)
        service = await self.relay("tcp:0:interface=127.0.0.1", target)
        client = await self.connect(service, Recorder())
        client.transport.write(b"request")  # type: ignore[union-attr]
        await until(lambda: bool(backend.protocols) and bytes(backend.protocols[0].received)
                    == b"request", "the request")
        client.transport.loseWriteConnection()  # type: ignore[union-attr]
        await within(backend.protocols[0].eof)
        (relay,) = service.factory.relays
        fd = relay.client.kernel.fileno()
        await task.deferLater(_reactor, 0.1, lambda: None)
        self.assertNotIn(fd, [r.fileno() for r in _reactor.getReaders()])
        backend.protocols[0].transport.write(b"reply")  # type: ignore[union-attr]
        backend.protocols[0].transport.loseConnection()  # type: ignore[union-attr]
        await within(client.lost)
        self.assertEqual(bytes(client.received), b"reply")
        self.assertPath(service, 1)

    async def test_halfCloseIdleCPU(self) -> None:
        """
        A relay process that waits 2.5 s for a reply after the client's
        half-close uses (almost) no CPU meanwhile, and delivers the reply.
        """
        server, relay, port = self.relayProcessToSocket()

        def exchange() -> tuple[float, bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
                sock.sendall(b"request")
                sock.shutdown(socket.SHUT_WR)
                while True:
                    conn, _ = server.accept()
                    conn.settimeout(WAIT)
                    try:
                        first = conn.recv(7)
                    except OSError:
                        first = b""
                    if first:
                        break
                    conn.close()  # the readiness probe
                with conn:
                    while conn.recv(65536):
                        pass
                    before = _cpuSeconds(relay.process.pid)
                    time.sleep(2.5)
                    used = _cpuSeconds(relay.process.pid) - before
                    conn.sendall(b"the reply")
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
                return used, reply

        # Wait for the probe's relay to go; then the request.
        used, reply = await within(threads.deferToThread(exchange), WAIT * 2)
        self.assertEqual(reply, b"the reply")
        self.assertLess(used, 0.3)
        code, output = relay.stop()
        self.assertEqual(code, 0, output)

    # A reset is passed on as a reset.

    async def rawPair(self, receiveBuffer: int = 0) -> tuple[RelayService, socket.socket,
                                                            socket.socket]:
        """
        A relay between two plain sockets of the test's: the client, and the
        backend connection it accepted (with a receive buffer of
        C{receiveBuffer} bytes when not 0).
        """
        server = socket.socket()
        self.addCleanup(server.close)  # type: ignore[attr-defined]
        if receiveBuffer:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(WAIT)
        service = await self.relay("tcp:0:interface=127.0.0.1",
                                   f"tcp:127.0.0.1:{server.getsockname()[1]}")
        client = socket.create_connection(("127.0.0.1", self.relayAddress(service)),
                                          timeout=WAIT)
        self.addCleanup(client.close)  # type: ignore[attr-defined]
        conn, _ = await within(threads.deferToThread(server.accept))
        self.addCleanup(conn.close)  # type: ignore[attr-defined]
        await until(lambda: service.factory.relays and all(
            r.backend is not None for r in service.factory.relays), "the relay")
        return service, client, conn

    async def resetCase(self, resetterSide: str, state: str) -> None:
        service, client, conn = await self.rawPair()
        resetter, observer = (client, conn) if resetterSide == "client" else (conn, client)
        if state == "idle":
            resetter.sendall(b"ping")
            self.assertEqual(await within(threads.deferToThread(observer.recv, 4)), b"ping")
            _reset(resetter)
            outcome, _ = await within(threads.deferToThread(_outcome, observer))
            self.assertEqual(outcome, "reset")
        elif state == "upload":
            # Fill everything between the two (the observer does not read
            # yet), then reset: the observer must not see a complete stream.
            resetter.setblocking(False)
            block = b"u" * 65536
            sent = 0
            deadline = time.monotonic() + WAIT
            quiet = 0
            while quiet < 10 and time.monotonic() < deadline:
                try:
                    sent += resetter.send(block)
                    quiet = 0
                except BlockingIOError:
                    quiet += 1
                    await task.deferLater(_reactor, 0.02, lambda: None)
            self.assertGreater(sent, 0)
            _reset(resetter)
            outcome, received = await within(threads.deferToThread(_outcome, observer))
            self.assertEqual(outcome, "reset")
            self.assertLessEqual(received, sent)
        else:
            # The resetter half-closes first; the observer sees that end,
            # then sends to a peer that has reset meanwhile.
            resetter.sendall(b"done")
            resetter.shutdown(socket.SHUT_WR)
            outcome, received = await within(threads.deferToThread(_outcome, observer))
            self.assertEqual((outcome, received), ("eof", 4))
            _reset(resetter)
            await task.deferLater(_reactor, 0.05, lambda: None)
            observer.sendall(b"x" * 1000)
            self.assertTrue(await within(threads.deferToThread(_waitReset, observer)))
        await until(lambda: not service.factory.relays, "the relay to end")
        self.assertPath(service, 1)

    async def test_clientResetIdle(self) -> None:
        """
        A client that resets an idle relay: the backend sees a reset.
        """
        await self.resetCase("client", "idle")

    async def test_clientResetMidUpload(self) -> None:
        """
        A client that resets in the middle of an upload: the backend sees a
        reset, not a clean end after part of the data.
        """
        await self.resetCase("client", "upload")

    async def test_clientResetAfterHalfClose(self) -> None:
        """
        A client that half-closes, then resets: the backend, writing its
        reply, gets a reset.
        """
        await self.resetCase("client", "halfclose")

    async def test_backendResetIdle(self) -> None:
        """
        A backend that resets an idle relay: the client sees a reset.
        """
        await self.resetCase("backend", "idle")

    async def test_backendResetMidDownload(self) -> None:
        """
        A backend that resets in the middle of a download: the client sees
        a reset, not a clean end after part of the data.
        """
        await self.resetCase("backend", "upload")

    async def test_backendResetAfterHalfClose(self) -> None:
        """
        A backend that half-closes, then resets: the client, still sending,
        gets a reset.
        """
        await self.resetCase("backend", "halfclose")

    async def test_cleanCloseStaysClean(self) -> None:
        """
        A clean close after a burst is passed on as a clean end of stream,
        after every byte.
        """
        service, client, conn = await self.rawPair()
        payload = os.urandom(2 << 20)
        outcome = threads.deferToThread(_outcome, conn)
        await within(threads.deferToThread(client.sendall, payload))
        client.close()
        self.assertEqual(await within(outcome), ("eof", len(payload)))
        conn.sendall(b"late")
        conn.close()
        await until(lambda: not service.factory.relays, "the relay to end")

    async def test_bothHalfClosedStaysClean(self) -> None:
        """
        When both directions have ended with half-closes and the relay closes
        the two connections, neither is aborted: the bytes still on their way
        to a slow backend arrive, then a clean end of stream.
        """
        from twisted.internet.error import ConnectionDone

        from endpointkit.relay import Relay

        reasons: list[BaseException] = []
        endLost = Relay.endLost

        def recording(relay: Relay, end: Any, reason: Failure) -> None:
            reasons.append(reason.value)
            endLost(relay, end, reason)

        self.patch(Relay, "endLost", recording)  # type: ignore[attr-defined]
        service, client, conn = await self.rawPair(receiveBuffer=4096)
        conn.shutdown(socket.SHUT_WR)
        self.assertEqual(await within(threads.deferToThread(_outcome, client)), ("eof", 0))
        # More than the backend's receive buffer takes: the rest waits in the
        # relay's socket when the relay closes it.
        payload = os.urandom(48 << 10)
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        await until(lambda: len(reasons) == 2, "the relay to close both connections")
        self.assertEqual(await within(threads.deferToThread(_outcome, conn)),
                         ("eof", len(payload)))
        self.assertEqual([type(r) for r in reasons], [ConnectionDone, ConnectionDone])
        await until(lambda: not service.factory.relays, "the relay to end")

    async def test_connectFailure(self) -> None:
        """
        When the backend refuses, the accepted connection is closed at once
        and a log line names the client, the description and the reason.
        """
        events = captureLog(self)  # type: ignore[arg-type]
        closed = freePort()
        target = f"tcp:127.0.0.1:{closed}"
        service = await self.relay("tcp:0:interface=127.0.0.1", target, connectTimeout=WAIT)
        client = await self.connect(service, Recorder())
        local = client.transport.getHost()  # type: ignore[union-attr]
        await within(client.lost)
        self.assertEqual(service.stats.failed, 1)
        lines = [e for e in events if e.get("log_format", "").startswith("relay: could not")]
        self.assertEqual(len(lines), 1)
        from twisted.logger import formatEvent

        text = formatEvent(lines[0])
        self.assertIn(target, text)
        self.assertIn(f"127.0.0.1:{local.port}", text)
        self.assertIn("refused", text.lower())

    async def test_connectTimeout(self) -> None:
        """
        A backend that never answers the connection is given up on after the
        connect timeout, and the client is closed.
        """
        events = captureLog(self)  # type: ignore[arg-type]
        # A listening socket whose backlog is full never completes the
        # handshake for one more connection.
        blocker = socket.socket()
        self.addCleanup(blocker.close)  # type: ignore[attr-defined]
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(0)
        port = blocker.getsockname()[1]
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        for s in fillers:
            self.addCleanup(s.close)  # type: ignore[attr-defined]
        service = await self.relay("tcp:0:interface=127.0.0.1", f"tcp:127.0.0.1:{port}",
                                   connectTimeout=0.5)
        client = await self.connect(service, Recorder())
        await within(client.lost)
        self.assertEqual(service.stats.failed, 1)
        from twisted.logger import formatEvent

        texts = [formatEvent(e) for e in events
                 if e.get("log_format", "").startswith("relay: could not")]
        self.assertEqual(len(texts), 1)
        self.assertIn("0.5", texts[0])

    async def test_manyConnectionsWithAborts(self) -> None:
        """
        200 concurrent relayed connections, some closed, some aborted, some
        half-closed at random: afterwards no relay is open and the file
        descriptors are back where they started.
        """
        backend, target = await self.echoBackend()
        service = await self.relay("tcp:0:interface=127.0.0.1:backlog=256", target)
        await task.deferLater(_reactor, 0.05, lambda: None)
        before = fileDescriptorNumbers()
        rng = random.Random(8)
        clients = [Recorder() for _ in range(200)]
        await within(defer.gatherResults([defer.ensureDeferred(self.connect(service, c))
                                          for c in clients]))
        payloads = []
        for client in clients:
            data = rng.randbytes(rng.randrange(1, 200_000))
            payloads.append(data)
            client.transport.write(data)  # type: ignore[union-attr]
        await until(lambda: service.stats.open == 200 and len(backend.protocols) == 200,
                    "200 relays", debug=lambda: (service.stats, len(backend.protocols)))
        halfClosed = []
        for client, data in zip(clients, payloads, strict=True):
            action = rng.choice(["abort", "close", "half", "half"])
            if action == "abort":
                client.transport.abortConnection()  # type: ignore[union-attr]
            elif action == "close":
                client.transport.loseConnection()  # type: ignore[union-attr]
            else:
                client.transport.loseWriteConnection()  # type: ignore[union-attr]
                halfClosed.append((client, data))
        await within(defer.gatherResults([c.lost for c in clients]), WAIT * 2)
        for client, data in halfClosed:
            self.assertEqual(bytes(client.received), data)
        await until(lambda: not service.factory.relays and backend.open() == 0,
                    "every relay and backend connection to close")
        self.assertEqual(service.stats.open, 0)
        self.assertEqual(service.stats.total, 200)
        self.assertPath(service, 200)
        # Empty pipes are kept for reuse (a bounded pool), until the
        # service stops; nothing else is left.
        pool = service.factory.pipes
        await until(lambda: not fileDescriptorNumbers() - before - pool.fileDescriptors(),
                    "file descriptors to be closed")
        self.assertEqual(fileDescriptorNumbers() - before - pool.fileDescriptors(), set())
        self.assertLessEqual(len(pool.pipes), pool.size)
        await within(defer.ensureDeferred(service.stopService()))
        self.assertEqual(fileDescriptorNumbers() - before, set())

    async def test_flowControlBoundsBuffers(self) -> None:
        """
        A backend that stops reading makes the relay stop reading the
        client: what the relay holds stays bounded while the client keeps
        trying to send.
        """
        backend, target = await self.echoBackend(echo=False)
        service = await self.relay("tcp:0:interface=127.0.0.1", target)
        sock = socket.create_connection(("127.0.0.1", self.relayAddress(service)), timeout=WAIT)
        self.addCleanup(sock.close)  # type: ignore[attr-defined]
        await until(lambda: len(backend.protocols) == 1, "the backend connection")
        backend.protocols[0].transport.pauseProducing()  # type: ignore[union-attr]
        total = 64 << 20
        sent = [0]

        def push() -> None:
            sock.setblocking(False)
            block = b"x" * (1 << 20)
            deadline = time.monotonic() + WAIT
            while sent[0] < total and time.monotonic() < deadline:
                try:
                    sent[0] += sock.send(block)
                except BlockingIOError:
                    return

        peak = 0
        for _ in range(20):
            push()
            peak = max(peak, service.factory.buffered())
            await task.deferLater(_reactor, 0.02, lambda: None)
        self.assertLess(sent[0], total)
        self.assertLess(peak, 4 << 20)
        backend.protocols[0].transport.resumeProducing()  # type: ignore[union-attr]
        sock.setblocking(True)
        sock.settimeout(WAIT)

        def finish() -> None:
            block = b"x" * (1 << 20)
            while sent[0] < total:
                n = min(len(block), total - sent[0])
                sock.sendall(block[:n])
                sent[0] += n
            sock.shutdown(socket.SHUT_WR)

        await within(threads.deferToThread(finish))
        await within(backend.protocols[0].eof)
        self.assertEqual(len(backend.protocols[0].received), total)

    async def test_idleTimeout(self) -> None:
        """
        A relay with no bytes either way for the idle timeout is aborted
        (both sides see a reset), and counted.
        """
        from twisted.internet.error import ConnectionDone

        backend, target = await self.echoBackend()
        service = await self.relay("tcp:0:interface=127.0.0.1", target, idleTimeout=0.3)
        client = await self.connect(service, Recorder())
        client.transport.write(b"x")  # type: ignore[union-attr]
        await within(client.lost)
        await within(backend.protocols[0].lost)
        self.assertEqual(bytes(client.received), b"x")
        self.assertEqual(service.stats.timedOut, 1)
        assert client.reason is not None and backend.protocols[0].reason is not None
        self.assertFalse(client.reason.check(ConnectionDone))
        self.assertFalse(backend.protocols[0].reason.check(ConnectionDone))
        self.assertPath(service, 1)

    async def test_idleTimeoutCountsSplicedBytes(self) -> None:
        """
        Bytes that keep moving keep a relay open past the idle timeout, on
        either path (spliced bytes never pass through Python).
        """
        _backend, target = await self.echoBackend()
        service = await self.relay("tcp:0:interface=127.0.0.1", target, idleTimeout=0.4)
        client = await self.connect(service, Recorder())
        for i in range(8):
            client.transport.write(b"%d" % i)  # type: ignore[union-attr]
            await task.deferLater(_reactor, 0.15, lambda: None)
        self.assertFalse(client.lost.called)
        self.assertEqual(bytes(client.received), b"01234567")
        self.assertEqual(service.stats.timedOut, 0)
        self.assertPath(service, 1)
        await within(client.lost)
        self.assertEqual(service.stats.timedOut, 1)

    async def test_maxConnections(self) -> None:
        """
        Over the cap a new connection is closed at once; those open go on.
        """
        backend, target = await self.echoBackend()
        service = await self.relay("tcp:0:interface=127.0.0.1", target, maxConnections=1)
        first = await self.connect(service, Recorder())
        first.transport.write(b"one")  # type: ignore[union-attr]
        await until(lambda: bytes(first.received) == b"one", "the first echo")
        second = await self.connect(service, Recorder())
        await within(second.eof)
        self.assertFalse(first.lost.called)
        self.assertEqual(len(backend.protocols), 1)
        self.assertEqual(service.stats.refused, 1)
        self.assertPath(service, 1)
        self.assertIn("refused=1", service.stats.line())

    async def test_behindLimit(self) -> None:
        """
        C{limit:} around the listen description keeps the splice path.
        """
        _backend, target = await self.echoBackend()
        listen = buildDescription("limit", endpoint="tcp:0:interface=127.0.0.1", max=10)
        service = await self.relay(listen, target)
        self.assertTrue(await self.roundTrip(service))
        self.assertPath(service, 1)

    async def test_pathLogged(self) -> None:
        """
        The start-up line says which path the relay takes, and why when it
        cannot splice.
        """
        from twisted.logger import formatEvent

        events = captureLog(self)  # type: ignore[arg-type]
        _backend, target = await self.echoBackend()
        listen = buildDescription("limit", endpoint="tcp:0:interface=127.0.0.1", max=10)
        await self.relay(listen, target)
        await self.relay("tcp:0:interface=127.0.0.1", "memory:nothing-here")
        lines = [formatEvent(e) for e in events
                 if e.get("log_format", "").startswith("relay: listening")]
        self.assertEqual(len(lines), 2)
        if self.splice:
            self.assertIn("by splice", lines[0])
        else:
            self.assertIn("splice off", lines[0])
        self.assertIn("copying", lines[1])
        if self.splice:
            self.assertIn("memory:", lines[1])

    async def test_gracefulStop(self) -> None:
        """
        Stopping the service stops accepting at once, lets an open relay go
        on, and finishes when it ends.
        """
        _backend, target = await self.echoBackend()
        service = await self.relay("tcp:0:interface=127.0.0.1", target, drainTimeout=WAIT)
        port = self.relayAddress(service)
        client = await self.connect(service, Recorder())
        client.transport.write(b"before")  # type: ignore[union-attr]
        await until(lambda: bytes(client.received) == b"before", "the echo")
        stopped = defer.ensureDeferred(service.stopService())
        await until(lambda: service.port is None, "the port to close")
        with self.assertRaises(OSError):  # type: ignore[attr-defined]
            socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
        client.transport.write(b" after")  # type: ignore[union-attr]
        await until(lambda: bytes(client.received) == b"before after", "the echo")
        self.assertFalse(stopped.called)
        client.transport.loseWriteConnection()  # type: ignore[union-attr]
        await within(stopped)
        await within(client.lost)
        self.assertEqual(service.stats.open, 0)

    async def test_drainTimeoutCloses(self) -> None:
        """
        Relays still open when the drain timeout ends are closed.
        """
        _backend, target = await self.echoBackend()
        service = await self.relay("tcp:0:interface=127.0.0.1", target, drainTimeout=0.2)
        client = await self.connect(service, Recorder())
        client.transport.write(b"x")  # type: ignore[union-attr]
        await until(lambda: bytes(client.received) == b"x", "the echo")
        await within(defer.ensureDeferred(service.stopService()))
        await within(client.lost)
        self.assertEqual(service.stats.open, 0)

    # README examples.

    async def roundTrip(self, service: RelayService, client: Any = None,
                        halfClose: bool = True) -> bytes:
        payload = os.urandom(300_000)
        if client is None:
            client = await self.connect(service, Recorder())
        client.transport.write(payload)
        if halfClose:
            client.transport.loseWriteConnection()
        else:
            # The proxy peers end the whole tunnel at the first end of
            # stream, so this exchange does not rely on a half-close.
            await until(lambda: len(client.received) >= len(payload), "the echo")
            client.transport.loseConnection()
        await within(client.lost)
        assert bytes(client.received) == payload, (len(client.received), client.reason)
        return True  # type: ignore[return-value]

    async def test_tcpToUnix(self) -> None:
        """
        README: C{endpointkit relay tcp:8080:interface=127.0.0.1 unix:/run/app.sock}.
        """
        path = os.path.join(tempfile.mkdtemp(), "app.sock")
        backend = Backend(lambda: Recorder(echo=True))
        target = await backend.listen(self, UNIXServerEndpoint(_reactor, path))  # type: ignore[arg-type]
        service = await self.relay("tcp:0:interface=127.0.0.1", target)
        self.assertTrue(await self.roundTrip(service))
        self.assertPath(service, 1)

    async def test_unixToTcp(self) -> None:
        """
        README: C{endpointkit relay unix:/run/relay.sock tcp:127.0.0.1:8080}.
        """
        _backend, target = await self.echoBackend()
        path = os.path.join(tempfile.mkdtemp(), "relay.sock")
        service = await self.relay(buildDescription("unix", path), target)
        from twisted.internet.endpoints import UNIXClientEndpoint

        client = Recorder()
        await within(connectProtocol(UNIXClientEndpoint(_reactor, path), client))
        self.assertTrue(await self.roundTrip(service, client))
        self.assertPath(service, 1)

    async def test_tlsTermination(self) -> None:
        """
        README: TLS termination (C{tlswrap:} with a directory of PEM files,
        which every supported Twisted has) in front of a plain backend; the
        client verifies the relay's certificate.
        """
        from twisted.internet import ssl
        from twisted.internet.endpoints import wrapClientTLS

        ca = TestCA()
        directory = self.mktemp()  # type: ignore[attr-defined]
        os.mkdir(directory)
        certificate, key = ca.issue("localhost")
        with open(os.path.join(directory, "localhost.pem"), "wb") as f:
            f.write(key + certificate)
        backend, target = await self.echoBackend()
        service = await self.relay(
            buildDescription("tlswrap", certs=directory,
                             endpoint=buildDescription("tcp", 0, interface="127.0.0.1")),
            target)
        trust = ssl.Certificate.loadPEM(ca.certificatePEM)
        options = ssl.optionsForClientTLS("localhost", trustRoot=trust)
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(
            _reactor, "127.0.0.1", self.relayAddress(service)))
        client = Recorder()
        await within(connectProtocol(endpoint, client))
        payload = b"over tls " * 1000
        client.transport.write(payload)  # type: ignore[union-attr]
        await until(lambda: bytes(client.received) == payload, "the echo over TLS", debug=lambda: (len(client.received), client.reason, service.stats, [len(p.received) for p in backend.protocols]))
        client.transport.loseConnection()  # type: ignore[union-attr]
        await within(client.lost)
        self.assertEqual(bytes(backend.protocols[0].received), payload)
        self.assertEqual(service.stats.spliced, 0)

    async def test_socks5(self) -> None:
        """
        README: TCP to a backend through a SOCKS5 proxy.
        """
        await self.roundTripThroughProxy("socks5", startMicrosocks(self))  # type: ignore[arg-type]

    async def test_httpConnect(self) -> None:
        """
        README: TCP to a backend through an HTTP CONNECT proxy.
        """
        await self.roundTripThroughProxy("httpconnect",
                                         startTinyproxy(self))  # type: ignore[arg-type]

    async def roundTripThroughProxy(self, prefix: str, proxyPort: int) -> None:
        """
        A relay to an echo backend through the C{prefix} proxy endpoint
        around the proxy on loopback port C{proxyPort} carries a round trip.
        """
        _backend, target = await self.echoBackend()
        backendPort = int(target.rsplit(":", 1)[1])
        connect = buildDescription(prefix, "127.0.0.1", backendPort,
                                   endpoint=f"tcp:127.0.0.1:{proxyPort}")
        service = await self.relay("tcp:0:interface=127.0.0.1", connect)
        self.assertTrue(await self.roundTrip(service, halfClose=False))

    async def test_reuseport(self) -> None:
        """
        README: C{reuseport:} to C{tcp:}.
        """
        _backend, target = await self.echoBackend()
        port = freePort()
        service = await self.relay(f"reuseport:{port}:interface=127.0.0.1", target)
        self.assertTrue(await self.roundTrip(service))
        self.assertPath(service, 1)

    async def test_memoryBackend(self) -> None:
        """
        A C{memory:} backend (as the demo uses) is relayed by copying.
        """
        from endpointkit._parse import serverFromString

        name = f"relay-test-{id(self)}"
        backend = Backend(lambda: Recorder(echo=True))
        endpoint = serverFromString(_reactor, f"memory:{name}")
        await backend.listen(self, endpoint)  # type: ignore[arg-type]
        service = await self.relay("tcp:0:interface=127.0.0.1", f"memory:{name}")
        self.assertTrue(await self.roundTrip(service))
        self.assertEqual(service.stats.spliced, 0)

    # Real processes.

    async def test_integrity(self) -> None:
        """
        Random bytes both ways at once through the relay command arrive
        intact (sha256), then each direction's end.
        """
        total = INTEGRITY_BYTES
        server, relay, port = self.relayProcessToSocket()
        results: dict[str, Any] = {}

        def backendSide() -> None:
            # The readiness probe connects and goes away first.
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(WAIT)
                    try:
                        first = conn.recv(1, socket.MSG_PEEK)
                    except OSError:
                        continue
                    if not first:
                        continue
                    _exchange(conn, 2, total, results, "backend")
                    return

        def clientSide() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
                _exchange(sock, 1, total, results, "client")

        try:
            await within(defer.gatherResults([threads.deferToThread(backendSide),
                                              threads.deferToThread(clientSide)]), WAIT * 4)
        except BaseException as e:
            # What the relay process logged says why a stream was cut.
            raise AssertionError(f"{e!r}; the relay said:\n{relay.output()}") from e
        self.assertEqual(results["backend-got"], (total, results["client-sent"]))
        self.assertEqual(results["client-got"], (total, results["backend-sent"]))
        code, output = relay.stop()
        self.assertEqual(code, 0, output)
        # The readiness probe was relayed too: two relays.
        self.assertIn(f"total=2 failed=0 refused=0 spliced={2 if self.splice else 0}", output)

    async def test_slowReaderRSS(self) -> None:
        """
        256 MiB pushed at a backend that reads about 1 MiB/s for a while: the
        relay process's memory stays bounded.
        """
        total = 256 << 20
        server, relay, port = self.relayProcessToSocket()
        baseline = _vmRSS(relay.process.pid)
        peak = [baseline]
        done = threading.Event()
        results: dict[str, Any] = {}

        def sample() -> None:
            while not done.wait(0.05):
                try:
                    peak[0] = max(peak[0], _vmRSS(relay.process.pid))
                except (OSError, AssertionError):
                    return

        def backendSide() -> None:
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.settimeout(WAIT)
                    try:
                        if not conn.recv(1, socket.MSG_PEEK):
                            continue
                    except OSError:
                        continue
                    results["got"] = _readStream(conn, slow=1 << 20, slowFor=3.0)
                    return

        def clientSide() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
                results["sent"] = _sendStream(sock, 3, total)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            await within(defer.gatherResults([threads.deferToThread(backendSide),
                                              threads.deferToThread(clientSide)]), WAIT * 4)
        finally:
            done.set()
            sampler.join(WAIT)
        self.assertEqual(results["got"], (total, results["sent"]))
        self.assertLess(peak[0] - baseline, 24 << 20)
        code, output = relay.stop()
        self.assertEqual(code, 0, output)

    async def test_commandEndToEnd(self) -> None:
        """
        C{endpointkit relay} as a process: relays, logs stats, and on SIGTERM
        drains and exits 0.
        """
        _backend, target = await self.echoBackend()
        port = freePort()
        relay = RelayProcess(self, [*self.flags, "--stats-interval", "0.2",  # type: ignore[arg-type]
                                    f"tcp:{port}:interface=127.0.0.1", target], port)
        client = Recorder()
        await within(connectProtocol(TCP4ClientEndpoint(_reactor, "127.0.0.1", port), client))
        client.transport.write(b"through the command")  # type: ignore[union-attr]
        client.transport.loseWriteConnection()  # type: ignore[union-attr]
        await within(client.lost)
        self.assertEqual(bytes(client.received), b"through the command")
        await until(lambda: "relay stats: open=0 total=2" in relay.output(), "a stats line")
        code, output = await threads.deferToThread(relay.stop)
        self.assertEqual(code, 0, output)
        self.assertIn("relaying to " + target, output)

    async def test_commandHalfCloseToExec(self) -> None:
        """
        C{endpointkit relay} as a process passes a client's half-close on
        to an C{exec:} backend (its stdin closes), whose reply after its
        end of input still reaches the client, then the end of the stream.

        The bug: the backend transport was registered as the client's
        transport's producer, and a process transport stops its producer
        when its stdin is closed, which closed the client's connection as
        soon as it half-closed (a TCP backend's half-close stops nothing,
        so the in-process tests with TCP backends passed).
        """
        port = freePort()
        command = "sh -c 'wc -c; sleep 0.3; echo replied-after-eof'"
        relay = RelayProcess(self, [*self.flags, f"tcp:{port}:interface=127.0.0.1",  # type: ignore[attr-defined]
                                    buildDescription("exec", command)], port)

        def ask() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
                sock.sendall(b"x" * 1000)
                sock.shutdown(socket.SHUT_WR)
                received = b""
                while True:
                    data = sock.recv(65536)
                    if not data:
                        return received
                    received += data

        received = await threads.deferToThread(ask)
        self.assertEqual(received.split(), [b"1000", b"replied-after-eof"],  # type: ignore[attr-defined]
                         relay.output())
        code, output = await threads.deferToThread(relay.stop)
        self.assertEqual(code, 0, output)  # type: ignore[attr-defined]

    async def test_halfCloseToExecInProcess(self) -> None:
        """
        In process too (the cause was the process transport, not the
        command): RelayService to C{exec:} passes the half-close on and
        the reply after it arrives.
        """
        service = await self.relay("tcp:0:interface=127.0.0.1", buildDescription(
            "exec", "sh -c 'wc -c; sleep 0.3; echo replied-after-eof'"))
        client = await self.connect(service, Recorder())
        client.transport.write(b"y" * 500)  # type: ignore[union-attr]
        client.transport.loseWriteConnection()  # type: ignore[union-attr]
        await within(client.lost)
        test: Any = self
        test.assertEqual(bytes(client.received).split(), [b"500", b"replied-after-eof"])

    async def test_commandHalfCloseToTCP(self) -> None:
        """
        The same with a TCP backend that replies after the client's
        half-close: the relay process passes it on both ways.
        """
        server, relay, port = self.relayProcessToSocket()

        def exchange() -> tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
                sock.sendall(b"question")
                sock.shutdown(socket.SHUT_WR)
                accepted, _ = server.accept()
                # waitForPort's probe may be accepted first: take the
                # connection that carries the question.
                with accepted:
                    accepted.settimeout(WAIT)
                    asked = b""
                    while True:
                        data = accepted.recv(65536)
                        if not data:
                            break
                        asked += data
                    if not asked:
                        second, _ = server.accept()
                        accepted.close()
                        accepted = second
                        accepted.settimeout(WAIT)
                        while True:
                            data = accepted.recv(65536)
                            if not data:
                                break
                            asked += data
                    time.sleep(0.3)
                    accepted.sendall(b"answer after eof")
                    accepted.close()
                reply = b""
                while True:
                    data = sock.recv(65536)
                    if not data:
                        return asked, reply
                    reply += data

        asked, reply = await threads.deferToThread(exchange)
        self.assertEqual((asked, reply), (b"question", b"answer after eof"),  # type: ignore[attr-defined]
                         relay.output())

    async def test_twistdEndToEnd(self) -> None:
        """
        C{twistd -n endpointkit-relay --listen ... --connect ...} relays and
        exits 0 on SIGTERM.
        """
        _backend, target = await self.echoBackend()
        port = freePort()
        twistd = os.path.join(os.path.dirname(PYTHON), "twistd")
        relay = RelayProcess(
            self, [*self.flags, "--listen", f"tcp:{port}:interface=127.0.0.1",  # type: ignore[arg-type]
                   "--connect", target], port,
            command=[twistd, "-n", "--pidfile=", "-l", "-", "endpointkit-relay"])
        client = Recorder()
        await within(connectProtocol(TCP4ClientEndpoint(_reactor, "127.0.0.1", port), client))
        client.transport.write(b"through twistd")  # type: ignore[union-attr]
        client.transport.loseWriteConnection()  # type: ignore[union-attr]
        await within(client.lost)
        self.assertEqual(bytes(client.received), b"through twistd")
        code, output = await threads.deferToThread(relay.stop)
        # twistd ends itself with the signal it stopped on, after a clean
        # shutdown, so that its parent sees why it stopped.
        self.assertIn(code, (0, -signal.SIGTERM), output)
        self.assertIn("Server Shut Down.", output)
        self.assertIn("relay stats: open=0 total=2", output)


class SpliceRelayTests(RelayTestsMixin, TestCase):
    """
    The relay tests over the splice path.
    """

    splice = True
    flags: list[str] = []

    def setUp(self) -> None:
        if sys.platform.startswith("linux"):
            self.assertTrue(_splice.pipeWorks(), "splice must work on Linux")
        elif not _splice.spliceAvailable():
            self.splice = False


class CopyRelayTests(RelayTestsMixin, TestCase):
    """
    The relay tests over the copying path.
    """

    splice = False
    flags = ["--no-splice"]


class OptionsTests(TestCase):
    """
    The command line, shared with the twistd plugin.
    """

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_positional(self) -> None:
        options = self.parse("--connect-timeout", "2.5", "--max-connections", "7",
                             "tcp:8080", "unix:/tmp/x.sock")
        self.assertEqual(options["listen"], "tcp:8080")
        self.assertEqual(options["connect"], "unix:/tmp/x.sock")
        self.assertEqual(options["connect-timeout"], 2.5)
        self.assertEqual(options["max-connections"], 7)
        self.assertFalse(options["no-splice"])

    def test_keywords(self) -> None:
        options = self.parse("--listen", "tcp:8080", "--connect", "tcp:example.com:80",
                             "--no-splice", "--idle-timeout", "30", "--drain-timeout", "0")
        self.assertEqual(options["connect"], "tcp:example.com:80")
        self.assertTrue(options["no-splice"])
        self.assertEqual(options["idle-timeout"], 30.0)
        self.assertEqual(options["drain-timeout"], 0.0)

    def test_demo(self) -> None:
        options = self.parse("--demo")
        self.assertEqual(options["listen"], "tcp:8000:interface=127.0.0.1")
        self.assertEqual(options["connect"], DEMO_BACKEND)

    def test_errors(self) -> None:
        from twisted.python.usage import UsageError

        for argv, expected in [
            ((), "missing LISTEN and CONNECT"),
            (("tcp:80",), "missing CONNECT"),
            (("tcp:80", "tcp:x:1", "extra"), "too many"),
            (("tcp:http", "tcp:x:1"), "listen: "),
            (("tcp:80", "socks5:h:99999:endpoint=tcp\\:p\\:1:password=s3cret:user=x"), "connect: "),
            (("--connect-timeout", "soon", "tcp:80", "tcp:x:1"), "--connect-timeout must be"),
            (("--max-connections", "-1", "tcp:80", "tcp:x:1"), "--max-connections"),
            (("--listen", "tcp:1", "tcp:80", "tcp:x:1"), "given twice"),
        ]:
            with self.assertRaises(UsageError) as caught:
                self.parse(*argv)
            self.assertIn(expected, str(caught.exception))
            self.assertNotIn("s3cret", str(caught.exception))

    def test_sendProxy(self) -> None:
        """
        C{--send-proxy v1|v2} (also C{1}, C{2}) wraps CONNECT in
        C{proxyprotocol:}, as L{sendProxyDescription} does; the wrapped
        description parses.
        """
        from endpointkit._lookup import parseDescription

        connect = "tcp:127.0.0.1:8081"
        for given, version in (("v2", 2), ("v1", 1), ("2", 2), ("V1", 1)):
            options = self.parse("--send-proxy", given, "tcp:8080", connect)
            self.assertEqual(options["connect"], sendProxyDescription(connect, version))
            parsed = parseDescription(options["connect"], "client")
            self.assertEqual((parsed.prefix, parsed.values["version"]),
                             ("proxyprotocol", version))
            self.assertEqual(str(parsed.values["endpoint"]), connect)
        self.assertEqual(self.parse("tcp:8080", connect)["connect"], connect)

    def test_sendProxyBadVersion(self) -> None:
        """
        Another C{--send-proxy} value is a usage error naming the option,
        the value and what is expected.
        """
        from twisted.python.usage import UsageError

        for bad in ("v3", "3", "yes", ""):
            with self.assertRaises(UsageError) as caught:
                self.parse("--send-proxy", bad, "tcp:8080", "tcp:127.0.0.1:8081")
            self.assertIn("--send-proxy must be v1 or v2", str(caught.exception))
            self.assertIn(repr(bad), str(caught.exception))

    def test_mainUsageError(self) -> None:
        """
        A bad command line exits 2 before anything runs.
        """
        from io import StringIO

        err = StringIO()
        old = sys.stderr
        sys.stderr = err
        try:
            code = main(["tcp:80"])
        finally:
            sys.stderr = old
        self.assertEqual(code, 2)
        self.assertIn("endpointkit relay: missing CONNECT", err.getvalue())

    def test_listenFailureExits1(self) -> None:
        """
        A relay that cannot listen says why and exits 1.
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            result = subprocess.run(
                [PYTHON, "-m", "endpointkit", "relay", f"tcp:{port}:interface=127.0.0.1",
                 "tcp:127.0.0.1:9"], capture_output=True, env=rootOnPath(), timeout=WAIT)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"listen tcp:{port}:interface=127.0.0.1: address already in use",
                      result.stderr.decode())

    def test_stats(self) -> None:
        stats = RelayStats(open=2, total=9, failed=1, refused=4, spliced=3, up=5 << 30,
                           down=1536)
        self.assertEqual(stats.line(), "relay stats: open=2 total=9 failed=1 refused=4 spliced=3 "
                                       "idle=0 up=5.0 GiB down=1.5 KiB")

    def test_describeAddress(self) -> None:
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        self.assertEqual(describeAddress(IPv4Address("TCP", "127.0.0.1", 5)), "tcp:127.0.0.1:5")
        self.assertEqual(describeAddress(IPv6Address("TCP", "::1", 5)), "tcp:[::1]:5")
        self.assertEqual(describeAddress(UNIXAddress(b"/tmp/s")), "unix:/tmp/s")

    def test_pluginImportIsCheap(self) -> None:
        """
        Importing the twistd plugin module loads neither the relay nor
        endpointkit's endpoint families.
        """
        code = (f"import sys; sys.path.insert(0, {ROOT!r}); import twisted.plugins.endpointkit_relay as p;"
                " print(p.endpointkitRelay.tapname);"
                " print(sorted(m for m in sys.modules if m.startswith('endpointkit')))")
        out = subprocess.run([PYTHON, "-c", code], capture_output=True, env=rootOnPath(),
                             timeout=WAIT, check=True).stdout.decode().split("\n")
        self.assertEqual(out[0], "endpointkit-relay")
        self.assertEqual(out[1], "[]")

    def test_tapnameUnique(self) -> None:
        """
        The plugin's name is not one of Twisted's own.
        """
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        names = [p.tapname for p in getPlugins(IServiceMaker)]
        self.assertEqual(names.count("endpointkit-relay"), 1)
        self.assertIn("portforward", names)


class DemoTests(TestCase):
    """
    C{endpointkit relay --demo}: README's first command.
    """

    def test_demo(self) -> None:
        port = freePort()
        relay = RelayProcess(self, ["--demo", f"tcp:{port}:interface=127.0.0.1"], port)
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := s.recv(65536):
                response += chunk
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"), response)
        self.assertIn(b"endpointkit relay demo", response)
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.sendall(b"hello relay\n")
            s.shutdown(socket.SHUT_WR)
            echoed = b""
            while chunk := s.recv(65536):
                echoed += chunk
        self.assertEqual(echoed, b"hello relay\n")
        code, output = relay.stop()
        self.assertEqual(code, 0, output)
        self.assertIn(f"curl http://127.0.0.1:{port}/", output)
        self.assertIn(f"nc 127.0.0.1 {port}", output)


def _askFrom(bind: str, port: int, line: bytes = b"hi\n",
             untilClosed: bool = False) -> tuple[int, bytes]:
    """
    Connect from C{bind} to the relay on C{port}, send C{line}, and read a
    line back (or everything up to the end of the stream): the client's own
    port and what came back.
    """
    with socket.socket() as sock:
        sock.settimeout(WAIT)
        sock.bind((bind, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(line)
        received = b""
        while untilClosed or not received.endswith(b"\n"):
            data = sock.recv(65536)
            if not data:
                break
            received += data
        return sock.getsockname()[1], received


class SendProxyTests(TestCase):
    """
    C{--send-proxy v1|v2}: the relay sends the client's address in a PROXY
    header to real receivers (haproxy with C{accept-proxy}, nginx with
    C{proxy_protocol}) and to endpointkit's own C{proxyprotocol:} server.
    """

    timeout = 180

    async def test_haproxyAcceptProxy(self) -> None:
        """
        haproxy (C{bind ... accept-proxy}) logs the address of the relay's
        client, bound to 127.0.0.2 and 127.0.0.3, for v2 and v1.
        """
        from tests.test_proxyprotocol import (
            EchoLine,
            haproxyClientLines,
            startHaproxyAcceptProxy,
        )

        echo = await TCP4ServerEndpoint(_reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(EchoLine))
        self.addCleanup(echo.stopListening)
        front, log = startHaproxyAcceptProxy(self, echo.getHost().port)
        expected = []
        for version, bind in (("v2", "127.0.0.2"), ("v1", "127.0.0.3")):
            port = freePort()
            relay = RelayProcess(self, ["--send-proxy", version, f"tcp:{port}:interface=127.0.0.1",
                                        f"tcp:127.0.0.1:{front}"], port)
            clientPort, received = await threads.deferToThread(_askFrom, bind, port)
            self.assertEqual(received, b"hi\n", relay.output())
            expected.append(f"client={bind}:{clientPort}")
            await until(lambda: expected[-1] in haproxyClientLines(log),
                        f"haproxy's log line for {version}",
                        debug=lambda r=relay: (haproxyClientLines(log), r.output()))
            self.assertRegex(relay.output(),
                             rf"relaying to proxyprotocol:\S*version={version[1]}")
            code, output = await threads.deferToThread(relay.stop)
            self.assertEqual(code, 0, output)
        # Every connection haproxy logged came with a header from a client
        # (waitForPort's probe included, from 127.0.0.1), none as LOCAL.
        for line in haproxyClientLines(log):
            self.assertRegex(line, r"^client=127\.0\.0\.[123]:\d+$")

    async def test_nginxProxyProtocol(self) -> None:
        """
        nginx (C{listen ... proxy_protocol}) answers with the address the
        relay's header gave it: the client's, v2 and v1.
        """
        from tests.test_proxyprotocol import startNginxProxyProtocol

        front = startNginxProxyProtocol(self)
        for version, bind in (("v2", "127.0.0.2"), ("v1", "127.0.0.3")):
            port = freePort()
            relay = RelayProcess(self, ["--send-proxy", version, f"tcp:{port}:interface=127.0.0.1",
                                        f"tcp:127.0.0.1:{front}"], port)
            clientPort, received = await threads.deferToThread(
                _askFrom, bind, port, b"", True)
            self.assertEqual(received, f"{bind}:{clientPort}\n".encode(), relay.output())
            code, output = await threads.deferToThread(relay.stop)
            self.assertEqual(code, 0, output)

    async def listenProxyProtocol(self) -> tuple[Any, int]:
        from tests.test_proxyprotocol import reporterFactory

        factory = reporterFactory()
        endpoint = endpointkit.serverFromString(
            _reactor, "proxyprotocol:trusted=127.0.0.1:endpoint=tcp\\:0\\:interface=127.0.0.1")
        port = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    async def test_ownServerInProcess(self) -> None:
        """
        RelayService to endpointkit's C{proxyprotocol:} server through
        L{sendProxyDescription}: the application there sees the relay's
        client from C{connectionMade} on, and the host it connected to; the
        header is sent when the backend connection is made, so the relay's
        path stays splice and no connection copies because of the header.
        """
        factory, backend = await self.listenProxyProtocol()
        events = captureLog(self)
        for version in (2, 1):
            service = RelayService(
                "tcp:0:interface=127.0.0.1",
                sendProxyDescription(f"tcp:127.0.0.1:{backend}", version), reactor=_reactor)
            service.startService()
            self.addCleanup(lambda s=service: s.running and s.stopService())
            await within(service.listening)
            assert service.port is not None
            front = service.port.getHost()
            clientPort, received = await threads.deferToThread(
                _askFrom, "127.0.0.2", front.port)  # type: ignore[attr-defined]
            self.assertEqual(received, f"127.0.0.2:{clientPort}\n".encode())
            seen = factory.seen[-1]
            self.assertEqual((seen.peer.host, seen.peer.port), ("127.0.0.2", clientPort))
            self.assertEqual((seen.host.host, seen.host.port), ("127.0.0.1", front.port))  # type: ignore[attr-defined]
            self.assertEqual(seen.header.version, version)
            # The header went before any relayed byte: the relay may splice
            # (whether this connection did depends on whether the client's
            # bytes came before the backend connected).
            self.assertEqual(service.path, "splice (zero-copy)")
            await service.stopService()
        text = " ".join(str(e.get("why", "")) for e in events)
        self.assertNotIn("PROXY protocol header", text)

    async def test_twistdSendProxy(self) -> None:
        """
        The twistd plugin's C{--send-proxy v2}, to endpointkit's own
        C{proxyprotocol:} server.
        """
        factory, backend = await self.listenProxyProtocol()
        port = freePort()
        twistd = os.path.join(os.path.dirname(PYTHON), "twistd")
        relay = RelayProcess(
            self, ["--send-proxy", "v2", "--listen", f"tcp:{port}:interface=127.0.0.1",
                   "--connect", f"tcp:127.0.0.1:{backend}"], port,
            command=[twistd, "-n", "--pidfile=", "-l", "-", "endpointkit-relay"])
        clientPort, received = await threads.deferToThread(_askFrom, "127.0.0.3", port)
        self.assertEqual(received, f"127.0.0.3:{clientPort}\n".encode(), relay.output())
        self.assertEqual(factory.seen[-1].header.version, 2)
        code, output = await threads.deferToThread(relay.stop)
        self.assertIn(code, (0, -signal.SIGTERM), output)

    async def test_tlsNamesSent(self) -> None:
        """
        Over a TLS accepted side (C{tlswrap:}), the v2 header also carries
        the name the client asked for (SNI) and the negotiated ALPN
        protocol: the relay connects once the handshake is done.
        """
        from twisted.internet import ssl
        from twisted.internet.endpoints import wrapClientTLS

        from endpointkit._proxyheader import PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY

        factory, backend = await self.listenProxyProtocol()
        ca = TestCA()
        directory = self.mktemp()
        os.mkdir(directory)
        certificate, key = ca.issue("relay.test")
        with open(os.path.join(directory, "relay.test.pem"), "wb") as f:
            f.write(key + certificate)
        service = RelayService(
            buildDescription("tlswrap", certs=directory, alpn="h2,http/1.1",
                             endpoint=buildDescription("tcp", 0, interface="127.0.0.1")),
            sendProxyDescription(f"tcp:127.0.0.1:{backend}", "v2"), reactor=_reactor)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        await within(service.listening)
        assert service.port is not None
        options = ssl.optionsForClientTLS("relay.test",
                                          trustRoot=ssl.Certificate.loadPEM(ca.certificatePEM),
                                          acceptableProtocols=[b"http/1.1"])
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(
            _reactor, "127.0.0.1", service.port.getHost().port,  # type: ignore[attr-defined]
            bindAddress=("127.0.0.2", 0)))
        client = Recorder()
        await within(connectProtocol(endpoint, client))
        client.transport.write(b"hello\n")  # type: ignore[union-attr]
        await until(lambda: bytes(client.received).endswith(b"\n"), "the reply over TLS")
        self.assertTrue(bytes(client.received).startswith(b"127.0.0.2:"))
        header = factory.seen[-1].header
        self.assertEqual(header.tlv(PP2_TYPE_AUTHORITY), b"relay.test")
        self.assertEqual(header.tlv(PP2_TYPE_ALPN), b"http/1.1")
        client.transport.loseConnection()  # type: ignore[union-attr]
        await within(client.lost)
