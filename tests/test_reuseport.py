"""
Tests for C{reuseport:}.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import time
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import serverFromString as twistedServerFromString
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import TestCase

from endpointkit import _compat, reuseport
from endpointkit._grammar import DescriptionError, buildDescription
from endpointkit._parse import serverFromString
from endpointkit.reuseport import ReusePortServerEndpoint
from tests._support import freePort, startPeer
from tests.servers_helpers import bounded, connect

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class Greeter(protocol.Protocol):
    """
    Writes the peer's host, then echoes.
    """

    def connectionMade(self) -> None:
        self.transport.write(self.transport.getPeer().host.encode() + b"\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class PeerOnData(protocol.Protocol):
    """
    Answers each chunk with the peer's host and the chunk.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(self.transport.getPeer().host.encode() + b"\n" + data)  # type: ignore[union-attr]


def _listened(parse: Any, description: str, port: int) -> Any:
    """
    Listen on C{description} (its port replaced by C{port}) and give what
    the listening socket was made with: port, address, SO_REUSEPORT,
    SO_REUSEADDR, backlog and interface.  Where Twisted has a binding for
    listenTCP, the reactor is a L{MemoryReactor} that records the binding;
    before (L{endpointkit._compat}), a real port on a free number.
    """
    if _compat._makeBinding is not None:
        memory = MemoryReactor()
        parse(memory, description).listen(protocol.Factory())
        binding, _, backlog, interface = memory.tcpServers[0]
        return (binding._port, binding._address, binding._reusePort,
                binding._reuseAddress, backlog, interface)
    free = freePort()
    listening = parse(reactor, description.replace(f":{port}", f":{free}", 1)).listen(
        protocol.Factory())
    real = listening.result
    try:
        skt = real.socket
        return (port if real.getHost().port == free else None, real.interface,
                bool(_reusePortOption(real)),
                bool(skt.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)),
                real.backlog, real.interface)
    finally:
        real.stopListening()


def _reusePortOption(port: Any) -> int:
    value: int = port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    return value


class ParseTests(TestCase):
    """
    Parsing C{reuseport:} descriptions.
    """

    def test_defaults(self) -> None:
        """
        The port alone listens on every IPv4 address, backlog 50, through
        the reactor's listenTCP with SO_REUSEPORT and SO_REUSEADDR.
        """
        self.assertIsInstance(serverFromString(MemoryReactor(), "reuseport:8080"),
                              ReusePortServerEndpoint)
        self.assertEqual(_listened(serverFromString, "reuseport:8080", 8080),
                         (8080, "", True, True, 50, ""))

    def test_ipv6Bracketed(self) -> None:
        """
        A bracketed IPv6 interface arrives without brackets, with the
        backlog.
        """
        _, address, _, _, backlog, interface = _listened(
            serverFromString, "reuseport:8443:interface=[::1]:backlog=7", 8443)
        self.assertEqual((address, interface, backlog), ("::1", "::1", 7))

    def test_twistedParserEscaped(self) -> None:
        """
        Twisted's own serverFromString finds the type, with an escaped IPv6
        interface.
        """
        self.assertEqual(
            _listened(twistedServerFromString, r"reuseport:8080:interface=\:\:1", 8080)[5],
            "::1")

    def test_errors(self) -> None:
        """
        Bad values name the type, the argument and the value.
        """
        cases = {
            "reuseport:http": "reuseport: argument 'port' must be a TCP port number 0-65535, got 'http'",
            "reuseport:80:interface=localhost": "argument 'interface' must be an IP address",
            "reuseport:80:backlg=5": "unknown argument 'backlg'; did you mean 'backlog'?",
            "reuseport:80:backlog=0": "argument 'backlog' must be a whole number 1-65535",
            "reuseport": "missing required argument 'port'",
            "reuseport:80:interface=1.2.3.400": "argument 'interface'",
        }
        for description, message in cases.items():
            with self.assertRaises(DescriptionError) as caught:
                serverFromString(MemoryReactor(), description)
            self.assertIn(message, str(caught.exception), description)

    def test_noReusePortOnThisPlatform(self) -> None:
        """
        Without SO_REUSEPORT the description is refused at parse time, by
        both parse APIs.
        """
        self.patch(reuseport, "reusePortSupported", lambda: False)
        for parse in (serverFromString, twistedServerFromString):
            with self.assertRaises(DescriptionError) as caught:
                parse(MemoryReactor(), "reuseport:8080")
            self.assertIn("reuseport: SO_REUSEPORT is not available", str(caught.exception))


