"""
C{exec:}: real local processes through Twisted's spawnProcess, and the relay
(as a subprocess) starting one per accepted connection.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

import endpointkit
from endpointkit import buildDescription
from endpointkit._grammar import DescriptionError
from endpointkit.process import ExecClientEndpoint, ExecNotFound
from tests._support import (
    PYTHON,
    Collect,
    cleanEnvironment,
    freePort,
    stopProcess,
    waitForPort,
)

WAIT = 30.0
_reactor: Any = reactor
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def within(d: defer.Deferred[Any], seconds: float = WAIT) -> defer.Deferred[Any]:
    return d.addTimeout(seconds, _reactor)


def connect(description: str, proto: protocol.Protocol) -> defer.Deferred[Any]:
    endpoint = endpointkit.clientFromString(_reactor, description)
    return within(endpoint.connect(protocol.Factory.forProtocol(lambda: proto)))


def pidAlive(pid: int) -> bool:
    """
    Whether C{pid} exists (a zombie counts as existing).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return bool(f.read())
    except FileNotFoundError:
        return False


class ExecTests(TestCase):
    async def test_catHalfCloseBothWays(self) -> None:
        client = Collect(b"hello process\n", halfClose=True)
        await connect("exec:cat", client)
        reason = await within(client.done)
        self.assertEqual(bytes(client.received), b"hello process\n")
        self.assertTrue(client.readClosed)
        self.assertIsInstance(reason, ProcessDone)

    async def test_exitStatus(self) -> None:
        client = Collect()
        await connect(buildDescription("exec", "sh -c 'echo out; exit 7'"), client)
        reason = await within(client.done)
        self.assertEqual(bytes(client.received), b"out\n")
        self.assertIsInstance(reason, ProcessTerminated)
        self.assertEqual(reason.exitCode, 7)  # type: ignore[attr-defined]

    async def test_signal(self) -> None:
        client = Collect()
        await connect(buildDescription("exec", "sh -c 'kill -USR1 $$'"), client)
        reason = await within(client.done)
        self.assertIsInstance(reason, ProcessTerminated)
        self.assertEqual(reason.signal, signal.SIGUSR1)  # type: ignore[attr-defined]

    async def test_environment(self) -> None:
        """
        The environment is inherited, with env= additions.
        """
        os.environ["ENDPOINTKIT_INHERITED"] = "from parent"
        self.addCleanup(os.environ.pop, "ENDPOINTKIT_INHERITED", None)
        client = Collect()
        description = buildDescription(
            "exec", "sh -c 'echo \"$ENDPOINTKIT_INHERITED/$A/$B\"'", env="A=one|B=two=2")
        await connect(description, client)
        await within(client.done)
        self.assertEqual(bytes(client.received), b"from parent/one/two=2\n")

    async def test_workingDirectory(self) -> None:
        directory = os.path.realpath(tempfile.mkdtemp())
        self.addCleanup(os.rmdir, directory)
        client = Collect()
        await connect(buildDescription("exec", "pwd", path=directory), client)
        await within(client.done)
        self.assertEqual(bytes(client.received), directory.encode() + b"\n")

    async def test_stderrModes(self) -> None:
        from twisted.logger import globalLogPublisher
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        command = "sh -c 'echo to-stderr >&2; echo to-stdout'"
        client = Collect()
        await connect(buildDescription("exec", command), client)
        await within(client.done)
        self.assertEqual(bytes(client.received), b"to-stdout\n")
        self.assertTrue(any(e.get("line") == "to-stderr" for e in events))
        del events[:]
        client = Collect()
        await connect(buildDescription("exec", command, stderr="drop"), client)
        await within(client.done)
        self.assertEqual(bytes(client.received), b"to-stdout\n")
        self.assertFalse(any(e.get("line") == "to-stderr" for e in events))

    def test_stderrInherit(self) -> None:
        """
        stderr=inherit: the child writes to this process's own stderr (a
        subprocess here, so that its stderr can be read).
        """
        script = (
            "from twisted.internet import reactor, protocol\n"
            "import endpointkit\n"
            "e = endpointkit.clientFromString(reactor, \"exec:sh -c 'echo inherited >&2':"
            "stderr=inherit\")\n"
            "class P(protocol.Protocol):\n"
            "    def connectionLost(self, reason): reactor.stop()\n"
            "e.connect(protocol.Factory.forProtocol(P))\n"
            "reactor.callLater(20, reactor.stop)\n"
            "reactor.run()\n")
        result = subprocess.run([PYTHON, "-c", script], capture_output=True, timeout=60,
                                cwd=ROOT, env=dict(cleanEnvironment(), PYTHONPATH=ROOT))
        self.assertIn(b"inherited", result.stderr)

    async def test_killOnClose(self) -> None:
        """
        Closing the connection: SIGTERM; a process that ignores it gets
        SIGKILL after grace; none is left, not even a zombie.
        """
        client = Collect()
        await connect(buildDescription("exec", "sh -c 'trap \"\" TERM; echo ready; "
                                       "while :; do sleep 0.1; done'", grace=0.5), client)
        while b"ready" not in client.received:
            await deferLater(_reactor, 0.05, lambda: None)
        assert client.transport is not None
        pid = client.transport.getPeer().pid
        self.assertTrue(pidAlive(pid))
        started = time.monotonic()
        client.transport.loseConnection()
        reason = await within(client.done)
        self.assertIsInstance(reason, ProcessTerminated)
        self.assertEqual(reason.signal, signal.SIGKILL)  # type: ignore[attr-defined]
        self.assertGreaterEqual(time.monotonic() - started, 0.4)
        self.assertFalse(pidAlive(pid))

    async def test_termOnAbort(self) -> None:
        client = Collect()
        await connect("exec:sleep 60", client)
        assert client.transport is not None
        pid = client.transport.getPeer().pid
        client.transport.abortConnection()  # type: ignore[attr-defined]
        reason = await within(client.done)
        self.assertIsInstance(reason, ProcessTerminated)
        self.assertEqual(reason.signal, signal.SIGTERM)  # type: ignore[attr-defined]
        self.assertFalse(pidAlive(pid))

    async def test_notFoundAtConnect(self) -> None:
        """
        A program that has gone since the description was built fails the
        connect clearly.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        program = os.path.join(directory, "tool")
        with open(program, "w") as f:
            f.write("#!/bin/sh\necho hi\n")
        os.chmod(program, 0o755)
        endpoint = endpointkit.clientFromString(_reactor, buildDescription("exec", program))
        os.unlink(program)
        error = await self.assertFailure(
            endpoint.connect(protocol.Factory.forProtocol(Collect)), ExecNotFound)
        self.assertIn("does not exist", str(error))


class ExecDescriptionTests(SynchronousTestCase):
    def test_notFound(self) -> None:
        with self.assertRaises(DescriptionError) as caught:
            endpointkit.clientFromString(_reactor, "exec:no-such-program-here --x")
        self.assertIn("'no-such-program-here' is not found on PATH", str(caught.exception))

    def test_notExecutable(self) -> None:
        with tempfile.NamedTemporaryFile() as f:
            with self.assertRaises(DescriptionError) as caught:
                endpointkit.clientFromString(_reactor, buildDescription("exec", f.name))
        self.assertIn("is not executable", str(caught.exception))

    def test_badArguments(self) -> None:
        for description, expected in [
            ("exec:'unbalanced", "No closing quotation"),
            ("exec:cat:env=NOEQUALS", "has no '='"),
            ("exec:cat:stderr=logg", "did you mean 'log'"),
            ("exec:cat:grace=-1", "grace"),
        ]:
            with self.assertRaises(DescriptionError) as caught:
                endpointkit.clientFromString(_reactor, description)
            self.assertIn(expected, str(caught.exception))

    def test_split(self) -> None:
        endpoint: Any = endpointkit.clientFromString(
            _reactor, buildDescription("exec", "printf '%s|' 'a b' c\\ d"))
        self.assertIsInstance(endpoint, ExecClientEndpoint)
        self.assertEqual(endpoint.argv, ("printf", "%s|", "a b", "c d"))


class RelayExecTests(TestCase):
    def test_relayStartsOneProcessPerConnection(self) -> None:
        """
        C{endpointkit relay tcp:PORT exec:cat}, as a real subprocess: each
        accepted connection gets its own cat.
        """
        port = freePort()
        log = tempfile.TemporaryFile()
        relay = subprocess.Popen(
            [PYTHON, "-m", "endpointkit", "relay", f"tcp:{port}:interface=127.0.0.1",
             "exec:cat"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=ROOT, env=dict(cleanEnvironment(), PYTHONPATH=ROOT))

        self.addCleanup(log.close)
        self.addCleanup(stopProcess, relay, WAIT, WAIT)
        waitForPort(port, process=relay, timeout=WAIT)
        for i in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
                payload = f"line {i}\n".encode() * 1000
                s.sendall(payload)
                # Read the echo back without a half-close: the relay
                # command's listener does not pass a client's half-close on
                # (its tracking wrapper is not half-closeable), and closes.
                received = b""
                while len(received) < len(payload):
                    data = s.recv(65536)
                    if not data:
                        break
                    received += data
                self.assertEqual(received, payload)
        children = subprocess.run(["pgrep", "-P", str(relay.pid)], capture_output=True,
                                  text=True).stdout.split()
        deadline = time.monotonic() + WAIT
        while children and time.monotonic() < deadline:
            time.sleep(0.1)
            children = subprocess.run(["pgrep", "-P", str(relay.pid)], capture_output=True,
                                      text=True).stdout.split()
        self.assertEqual(children, [])
