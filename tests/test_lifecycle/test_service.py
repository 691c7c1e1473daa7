"""
L{endpointkit.lifecycle.service}: L{EndpointService} in a process and under
a real twistd.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
from typing import Any

from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.web import server

from endpointkit._grammar import DescriptionError
from endpointkit.lifecycle import (
    DrainResult,
    EndpointService,
    ListenError,
    clientDescriptionFor,
)
from tests._support import (
    PYTHON,
)
from tests.test_lifecycle._helpers import (
    HERE,
    ROOT,
    WAIT,
    Inline,
    LifecycleTestCase,
    NeverEndpoint,
    SlowSite,
    bounded,
    echoFactory,
    httpGet,
    waitFor,
)


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


def _tail(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-6000:]


class EndpointServiceTests(LifecycleTestCase):
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
        service = EndpointService(NeverEndpoint(), echoFactory())
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
        waitFor(lambda: os.path.exists(announce) or process.poll() is not None, 60)
        self.assertIsNone(process.poll(), _tail(log))
        with open(announce) as f:
            description = f.read()
        prefix, host, number = description.split(":")
        self.assertEqual((prefix, host), ("tcp", "127.0.0.1"))
        client = socket.create_connection((host, int(number)), timeout=WAIT)
        self.addCleanup(client.close)
        client.sendall(b"GET /?delay=2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        waitFor(lambda: os.path.exists(os.path.join(directory, "arrived")), WAIT)
        process.send_signal(signal.SIGTERM)
        waitFor(lambda: not _accepts(host, int(number)), WAIT)
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

