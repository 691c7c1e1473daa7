"""
Tests for L{endpointkit.lifecycle}: listen errors on real sockets, rebinding
right after stopListening, graceful drain of a real web server, the twistd
service, and client descriptions of listening ports.
"""

from __future__ import annotations

import errno
import gc
import importlib.util
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocolNegotiationFactory,
)
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server
from zope.interface import implementer

from endpointkit import clientFromString
from endpointkit._grammar import DescriptionError, buildDescription
from endpointkit.lifecycle import (
    CannotDescribePort,
    DrainResult,
    EndpointService,
    ListenError,
    TrackedPort,
    TrackingFactory,
    clientDescriptionFor,
    clientDescriptionsFor,
    gracefulStop,
    listen,
    stopListening,
)
from tests._support import (
    PYTHON,
    fileDescriptorNumbers,
    freePort,
    portIsFree,
    requirePeer,
    selfSignedCertificate,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WAIT = 15.0
REBINDS = 200

Inline = Generator[Any, Any, None]


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def bounded(d: defer.Deferred[Any], seconds: float = WAIT) -> defer.Deferred[Any]:
    return d.addTimeout(seconds, reactor)


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def echoFactory() -> protocol.Factory:
    return protocol.Factory.forProtocol(Echo)


class Exchange(protocol.Protocol):
    """
    Sends C{message}, and fires C{done} with what came back once it is all
    there.
    """

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.message)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.message) and not self.done.called:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(self.received)


class Collect(Exchange):
    """
    Sends C{message} and collects everything until the server closes.
    """

    def dataReceived(self, data: bytes) -> None:
        self.received += data


@defer.inlineCallbacks
def exchange(description: str, message: bytes = b"ping through the description\n") -> Inline:
    """
    Connect to C{description} with endpointkit.clientFromString, send
    C{message} to an echo server, return what came back.
    """
    client = Exchange(message)
    endpoint = clientFromString(reactor, description)
    yield bounded(endpoint.connect(protocol.Factory.forProtocol(lambda: client)))
    received = yield bounded(client.done)
    return received


def makeCertificate(directory: str, name: str = "localhost") -> tuple[str, str]:
    """
    A self-signed certificate for C{name} (and 127.0.0.1, ::1); the paths
    of its PEM certificate (alone in its directory, which is a trust root
    for Twisted's C{tls:} client) and key.
    """
    certificate, key = selfSignedCertificate(name, ["127.0.0.1", "::1"])
    os.makedirs(os.path.join(directory, "trust"), exist_ok=True)
    certPath = os.path.join(directory, "trust", f"{name}.pem")
    keyPath = os.path.join(directory, f"{name}.key")
    with open(certPath, "wb") as f:
        f.write(certificate)
    with open(keyPath, "wb") as f:
        f.write(key)
    return certPath, keyPath