class ListenTests(TestCase):
    """
    Real loopback listening in this process.
    """

    @defer.inlineCallbacks
    def test_twoListenersOnePort(self) -> Any:
        """
        Two reuseport: listeners share one port; a plain tcp: listener on
        it is refused.
        """
        factory = protocol.Factory.forProtocol(Greeter)
        first = yield serverFromString(reactor, "reuseport:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(first.stopListening)
        number = first.getHost().port
        second = yield serverFromString(
            reactor, f"reuseport:{number}:interface=127.0.0.1").listen(factory)
        self.addCleanup(second.stopListening)
        self.assertEqual(second.getHost().port, number)
        self.assertEqual((_reusePortOption(first), _reusePortOption(second)), (1, 1))
        plain = serverFromString(reactor, f"tcp:{number}:interface=127.0.0.1")
        yield self.assertFailure(plain.listen(factory), CannotListenError)
        client = yield bounded(reactor, connect(reactor, number, closeAfter=b"\n"))
        self.assertEqual((yield bounded(reactor, client.done)), b"127.0.0.1\n")

    @defer.inlineCallbacks
    def test_ipv6(self) -> Any:
        """
        An IPv6 interface listens on IPv6.
        """
        port = yield serverFromString(reactor, "reuseport:0:interface=[::1]").listen(
            protocol.Factory.forProtocol(Greeter))
        self.addCleanup(port.stopListening)
        self.assertEqual((port.getHost().type, port.getHost().host), ("TCP", "::1"))
        self.assertEqual(port.socket.family, socket.AF_INET6)
        client = yield bounded(reactor, connect(reactor, port.getHost().port, host="::1",
                                                closeAfter=b"\n"))
        self.assertEqual((yield bounded(reactor, client.done)), b"::1\n")

    @defer.inlineCallbacks
    def test_haproxyAroundReuseport(self) -> Any:
        """
        Twisted's haproxy: wraps reuseport: (Twisted's grammar: the rest of
        the description), through both parse APIs: the PROXY header's
        source address reaches the protocol and the socket has
        SO_REUSEPORT.
        """
        for parse in (serverFromString, twistedServerFromString):
            port = yield parse(reactor, "haproxy:reuseport:0:interface=127.0.0.1").listen(
                protocol.Factory.forProtocol(PeerOnData))
            self.addCleanup(port.stopListening)
            self.assertEqual(_reusePortOption(port), 1)
            header = b"PROXY TCP4 192.0.2.7 127.0.0.1 4321 80\r\n"
            client = yield bounded(reactor, connect(reactor, port.getHost().port,
                                                    data=header + b"hi", closeAfter=b"hi"))
            self.assertEqual((yield bounded(reactor, client.done)), b"192.0.2.7\nhi")


def _waitForLog(path: str, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                if text in f.read():
                    return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {path} within {timeout} s")


class TwoProcessTests(TestCase):
    """
    Two real twistd processes on one port.
    """

    def test_twistdWebShareAPort(self) -> None:
        """
        Two C{twistd web --listen reuseport:...} processes, each serving its
        own directory, both listen on one port, and 200 fresh connections
        are served by both.
        """
        number = freePort()
        description = buildDescription("reuseport", number, interface="127.0.0.1")
        names = ("first", "second")
        for name in names:
            root = self.mktemp()
            os.makedirs(root)
            with open(os.path.join(root, "who.txt"), "w") as f:
                f.write(name)
            log = os.path.abspath(self.mktemp())
            startPeer(self, [TWISTD, "-n", "--pidfile=", "-l", log, "web",
                             "--listen", description, "--path", root])
            _waitForLog(log, f"starting on {number}")
        served = {name: 0 for name in names}
        for _ in range(200):
            connection = http.client.HTTPConnection("127.0.0.1", number, timeout=10)
            try:
                connection.request("GET", "/who.txt")
                response = connection.getresponse()
                self.assertEqual(response.status, 200)
                served[response.read().decode()] += 1
            finally:
                connection.close()
        self.assertEqual(sum(served.values()), 200)
        self.assertTrue(all(served.values()), served)
