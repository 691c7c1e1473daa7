"""
L{endpointkit.lifecycle.draining}: L{gracefulStop} on a clock, and on a real
twisted.web server under load.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web import server

from endpointkit.lifecycle import (
    DrainResult,
    TrackingFactory,
    clientDescriptionFor,
    gracefulStop,
    stopListening,
)
from tests.test_lifecycle._helpers import (
    FakePort,
    Inline,
    LifecycleTestCase,
    SlowSite,
    Transport,
    bounded,
    echoFactory,
    httpGet,
)


class DrainUnitTests(TestCase):
    """
    L{gracefulStop} on a clock: who finishes, who is closed, who is aborted.
    """

    def connect(self, tracker: TrackingFactory, stuck: bool = False) -> Transport:
        wrapper = tracker.buildProtocol(None)
        transport = Transport(stuck)
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
        port = FakePort(tracker)
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
        gracefulStop(FakePort(tracker), 10, clock).addCallback(results.append)
        self.assertEqual(results, [DrainResult(0, 0, 0)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_allFinish(self) -> None:
        clock = Clock()
        tracker = TrackingFactory(echoFactory())
        tracker.doStart()
        transports = [self.connect(tracker) for _ in range(3)]
        results: list[DrainResult] = []
        gracefulStop(FakePort(tracker), 10, clock).addCallback(results.append)
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
        port = FakePort(echoFactory())  # type: ignore[arg-type]
        error = self.assertRaises(ValueError, gracefulStop, port, 1, Clock())
        self.assertIn("TrackingFactory", str(error))


class GracefulWebTests(LifecycleTestCase):
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

