"""
What the lifecycle tests share: echo servers and clients, certificates,
stand-in ports and endpoints, a slow web site, and a test case base whose
temporary directories are short (UNIX socket paths stay under the limit).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from endpointkit import clientFromString
from endpointkit.lifecycle import (
    ListenError,
    TrackedPort,
    TrackingFactory,
    listen,
    stopListening,
)
from tests._support import selfSignedCertificate, shortTempDir

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(HERE)
WAIT = 15.0
REBINDS = 200

Inline = Generator[Any, Any, None]


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


class LifecycleTestCase(TestCase):
    def tempDir(self) -> str:
        """
        A short temporary directory (see L{shortTempDir}), for UNIX sockets
        and certificates.
        """
        return shortTempDir(self)

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


class HastyWrapper:
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


class BrokenPort:
    def __init__(self) -> None:
        self.stops = 0

    def stopListening(self) -> defer.Deferred[None]:
        self.stops += 1
        return defer.fail(OSError("cannot close"))


class HastyMulti:
    def __init__(self, ports: list[Any]) -> None:
        self.ports = ports

    def stopListening(self) -> defer.Deferred[None]:
        for port in self.ports:
            port.stopListening()
        return defer.succeed(None)


class FakePort:
    def __init__(self, factory: TrackingFactory) -> None:
        self.factory = factory
        self.stopped = 0

    def stopListening(self) -> defer.Deferred[None]:
        self.stopped += 1
        return defer.succeed(None)


class LateEndpoint:
    def __init__(self) -> None:
        self.d: defer.Deferred[Any] = defer.Deferred()

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        return self.d


class NeverEndpoint:
    def listen(self, factory: Any) -> defer.Deferred[Any]:
        return defer.Deferred()


def waitFor(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {seconds} s")
        time.sleep(0.05)


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


class Transport(StringTransport):
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