class _Base(TestCase):
    def tempDir(self) -> str:
        # Short, so that UNIX socket paths stay under 108 bytes.
        directory = tempfile.mkdtemp(prefix="eklc-")
        self.addCleanup(_removeTree, directory)
        return directory

    def heldSocket(self, host: str = "127.0.0.1") -> int:
        """
        A port held by another listening socket for the rest of the test.
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        held = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(held.close)
        held.bind((host, 0))
        held.listen(5)
        port: int = held.getsockname()[1]
        return port

    @defer.inlineCallbacks
    def listenError(self, description: Any, factory: Any = None) -> Inline:
        failure = yield self.assertFailure(
            listen(description, factory or echoFactory()), ListenError)
        return failure

    def listenFor(self, description: str, factory: Any = None) -> defer.Deferred[TrackedPort]:
        d = listen(description, factory or echoFactory())

        def started(port: TrackedPort) -> TrackedPort:
            self.addCleanup(stopListening, port)
            return port

        return d.addCallback(started)


def _removeTree(directory: str) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


def _unprivilegedPortStart() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


def _notLocalAddress() -> str:
    """
    An IPv4 documentation address that this host does not have (binding to
    it fails; nothing is sent).
    """
    for candidate in ("192.0.2.1", "198.51.100.1", "203.0.113.1"):
        with socket.socket() as s:
            try:
                s.bind((candidate, 0))
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:
                    return candidate
    raise AssertionError("this host has every documentation address (or allows "
                         "binding to any address: net.ipv4.ip_nonlocal_bind)")


class ListenErrorTests(_Base):
    """
    Each way listening fails gives a L{ListenError} naming the description,
    the problem and a hint.
    """

    @defer.inlineCallbacks
    def test_portInUse(self) -> Inline:
        port = self.heldSocket()
        description = f"tcp:{port}:interface=127.0.0.1"
        error = yield self.listenError(description)
        self.assertIsInstance(error, CannotListenError)
        self.assertEqual(error.errno, errno.EADDRINUSE)
        self.assertEqual(error.description, description)
        self.assertEqual(
            str(error),
            f"listen {description}: address already in use: port {port} on 127.0.0.1 "
            f"is taken (find the holder with: ss -ltnp 'sport = :{port}')")

    @defer.inlineCallbacks
    def test_portInUseIPv6(self) -> Inline:
        port = self.heldSocket("::1")
        description = buildDescription("tcp6", port, interface="::1")
        error = yield self.listenError(description)
        self.assertEqual(error.errno, errno.EADDRINUSE)
        self.assertIn(f"port {port} on [::1] is taken", str(error))
        self.assertIn(f"ss -ltnp 'sport = :{port}'", str(error))

    @defer.inlineCallbacks
    def test_portInUseEndpointObject(self) -> Inline:
        """
        An endpoint object is described in the message as its description.
        """
        port = self.heldSocket()
        error = yield self.listenError(TCP4ServerEndpoint(reactor, port, interface="127.0.0.1"))
        self.assertTrue(str(error).startswith(
            f"listen tcp:{port}:interface=127.0.0.1: address already in use"), str(error))

    @defer.inlineCallbacks
    def test_portInUseTLS(self) -> Inline:
        port = self.heldSocket()
        cert, key = makeCertificate(self.tempDir())
        description = buildDescription("ssl", port, privateKey=key, certKey=cert,
                                       interface="127.0.0.1")
        error = yield self.listenError(description)
        self.assertEqual(error.errno, errno.EADDRINUSE)
        self.assertIn("address already in use", str(error))

    def test_privilegedPort(self) -> None:
        """
        An unprivileged user binding a port below
        C{ip_unprivileged_port_start} is told why.
        """
        start = _unprivilegedPortStart()
        if start <= 1:
            raise SkipTest("this host lets every user bind every port "
                           "(net.ipv4.ip_unprivileged_port_start = 0)")
        port = next(p for p in range(start - 1, 0, -1) if _bindable(p))
        descriptions = [f"tcp:{port}:interface=127.0.0.1",
                        buildDescription("tcp6", port, interface="::1")]
        lines = self.runUnprivileged(descriptions)
        for description, line in zip(descriptions, lines, strict=True):
            self.assertFalse(line["ok"], line)
            self.assertEqual(line["type"], "ListenError")
            self.assertTrue(line["cannotListen"])
            self.assertEqual(line["errno"], errno.EACCES)
            self.assertEqual(
                line["message"],
                f"listen {description}: permission denied binding port {port} "
                f"(ports below {start} need privileges)")

    def test_unixDirectoryNotWritable(self) -> None:
        directory = self.tempDir()
        os.chmod(directory, 0o555)
        self.addCleanup(os.chmod, directory, 0o700)
        path = os.path.join(directory, "app.sock")
        lines = self.runUnprivileged([f"unix:{path}:lockfile=0", f"unix:{path}"])
        for line in lines:
            self.assertFalse(line["ok"], line)
            self.assertEqual(line["type"], "ListenError")
            self.assertEqual(line["errno"], errno.EACCES)
            self.assertIn(f"permission denied creating {path} (directory {directory} "
                          f"is not writable by uid {line['uid']})", line["message"])

    def runUnprivileged(self, descriptions: list[str]) -> list[dict[str, Any]]:
        """
        Listen on C{descriptions} in a process without privileges: as root
        (CI), the helper drops to uid 65534; as anyone else, it is already
        unprivileged.
        """
        done = subprocess.run(
            [PYTHON, os.path.join(HERE, "lifecycle_unprivileged.py"), *descriptions],
            capture_output=True, timeout=60, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT})
        lines = [json.loads(line) for line in done.stdout.decode().splitlines()
                 if line.startswith("{")]
        self.assertEqual(len(lines), len(descriptions), done.stderr.decode()[-3000:])
        for line in lines:
            self.assertEqual(line["uid"], 65534 if os.getuid() == 0 else os.getuid())
        return lines

    @defer.inlineCallbacks
    def test_addressNotOnHost(self) -> Inline:
        address = _notLocalAddress()
        description = f"tcp:0:interface={address}"
        error = yield self.listenError(description)
        self.assertEqual(error.errno, errno.EADDRNOTAVAIL)
        self.assertEqual(
            str(error),
            f"listen {description}: address {address} is not on this host "
            "(no interface has it; list them with: ip -brief address)")

    @defer.inlineCallbacks
    def test_unixMissingDirectory(self) -> Inline:
        directory = os.path.join(self.tempDir(), "missing", "deeper")
        path = os.path.join(directory, "app.sock")
        for description in (f"unix:{path}", f"unix:{path}:lockfile=0"):
            error = yield self.listenError(description)
            self.assertEqual(error.errno, errno.ENOENT)
            self.assertEqual(
                str(error),
                f"listen {description}: directory {directory} does not exist "
                f"(create it first: mkdir -p {directory})")

    @defer.inlineCallbacks
    def test_unixStaleSocketFile(self) -> Inline:
        """
        A socket file left behind by a server that exited is named as such;
        the failed attempt leaves no lock file and no started factory.
        """
        path = os.path.join(self.tempDir(), "app.sock")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
        factory = echoFactory()
        for description in (f"unix:{path}:lockfile=0", f"unix:{path}"):
            error = yield self.listenError(description, factory)
            self.assertEqual(error.errno, errno.EADDRINUSE)
            self.assertIn(f"{path} already exists and nothing listens on it "
                          "(a stale socket file", str(error))
            self.assertFalse(os.path.lexists(path + ".lock"))
            self.assertEqual(factory.numPorts, 0)
        os.remove(path)
        port = yield self.listenFor(f"unix:{path}", factory)
        self.assertTrue(os.path.lexists(path + ".lock"))
        yield stopListening(port)

    @defer.inlineCallbacks
    def test_unixLiveServer(self) -> Inline:
        path = os.path.join(self.tempDir(), "app.sock")
        live = socket.socket(socket.AF_UNIX)
        self.addCleanup(live.close)
        live.bind(path)
        live.listen(1)
        error = yield self.listenError(f"unix:{path}:lockfile=0")
        self.assertIn(f"another server is listening on {path}", str(error))

    @defer.inlineCallbacks
    def test_unixLockHeld(self) -> Inline:
        path = os.path.join(self.tempDir(), "app.sock")
        yield self.listenFor(f"unix:{path}")
        error = yield self.listenError(f"unix:{path}")
        with open(f"/proc/{os.getpid()}/comm") as f:
            name = f.read().strip()
        self.assertEqual(
            str(error),
            f"listen unix:{path}: lock file {path}.lock is held by running process "
            f"{os.getpid()} ({name}) (another server uses this socket; stop it first, or "
            f"if process {os.getpid()} is not that server, remove the stale {path}.lock)")

    @defer.inlineCallbacks
    def test_missingCertificate(self) -> Inline:
        missing = os.path.join(self.tempDir(), "nope.pem")
        description = f"ssl:0:privateKey={missing}"
        error = yield self.listenError(description)
        self.assertEqual(str(error), f"listen {description}: cannot use {missing}: "
                         "no such file or directory")

    @defer.inlineCallbacks
    def test_systemdNothingPassed(self) -> Inline:
        if "LISTEN_FDS" in os.environ:
            raise SkipTest("this test runs with sockets passed by systemd")
        error = yield self.listenError("systemd:domain=INET:index=0")
        self.assertEqual(
            str(error),
            "listen systemd:domain=INET:index=0: systemd passed no sockets to this process "
            "(run it from a socket unit, or under systemd-socket-activate)")

    @defer.inlineCallbacks
    def test_badDescription(self) -> Inline:
        """
        A description that does not parse is a L{DescriptionError}, not a
        failure to listen.
        """
        error = yield self.assertFailure(listen("tcp:https", echoFactory()), DescriptionError)
        self.assertIn("tcp: argument 'port'", str(error))

    def test_neverListens(self) -> None:
        """
        An endpoint that never answers fails at the deadline; no delayed
        call is left behind.
        """
        clock = Clock()
        d = listen(_NeverEndpoint(), echoFactory(), clock, timeout=5)
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        error = self.failureResultOf(d, ListenError).value
        self.assertTrue(str(error).startswith("listen <"), str(error))
        self.assertTrue(str(error).endswith(": no port after 5 s (the endpoint never "
                                            "finished listening)"), str(error))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_lateListenIsClosed(self) -> None:
        clock = Clock()
        endpoint = _LateEndpoint()
        d = listen(endpoint, echoFactory(), clock, timeout=5)
        clock.advance(5)
        self.failureResultOf(d, ListenError)
        port = _FakePort(TrackingFactory(echoFactory()))
        endpoint.d.callback(port)
        self.assertEqual(port.stopped, 1)

    def test_cancelledThenListens(self) -> None:
        clock = Clock()
        endpoint = _LateEndpoint()
        d = listen(endpoint, echoFactory(), clock, timeout=5)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        port = _FakePort(TrackingFactory(echoFactory()))
        endpoint.d.callback(port)
        self.assertEqual(port.stopped, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_asyncListenInTime(self) -> None:
        clock = Clock()
        endpoint = _LateEndpoint()
        d = listen(endpoint, echoFactory(), clock, timeout=5)
        port = _FakePort(TrackingFactory(echoFactory()))
        endpoint.d.callback(port)
        self.assertIs(self.successResultOf(d).wrappedPort, port)
        self.assertEqual(clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_multiMemberInUse(self) -> Inline:
        if not available("endpointkit.multi"):
            raise SkipTest("endpointkit.multi is not in this tree")
        port = self.heldSocket()
        description = buildDescription(
            "multi", buildDescription("tcp", 0, interface="127.0.0.1"),
            buildDescription("tcp", port, interface="127.0.0.1"))
        error = yield self.listenError(description)
        self.assertIn(f"address already in use: port {port} on 127.0.0.1", str(error))

    @defer.inlineCallbacks
    def test_memoryNameTaken(self) -> Inline:
        if not available("endpointkit.memory"):
            raise SkipTest("endpointkit.memory is not in this tree")
        yield self.listenFor("memory:lifecycle-taken")
        error = yield self.listenError("memory:lifecycle-taken")
        self.assertEqual(str(error), "listen memory:lifecycle-taken: address already in use: "
                         "memory:lifecycle-taken is taken")


def _bindable(port: int) -> bool:
    return portIsFree(port) and portIsFree(port, "::1")


class StopListeningTests(_Base):
    """
    L{stopListening} fires only once the address can be bound again.
    """

    @defer.inlineCallbacks
    def rebindLoop(self, description: str, check: Callable[[], None] = lambda: None) -> Inline:
        factory = echoFactory()
        port = yield listen(description, factory)
        yield stopListening(port)
        gc.collect()
        descriptors = fileDescriptorNumbers()
        for _ in range(REBINDS):
            port = yield listen(description, factory)
            yield stopListening(port)
            check()
        self.assertEqual(factory.numPorts, 0)
        gc.collect()
        self.assertEqual(fileDescriptorNumbers() - descriptors, set())

    def test_rebindTCP(self) -> defer.Deferred[None]:
        return self.rebindLoop(f"tcp:{freePort()}:interface=127.0.0.1")

    def test_rebindTCP6(self) -> defer.Deferred[None]:
        return self.rebindLoop(buildDescription("tcp6", freePort("::1"), interface="::1"))

    def test_rebindUNIX(self) -> defer.Deferred[None]:
        path = os.path.join(self.tempDir(), "app.sock")

        def gone() -> None:
            self.assertFalse(os.path.lexists(path))
            self.assertFalse(os.path.lexists(path + ".lock"))

        return self.rebindLoop(f"unix:{path}", gone)

    def test_rebindTLS(self) -> defer.Deferred[None]:
        cert, key = makeCertificate(self.tempDir())
        return self.rebindLoop(buildDescription("ssl", freePort(), privateKey=key,
                                                certKey=cert, interface="127.0.0.1"))

    def test_rebindMulti(self) -> defer.Deferred[None]:
        if not available("endpointkit.multi"):
            raise SkipTest("endpointkit.multi is not in this tree")
        path = os.path.join(self.tempDir(), "multi.sock")
        return self.rebindLoop(buildDescription(
            "multi", buildDescription("tcp", freePort(), interface="127.0.0.1"),
            buildDescription("tcp6", freePort("::1"), interface="::1"),
            buildDescription("unix", path)))

    def test_rebindReusePort(self) -> defer.Deferred[None]:
        if not available("endpointkit.reuseport"):
            raise SkipTest("endpointkit.reuseport is not in this tree")
        return self.rebindLoop(buildDescription("reuseport", freePort(), interface="127.0.0.1"))

    def test_rebindLimit(self) -> defer.Deferred[None]:
        if not available("endpointkit.limit"):
            raise SkipTest("endpointkit.limit is not in this tree")
        return self.rebindLoop(buildDescription(
            "limit", endpoint=buildDescription("tcp", freePort(), interface="127.0.0.1"), max=5))

    @defer.inlineCallbacks
    def test_plainStopDoesNotWait(self) -> Inline:
        """
        The trap this avoids: Twisted's own C{stopListening} closes the
        socket in a later reactor turn, so listening again at once fails.
        """
        number = freePort()
        port = yield listen(f"tcp:{number}:interface=127.0.0.1", echoFactory())
        stopping = port.wrappedPort.stopListening()
        error = yield self.listenError(f"tcp:{number}:interface=127.0.0.1")
        self.assertEqual(error.errno, errno.EADDRINUSE)
        yield stopping
        again = yield listen(f"tcp:{number}:interface=127.0.0.1", echoFactory())
        yield stopListening(again)

    @defer.inlineCallbacks
    def test_twiceIsHarmless(self) -> Inline:
        port = yield listen("tcp:0:interface=127.0.0.1", echoFactory())
        first = stopListening(port)
        second = stopListening(port)
        inner = stopListening(port.wrappedPort)
        own = port.stopListening()
        self.assertFalse(first.called)
        yield defer.gatherResults([first, second, inner, own])
        third = stopListening(port)
        self.assertTrue(third.called)
        yield third
        self.assertEqual(port.factory.numPorts, 0)

    def test_failureToEveryCaller(self) -> None:
        """
        A stop that fails fails for every caller, and only once calls the
        port.
        """
        broken = _BrokenPort()
        first, second = stopListening(broken), stopListening(broken)
        for d in (first, second, stopListening(broken)):
            self.assertEqual(str(self.failureResultOf(d, OSError).value), "cannot close")
        self.assertEqual(broken.stops, 1)

    @defer.inlineCallbacks
    def test_seesThroughWrapper(self) -> Inline:
        """
        A wrapper port whose own C{stopListening} does not wait is still
        waited for, through C{wrappedPort}.
        """
        number = freePort()
        inner = yield listen(f"tcp:{number}:interface=127.0.0.1", echoFactory())
        wrapper = _HastyWrapper(inner.wrappedPort)
        yield stopListening(wrapper)
        again = yield listen(f"tcp:{number}:interface=127.0.0.1", echoFactory())
        yield stopListening(again)
        self.assertEqual(wrapper.stops, 1)

    @defer.inlineCallbacks
    def test_seesThroughMultiPorts(self) -> Inline:
        numbers = [freePort(), freePort()]
        ports = []
        for number in numbers:
            port = yield listen(f"tcp:{number}:interface=127.0.0.1", echoFactory())
            ports.append(port.wrappedPort)
        yield stopListening(_HastyMulti(ports))
        for number in numbers:
            again = yield listen(f"tcp:{number}:interface=127.0.0.1", echoFactory())
            yield stopListening(again)

    @defer.inlineCallbacks
    def test_restartThenStop(self) -> Inline:
        port = yield listen("tcp:0:interface=127.0.0.1", echoFactory())
        yield stopListening(port)
        port.startListening()
        self.assertEqual((yield exchange(clientDescriptionFor(port))),
                         b"ping through the description\n")
        yield stopListening(port)
        self.assertRaises(CannotDescribePort, clientDescriptionFor, port)


class SystemdTests(_Base):
    """
    C{systemd:} through the lifecycle, under the real systemd-socket-activate.
    """

    def test_adoptedSocket(self) -> None:
        activate = requirePeer("systemd-socket-activate", "systemd")
        for _ in range(5):
            # A free port can be taken by another test process before
            # systemd-socket-activate binds it: then it exits, and another
            # port is tried.
            number = freePort()
            process = subprocess.Popen(
                [activate, "-l", f"127.0.0.1:{number}", "--fdname=web", PYTHON,
                 os.path.join(HERE, "lifecycle_systemd.py")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})

            def stop(process: subprocess.Popen[bytes] = process) -> None:
                if process.poll() is None:
                    process.kill()
                process.communicate(timeout=10)

            self.addCleanup(stop)
            _waitFor(lambda process=process, number=number: process.poll() is not None
                     or _listensIn(process.pid, number), WAIT)
            if process.poll() is None:
                break
        else:
            self.fail("systemd-socket-activate never kept a port")
        with socket.create_connection(("127.0.0.1", number), timeout=WAIT) as client:
            client.sendall(b"through systemd\n")
            echoed = client.makefile("rb").read()
        self.assertEqual(echoed, b"through systemd\n")
        out, err = process.communicate(timeout=WAIT)
        self.assertEqual(process.returncode, 0, err.decode()[-3000:])
        report = json.loads(out.decode().splitlines()[0])
        self.assertEqual(report["description"], f"tcp:127.0.0.1:{number}")
        self.assertEqual(
            report["missing"],
            "ListenError: listen systemd:domain=INET:index=7: no such passed socket: "
            "systemd passed 1, named web (check index= or name= against "
            "FileDescriptorName= in the socket unit)")


class _HastyWrapper:
    """
    A wrapper port whose stopListening fires before its socket closes.
    """

    def __init__(self, wrappedPort: Any) -> None:
        self.wrappedPort = wrappedPort
        self.stops = 0

    def stopListening(self) -> defer.Deferred[None]:
        self.stops += 1
        self.wrappedPort.stopListening()
        return defer.succeed(None)


class _BrokenPort:
    def __init__(self) -> None:
        self.stops = 0

    def stopListening(self) -> defer.Deferred[None]:
        self.stops += 1
        return defer.fail(OSError("cannot close"))


class _HastyMulti:
    def __init__(self, ports: list[Any]) -> None:
        self.ports = ports

    def stopListening(self) -> defer.Deferred[None]:
        for port in self.ports:
            port.stopListening()
        return defer.succeed(None)


class _Transport(StringTransport):
    """
    A transport that loses its connection when asked, unless it is stuck,
    and can be aborted.
    """

    def __init__(self, stuck: bool = False) -> None:
        StringTransport.__init__(self)
        self.stuck = stuck
        self.closedHow: str | None = None

    def loseConnection(self) -> None:
        self.closedHow = "lost"
        if not self.stuck:
            self._gone()

    def abortConnection(self) -> None:
        self.closedHow = "aborted"
        self._gone()

    def _gone(self) -> None:
        if self.protocol is not None:
            protocol, self.protocol = self.protocol, None
            protocol.connectionLost(None)


class _FakePort:
    def __init__(self, factory: TrackingFactory) -> None:
        self.factory = factory
        self.stopped = 0

    def stopListening(self) -> defer.Deferred[None]:
        self.stopped += 1
        return defer.succeed(None)


class DrainUnitTests(TestCase):
    """
    L{gracefulStop} on a clock: who finishes, who is closed, who is aborted.
    """

    def connect(self, tracker: TrackingFactory, stuck: bool = False) -> _Transport:
        wrapper = tracker.buildProtocol(None)
        transport = _Transport(stuck)
        transport.protocol = wrapper
        wrapper.makeConnection(transport)
        return transport

    def test_counts(self) -> None:
        clock = Clock()
        app = echoFactory()
        tracker = TrackingFactory(app)
        tracker.doStart()
        early, late, stuck = (self.connect(tracker), self.connect(tracker),
                              self.connect(tracker, stuck=True))
        port = _FakePort(tracker)
        results: list[DrainResult] = []
        gracefulStop(port, 10, clock, grace=2).addCallback(results.append)
        self.assertEqual(port.stopped, 1)
        clock.advance(5)
        early._gone()
        clock.advance(4.9)
        self.assertEqual((late.closedHow, stuck.closedHow), (None, None))
        clock.advance(0.1)
        self.assertEqual((late.closedHow, stuck.closedHow), ("lost", "lost"))
        self.assertEqual(results, [])
        clock.advance(2)
        self.assertEqual(stuck.closedHow, "aborted")
        self.assertEqual(results, [DrainResult(finished=1, closed=2, aborted=1)])
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(tracker.protocols, {})

    def test_nothingOpen(self) -> None:
        clock = Clock()
        tracker = TrackingFactory(echoFactory())
        results: list[DrainResult] = []
        gracefulStop(_FakePort(tracker), 10, clock).addCallback(results.append)
        self.assertEqual(results, [DrainResult(0, 0, 0)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_allFinish(self) -> None:
        clock = Clock()
        tracker = TrackingFactory(echoFactory())
        tracker.doStart()
        transports = [self.connect(tracker) for _ in range(3)]
        results: list[DrainResult] = []
        gracefulStop(_FakePort(tracker), 10, clock).addCallback(results.append)
        for transport in transports:
            transport._gone()
        self.assertEqual(results, [DrainResult(3, 0, 0)])
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(all(t.closedHow is None for t in transports))

    def test_wrappedFactoryStopsAfterDrain(self) -> None:
        """
        The application's factory stays started while its connections are
        open after the port closed.
        """
        app = echoFactory()
        tracker = TrackingFactory(app)
        tracker.doStart()
        transport = self.connect(tracker)
        tracker.doStop()
        self.assertEqual(app.numPorts, 1)
        transport._gone()
        self.assertEqual(app.numPorts, 0)

    def test_untrackedPort(self) -> None:
        port = _FakePort(echoFactory())  # type: ignore[arg-type]
        error = self.assertRaises(ValueError, gracefulStop, port, 1, Clock())
        self.assertIn("TrackingFactory", str(error))


@implementer(IHalfCloseableProtocol)
class AnswerAtEOF(protocol.Protocol):
    """
    Reads until the client half-closes, then answers with what it read.
    """

    received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.write(b"read " + self.received)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class HalfClose(Collect):
    def connectionMade(self) -> None:
        self.transport.write(self.message)
        self.transport.loseWriteConnection()


@implementer(IHandshakeListener)
class Negotiated(protocol.Protocol):
    def handshakeCompleted(self) -> None:
        self.factory.negotiated.callback(self.transport.negotiatedProtocol)


@implementer(IProtocolNegotiationFactory)
class NegotiatingFactory(protocol.Factory):
    protocol = Negotiated

    def __init__(self) -> None:
        self.negotiated: defer.Deferred[bytes | None] = defer.Deferred()

    def acceptableProtocols(self) -> list[bytes]:
        return [b"h2", b"http/1.1"]


class WrapperTransparencyTests(_Base):
    """
    The tracking wrapper keeps what the application's protocol and factory
    take part in: half-close, TLS handshake events, ALPN.
    """

    @defer.inlineCallbacks
    def test_halfClose(self) -> Inline:
        port = yield self.listenFor("tcp:0:interface=127.0.0.1",
                                    protocol.Factory.forProtocol(AnswerAtEOF))
        client = HalfClose(b"request body")
        endpoint = clientFromString(reactor, clientDescriptionFor(port))
        yield bounded(endpoint.connect(protocol.Factory.forProtocol(lambda: client)))
        self.assertEqual((yield bounded(client.done)), b"read request body")

    @defer.inlineCallbacks
    def test_alpnAndHandshake(self) -> Inline:
        from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        cert, key = makeCertificate(self.tempDir(), "service.test")
        factory = NegotiatingFactory()
        port = yield self.listenFor(buildDescription(
            "ssl", 0, privateKey=key, certKey=cert, interface="127.0.0.1"), factory)
        with open(cert, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        options = optionsForClientTLS("service.test", trustRoot=trust,
                                      acceptableProtocols=[b"h2"])
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                             port.getHost().port))
        client = yield bounded(endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol)))
        self.assertEqual((yield bounded(factory.negotiated)), b"h2")
        client.transport.loseConnection()
        yield bounded(gracefulStop(port, 5))


class SlowSite(resource.Resource):
    """
    C{/slow} answers with C{BODY} after C{delay} seconds; C{/hang} never
    answers.
    """

    isLeaf = True
    BODY = b"x" * 65536 + b"end\n"

    def __init__(self, delay: float) -> None:
        resource.Resource.__init__(self)
        self.delay = delay
        self.arrived = 0
        self._waiting: list[tuple[int, defer.Deferred[None]]] = []

    def whenArrived(self, count: int) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append((count, d))
        self._check()
        return d

    def _check(self) -> None:
        for count, d in list(self._waiting):
            if self.arrived >= count:
                self._waiting.remove((count, d))
                d.callback(None)

    def render_GET(self, request: Any) -> Any:
        self.arrived += 1
        self._check()
        if request.path == b"/hang":
            request.notifyFinish().addErrback(lambda _: None)
            return server.NOT_DONE_YET

        def answer() -> None:
            request.setHeader(b"content-length", b"%d" % (len(self.BODY),))
            request.write(self.BODY)
            request.finish()

        call = reactor.callLater(self.delay, answer)
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        return server.NOT_DONE_YET


def httpGet(description: str, path: str) -> defer.Deferred[bytes]:
    """
    One HTTP/1.1 request (Connection: close); fires with all the bytes that
    came back before the connection closed.
    """
    client = Collect(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    endpoint = clientFromString(reactor, description)
    connected = endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    return bounded(connected.addCallback(lambda _: client.done), 60)


class GracefulWebTests(_Base):
    """
    A real twisted.web server under load, stopped gracefully.
    """

    @defer.inlineCallbacks
    def test_drainUnderLoad(self) -> Inline:
        slow, hanging = 12, 3
        site = SlowSite(delay=0.3)
        port = yield self.listenFor("tcp:0:interface=127.0.0.1", server.Site(site))
        description = clientDescriptionFor(port)
        requests = ([httpGet(description, "/slow") for _ in range(slow)]
                    + [httpGet(description, "/hang") for _ in range(hanging)])
        yield bounded(site.whenArrived(slow + hanging))
        draining = gracefulStop(port, 4.0, grace=1.0)
        yield bounded(stopListening(port))
        yield self.assertFailure(bounded(httpGet(description, "/slow")), ConnectionRefusedError)
        self.assertNoResult(draining)
        result = yield bounded(draining, 30)
        responses = yield defer.gatherResults(requests)
        for response in responses[:slow]:
            head, _, body = response.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 200 OK"), head)
            self.assertIn(b"Content-Length: %d" % (len(SlowSite.BODY),), head)
            self.assertEqual(body, SlowSite.BODY)
        self.assertEqual(responses[slow:], [b""] * hanging)
        self.assertEqual(result, DrainResult(finished=slow, closed=hanging, aborted=0))
        self.assertEqual(port.factory.protocols, {})
        self.assertEqual(site.arrived, slow + hanging)


class EndpointServiceTests(_Base):
    """
    L{EndpointService} in a process and under a real twistd.
    """

    def test_badDescriptionAtConstruction(self) -> None:
        self.assertRaises(DescriptionError, EndpointService, "tcp:https", echoFactory())

    def test_listenFailureRaisesAndLogs(self) -> None:
        port = self.heldSocket()
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = EndpointService(f"tcp:{port}:interface=127.0.0.1", echoFactory())
        error = self.assertRaises(ListenError, service.privilegedStartService)
        self.assertEqual(error.errno, errno.EADDRINUSE)
        messages = [e.get("error") for e in events if e.get("log_namespace") ==
                    "endpointkit.lifecycle"]
        self.assertEqual(messages, [str(error)])
        failure = self.failureResultOf(service.whenListening(), ListenError)
        self.assertIs(failure.value, error)

    @defer.inlineCallbacks
    def test_startAndDrain(self) -> Inline:
        service = EndpointService("tcp:0:interface=127.0.0.1", server.Site(SlowSite(0.2)),
                                  drainTimeout=10)
        service.startService()
        port = yield bounded(service.whenListening())
        self.assertIs(port, service.port)
        response = httpGet(clientDescriptionFor(port), "/slow")
        yield bounded(port.factory.wrappedFactory.resource.whenArrived(1))
        stopped = service.stopService()
        self.assertFalse(service.running)
        again = service.stopService()
        self.assertFalse(again.called)
        yield bounded(defer.gatherResults([stopped, again]))
        body = yield response
        self.assertTrue(body.endswith(b"end\n"))
        self.assertEqual(service.lastDrain, DrainResult(1, 0, 0))
        self.assertIsNone(service.port)
        service.startService()
        restarted = yield bounded(service.whenListening())
        self.assertIsNot(restarted, port)
        self.assertEqual((yield httpGet(clientDescriptionFor(restarted), "/slow"))[-4:], b"end\n")
        yield bounded(service.stopService())

    def test_stopBeforeListening(self) -> None:
        service = EndpointService(_NeverEndpoint(), echoFactory())
        service.startService()
        self.successResultOf(service.stopService())
        self.failureResultOf(service.whenListening(), defer.CancelledError)

    def twistd(self, directory: str, description: str, drain: float = 30) -> tuple[
            subprocess.Popen[bytes], str]:
        twistd = os.path.join(os.path.dirname(PYTHON), "twistd")
        command = ([twistd] if os.path.exists(twistd)
                   else [PYTHON, "-c", "from twisted.scripts.twistd import run; run()"])
        log = os.path.join(directory, "twistd.log")
        env = {**os.environ, "PYTHONPATH": ROOT,
               "LIFECYCLE_DESCRIPTION": description,
               "LIFECYCLE_DRAIN": str(drain),
               "LIFECYCLE_ANNOUNCE": os.path.join(directory, "announce"),
               "LIFECYCLE_ARRIVED": os.path.join(directory, "arrived")}
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [*command, "-n", "-o", "--pidfile=", "-l", "-", "-y",
                 os.path.join(HERE, "lifecycle_slow.tac")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=directory, env=env)

        def stop() -> None:
            if process.poll() is None:
                process.kill()
                process.wait(10)

        self.addCleanup(stop)
        return process, log

    def test_twistdSigtermDrains(self) -> None:
        directory = self.tempDir()
        process, log = self.twistd(directory, "tcp:0:interface=127.0.0.1")
        announce = os.path.join(directory, "announce")
        _waitFor(lambda: os.path.exists(announce) or process.poll() is not None, 60)
        self.assertIsNone(process.poll(), _tail(log))
        with open(announce) as f:
            description = f.read()
        prefix, host, number = description.split(":")
        self.assertEqual((prefix, host), ("tcp", "127.0.0.1"))
        client = socket.create_connection((host, int(number)), timeout=WAIT)
        self.addCleanup(client.close)
        client.sendall(b"GET /?delay=2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        _waitFor(lambda: os.path.exists(os.path.join(directory, "arrived")), WAIT)
        process.send_signal(signal.SIGTERM)
        _waitFor(lambda: not _accepts(host, int(number)), WAIT)
        response = b""
        while True:
            data = client.recv(65536)
            if not data:
                break
            response += data
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"), response)
        self.assertTrue(response.endswith(b"\r\n\r\nslow answer after 2000 ms\n"), response)
        self.assertEqual(process.wait(WAIT), 0, _tail(log))
        self.assertRegex(_tail(log), "stopped listening on tcp:0:interface=127.0.0.1: "
                         r"[0-9]+ connection\(s\) finished, 0 closed")

    def test_twistdListenFailure(self) -> None:
        directory = self.tempDir()
        port = self.heldSocket()
        process, log = self.twistd(directory, f"tcp:{port}:interface=127.0.0.1")
        self.assertNotEqual(process.wait(60), 0)
        self.assertIn(f"listen tcp:{port}:interface=127.0.0.1: address already in use: "
                      f"port {port} on 127.0.0.1 is taken", _tail(log))


class _LateEndpoint:
    def __init__(self) -> None:
        self.d: defer.Deferred[Any] = defer.Deferred()

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        return self.d


class _NeverEndpoint:
    def listen(self, factory: Any) -> defer.Deferred[Any]:
        return defer.Deferred()


def _waitFor(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds} s")
        time.sleep(0.05)


def _accepts(host: str, port: int, probe: bool = True) -> bool:
    """
    Whether something listens on C{host:port}: by connecting (C{probe}), or
    by finding the port bound (so that nothing connects).
    """
    if probe:
        try:
            with socket.create_connection((host, port), timeout=2):
                return True
        except OSError:
            return False
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


def _listensIn(pid: int, port: int) -> bool:
    """
    Whether process C{pid} holds a TCP socket listening on C{port} (read
    from /proc, so that nothing connects to it).
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    try:
        held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:
        return False
    return any(f"socket:[{inode}]" in held for inode in inodes)


