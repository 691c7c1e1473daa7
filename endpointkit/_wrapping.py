"""
The protocol, factory and port wrappers that endpointkit's server wrappers
build on: they pass through what Twisted's own C{ProtocolWrapper} drops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.interfaces import (
    IAddress,
    IFileDescriptorReceiver,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IListeningPort,
    IProtocolNegotiationFactory,
)
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import alsoProvides, implementer

from endpointkit._compat import WrappingFactoryBase

_RELAYED = (IHalfCloseableProtocol, IHandshakeListener, IFileDescriptorReceiver)


class RelayedEvents:
    """
    Passes the half-close, TLS handshake and file descriptor events (the
    interfaces in C{_RELAYED}) to C{self.wrappedProtocol}; a wrapper that
    provides one of those interfaces only when its wrapped protocol does
    inherits these.
    """

    def readConnectionLost(self) -> None:
        cast(Any, self).wrappedProtocol.readConnectionLost()

    def writeConnectionLost(self) -> None:
        cast(Any, self).wrappedProtocol.writeConnectionLost()

    def handshakeCompleted(self) -> None:
        cast(Any, self).wrappedProtocol.handshakeCompleted()

    def fileDescriptorReceived(self, descriptor: int) -> None:
        cast(Any, self).wrappedProtocol.fileDescriptorReceived(descriptor)


class PassThroughProtocol(RelayedEvents, ProtocolWrapper):
    """
    A L{ProtocolWrapper} that also passes half-close, TLS handshake and file
    descriptor events to the wrapped protocol, when that protocol takes
    them (the transport asks the wrapper which interfaces it provides).
    """

    def makeConnection(self, transport: Any) -> None:
        ProtocolWrapper.makeConnection(self, transport)  # type: ignore[no-untyped-call]
        # After: ProtocolWrapper.makeConnection replaces what the wrapper
        # provides with what the transport provides.
        relayed = [i for i in _RELAYED if i.providedBy(self.wrappedProtocol)]
        if relayed:
            alsoProvides(self, *relayed)


class PassThroughFactory(WrappingFactoryBase):
    """
    A L{WrappingFactory} that refuses a connection when the wrapped factory
    does (its C{buildProtocol} returns L{None}), and offers the wrapped
    factory's ALPN protocols to TLS.
    """

    protocol: Callable[..., Any] = PassThroughProtocol
    noisy = False

    def __init__(self, wrappedFactory: Any) -> None:
        WrappingFactory.__init__(self, wrappedFactory)  # type: ignore[no-untyped-call]
        if IProtocolNegotiationFactory.providedBy(wrappedFactory):
            # TLS offers ALPN protocols only for a factory that names them.
            alsoProvides(self, IProtocolNegotiationFactory)

    def acceptableProtocols(self) -> list[bytes]:
        """
        The ALPN protocols of the wrapped factory.
        """
        protocols: list[bytes] = list(self.wrappedFactory.acceptableProtocols())
        return protocols

    def buildProtocol(self, addr: IAddress | None) -> Any:
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)


@implementer(IListeningPort)
class PassThroughPort:
    """
    The listening port of a server wrapper: it stands for the wrapped
    endpoint's port (C{wrappedPort}, as L{endpointkit.lifecycle} looks for
    it), and starts, stops and gives its address through that port.  Open
    connections stay open when it stops.

    @ivar wrappedPort: the port of the wrapped endpoint.
    """

    def __init__(self, wrappedPort: IListeningPort) -> None:
        self.wrappedPort: Any = wrappedPort

    def startListening(self) -> None:
        self.wrappedPort.startListening()

    def stopListening(self) -> defer.Deferred[None]:
        """
        Stop the wrapped port; fires when it is closed.
        """
        stopped: defer.Deferred[None] = defer.maybeDeferred(self.wrappedPort.stopListening)
        return stopped

    def getHost(self) -> IAddress:
        host: IAddress = self.wrappedPort.getHost()
        return host
