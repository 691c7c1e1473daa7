"""
L{endpointkit.lifecycle.listening} and L{endpointkit.lifecycle.diagnosis}:
each way listening fails on real sockets gives its one-line L{ListenError};
C{systemd:} under the real systemd-socket-activate.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest, TestCase

from endpointkit._grammar import DescriptionError, buildDescription
from endpointkit.lifecycle import (
    ListenError,
    TrackingFactory,
    listen,
    stopListening,
)
from tests._support import (
    PYTHON,
    cleanEnvironment,
    freePort,
    portIsFree,
    requirePeer,
    shortTempDir,
)
from tests.test_lifecycle._helpers import (
    HERE,
    ROOT,
    WAIT,
    FakePort,
    Inline,
    LateEndpoint,
    LifecycleTestCase,
    NeverEndpoint,
    echoFactory,
    makeCertificate,
    waitFor,
)


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


def unprivilegedCopy(test: TestCase) -> str:
    """
    A world-readable directory, for the length of C{test}, holding what the
    unprivileged helper runs: C{lifecycle_unprivileged.py} and the
    endpointkit package this test imported (with endpointkit's Twisted
    plugin file).
    """
    import endpointkit

    copy = shortTempDir(test)
    package = os.path.dirname(os.path.abspath(endpointkit.__file__))
    shutil.copytree(package, os.path.join(copy, "endpointkit"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    plugin = os.path.join(os.path.dirname(package), "twisted", "plugins",
                          "endpointkit_endpoints.py")
    if os.path.exists(plugin):
        os.makedirs(os.path.join(copy, "twisted", "plugins"))
        shutil.copy(plugin, os.path.join(copy, "twisted", "plugins"))
    shutil.copy(os.path.join(HERE, "lifecycle_unprivileged.py"), copy)
    for directory, _, files in os.walk(copy):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)
    return copy


class ListenErrorTests(LifecycleTestCase):
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
        unprivileged.  It runs from a world-readable copy of itself and of
        endpointkit, so that the checkout's own permissions do not matter.
        """
        copy = unprivilegedCopy(self)
        done = subprocess.run(
            [PYTHON, os.path.join(copy, "lifecycle_unprivileged.py"), *descriptions],
            capture_output=True, timeout=60, cwd=copy,
            env={**cleanEnvironment(), "PYTHONPATH": copy})
        lines = [json.loads(line) for line in done.stdout.decode().splitlines()
                 if line.startswith("{")]
        self.assertEqual(len(lines), len(descriptions), done.stderr.decode()[-3000:])
        for line in lines:
            self.assertEqual(line["uid"], 65534 if os.getuid() == 0 else os.getuid())
            self.assertEqual(line["endpointkit"], os.path.join(copy, "endpointkit"))
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
    def test_unixPathTooLong(self) -> Inline:
        """
        A path over the 107 bytes a UNIX socket can have is named as such,
        with its length.
        """
        path = os.path.join(self.tempDir(), "s" * 120 + ".sock")
        length = len(path.encode())
        for description in (f"unix:{path}", f"unix:{path}:lockfile=0"):
            error = yield self.listenError(description)
            self.assertEqual(
                str(error),
                f"listen {description}: path too long ({length} bytes, the limit is 107) "
                "(a UNIX socket needs a short path, such as one under /run or /tmp)")
            self.assertFalse(os.path.lexists(path + ".lock"))

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
        d = listen(NeverEndpoint(), echoFactory(), clock, timeout=5)
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
        endpoint = LateEndpoint()
        d = listen(endpoint, echoFactory(), clock, timeout=5)
        clock.advance(5)
        self.failureResultOf(d, ListenError)
        port = FakePort(TrackingFactory(echoFactory()))
        endpoint.d.callback(port)
        self.assertEqual(port.stopped, 1)

    def test_cancelledThenListens(self) -> None:
        clock = Clock()
        endpoint = LateEndpoint()
        d = listen(endpoint, echoFactory(), clock, timeout=5)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        port = FakePort(TrackingFactory(echoFactory()))
        endpoint.d.callback(port)
        self.assertEqual(port.stopped, 1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_asyncListenInTime(self) -> None:
        clock = Clock()
        endpoint = LateEndpoint()
        d = listen(endpoint, echoFactory(), clock, timeout=5)
        port = FakePort(TrackingFactory(echoFactory()))
        endpoint.d.callback(port)
        self.assertIs(self.successResultOf(d).wrappedPort, port)
        self.assertEqual(clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_multiMemberInUse(self) -> Inline:
        port = self.heldSocket()
        description = buildDescription(
            "multi", buildDescription("tcp", 0, interface="127.0.0.1"),
            buildDescription("tcp", port, interface="127.0.0.1"))
        error = yield self.listenError(description)
        self.assertIn(f"address already in use: port {port} on 127.0.0.1", str(error))

    @defer.inlineCallbacks
    def test_memoryNameTaken(self) -> Inline:
        yield self.listenFor("memory:lifecycle-taken")
        error = yield self.listenError("memory:lifecycle-taken")
        self.assertEqual(str(error), "listen memory:lifecycle-taken: address already in use: "
                         "memory:lifecycle-taken is taken")


def _bindable(port: int) -> bool:
    return portIsFree(port) and portIsFree(port, "::1")


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


class SystemdTests(LifecycleTestCase):
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
            waitFor(lambda process=process, number=number: process.poll() is not None
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


class StartLineTests(LifecycleTestCase):
    """
    Twisted's "... starting on ..." line is logged once for a port that
    listens, and not at all for a listen that fails.
    """

    def logged(self) -> list[str]:
        """
        The text of every event logged from now on, for the rest of the test.
        """
        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            lines.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return lines

    @defer.inlineCallbacks
    def test_failedUNIXListen(self) -> Inline:
        """
        Twisted's UNIX port logs the line before it binds; a listen whose
        bind fails does not log it.
        """
        path = os.path.join(self.tempDir(), "missing", "app.sock")
        lines = self.logged()
        for description in (f"unix:{path}", f"unix:{path}:lockfile=0"):
            yield self.listenError(description)
        self.assertEqual([line for line in lines if "starting on" in line], [])

    @defer.inlineCallbacks
    def test_failedMultiListen(self) -> Inline:
        """
        A C{multi:} listen that fails (its failure arrives in a later
        reactor turn, once the other members are closed) logs no line for
        any member.
        """
        missing = os.path.join(self.tempDir(), "missing", "app.sock")
        lines = self.logged()
        yield self.listenError(buildDescription(
            "multi", "tcp:0:interface=127.0.0.1", buildDescription("unix", missing)))
        self.assertEqual([line for line in lines if "starting on" in line], [])

    @defer.inlineCallbacks
    def test_listening(self) -> Inline:
        """
        A port that listens is announced once, for a UNIX socket as for TCP.
        """
        path = os.path.join(self.tempDir(), "app.sock")
        lines = self.logged()
        unix = yield self.listenFor(f"unix:{path}")
        tcp = yield self.listenFor("tcp:0:interface=127.0.0.1")
        started = [line for line in lines if "starting on" in line]
        self.assertEqual(len(started), 2, started)
        self.assertIn(f"starting on {path!r}", started[0])
        self.assertIn(f"starting on {tcp.getHost().port}", started[1])
        self.assertEqual(unix.getHost().name, path.encode())