def _tail(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-6000:]


class ClientDescriptionTests(_Base):
    """
    L{clientDescriptionFor} round trips: listen on port 0, derive the client
    description, connect with clientFromString and exchange data.
    """

    @defer.inlineCallbacks
    def roundTrip(self, server: str, expected: str | None = None, **kw: Any) -> Inline:
        port = yield self.listenFor(server)
        description = clientDescriptionFor(port, **kw)
        if expected is not None:
            self.assertEqual(description, expected.format(port=port.getHost().port
                                                          if hasattr(port.getHost(), "port")
                                                          else 0))
        self.assertEqual(clientDescriptionsFor(port, **kw), [description])
        received = yield exchange(description)
        self.assertEqual(received, b"ping through the description\n")
        return description

    def test_tcp(self) -> defer.Deferred[None]:
        return self.roundTrip("tcp:0:interface=127.0.0.1", "tcp:127.0.0.1:{port}")

    def test_tcpEveryAddress(self) -> defer.Deferred[None]:
        return self.roundTrip("tcp:0", "tcp:127.0.0.1:{port}")

    def test_tcp6(self) -> defer.Deferred[None]:
        return self.roundTrip("tcp6:0:interface=[::1]", "tcp:\\:\\:1:{port}")

    def test_tcp6EveryAddress(self) -> defer.Deferred[None]:
        return self.roundTrip("tcp6:0", "tcp:\\:\\:1:{port}")

    def test_unix(self) -> defer.Deferred[None]:
        path = os.path.join(self.tempDir(), "a:b.sock")
        return self.roundTrip(buildDescription("unix", path),
                              buildDescription("unix", path))

    @defer.inlineCallbacks
    def test_tls(self) -> Inline:
        """
        The name to verify comes from the certificate; the description
        verifies it against the given trust roots.
        """
        cert, key = makeCertificate(self.tempDir(), "service.test")
        server = buildDescription("ssl", 0, privateKey=key, certKey=cert,
                                  interface="127.0.0.1")
        description = yield self.roundTrip(server, trustRoots=os.path.dirname(cert))
        self.assertTrue(description.startswith("tls:service.test:"), description)

    @defer.inlineCallbacks
    def test_tlsVerifies(self) -> Inline:
        """
        A name the certificate does not have fails verification.
        """
        cert, key = makeCertificate(self.tempDir(), "service.test")
        server = buildDescription("ssl", 0, privateKey=key, certKey=cert,
                                  interface="127.0.0.1")
        port = yield self.listenFor(server)
        wrong = clientDescriptionFor(port, hostname="other.test", trustRoots=os.path.dirname(cert))
        self.assertIn("tls:other.test:", wrong)
        received = yield exchange(wrong)
        self.assertEqual(received, b"")

    def test_tlsAddressAsName(self) -> defer.Deferred[None]:
        directory = self.tempDir()
        cert, key = makeCertificate(directory)
        server = buildDescription("ssl", 0, privateKey=key, certKey=cert,
                                  interface="127.0.0.1")
        trust = os.path.dirname(cert)
        return self.roundTrip(server, buildDescription("tls", "127.0.0.1", "{port}",
                                                       trustRoots=trust),
                              hostname="127.0.0.1", trustRoots=trust)

    def test_ownClientDescription(self) -> None:
        class Own:
            def clientDescription(self) -> str:
                return "memory:own"

        self.assertEqual(clientDescriptionFor(Own()), "memory:own")
        self.assertEqual(clientDescriptionFor(_HastyWrapper(Own())), "memory:own")

    @defer.inlineCallbacks
    def test_wrapperPort(self) -> Inline:
        port = yield self.listenFor("tcp:0:interface=127.0.0.1")
        wrapper = _HastyWrapper(_HastyWrapper(port))
        self.assertEqual(clientDescriptionFor(wrapper), f"tcp:127.0.0.1:{port.getHost().port}")

    @defer.inlineCallbacks
    def test_multiPortsObject(self) -> Inline:
        first = yield self.listenFor("tcp:0:interface=127.0.0.1")
        path = os.path.join(self.tempDir(), "m.sock")
        second = yield self.listenFor(f"unix:{path}")
        multi = _HastyMulti([first.wrappedPort, second.wrappedPort])
        self.assertEqual(clientDescriptionsFor(multi),
                         [f"tcp:127.0.0.1:{first.getHost().port}", f"unix:{path}"])
        error = self.assertRaises(CannotDescribePort, clientDescriptionFor, multi)
        self.assertIsInstance(error, ValueError)
        self.assertIn("clientDescriptionsFor", str(error))

    @defer.inlineCallbacks
    def test_multi(self) -> Inline:
        if not available("endpointkit.multi"):
            raise SkipTest("endpointkit.multi is not in this tree")
        path = os.path.join(self.tempDir(), "multi.sock")
        port = yield self.listenFor(buildDescription(
            "multi", buildDescription("tcp", 0, interface="127.0.0.1"),
            buildDescription("tcp6", 0, interface="::1"), buildDescription("unix", path)))
        descriptions = clientDescriptionsFor(port)
        self.assertEqual(len(descriptions), 3)
        self.assertEqual(descriptions[2], f"unix:{path}")
        for description in descriptions:
            self.assertEqual((yield exchange(description)), b"ping through the description\n")
        self.assertRaises(CannotDescribePort, clientDescriptionFor, port)

    def test_memory(self) -> defer.Deferred[None]:
        if not available("endpointkit.memory"):
            raise SkipTest("endpointkit.memory is not in this tree")
        return self.roundTrip("memory:lifecycle-round-trip", "memory:lifecycle-round-trip")

    def test_reuseport(self) -> defer.Deferred[None]:
        if not available("endpointkit.reuseport"):
            raise SkipTest("endpointkit.reuseport is not in this tree")
        return self.roundTrip("reuseport:0:interface=127.0.0.1", "tcp:127.0.0.1:{port}")

    def test_limit(self) -> defer.Deferred[None]:
        if not available("endpointkit.limit"):
            raise SkipTest("endpointkit.limit is not in this tree")
        return self.roundTrip(
            buildDescription("limit", endpoint="tcp:0:interface=127.0.0.1", max=2),
            "tcp:127.0.0.1:{port}")

    @defer.inlineCallbacks
    def test_haproxy(self) -> Inline:
        port = yield self.listenFor("haproxy:tcp:0:interface=127.0.0.1")
        error = self.assertRaises(CannotDescribePort, clientDescriptionFor, port)
        self.assertIn("PROXY protocol", str(error))

    def test_unknownAddress(self) -> None:
        class Odd:
            def getHost(self) -> object:
                return object()

        error = self.assertRaises(CannotDescribePort, clientDescriptionFor, Odd())
        self.assertIn("clientDescription()", str(error))

    @defer.inlineCallbacks
    def test_stopped(self) -> Inline:
        port = yield listen("tcp:0:interface=127.0.0.1", echoFactory())
        yield stopListening(port)
        error = self.assertRaises(CannotDescribePort, clientDescriptionFor, port)
        self.assertIn("not listening", str(error))


class RefusingFactoryTests(TestCase):
    """
    A factory may refuse a connection by building no protocol.
    """

    def test_refusedConnectionIsClosed(self) -> None:
        """
        Behind C{listen}'s tracking wrapper, a connection the application's
        factory refuses is closed and not tracked.
        """
        class Refusing(protocol.Factory):
            def buildProtocol(self, addr: Any) -> None:
                return None

        from twisted.internet.address import IPv4Address

        from endpointkit.lifecycle import TrackingFactory

        factory = TrackingFactory(Refusing())
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)))
        self.assertEqual(factory.connections, [])

        @defer.inlineCallbacks
        def overTCP() -> Any:
            port = yield listen("tcp:0:interface=127.0.0.1", Refusing())
            self.addCleanup(stopListening, port)
            closed: defer.Deferred[None] = defer.Deferred()

            class Client(protocol.Protocol):
                def connectionLost(self, reason: Any = None) -> None:
                    closed.callback(None)

            yield clientFromString(reactor, f"tcp:127.0.0.1:{port.getHost().port}").connect(
                protocol.Factory.forProtocol(Client))
            yield closed.addTimeout(10, reactor)

        return overTCP()
