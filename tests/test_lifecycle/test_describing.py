"""
L{endpointkit.lifecycle.describing}: L{clientDescriptionFor} round trips
over real sockets.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer

from endpointkit._grammar import buildDescription
from endpointkit.lifecycle import (
    CannotDescribePort,
    clientDescriptionFor,
    clientDescriptionsFor,
    listen,
    stopListening,
)
from tests.test_lifecycle._helpers import (
    HastyMulti,
    HastyWrapper,
    Inline,
    LifecycleTestCase,
    echoFactory,
    exchange,
    makeCertificate,
)


class ClientDescriptionTests(LifecycleTestCase):
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
        self.assertEqual(clientDescriptionFor(HastyWrapper(Own())), "memory:own")

    @defer.inlineCallbacks
    def test_wrapperPort(self) -> Inline:
        port = yield self.listenFor("tcp:0:interface=127.0.0.1")
        wrapper = HastyWrapper(HastyWrapper(port))
        self.assertEqual(clientDescriptionFor(wrapper), f"tcp:127.0.0.1:{port.getHost().port}")

    @defer.inlineCallbacks
    def test_multiPortsObject(self) -> Inline:
        first = yield self.listenFor("tcp:0:interface=127.0.0.1")
        path = os.path.join(self.tempDir(), "m.sock")
        second = yield self.listenFor(f"unix:{path}")
        multi = HastyMulti([first.wrappedPort, second.wrappedPort])
        self.assertEqual(clientDescriptionsFor(multi),
                         [f"tcp:127.0.0.1:{first.getHost().port}", f"unix:{path}"])
        error = self.assertRaises(CannotDescribePort, clientDescriptionFor, multi)
        self.assertIsInstance(error, ValueError)
        self.assertIn("clientDescriptionsFor", str(error))

    @defer.inlineCallbacks
    def test_multi(self) -> Inline:
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
        return self.roundTrip("memory:lifecycle-round-trip", "memory:lifecycle-round-trip")

    def test_reuseport(self) -> defer.Deferred[None]:
        return self.roundTrip("reuseport:0:interface=127.0.0.1", "tcp:127.0.0.1:{port}")

    def test_limit(self) -> defer.Deferred[None]:
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

