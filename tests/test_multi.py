"""
Tests for C{multi:}.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import serverFromString as twistedServerFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from endpointkit._grammar import DescriptionError, buildDescription
from endpointkit._parse import serverFromString
from endpointkit.lifecycle import ListenError, listen
from endpointkit.multi import MultiListenError, MultiPort, MultiServerEndpoint
from tests._support import freePort, portIsFree, shortTempDir
from tests.servers_helpers import bounded, connect


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


def _unixIsFree(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.bind(path)
        except OSError:
            return False
    os.unlink(path)
    return True


@implementer(IListeningPort)
class FakePort:
    """
    A port whose stopListening fires when the test says so.
    """

    def __init__(self, name: str, failStart: bool = False) -> None:
        self.name = name
        self.listening = True
        self.failStart = failStart
        self.stopping: defer.Deferred[None] | None = None

    def startListening(self) -> None:
        if self.failStart:
            raise CannotListenError("", 0, OSError(98, "in use"))
        self.listening = True

    def stopListening(self) -> defer.Deferred[None]:
        self.stopping = defer.Deferred()
        self.stopping.addCallback(lambda _: setattr(self, "listening", False))
        return self.stopping

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", len(self.name))


@implementer(IStreamServerEndpoint)
class FakeEndpoint:
    def __init__(self) -> None:
        self.result: defer.Deferred[Any] = defer.Deferred()

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        return self.result


class ParseTests(TestCase):
    """
    Parsing C{multi:} descriptions.
    """

    def test_members(self) -> None:
        """
        Each escaped positional argument is one member, with Twisted's
        parser and endpointkit's.
        """
        description = buildDescription("multi", buildDescription("tcp", 80),
                                       buildDescription("tcp6", 80, interface="::1"),
                                       "unix:/tmp/x.sock")
        for parse in (serverFromString, twistedServerFromString):
            endpoint = parse(MemoryReactor(), description)
            self.assertIsInstance(endpoint, MultiServerEndpoint)
            self.assertEqual(endpoint.descriptions,
                             ["tcp:80", r"tcp6:80:interface=\:\:1", "unix:/tmp/x.sock"])

    def test_errors(self) -> None:
        """
        No member, a bad member, and members given by keyword are errors
        naming the member.
        """
        cases = {
            "multi": "multi: missing required argument 'endpoints'",
            "multi:tcp\\:http": "multi: argument 'endpoints': tcp: argument 'port' must be a TCP port number 0-65535, got 'http'",
            "multi:nosuch\\:1": "multi: argument 'endpoints':",
            "multi:endpoints=tcp\\:80": "multi: argument 'endpoints' is given by position, not as a keyword",
        }
        for description, message in cases.items():
            with self.assertRaises(DescriptionError) as caught:
                serverFromString(MemoryReactor(), description)
            self.assertTrue(str(caught.exception).startswith(message), str(caught.exception))

    def test_memberBuildError(self) -> None:
        """
        A member that fails when built (an adopt: descriptor that is not a
        socket) is named as part of multi:.
        """
        with open(__file__) as f:
            with self.assertRaises(DescriptionError) as caught:
                serverFromString(reactor, buildDescription("multi", "tcp:0", f"adopt:{f.fileno()}"))
        self.assertTrue(str(caught.exception).startswith(
            "multi: argument 'endpoints': adopt: argument 'fd' must be a listening stream "
            "socket"), str(caught.exception))


class ListenTests(TestCase):
    """
    Real listening on loopback.
    """

    @defer.inlineCallbacks
    def test_allMembersServe(self) -> Any:
        """
        IPv4, IPv6 and a UNIX socket listen as one port; each serves; the
        port lists its members; getHost is the first member's address;
        stopListening closes them all.
        """
        path = os.path.join(shortTempDir(self), "multi.sock")
        description = buildDescription(
            "multi", buildDescription("tcp", 0, interface="127.0.0.1"),
            buildDescription("tcp6", 0, interface="::1"), buildDescription("unix", path))
        port = yield serverFromString(reactor, description).listen(
            protocol.Factory.forProtocol(Echo))
        self.assertIsInstance(port, MultiPort)
        self.assertEqual(len(port.ports), 3)
        self.assertEqual(port.getHost(), port.ports[0].getHost())
        hosts = port.getHosts()
        self.assertEqual([h.host for h in hosts[:2]], ["127.0.0.1", "::1"])
        self.assertEqual(hosts[2].name, path.encode())
        for host in hosts[:2]:
            client = yield bounded(reactor, connect(reactor, host.port, host=host.host,
                                                    data=b"x", closeAfter=b"x"))
            self.assertEqual((yield bounded(reactor, client.done)), b"x")
        yield port.stopListening()
        self.assertTrue(portIsFree(hosts[0].port))
        self.assertTrue(portIsFree(hosts[1].port, "::1"))
        self.assertTrue(_unixIsFree(path))

    @defer.inlineCallbacks
    def test_allOrNothing(self) -> Any:
        """
        One member's port is taken: the failure names that member and why,
        and when it is reported every other member is closed again.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        first, last = freePort(), freePort("::1")
        path = os.path.join(shortTempDir(self), "multi.sock")
        members = [buildDescription("tcp", first, interface="127.0.0.1"),
                   buildDescription("unix", path),
                   buildDescription("tcp", taken, interface="127.0.0.1"),
                   buildDescription("tcp6", last, interface="::1")]
        for parse in (serverFromString, twistedServerFromString):
            endpoint = parse(reactor, buildDescription("multi", *members))
            seen: list[bool] = []

            def check(failure: Failure, seen: list[bool] = seen) -> Failure:
                seen.append(portIsFree(first) and portIsFree(last, "::1")
                            and _unixIsFree(path))
                return failure

            error = yield self.assertFailure(
                endpoint.listen(protocol.Factory.forProtocol(Echo)).addErrback(check),
                MultiListenError)
            self.assertEqual(seen, [True])
            self.assertEqual((error.index, error.description), (2, members[2]))
            self.assertIn(f"multi: member 3 ({members[2]}) cannot listen: ", str(error))
            self.assertIn("Address already in use", str(error))
            self.assertIn("no member is listening", str(error))
            self.assertTrue(error.reason.check(CannotListenError))
            self.assertIsInstance(error, CannotListenError)
            self.assertEqual((error.interface, error.port), ("127.0.0.1", taken))
            self.assertEqual(error.socketError.errno, errno.EADDRINUSE)

    @defer.inlineCallbacks
    def test_oneTypeToCatch(self) -> Any:
        """
        A caller catches every failure to listen as L{CannotListenError}:
        Twisted's own, endpointkit's L{ListenError}, and L{MultiListenError},
        whether the endpoint listens directly or through
        L{endpointkit.listen}.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = buildDescription("tcp", busy.getsockname()[1], interface="127.0.0.1")
        multi = buildDescription("multi", "tcp:0:interface=127.0.0.1", taken)
        caught: list[type[BaseException]] = []
        for attempt in (lambda: serverFromString(reactor, multi).listen(protocol.Factory()),
                        lambda: serverFromString(reactor, taken).listen(protocol.Factory()),
                        lambda: listen(multi, protocol.Factory()),
                        lambda: listen(taken, protocol.Factory())):
            try:
                yield attempt()
            except CannotListenError as e:
                caught.append(type(e))
        self.assertEqual(caught, [MultiListenError, CannotListenError, ListenError, ListenError])


class NestingTests(TestCase):
    """
    multi: holds the other endpointkit server types.
    """

    @defer.inlineCallbacks
    def test_reuseportAndAdoptUnderLimit(self) -> Any:
        """
        limit: around multi: of reuseport: and adopt:, through Twisted's
        parser: both members serve, and stopping closes both.
        """
        inherited = socket.socket()
        inherited.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        inherited.bind(("127.0.0.1", 0))
        inherited.listen(8)
        adopted = inherited.getsockname()[1]
        inner = buildDescription("multi", buildDescription("reuseport", 0, interface="127.0.0.1"),
                                 buildDescription("adopt", inherited.detach()))
        port = yield twistedServerFromString(
            reactor, buildDescription("limit", max=10, endpoint=inner)).listen(
                protocol.Factory.forProtocol(Echo))
        shared, second = port.wrappedPort.getHosts()
        self.assertEqual(second.port, adopted)
        for number in (shared.port, adopted):
            client = yield bounded(reactor, connect(reactor, number, data=b"n", closeAfter=b"n"))
            self.assertEqual((yield bounded(reactor, client.done)), b"n")
        yield port.stopListening()
        self.assertTrue(portIsFree(shared.port))
        self.assertTrue(portIsFree(adopted))


class FakeMemberTests(TestCase):
    """
    Ordering, with members whose results the test controls.
    """

    def test_failureWaitsForStops(self) -> None:
        """
        The failure is reported only after the members that listened have
        finished stopping.
        """
        good, bad = FakeEndpoint(), FakeEndpoint()
        d = MultiServerEndpoint([good, bad], ["good:1", "bad:2"]).listen(protocol.Factory())
        port = FakePort("good")
        good.result.callback(port)
        bad.result.errback(CannotListenError("", 2, OSError(98, "in use")))
        self.assertNoResult(d)
        assert port.stopping is not None
        port.stopping.callback(None)
        error = self.failureResultOf(d, MultiListenError).value
        self.assertEqual(str(error), "multi: member 2 (bad:2) cannot listen: Couldn't "
                         "listen on any:2: [Errno 98] in use.; no member is listening")
        self.assertFalse(port.listening)

    def test_severalFailures(self) -> None:
        """
        With several failures, the first is named and the others counted.
        """
        a, b, c = FakeEndpoint(), FakeEndpoint(), FakeEndpoint()
        d = MultiServerEndpoint([a, b, c], ["a:1", "b:2", "c:3"]).listen(protocol.Factory())
        c.result.errback(ValueError("c broke"))
        b.result.errback(ValueError("b broke"))
        a.result.errback(ValueError("a broke"))
        error = self.failureResultOf(d, MultiListenError).value
        self.assertEqual(str(error), "multi: member 1 (a:1) cannot listen: a broke "
                         "(and 2 other members); no member is listening")
        self.assertEqual(error.others, 2)

    def test_cancel(self) -> None:
        """
        Cancelling stops the members that listen.
        """
        good, slow = FakeEndpoint(), FakeEndpoint()
        d = MultiServerEndpoint([good, slow]).listen(protocol.Factory())
        port = FakePort("good")
        good.result.callback(port)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        assert port.stopping is not None
        port.stopping.callback(None)
        self.assertFalse(port.listening)

    def test_stopWaitsForAll(self) -> None:
        """
        stopListening fires once every member has stopped; later calls fire
        at once.
        """
        ports = [FakePort("a"), FakePort("bb")]
        multi = MultiPort(ports, ["a", "bb"])
        first, second = multi.stopListening(), multi.stopListening()
        for p in ports[:1]:
            assert p.stopping is not None
            p.stopping.callback(None)
        self.assertNoResult(first)
        assert ports[1].stopping is not None
        ports[1].stopping.callback(None)
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertIsNone(self.successResultOf(multi.stopListening()))
        self.assertEqual([h.port for h in multi.getHosts()], [1, 2])

    def test_stopFailure(self) -> None:
        """
        A member that fails to stop fails stopListening, after the others
        stopped.
        """
        ports = [FakePort("a"), FakePort("b")]
        stopping = MultiPort(ports, ["a", "b"]).stopListening()
        assert ports[0].stopping is not None and ports[1].stopping is not None
        ports[0].stopping.errback(RuntimeError("stuck"))
        self.assertNoResult(stopping)
        ports[1].stopping.callback(None)
        self.failureResultOf(stopping, RuntimeError)

    def test_startListeningAllOrNothing(self) -> None:
        """
        startListening after a stop: when a member cannot start, those
        started are stopped again and the member is named.
        """
        ports = [FakePort("a"), FakePort("b", failStart=True)]
        multi = MultiPort(ports, ["tcp:1", "tcp:2"])
        with self.assertRaises(MultiListenError) as caught:
            multi.startListening()
        self.assertEqual(caught.exception.index, 1)
        assert ports[0].stopping is not None
        ports[0].stopping.callback(None)
        self.assertFalse(ports[0].listening)

    def test_stopAgainAfterRestart(self) -> None:
        """
        Stopped, started again and stopped again, every member is stopped
        the second time too (the first stop's outcome is not reused).
        """
        ports = [FakePort("a"), FakePort("bb")]
        multi = MultiPort(ports, ["a", "bb"])
        for _ in range(2):
            stopping = multi.stopListening()
            for port in ports:
                assert port.stopping is not None
                self.assertTrue(port.listening)
                port.stopping.callback(None)
            self.successResultOf(stopping)
            self.assertEqual([p.listening for p in ports], [False, False])
            multi.startListening()
            for port in ports:
                port.stopping = None

    def test_startFailureIsCannotListenError(self) -> None:
        """
        A member that cannot start again fails startListening with a
        L{MultiListenError}, which Twisted's callers catch as
        L{CannotListenError}.
        """
        multi = MultiPort([FakePort("a", failStart=True)], ["tcp:1"])
        self.assertRaises(CannotListenError, multi.startListening)

    def test_needsEndpoints(self) -> None:
        self.assertRaises(ValueError, MultiServerEndpoint, [])
        self.assertRaises(ValueError, MultiServerEndpoint, [FakeEndpoint()], ["a", "b"])
