"""
C{ssh:} and C{sshexec:} against a real OpenSSH C{sshd} started on loopback
by the tests (keys made per test with C{ssh-keygen}).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import threading
from typing import Any, cast

from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    ProcessDone,
    ProcessTerminated,
)
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

import endpointkit
from endpointkit import buildDescription
from endpointkit._grammar import DescriptionError
from endpointkit._lookup import parseDescription
from endpointkit.ssh import (
    SSHAuthenticationFailed,
    SSHChannelOpenFailed,
    SSHHandshakeTimeout,
    SSHHostKeyChanged,
    SSHHostKeyUnknown,
    SSHKeyError,
    _TunnelChannel,
    closeSharedConnections,
    sharedConnectionCount,
)
from tests import _support
from tests._support import (
    IN_CI,
    SSHServer,
    freePort,
    requirePeer,
    shortTempDir,
    sshKeygen,
    startMicrosocks,
    startPeer,
    startSSHServer,
)

WAIT = 60.0
_reactor: Any = reactor


def within(d: defer.Deferred[Any], seconds: float = WAIT) -> defer.Deferred[Any]:
    return d.addTimeout(seconds, _reactor)


class Collect(_support.Collect):
    """
    L{_support.Collect} that, having half-closed, closes the channel once
    the server's side has closed too.
    """

    closeOnReadEnd = True


class EchoServer:
    """
    A plain blocking echo server on loopback (a thread per connection), the
    target the SSH server connects to; it echoes until EOF, then half-closes.
    """

    def __init__(self, test: TestCase) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        test.addCleanup(self.close)

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        conn.settimeout(WAIT)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


class Sink:
    """
    A blocking loopback server for one connection that hashes what it reads
    until EOF.
    """

    def __init__(self, test: TestCase) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port: int = self.sock.getsockname()[1]
        self.count = 0
        self.digest = hashlib.sha256()
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()
        test.addCleanup(self.sock.close)

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            self.done.set()
            return
        conn.settimeout(WAIT)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                self.count += len(data)
                self.digest.update(data)
        except OSError:
            pass
        finally:
            conn.close()
            self.done.set()

    async def finished(self, seconds: float = WAIT) -> None:
        """
        Wait (at most C{seconds}) for the connection to end.
        """
        for _ in range(int(seconds * 20)):
            if self.done.is_set():
                return
            await deferLater(_reactor, 0.05, lambda: None)
        raise AssertionError(f"the target saw no EOF within {seconds} s")


class SSHTestsMixin:
    """
    An sshd with a fresh ed25519 user key and a known_hosts file from
    C{ssh-keyscan}.
    """

    def setUpSSH(self, test: TestCase, lines: tuple[str, ...] = (),
                 keyKind: str = "ed25519") -> None:
        self.test = test
        directory = os.path.abspath(test.mktemp())
        os.makedirs(directory)
        self.directory = directory
        self.key = sshKeygen(os.path.join(directory, f"id_{keyKind}"), keyKind)
        self.server: SSHServer = startSSHServer(test, [self.key + ".pub"], lines)
        self.knownHosts = os.path.join(directory, "known_hosts")
        with open(self.knownHosts, "w") as f:
            f.write(self.server.keyscan())
        test.addCleanup(lambda: within(closeSharedConnections(), 30))

    def description(self, target: str, port: int, **kwargs: Any) -> str:
        args: dict[str, Any] = dict(identity=self.key, knownHosts=self.knownHosts, agent="no")
        args.update(kwargs)
        args = {k: v for k, v in args.items() if v is not None}
        return buildDescription("ssh", target, port,
                                endpoint=f"tcp:127.0.0.1:{self.server.port}", **args)

    def connect(self, description: str, proto: protocol.Protocol) -> defer.Deferred[Any]:
        endpoint = endpointkit.clientFromString(_reactor, description)
        return within(endpoint.connect(protocol.Factory.forProtocol(lambda: proto)))

    async def roundTrip(self, description: str, payload: bytes = b"hello ssh") -> Collect:
        client = Collect(payload, halfClose=True)
        await self.connect(description, client)
        reason = await within(client.done)
        self.test.assertEqual(bytes(client.received), payload)
        self.test.assertIsInstance(reason, ConnectionDone)
        return client

    def sessions(self) -> int:
        """
        How many SSH connections sshd accepted, from its log.
        """
        return len(re.findall(r"Accepted (?:publickey|password) for", self.server.logText()))


class KeyAuthTests(SSHTestsMixin, TestCase):
    def setUp(self) -> None:
        self.setUpSSH(self)
        self.echo = EchoServer(self)

    async def test_ed25519(self) -> None:
        """
        An ed25519 key authenticates; the tunnel reaches the target, whose
        address is the transport's peer; a half-close goes through both ways.
        """
        client = Collect(b"x" * 1000, halfClose=True)
        await self.connect(self.description("127.0.0.1", self.echo.port, share="no"), client)
        assert client.transport is not None
        self.assertEqual(client.transport.getPeer(), IPv4Address("TCP", "127.0.0.1",
                                                                 self.echo.port))
        reason = await within(client.done)
        self.assertTrue(client.readClosed)
        self.assertEqual(bytes(client.received), b"x" * 1000)
        self.assertIsInstance(reason, ConnectionDone)
        self.assertIn("Accepted publickey for", self.server.logText())

    async def test_rsa(self) -> None:
        rsa = sshKeygen(os.path.join(self.directory, "id_rsa"), "rsa")
        with open(os.path.join(self.server.directory, "authorized_keys"), "a") as f, \
                open(rsa + ".pub") as pub:
            f.write(pub.read())
        await self.roundTrip(self.description("127.0.0.1", self.echo.port, identity=rsa))
        self.assertRegex(self.server.logText(), r"Accepted publickey for \S+ .* RSA")

    async def test_wrongKey(self) -> None:
        """
        A key the server does not accept fails with the methods tried.
        """
        other = sshKeygen(os.path.join(self.directory, "other"))
        error = await self.assertFailure(
            self.connect(self.description("127.0.0.1", self.echo.port, identity=other),
                         Collect()), SSHAuthenticationFailed)
        self.assertIn("publickey", str(error))
        self.assertIn(other, str(error))
        self.assertIn("the server accepts publickey", str(error))

    async def test_unknownHost(self) -> None:
        """
        A host not in known_hosts fails with its fingerprint and the line to
        add, and never authenticates.
        """
        empty = os.path.join(self.directory, "empty_known_hosts")
        open(empty, "w").close()
        error = await self.assertFailure(
            self.connect(self.description("127.0.0.1", self.echo.port, knownHosts=empty),
                         Collect()), SSHHostKeyUnknown)
        fingerprint = subprocess.run(
            ["ssh-keygen", "-lf", self.server.hostKey + ".pub"], capture_output=True,
            check=True, text=True).stdout.split()[1]
        self.assertEqual(error.fingerprint, fingerprint)
        self.assertIn(fingerprint, str(error))
        self.assertIn(f"[127.0.0.1]:{self.server.port} ssh-ed25519 AAAA", error.knownHostsLine)
        self.assertNotIn("Accepted", self.server.logText())
        # The line it names trusts the host.
        with open(empty, "w") as f:
            f.write(error.knownHostsLine + "\n")
        await self.roundTrip(self.description("127.0.0.1", self.echo.port, knownHosts=empty))

    async def test_hashedKnownHosts(self) -> None:
        hashed = os.path.join(self.directory, "hashed")
        with open(hashed, "w") as f:
            f.write(self.server.keyscan())
        subprocess.run(["ssh-keygen", "-H", "-f", hashed], check=True, capture_output=True)
        with open(hashed) as f:
            self.assertTrue(f.read().startswith("|1|"))
        await self.roundTrip(self.description("127.0.0.1", self.echo.port, knownHosts=hashed))

    async def test_changedHostKey(self) -> None:
        """
        known_hosts with another ed25519 key for this host: refused before
        authenticating.
        """
        other = sshKeygen(os.path.join(self.directory, "otherhost"))
        with open(other + ".pub") as f:
            body = " ".join(f.read().split()[:2])
        changed = os.path.join(self.directory, "changed")
        with open(changed, "w") as f:
            f.write(f"[127.0.0.1]:{self.server.port} {body}\n")
        error = await self.assertFailure(
            self.connect(self.description("127.0.0.1", self.echo.port, knownHosts=changed),
                         Collect()), SSHHostKeyChanged)
        self.assertIn("CHANGED", str(error))
        self.assertNotIn("Accepted", self.server.logText())

    async def test_hostKeyPinned(self) -> None:
        fingerprint = subprocess.run(
            ["ssh-keygen", "-lf", self.server.hostKey + ".pub"], capture_output=True,
            check=True, text=True).stdout.split()[1]
        description = self.description("127.0.0.1", self.echo.port, knownHosts=None,
                                       hostKey=fingerprint)
        self.assertIn("hostKey=SHA256\\:", description)
        await self.roundTrip(description)
        wrong = "SHA256:" + "A" * 43
        error = await self.assertFailure(
            self.connect(self.description("127.0.0.1", self.echo.port, knownHosts=None,
                                          hostKey=wrong), Collect()), SSHHostKeyChanged)
        self.assertIn(fingerprint, str(error))

    async def test_hostKeyAlias(self) -> None:
        aliased = os.path.join(self.directory, "aliased")
        with open(aliased, "w") as f:
            f.write(self.server.keyscan().replace(f"[127.0.0.1]:{self.server.port}", "bastion"))
        await self.roundTrip(self.description("127.0.0.1", self.echo.port, knownHosts=aliased,
                                              hostKeyAlias="bastion"))
        await self.assertFailure(
            self.connect(self.description("127.0.0.1", self.echo.port, knownHosts=aliased,
                                          share="no"), Collect()), SSHHostKeyUnknown)

    async def test_targetRefuses(self) -> None:
        """
        A target that refuses: the server's 'connect failed'.
        """
        error = await self.assertFailure(
            self.connect(self.description("127.0.0.1", freePort()), Collect()),
            SSHChannelOpenFailed)
        self.assertEqual(error.code, 2)
        self.assertIn("connect failed", str(error))

    async def test_serverUnreachable(self) -> None:
        description = buildDescription("ssh", "127.0.0.1", 80,
                                       endpoint=f"tcp:127.0.0.1:{freePort()}",
                                       identity=self.key, knownHosts=self.knownHosts)
        await self.assertFailure(self.connect(description, Collect()), ConnectionRefusedError)

    async def test_handshakeTimeout(self) -> None:
        """
        A server that accepts and says nothing: the deadline, naming the
        stage, and nothing left behind.
        """
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        description = buildDescription(
            "ssh", "127.0.0.1", 80, endpoint=f"tcp:127.0.0.1:{silent.getsockname()[1]}",
            identity=self.key, knownHosts=self.knownHosts, handshakeTimeout=0.5)
        error = await self.assertFailure(self.connect(description, Collect()),
                                         SSHHandshakeTimeout)
        self.assertIn("key exchange", str(error))
        self.assertEqual(sharedConnectionCount(), 0)

    async def test_encryptedKey(self) -> None:
        secret = "correct horse"
        locked = sshKeygen(os.path.join(self.directory, "locked"), passphrase=secret)
        with open(os.path.join(self.server.directory, "authorized_keys"), "a") as f, \
                open(locked + ".pub") as pub:
            f.write(pub.read())
        await self.roundTrip(self.description("127.0.0.1", self.echo.port, identity=locked,
                                              passphrase=secret))
        error = await self.assertFailure(
            self.connect(self.description("127.0.0.1", self.echo.port, identity=locked,
                                          passphrase="wrong one"), Collect()), SSHKeyError)
        self.assertNotIn("wrong one", str(error))
        self.assertIn("passphrase", str(error))
        await self.assertFailure(
            self.connect(self.description("127.0.0.1", self.echo.port, identity=locked),
                         Collect()), SSHKeyError)

    def test_secretsHidden(self) -> None:
        description = self.description("127.0.0.1", 80, password="hunter2",
                                       passphrase="sesame")
        parsed = parseDescription(description, "client")
        for text in (str(parsed), repr(parsed),
                     repr(endpointkit.clientFromString(_reactor, description))):
            self.assertNotIn("hunter2", text)
            self.assertNotIn("sesame", text)


class SharingTests(SSHTestsMixin, TestCase):
    def setUp(self) -> None:
        self.setUpSSH(self)
        self.echo = EchoServer(self)

    async def test_fiftyConcurrentShareOne(self) -> None:
        """
        50 concurrent connects ride one SSH connection.
        """
        description = self.description("127.0.0.1", self.echo.port)
        clients = [Collect(f"client {i}".encode(), halfClose=True) for i in range(50)]
        await defer.gatherResults([self.connect(description, c) for c in clients])
        reasons = await within(defer.gatherResults([c.done for c in clients]))
        for i, (client, reason) in enumerate(zip(clients, reasons, strict=True)):
            self.assertEqual(bytes(client.received), f"client {i}".encode())
            self.assertIsInstance(reason, ConnectionDone)
        self.assertEqual(self.sessions(), 1)
        self.assertEqual(self.echo.accepted, 50)
        self.assertEqual(sharedConnectionCount(), 1)

    async def test_shareNo(self) -> None:
        description = self.description("127.0.0.1", self.echo.port, share="no")
        for _ in range(3):
            await self.roundTrip(description)
        self.assertEqual(self.sessions(), 3)
        self.assertEqual(sharedConnectionCount(), 0)

    async def test_idleClose(self) -> None:
        description = self.description("127.0.0.1", self.echo.port, idle=0.5)
        await self.roundTrip(description)
        self.assertEqual(sharedConnectionCount(), 1)
        for _ in range(100):
            if not sharedConnectionCount():
                break
            await deferLater(_reactor, 0.1, lambda: None)
        self.assertEqual(sharedConnectionCount(), 0)
        await self.roundTrip(description)
        self.assertEqual(self.sessions(), 2)

    async def test_brokenConnectionReplaced(self) -> None:
        """
        The shared connection's sshd child is killed: the next connect
        notices and opens a new one.
        """
        description = self.description("127.0.0.1", self.echo.port)
        await self.roundTrip(description)
        children = subprocess.run(["pgrep", "-P", str(self.server.process.pid)],
                                  capture_output=True, text=True).stdout.split()
        self.assertTrue(children)
        for pid in children:
            os.kill(int(pid), 9)
        for _ in range(100):
            if not sharedConnectionCount():
                break
            await deferLater(_reactor, 0.1, lambda: None)
        await self.roundTrip(description)
        self.assertEqual(self.sessions(), 2)

    async def test_credentialsNotShared(self) -> None:
        """
        A description with other credentials does not ride on an
        authenticated connection: it authenticates for itself (and fails).
        """
        good = self.description("127.0.0.1", self.echo.port)
        client = Collect()
        await self.connect(good, client)
        other = sshKeygen(os.path.join(self.directory, "other"))
        await self.assertFailure(
            self.connect(self.description("127.0.0.1", self.echo.port, identity=other),
                         Collect()), SSHAuthenticationFailed)
        assert client.transport is not None
        client.transport.loseConnection()
        await within(client.done)

    async def test_cancelClosesUnusedConnection(self) -> None:
        description = self.description("127.0.0.1", self.echo.port)
        d = self.connect(description, Collect())
        d.cancel()
        await self.assertFailure(d, defer.CancelledError)
        self.assertEqual(sharedConnectionCount(), 0)


class BulkTests(SSHTestsMixin, TestCase):
    def setUp(self) -> None:
        self.setUpSSH(self)
        self.echo = EchoServer(self)

    async def test_checksummedEchoBothWays(self) -> None:
        """
        64 MiB sent and echoed back at once, under the user's producer and
        the SSH window; checksums equal.
        """
        total = 64 * 1024 * 1024
        block = hashlib.sha256(b"seed").digest() * 2048
        sent = hashlib.sha256()
        received = hashlib.sha256()

        @implementer(IHalfCloseableProtocol)
        class Pump(protocol.Protocol):
            def __init__(self) -> None:
                self.count = 0
                self.left = total
                self.paused = False
                self.done: defer.Deferred[BaseException] = defer.Deferred()

            def connectionMade(self) -> None:
                assert self.transport is not None
                self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
                self.resumeProducing()

            def pauseProducing(self) -> None:
                self.paused = True

            def resumeProducing(self) -> None:
                self.paused = False
                assert self.transport is not None
                while self.left and not self.paused:
                    chunk = block[:min(self.left, len(block))]
                    sent.update(chunk)
                    self.left -= len(chunk)
                    self.transport.write(chunk)
                if not self.left:
                    self.transport.unregisterProducer()  # type: ignore[attr-defined]
                    self.transport.loseWriteConnection()  # type: ignore[attr-defined]

            def stopProducing(self) -> None:
                pass

            def dataReceived(self, data: bytes) -> None:
                self.count += len(data)
                received.update(data)

            def readConnectionLost(self) -> None:
                assert self.transport is not None
                self.transport.loseConnection()

            def writeConnectionLost(self) -> None:
                pass

            def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
                self.done.callback(reason.value)

        pump = Pump()
        await self.connect(self.description("127.0.0.1", self.echo.port), pump)
        reason = await within(pump.done, 300)
        self.assertEqual(pump.count, total)
        self.assertEqual(received.hexdigest(), sent.hexdigest())
        self.assertIsInstance(reason, ConnectionDone)

    async def test_halfCloseWithFullWindow(self) -> None:
        """
        A write bigger than sshd's whole initial channel window (2 MiB), then
        a half-close at once: the bytes still waiting for window space go
        before the EOF, and all of them come back.
        """
        payload = hashlib.sha256(b"window").digest() * (6 * 1024 * 1024 // 32)
        await self.roundTrip(self.description("127.0.0.1", self.echo.port), payload)

    async def test_loseConnectionWithFullWindow(self) -> None:
        """
        A write bigger than sshd's initial channel window, then
        C{loseConnection} at once: the target reads every byte, then EOF.
        """
        payload = hashlib.sha256(b"close").digest() * (6 * 1024 * 1024 // 32)
        sink = Sink(self)

        class Send(Collect):
            def connectionMade(self) -> None:
                assert self.transport is not None
                self.transport.write(payload)
                self.transport.loseConnection()

        client = Send()
        await self.connect(self.description("127.0.0.1", sink.port), client)
        self.assertIsInstance(await within(client.done), ConnectionDone)
        await sink.finished()
        self.assertEqual(sink.count, len(payload))
        self.assertEqual(sink.digest.hexdigest(), hashlib.sha256(payload).hexdigest())

    async def test_slowReaderBoundsMemory(self) -> None:
        """
        A paused reader: the server stops at the channel window, so what is
        buffered stays under it.
        """
        flood = socket.socket()
        self.addCleanup(flood.close)
        flood.bind(("127.0.0.1", 0))
        flood.listen(1)
        sentBytes = [0]

        def serve() -> None:
            conn, _ = flood.accept()
            conn.settimeout(2)
            try:
                while sentBytes[0] < 64 * 1024 * 1024:
                    conn.sendall(b"z" * 65536)
                    sentBytes[0] += 65536
            except OSError:
                pass
            finally:
                conn.close()

        threading.Thread(target=serve, daemon=True).start()

        class Paused(Collect):
            def connectionMade(self) -> None:
                assert self.transport is not None
                self.transport.pauseProducing()  # type: ignore[attr-defined]

        client = Paused()
        await self.connect(self.description("127.0.0.1", flood.getsockname()[1]), client)
        await deferLater(_reactor, 3, lambda: None)
        assert client.transport is not None
        inbox = sum(len(b) for b in client.transport._inbox)  # type: ignore[attr-defined]
        self.assertEqual(len(client.received), 0)
        self.assertLessEqual(inbox, 2 * 1024 * 1024)
        self.assertLess(sentBytes[0], 32 * 1024 * 1024)
        client.transport.resumeProducing()  # type: ignore[attr-defined]
        await deferLater(_reactor, 0.5, lambda: None)
        self.assertGreater(len(client.received), inbox)
        client.transport.abortConnection()  # type: ignore[attr-defined]
        await within(client.done)


class FakeService:
    """
    Stands in for the SSH connection service under one channel: records
    what the channel sends, in order, and closes it as conch does when both
    sides have sent CLOSE.
    """

    owner = None
    lostReason = None

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def sendData(self, channel: Any, data: bytes) -> None:
        assert not channel.localClosed
        self.sent.append(("data", data))

    def sendEOF(self, channel: Any) -> None:
        assert not channel.localClosed
        self.sent.append(("eof", b""))

    def sendClose(self, channel: Any) -> None:
        if channel.localClosed:
            return
        self.sent.append(("close", b""))
        channel.localClosed = True
        if channel.remoteClosed:
            channel.closed()

    def adjustWindow(self, channel: Any, bytesToAdd: int) -> None:
        channel.localWindowLeft += bytesToAdd

    def remoteEOF(self, channel: Any) -> None:
        channel.eofReceived()

    def remoteClose(self, channel: Any) -> None:
        channel.closeReceived()
        channel.remoteClosed = True
        if channel.localClosed:
            channel.closed()

    def kinds(self) -> list[str]:
        """
        What was sent, with runs of data packets as one C{"data"}.
        """
        kinds: list[str] = []
        for kind, _ in self.sent:
            if not (kind == "data" and kinds and kinds[-1] == "data"):
                kinds.append(kind)
        return kinds

    def data(self) -> bytes:
        return b"".join(data for kind, data in self.sent if kind == "data")


class ChannelEndTests(TestCase):
    """
    The end of a tunnel channel's stream while written bytes still wait for
    SSH window space (RFC 4254: EOF after the data, CLOSE after EOF).
    """

    payload = bytes(range(256)) * 40

    def channel(self, proto: protocol.Protocol, window: int = 1000,
                ) -> tuple[_TunnelChannel, FakeService]:
        service = FakeService()
        channel = _TunnelChannel(cast(Any, None), IPv4Address("TCP", "127.0.0.1", 7))
        channel.conn = service
        channel.remoteWindowLeft = window
        channel.remoteMaxPacket = 300
        channel.attach(proto)
        return channel, service

    def test_loseWriteConnectionWaitsForWindow(self) -> None:
        """
        C{loseWriteConnection} with bytes buffered: every byte goes as the
        window opens, then EOF; nothing more is written.
        """
        client = Collect()
        channel, service = self.channel(client)
        channel.write(self.payload)
        channel.loseWriteConnection()
        self.assertEqual(service.kinds(), ["data"])
        channel.write(b"after EOF")
        channel.addWindowBytes(4000)
        self.assertEqual(service.kinds(), ["data"])
        channel.addWindowBytes(len(self.payload))
        self.assertEqual(service.kinds(), ["data", "eof"])
        self.assertEqual(service.data(), self.payload)

    def test_loseConnectionWaitsForWindow(self) -> None:
        """
        C{loseConnection} with bytes buffered: every byte, then EOF, then
        CLOSE; the server's CLOSE in reply ends the connection cleanly.
        """
        client = Collect()
        channel, service = self.channel(client)
        channel.write(self.payload)
        channel.loseConnection()
        self.assertEqual(service.kinds(), ["data"])
        channel.addWindowBytes(len(self.payload))
        self.assertEqual(service.kinds(), ["data", "eof", "close"])
        self.assertEqual(service.data(), self.payload)
        service.remoteClose(channel)
        self.assertIsInstance(self.successResultOf(client.done), ConnectionDone)

    def test_halfCloseBothWaysWaitsForWindow(self) -> None:
        """
        Our half-close pending behind the window when the server's EOF
        arrives: the protocol hears of the EOF at once, the channel closes
        only after our bytes and EOF have gone.
        """
        client = Collect(halfClose=False)
        channel, service = self.channel(client)
        channel.write(self.payload)
        channel.loseWriteConnection()
        channel.dataReceived(b"reply")
        service.remoteEOF(channel)
        self.assertTrue(client.readClosed)
        self.assertEqual(service.kinds(), ["data"])
        channel.addWindowBytes(len(self.payload))
        self.assertEqual(service.kinds(), ["data", "eof", "close"])
        self.assertEqual(service.data(), self.payload)
        service.remoteClose(channel)
        self.assertEqual(bytes(client.received), b"reply")
        self.assertIsInstance(self.successResultOf(client.done), ConnectionDone)

    def test_abortDropsBuffered(self) -> None:
        """
        C{abortConnection} with bytes buffered: CLOSE at once, the buffered
        bytes are dropped, and the protocol sees an abort, not a clean close.
        """
        client = Collect()
        channel, service = self.channel(client)
        channel.write(self.payload)
        channel.loseWriteConnection()
        channel.abortConnection()
        self.assertEqual(service.kinds(), ["data", "close"])
        channel.addWindowBytes(len(self.payload))
        self.assertEqual(service.kinds(), ["data", "close"])
        self.assertEqual(len(service.data()), 1000)
        service.remoteClose(channel)
        self.assertIsInstance(self.successResultOf(client.done), ConnectionAborted)

    def test_serverCloseWhileBuffered(self) -> None:
        """
        The server sends EOF and closes the channel while our bytes still
        wait for window space: they cannot be delivered, so the protocol
        sees a lost connection, not a clean close.
        """
        client = Collect()
        channel, service = self.channel(client)
        channel.write(self.payload)
        channel.loseWriteConnection()
        service.remoteEOF(channel)
        service.remoteClose(channel)
        self.assertEqual(service.kinds(), ["data", "close"])
        self.assertIsInstance(self.successResultOf(client.done), ConnectionLost)


class ForwardingRefusedTests(SSHTestsMixin, TestCase):
    async def test_allowTcpForwardingNo(self) -> None:
        self.setUpSSH(self, ("AllowTcpForwarding no",))
        echo = EchoServer(self)
        error = await self.assertFailure(
            self.connect(self.description("127.0.0.1", echo.port), Collect()),
            SSHChannelOpenFailed)
        self.assertEqual(error.code, 1)
        self.assertIn("administratively prohibited", str(error))

    async def test_permitOpen(self) -> None:
        echo = EchoServer(self)
        self.setUpSSH(self, (f"PermitOpen 127.0.0.1:{echo.port}",))
        await self.roundTrip(self.description("127.0.0.1", echo.port))
        error = await self.assertFailure(
            self.connect(self.description("127.0.0.1", echo.port + 1), Collect()),
            SSHChannelOpenFailed)
        self.assertIn("administratively prohibited", str(error))


class CommandTests(SSHTestsMixin, TestCase):
    def setUp(self) -> None:
        self.setUpSSH(self)

    def command(self, command: str, **kwargs: Any) -> str:
        args: dict[str, Any] = dict(identity=self.key, knownHosts=self.knownHosts, agent="no")
        args.update(kwargs)
        return buildDescription("sshexec", command,
                                endpoint=f"tcp:127.0.0.1:{self.server.port}", **args)

    async def test_catEcho(self) -> None:
        client = Collect(b"through cat\n", halfClose=True)
        await self.connect(self.command("cat"), client)
        reason = await within(client.done)
        self.assertEqual(bytes(client.received), b"through cat\n")
        self.assertIsInstance(reason, ProcessDone)

    async def test_exitStatus(self) -> None:
        client = Collect()
        await self.connect(self.command("echo out; exit 3"), client)
        reason = await within(client.done)
        self.assertEqual(bytes(client.received), b"out\n")
        self.assertIsInstance(reason, ProcessTerminated)
        self.assertEqual(reason.exitCode, 3)

    async def test_signal(self) -> None:
        client = Collect()
        await self.connect(self.command("kill -TERM $$"), client)
        reason = await within(client.done)
        self.assertIsInstance(reason, ProcessTerminated)
        self.assertEqual(reason.signal, 15)

    async def test_stderrLogged(self) -> None:
        from twisted.logger import globalLogPublisher
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = Collect()
        await self.connect(self.command("echo oops >&2"), client)
        await within(client.done)
        self.assertTrue(any(e.get("line") == "oops" for e in events))

    async def test_closeGivesEOF(self) -> None:
        """
        Closing the connection: the remote command sees EOF.
        """
        marker = os.path.join(self.directory, "eof")
        client = Collect()
        await self.connect(self.command(f"cat >/dev/null; touch {marker}"), client)
        assert client.transport is not None
        client.transport.loseConnection()
        await within(client.done)
        for _ in range(100):
            if os.path.exists(marker):
                break
            await deferLater(_reactor, 0.1, lambda: None)
        self.assertTrue(os.path.exists(marker))


class ChainTests(SSHTestsMixin, TestCase):
    async def test_twoServers(self) -> None:
        """
        ssh: over ssh:: the second sshd is reached through the first.
        """
        self.setUpSSH(self)
        echo = EchoServer(self)
        second = startSSHServer(self, [self.key + ".pub"])
        with open(self.knownHosts, "a") as f:
            f.write(second.keyscan())
        first = self.description("127.0.0.1", second.port)
        description = buildDescription("ssh", "127.0.0.1", echo.port, endpoint=first,
                                       identity=self.key, knownHosts=self.knownHosts,
                                       agent="no")
        await self.roundTrip(description)
        # Both authenticated this user: the jump host, then the second
        # server, reached through the jump host's direct-tcpip channel.
        self.assertEqual(self.sessions(), 1)
        self.assertIn("Accepted publickey", second.logText())

    async def test_overSocks5(self) -> None:
        self.setUpSSH(self)
        echo = EchoServer(self)
        socks = startMicrosocks(self)
        server = buildDescription("socks5", "127.0.0.1", self.server.port,
                                  endpoint=f"tcp:127.0.0.1:{socks}")
        description = buildDescription("ssh", "127.0.0.1", echo.port, endpoint=server,
                                       identity=self.key, knownHosts=self.knownHosts,
                                       agent="no")
        await self.roundTrip(description)


class AgentTests(SSHTestsMixin, TestCase):
    async def test_agent(self) -> None:
        self.setUpSSH(self)
        echo = EchoServer(self)
        agent = requirePeer("ssh-agent", "openssh-client")
        # A short path: a UNIX socket path has a 107-byte limit.
        sock = os.path.join(shortTempDir(self), "agent.sock")
        startPeer(self, [agent, "-D", "-a", sock])
        for _ in range(100):
            if os.path.exists(sock):
                break
            await deferLater(_reactor, 0.05, lambda: None)
        env = dict(os.environ, SSH_AUTH_SOCK=sock)
        subprocess.run(["ssh-add", self.key], env=env, check=True, capture_output=True,
                       timeout=30)
        os.rename(self.key, self.key + ".moved")
        old = os.environ.get("SSH_AUTH_SOCK")
        os.environ["SSH_AUTH_SOCK"] = sock
        self.addCleanup(lambda: os.environ.__setitem__("SSH_AUTH_SOCK", old) if old
                        else os.environ.pop("SSH_AUTH_SOCK", None))
        description = self.description("127.0.0.1", echo.port, identity=None, agent=None,
                                       share="no")
        await self.roundTrip(description)
        error = await self.assertFailure(
            self.connect(self.description("127.0.0.1", echo.port, identity=None, agent="no",
                                          share="no"), Collect()), SSHAuthenticationFailed)
        self.assertIn("tried nothing", str(error))


class PasswordTests(SSHTestsMixin, TestCase):
    async def test_password(self) -> None:
        if os.geteuid() != 0:
            message = "a test account needs root (useradd, chpasswd)"
            if IN_CI:
                raise AssertionError(message)
            raise SkipTest(message)
        name = f"ektest{os.getpid() % 100000}"
        password = "pw-" + hashlib.sha256(os.urandom(8)).hexdigest()[:12]
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True,
                       capture_output=True)
        self.addCleanup(subprocess.run, ["userdel", name], capture_output=True)
        subprocess.run(["chpasswd"], input=f"{name}:{password}".encode(), check=True,
                       capture_output=True)
        self.setUpSSH(self, ("PasswordAuthentication yes",))
        echo = EchoServer(self)
        good = self.description("127.0.0.1", echo.port, identity=None, user=name,
                                password=password)
        await self.roundTrip(good)
        self.assertIn(f"Accepted password for {name}", self.server.logText())
        bad = self.description("127.0.0.1", echo.port, identity=None, user=name,
                               password="not-it")
        error = await self.assertFailure(self.connect(bad, Collect()),
                                         SSHAuthenticationFailed)
        self.assertIn("password", str(error))
        self.assertNotIn("not-it", str(error))
        self.assertNotIn(password, str(error))


class DescriptionTests(TestCase):
    def test_errors(self) -> None:
        for description, expected in [
            ("ssh:host:22", "missing required argument 'endpoint'"),
            ("ssh:host:22:endpoint=tcp\\:h\\:22:hostKey=MD5\\:aa", "hostKey"),
            ("ssh:host:22:endpoint=tcp\\:h\\:22:idel=3", "did you mean 'idle'"),
            ("ssh:host:22:endpoint=unix\\:/tmp/s", "hostKeyAlias"),
            ("ssh:host:22:endpoint=tcp\\:h\\:22:passphrase=x", "without 'identity'"),
            ("sshexec:endpoint=tcp\\:h\\:22", "command"),
        ]:
            with self.assertRaises(DescriptionError) as caught:
                endpointkit.clientFromString(_reactor, description)
            self.assertIn(expected, str(caught.exception))

    def test_lookupName(self) -> None:
        inner = buildDescription("timeout", 5, endpoint="tcp:bastion:2222")
        endpoint: Any = endpointkit.clientFromString(
            _reactor, buildDescription("ssh", "db", 5432, endpoint=inner))
        self.assertEqual(endpoint.settings.hostKeyName, "[bastion]:2222")
        endpoint = endpointkit.clientFromString(_reactor, "ssh:db:5432:endpoint=tcp\\:bastion\\:22")
        self.assertEqual(endpoint.settings.hostKeyName, "bastion")

