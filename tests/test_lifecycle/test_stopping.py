"""
L{endpointkit.lifecycle.stopping}: L{stopListening} fires only once the
address can be bound again, through wrappers and C{multi:}.
"""

from __future__ import annotations

import errno
import gc
import os
from collections.abc import Callable

from twisted.internet import defer

from endpointkit._grammar import buildDescription
from endpointkit.lifecycle import (
    CannotDescribePort,
    clientDescriptionFor,
    listen,
    stopListening,
)
from tests._support import (
    fileDescriptorNumbers,
    freePort,
)
from tests.test_lifecycle._helpers import (
    REBINDS,
    BrokenPort,
    HastyMulti,
    HastyWrapper,
    Inline,
    LifecycleTestCase,
    echoFactory,
    exchange,
    makeCertificate,
)


class StopListeningTests(LifecycleTestCase):
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
        path = os.path.join(self.tempDir(), "multi.sock")
        return self.rebindLoop(buildDescription(
            "multi", buildDescription("tcp", freePort(), interface="127.0.0.1"),
            buildDescription("tcp6", freePort("::1"), interface="::1"),
            buildDescription("unix", path)))

    def test_rebindReusePort(self) -> defer.Deferred[None]:
        return self.rebindLoop(buildDescription("reuseport", freePort(), interface="127.0.0.1"))

    def test_rebindLimit(self) -> defer.Deferred[None]:
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
        broken = BrokenPort()
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
        wrapper = HastyWrapper(inner.wrappedPort)
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
        yield stopListening(HastyMulti(ports))
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

