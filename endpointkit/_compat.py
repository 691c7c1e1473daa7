"""
What older Twisted releases lack, in one place.

endpointkit supports Twisted from 24.3 (the release in Ubuntu 24.04 LTS).
Each name here is Twisted's own where the running Twisted has it, and a small
stand-in otherwise; the comment on each says which Twisted release made the
stand-in unnecessary, so that raising the floor past it deletes it.
"""

from __future__ import annotations

import inspect
import socket
from typing import TYPE_CHECKING, Any

from twisted.internet import endpoints, tcp
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.protocols.policies import WrappingFactory
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

# Twisted 26.4: WrappingFactory is generic in its protocol type, and can be
# subscripted at run time (WrappingFactory[Any]).  Before, only type
# checkers may subscript it.
if TYPE_CHECKING:
    WrappingFactoryBase = WrappingFactory[Any]
else:
    WrappingFactoryBase = WrappingFactory


# Twisted 26.10: twisted.internet.tcp.makeBinding, a listenTCP interface that
# also sets SO_REUSEPORT.  Before, a Port subclass sets the option.
_makeBinding = getattr(tcp, "makeBinding", None)


class _ReusePort(tcp.Port):
    """
    A TCP port with C{SO_REUSEADDR} and C{SO_REUSEPORT} set before binding.
    """

    def createInternetSocket(self) -> socket.socket:
        skt: socket.socket = tcp.Port.createInternetSocket(self)  # type: ignore[no-untyped-call]
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return skt


def listenTCPReusePort(reactor: Any, port: int, factory: IProtocolFactory,
                       backlog: int, interface: str) -> IListeningPort:
    """
    Listen on a TCP port with C{SO_REUSEPORT}, on the reactor's own TCP
    machinery (C{reactor.listenTCP} with a binding where Twisted has one).
    """
    if _makeBinding is not None:
        binding = _makeBinding(interface, port, reuseAddress=True, reusePort=True)
        listening: IListeningPort = reactor.listenTCP(binding, factory, backlog=backlog,
                                                      interface=interface)
        return listening
    reusing = _ReusePort(port, factory, backlog, interface, reactor)
    reusing.startListening()
    return reusing


# Twisted 26.4: twisted.internet.endpoints.wrapServerTLS, and a clock for
# TLS's buffered writes in it and in wrapClientTLS.  Before, the same
# wrapping with TLSMemoryBIOFactory (server side), and no clock.
_TLS_TAKES_CLOCK = "clock" in inspect.signature(endpoints.wrapClientTLS).parameters


@implementer(IStreamServerEndpoint)
class _TLSServerEndpoint:
    def __init__(self, creator: IOpenSSLServerConnectionCreator,
                 wrapped: IStreamServerEndpoint) -> None:
        self._creator = creator
        self._wrapped = wrapped

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self._wrapped.listen(
            TLSMemoryBIOFactory(self._creator, False, protocolFactory))


def wrapServerTLS(creator: IOpenSSLServerConnectionCreator, wrapped: IStreamServerEndpoint,
                  clock: Any = None) -> IStreamServerEndpoint:
    """
    TLS around any server endpoint: Twisted's C{wrapServerTLS} where it
    exists (with C{clock} where Twisted takes one).
    """
    own = getattr(endpoints, "wrapServerTLS", None)
    if own is not None:
        wrapping: IStreamServerEndpoint = (own(creator, wrapped, clock) if _TLS_TAKES_CLOCK
                                           else own(creator, wrapped))
        return wrapping
    return _TLSServerEndpoint(creator, wrapped)


def wrapClientTLS(creator: IOpenSSLClientConnectionCreator, wrapped: IStreamClientEndpoint,
                  clock: Any = None) -> IStreamClientEndpoint:
    """
    Twisted's C{wrapClientTLS}, with C{clock} where Twisted takes one.
    """
    wrapping: IStreamClientEndpoint = (
        endpoints.wrapClientTLS(creator, wrapped, clock) if _TLS_TAKES_CLOCK
        else endpoints.wrapClientTLS(creator, wrapped))
    return wrapping


# Twisted 26.4: the tls: server description (TLS over TCP/IPv6 with a
# directory of PEM files chosen by SNI).
HAS_TLS_SERVER_PARSER = hasattr(endpoints, "_TLSServerEndpointParser")


def makeTLSConnection(tlsFactory: Any, tlsProtocol: Any) -> Any:
    """
    The OpenSSL connection a L{twisted.protocols.tls.TLSMemoryBIOFactory}
    makes for one protocol (Twisted 26.4 renamed the method that makes it).
    """
    # Twisted 26.4: _creatorCallable.  Before: _createConnection.
    make = getattr(tlsFactory, "_creatorCallable", None)
    if make is None:
        make = tlsFactory._createConnection
    return make(tlsProtocol)


def clientConnectionFrom(options: Any, tlsProtocol: Any) -> Any:
    """
    The OpenSSL client connection a L{twisted.internet.ssl.CertificateOptions}
    makes for one TLS protocol.
    """
    # Twisted 26.4: CertificateOptions makes it (ALPN set per connection).
    # Before: a connection on its context, which carries the ALPN list.
    make = getattr(options, "clientConnectionForTLS", None)
    if make is not None:
        return make(tlsProtocol)
    from OpenSSL import SSL

    return SSL.Connection(options.getContext(), None)
