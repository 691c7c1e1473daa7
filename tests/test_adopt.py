"""
Tests for C{adopt:}.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import serverFromString as twistedServerFromString
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import TestCase

from endpointkit._grammar import DescriptionError
from endpointkit._parse import serverFromString
from endpointkit.adopt import AdoptedServerEndpoint, inspectListeningSocket
from tests._support import (
    fileDescriptorNumbers,
    portIsFree,
    requirePeer,
    shortTempDir,
    startPeer,
)
from tests.servers_helpers import bounded, connect

HERE = os.path.dirname(os.path.abspath(__file__))
PIDECHO = os.path.join(HERE, "servers_pidecho.py")


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


def _listening(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(16)
    return s


class InspectTests(TestCase):
    """
    A descriptor that cannot be adopted is refused when the endpoint is
    built, naming the descriptor and what it is.
    """

    def assertRefused(self, fd: int, what: str) -> None:
        for parse in (serverFromString, twistedServerFromString):
            with self.assertRaises(DescriptionError) as caught:
                parse(MemoryReactor(), f"adopt:{fd}")
            message = str(caught.exception)
            self.assertTrue(message.startswith(
                "adopt: argument 'fd' must be a listening stream socket"), message)
            self.assertIn(f"descriptor {fd} is {what}", message)

    def test_notOpen(self) -> None:
        fd = os.dup(0)
        os.close(fd)
        self.assertRefused(fd, "not open in this process")

    def test_regularFile(self) -> None:
        with open(__file__) as f:
            self.assertRefused(f.fileno(), "a regular file")

    def test_pipe(self) -> None:
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        self.assertRefused(r, "a pipe")

    def test_datagram(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            self.assertRefused(s.fileno(), "an IPv4 datagram socket, not a stream socket")

    def test_notListening(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.assertRefused(s.fileno(), "an IPv4 stream socket that is not listening")

    def test_syntax(self) -> None:
        for description, message in {
            "adopt": "adopt: missing required argument 'fd'",
            "adopt:three": "adopt: argument 'fd' must be a whole number of at least 0, got 'three'",
            "adopt:-1": "adopt: argument 'fd' must be a whole number of at least 0, got '-1'",
            "adopt:3:4": "adopt: takes at most 1 positional argument (fd), got an extra '4'",
        }.items():
            with self.assertRaises(DescriptionError) as caught:
                serverFromString(MemoryReactor(), description)
            self.assertTrue(str(caught.exception).startswith(message), str(caught.exception))

    def test_families(self) -> None:
        """
        The family is read from the socket, without leaving a descriptor
        open.
        """
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with _listening(family, host) as s:
                before = fileDescriptorNumbers()
                self.assertEqual(inspectListeningSocket(s.fileno()), family)
                self.assertEqual(fileDescriptorNumbers() - before, set())
        path = os.path.join(shortTempDir(self), "inspect.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(path)
            s.listen(1)
            self.assertEqual(inspectListeningSocket(s.fileno()), socket.AF_UNIX)


class AdoptTests(TestCase):
    """
    Adopting in this process, on the real reactor.
    """

    def test_memoryReactor(self) -> None:
        """
        The socket is adopted with its own family through adoptStreamPort,
        made non-blocking, and the original descriptor closed.
        """
        s = _listening(socket.AF_INET6, "::1")
        fd = s.detach()
        memory = MemoryReactor()
        factory = protocol.Factory()
        endpoint = serverFromString(memory, f"adopt:{fd}")
        self.assertIsInstance(endpoint, AdoptedServerEndpoint)
        self.successResultOf(endpoint.listen(factory))
        self.assertEqual(memory.adoptedPorts[0], (fd, socket.AF_INET6, factory))
        with self.assertRaises(OSError) as caught:
            os.fstat(fd)
        self.assertEqual(caught.exception.errno, errno.EBADF)

    @defer.inlineCallbacks
    def test_adoptBlockingSocket(self) -> Any:
        """
        A blocking inherited socket serves connections once adopted; the
        original descriptor is closed; after stopListening the port is free
        again.
        """
        s = _listening()
        self.assertTrue(s.getblocking())
        number = s.getsockname()[1]
        fd = s.detach()
        port = yield serverFromString(reactor, f"adopt:{fd}").listen(
            protocol.Factory.forProtocol(Echo))
        stopped = False

        def stop() -> Any:
            return None if stopped else port.stopListening()

        self.addCleanup(stop)
        self.assertEqual(port.getHost().port, number)
        self.assertFalse(os.get_blocking(port.fileno()))
        self.assertRaises(OSError, os.fstat, fd)
        client = yield bounded(reactor, connect(reactor, number, data=b"ping",
                                                closeAfter=b"ping"))
        self.assertEqual((yield bounded(reactor, client.done)), b"ping")
        self.assertFalse(portIsFree(number))
        stopped = True
        yield port.stopListening()
        self.assertTrue(portIsFree(number))

    @defer.inlineCallbacks
    def test_adoptUnix(self) -> Any:
        """
        A UNIX listening socket is adopted as a UNIX port.
        """
        path = os.path.join(shortTempDir(self), "adopt.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(4)
        port = yield twistedServerFromString(reactor, f"adopt:{s.detach()}").listen(
            protocol.Factory.forProtocol(Echo))
        self.assertEqual(port.getHost().name, path.encode())
        done: defer.Deferred[bytes] = defer.Deferred()

        class Client(protocol.Protocol):
            def connectionMade(self) -> None:
                self.transport.write(b"unix")  # type: ignore[union-attr]

            def dataReceived(self, data: bytes) -> None:
                self.transport.loseConnection()  # type: ignore[union-attr]
                done.callback(data)

        reactor.connectUNIX(path, protocol.ClientFactory.forProtocol(Client))
        self.assertEqual((yield bounded(reactor, done)), b"unix")
        yield port.stopListening()

    @defer.inlineCallbacks
    def test_listenOnce(self) -> Any:
        """
        The endpoint closed the descriptor when it adopted it: listening
        again is an error, not a listen on whatever reuses the number.
        """
        endpoint = serverFromString(reactor, f"adopt:{_listening().detach()}")
        port = yield endpoint.listen(protocol.Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        error = yield self.assertFailure(endpoint.listen(protocol.Factory()), DescriptionError)
        self.assertIn("already adopted", str(error))

    @defer.inlineCallbacks
    def test_callerKeepsDescriptor(self) -> Any:
        """
        From Python, the descriptor stays the caller's: adopting it and
        stopping the port leave it open, still the same listening socket,
        which the caller then closes.  Each listen adopts a new duplicate.
        """
        s = _listening()
        self.addCleanup(s.close)
        number = s.getsockname()[1]
        endpoint = AdoptedServerEndpoint(reactor, s.fileno())
        first = yield endpoint.listen(protocol.Factory.forProtocol(Echo))
        self.assertEqual(os.fstat(s.fileno()).st_ino, os.fstat(first.fileno()).st_ino)
        client = yield bounded(reactor, connect(reactor, number, data=b"ping",
                                                closeAfter=b"ping"))
        self.assertEqual((yield bounded(reactor, client.done)), b"ping")
        second = yield endpoint.listen(protocol.Factory.forProtocol(Echo))
        yield first.stopListening()
        yield second.stopListening()
        self.assertEqual(s.getsockname()[1], number)
        self.assertFalse(portIsFree(number))
        with socket.create_connection(("127.0.0.1", number), timeout=10):
            s.settimeout(10)
            accepted, _ = s.accept()
            accepted.close()
        s.close()
        self.assertTrue(portIsFree(number))

    def test_closeAfterAdopting(self) -> None:
        """
        Handed over with C{closeAfterAdopting=True}, the descriptor is
        closed once adopted, and the endpoint listens only once.
        """
        fd = _listening(socket.AF_INET6, "::1").detach()
        memory = MemoryReactor()
        endpoint = AdoptedServerEndpoint(memory, fd, closeAfterAdopting=True)
        self.successResultOf(endpoint.listen(protocol.Factory()))
        self.assertEqual(memory.adoptedPorts[0][:2], (fd, socket.AF_INET6))
        with self.assertRaises(OSError) as caught:
            os.fstat(fd)
        self.assertEqual(caught.exception.errno, errno.EBADF)
        self.failureResultOf(endpoint.listen(protocol.Factory()), DescriptionError)

    def test_notClosedByDefault(self) -> None:
        """
        Without C{closeAfterAdopting}, the descriptor is open after the
        listen, on a reactor that only records the adoption.
        """
        s = _listening()
        self.addCleanup(s.close)
        memory = MemoryReactor()
        self.successResultOf(AdoptedServerEndpoint(memory, s.fileno()).listen(
            protocol.Factory()))
        self.assertEqual(memory.adoptedPorts[0][0], s.fileno())
        os.fstat(s.fileno())
        self.assertEqual(s.getsockname(), ("127.0.0.1", s.getsockname()[1]))

    @defer.inlineCallbacks
    def test_closedBeforeListen(self) -> Any:
        """
        A descriptor closed after the endpoint was built fails the listen.
        """
        s = _listening()
        endpoint = serverFromString(reactor, f"adopt:{s.fileno()}")
        s.close()
        error = yield self.assertFailure(endpoint.listen(protocol.Factory()), DescriptionError)
        self.assertIn("is not open in this process", str(error))


def _waitForFile(path: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if process.poll() is not None:
            raise AssertionError(f"child exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} not written within {timeout} s")
        time.sleep(0.05)


def _greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(100)
            if not chunk:
                break
            data += chunk
        return data


class InheritedTests(TestCase):
    """
    Sockets inherited from a real parent process.
    """

    def test_passedByParent(self) -> None:
        """
        A child given a blocking listening socket with pass_fds serves on
        it with C{adopt:N}; once the child exits, the port is free.
        """
        s = _listening()
        number = s.getsockname()[1]
        fd = s.fileno()
        ready = os.path.abspath(self.mktemp())
        child = subprocess.Popen(
            [sys.executable, PIDECHO, f"adopt:{fd}", ready], pass_fds=[fd],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def stop() -> None:
            if child.poll() is None:
                child.kill()
            child.wait(10)
            if child.stderr is not None:
                child.stderr.close()

        self.addCleanup(stop)
        s.close()
        _waitForFile(ready, child)
        self.assertEqual(_greeting(number), f"pid={child.pid} listen_fds=-\n".encode())
        child.send_signal(signal.SIGTERM)
        child.wait(10)
        self.assertTrue(portIsFree(number))

    def test_systemdSocketActivate(self) -> None:
        """
        Through C{systemd-socket-activate}, which passes a blocking socket
        as descriptor 3 and starts the child at the first connection.
        """
        activate = requirePeer("systemd-socket-activate", "systemd")
        s = _listening()
        number = s.getsockname()[1]
        s.close()
        peer = startPeer(self, [activate, "-l", f"127.0.0.1:{number}",
                                sys.executable, PIDECHO, "adopt:3"], port=number)
        greetings = {_greeting(number) for _ in range(5)}
        self.assertEqual(greetings, {f"pid={peer.pid} listen_fds=1\n".encode()})
