"""
Connection tracking: which connections a listening port has accepted and
that are still open.

L{TrackingFactory} wraps the application's server factory (passing
everything through: half-close, TLS handshake and file descriptor events,
ALPN) and knows the live connections, oldest first, and who wants to hear
when one is lost.  The application's factory is stopped only when the last
of its connections is gone, even if the port closed earlier: it is still
serving them.  L{TrackedPort} is the port that L{endpointkit.listen} returns:
the endpoint's own port (C{wrappedPort}), its L{TrackingFactory} and what
was asked.  L{endpointkit.gracefulStop} drains through both.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ClientFactory
from twisted.protocols.policies import WrappingFactory

from endpointkit._wrapping import PassThroughFactory, PassThroughProtocol
from endpointkit.lifecycle._shared import ProtocolFactory
from endpointkit.lifecycle.stopping import WrappingPort

__all__ = ["TrackedPort", "TrackingFactory", "TrackingProtocol"]


class TrackingProtocol(PassThroughProtocol):
    """
    The protocol of a L{TrackingFactory}: passes everything through (half-
    close, TLS handshake and file descriptor events included) and tells its
    factory when the connection is made and lost.
    """


class TrackingFactory(PassThroughFactory):
    """
    Wraps a server factory and keeps track of the connections it builds,
    so that L{gracefulStop} can wait for them and close the ones that stay
    too long.

    @ivar protocols: the live connections (their L{TrackingProtocol}s).
    """

    protocol = TrackingProtocol
    noisy = False

    def __init__(self, wrappedFactory: ProtocolFactory) -> None:
        PassThroughFactory.__init__(self, wrappedFactory)
        self._observers: list[Callable[[TrackingProtocol], None]] = []
        self._heldStops = 0

    def doStart(self) -> None:
        if self._heldStops:
            # Listening again before the last drain ended: the wrapped
            # factory never stopped.
            self._heldStops -= 1
            ClientFactory.doStart(self)  # type: ignore[no-untyped-call]
            return
        WrappingFactory.doStart(self)  # type: ignore[no-untyped-call]

    def doStop(self) -> None:
        """
        When the last port closes while connections are still open, the
        wrapped factory is stopped only once they are all gone: it is still
        serving them.
        """
        if self.numPorts == 1 and self.protocols:
            self._heldStops += 1
            ClientFactory.doStop(self)  # type: ignore[no-untyped-call]
            return
        WrappingFactory.doStop(self)  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return f"<TrackingFactory of {self.wrappedFactory!r}: {len(self.protocols)} live>"

    @property
    def connections(self) -> list[TrackingProtocol]:
        """
        The live connections, oldest first.
        """
        return list(self.protocols)

    def unregisterProtocol(self, p: TrackingProtocol) -> None:
        if p not in self.protocols:
            return
        del self.protocols[p]
        for observer in list(self._observers):
            observer(p)
        if not self.protocols and self._heldStops:
            held, self._heldStops = self._heldStops, 0
            for _ in range(held):
                self.wrappedFactory.doStop()

    def observeLost(self, observer: Callable[[TrackingProtocol], None]) -> Callable[[], None]:
        """
        Call C{observer} with each connection that is lost from now on;
        returns the function that stops observing.
        """
        self._observers.append(observer)

        def stop() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return stop


class TrackedPort(WrappingPort):
    """
    The port that L{endpointkit.listen} returns: the endpoint's own port
    (C{wrappedPort}), the L{TrackingFactory} of its connections and what was
    asked.
    """

    def __init__(self, wrappedPort: IListeningPort, factory: TrackingFactory,
                 description: str) -> None:
        WrappingPort.__init__(self, wrappedPort)
        self.factory = factory
        self.description = description

    def __repr__(self) -> str:
        return f"<TrackedPort {self.description} {self.wrappedPort!r}>"
