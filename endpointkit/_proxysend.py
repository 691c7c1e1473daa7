"""
The sending side of C{proxyprotocol:}: the client wrapper that writes a
PROXY header before anything else, and what tells it the original
connection (L{IOriginalConnection}, which a relay's factory provides).
L{endpointkit.proxyprotocol} holds the declarations and the receiving
side, and is where these names are imported from.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import (
    IAddress,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, alsoProvides, classImplements, implementer

from endpointkit._proxyheader import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_UNIQUE_ID,
    buildHeader,
)
from endpointkit._wrapping import _RELAYED, PassThroughFactory, RelayedEvents

__all__ = [
    "IOriginalConnection",
    "OriginalConnection",
    "ProxyHeaderSendingFactory",
    "ProxyHeaderSendingProtocol",
    "ProxyProtocolClientEndpoint",
    "recordOriginalConnection",
]


class IOriginalConnection(Interface):
    """
    Provided by a client factory whose connections carry another
    connection (a relay, a proxy): C{proxyprotocol:} client endpoints send
    its addresses in their header.  It is looked for on the factory given to
    C{connect} and on the factories it wraps (C{wrappedFactory}), so TLS and
    other wrappers may sit in between.

    Any object with these attributes provides it; L{OriginalConnection}
    holds them and L{recordOriginalConnection} sets them on a factory from
    an accepted transport.
    """

    originalPeer = Attribute(
        "The address of the original connection's client (an IPv4Address, "
        "IPv6Address or UNIXAddress), or None when it is not known.")
    originalHost = Attribute(
        "The address the original client connected to, or None.")
    originalAuthority = Attribute(
        "The host name the original client asked for (its TLS SNI), a str, or None.")
    originalALPN = Attribute(
        "The application protocol negotiated with the original client (bytes), or None.")


@implementer(IOriginalConnection)
@dataclass
class OriginalConnection:
    """
    The original connection's addresses and TLS names: an
    L{IOriginalConnection} provider to hand to whatever wants them.
    """

    originalPeer: IAddress | None = None
    originalHost: IAddress | None = None
    originalAuthority: str | None = None
    originalALPN: bytes | None = None

    @classmethod
    def fromTransport(cls, transport: Any) -> OriginalConnection:
        """
        What an accepted connection's transport tells: its peer and host,
        and, over TLS (Twisted's, seen through wrappers), the SNI name the
        client sent and the negotiated ALPN protocol.
        """
        authority: str | None = None
        alpn: bytes | None = None
        layer = transport
        for _ in range(8):
            if layer is None:
                break
            tls = getattr(layer, "_tlsConnection", None)
            if tls is not None:
                try:
                    name = tls.get_servername()
                except Exception:
                    name = None
                if isinstance(name, bytes) and name:
                    authority = name.decode("ascii", "replace")
                negotiated = getattr(layer, "negotiatedProtocol", None)
                if isinstance(negotiated, bytes) and negotiated:
                    alpn = negotiated
                break
            layer = layer.__dict__.get("transport") if hasattr(layer, "__dict__") else None
        return cls(_address(transport.getPeer), _address(transport.getHost), authority, alpn)


def _address(get: Any) -> IAddress | None:
    try:
        address: IAddress = get()
    except Exception:
        return None
    return address


def recordOriginalConnection(factory: Any, transport: Any) -> Any:
    """
    Make C{factory} (a client factory that carries the connection of
    C{transport}, an accepted connection) provide L{IOriginalConnection},
    with C{transport}'s addresses and TLS names; a C{proxyprotocol:} client
    endpoint it connects through then sends them.

    @return: C{factory}.
    """
    found = OriginalConnection.fromTransport(transport)
    factory.originalPeer = found.originalPeer
    factory.originalHost = found.originalHost
    factory.originalAuthority = found.originalAuthority
    factory.originalALPN = found.originalALPN
    if not IOriginalConnection.providedBy(factory):
        alsoProvides(factory, IOriginalConnection)
    return factory


# Sending.


def _originalOf(factory: Any) -> Any:
    for _ in range(8):
        if factory is None:
            return None
        if IOriginalConnection.providedBy(factory):
            return factory
        factory = getattr(factory, "wrappedFactory", None)
    return None


@implementer(IProtocol)
class ProxyHeaderSendingProtocol(RelayedEvents):
    """
    A client connection that writes its PROXY header, in one write, before
    the wrapped protocol is connected.  The wrapped protocol then gets the
    connection's own transport (so what it writes follows the header in the
    same buffer, and nothing sits between it and the socket); this object
    only passes the transport's events on.

    It provides the half-close, TLS handshake and file descriptor interfaces
    the wrapped protocol provides (a class for each combination, made once),
    so the transport treats it as it would the wrapped protocol.

    @ivar inner: the wrapped protocol.
    """

    factory: ProxyHeaderSendingFactory

    def __init__(self, factory: ProxyHeaderSendingFactory, wrappedProtocol: IProtocol) -> None:
        self.factory = factory
        self.wrappedProtocol = self.inner = wrappedProtocol
        self.transport: Any = None

    def logPrefix(self) -> str:
        inner: Any = self.wrappedProtocol
        prefix = getattr(inner, "logPrefix", None)
        return str(prefix()) if prefix is not None else type(inner).__name__

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        header = self.factory.headerFor(transport)
        if (isinstance(transport, FileDescriptor) and not transport.dataBuffer
                and not transport._tempDataBuffer):
            # A socket nothing was written to yet: send the header now, as
            # one send, rather than queue it and wait a reactor turn for
            # the socket to become writable (a fresh socket's buffer takes
            # it whole; what it does not take is queued).
            sent = transport.writeSomeData(header)
            if isinstance(sent, int) and sent > 0:
                header = header[sent:]
        if header:
            transport.write(header)
        self.wrappedProtocol.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.wrappedProtocol.connectionLost(reason)

    def connectionMade(self) -> None:
        """
        Nothing: the wrapped protocol is connected by L{makeConnection}.
        """


_senderClasses: dict[tuple[Any, ...], type[ProxyHeaderSendingProtocol]] = {}


def _senderFor(wrapped: IProtocol) -> type[ProxyHeaderSendingProtocol]:
    """
    The L{ProxyHeaderSendingProtocol} class that provides the relayed
    interfaces C{wrapped} provides.
    """
    relayed = tuple(i for i in _RELAYED if i.providedBy(wrapped))
    found = _senderClasses.get(relayed)
    if found is None:
        found = type("ProxyHeaderSendingProtocol", (ProxyHeaderSendingProtocol,), {})
        if relayed:
            declare: Any = classImplements  # the zope plugin wants a class statement
            declare(found, *relayed)
        _senderClasses[relayed] = found
    return found


class ProxyHeaderSendingFactory(PassThroughFactory):
    """
    Wraps a client factory: each connection it builds starts with a PROXY
    header.
    """

    noisy = False

    def __init__(self, wrappedFactory: IProtocolFactory, version: int = 2,
                 source: IAddress | None = None, destination: IAddress | None = None,
                 uniqueId: bool = False) -> None:
        PassThroughFactory.__init__(self, wrappedFactory)
        self.version = version
        self.source = source
        self.destination = destination
        self.uniqueId = uniqueId

    def buildProtocol(self, addr: IAddress | None) -> Any:
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return _senderFor(wrapped)(self, wrapped)

    def headerFor(self, transport: Any) -> bytes:
        """
        The header for a new connection: the original connection's
        addresses if the wrapped factory gives them, else the configured
        ones, else none.
        """
        source: Any = self.source
        destination: Any = self.destination
        tlvs: list[tuple[int, bytes]] = []
        found = _originalOf(self.wrappedFactory)
        if found is not None:
            peer = getattr(found, "originalPeer", None)
            host = getattr(found, "originalHost", None)
            if _sendable(peer) and _sendable(host):
                source, destination = peer, host
            authority = getattr(found, "originalAuthority", None)
            alpn = getattr(found, "originalALPN", None)
            if isinstance(alpn, bytes) and alpn:
                tlvs.append((PP2_TYPE_ALPN, alpn))
            if isinstance(authority, str) and authority:
                tlvs.append((PP2_TYPE_AUTHORITY, authority.encode("utf-8")))
        if self.uniqueId:
            tlvs.append((PP2_TYPE_UNIQUE_ID, str(uuid.uuid4()).encode("ascii")))
        if self.version == 1:
            tlvs = []
        try:
            return buildHeader(self.version, source, destination, tlvs)
        except ValueError:
            # Addresses this version cannot carry (UNIX in v1, UNIX with IP).
            return buildHeader(self.version, None, None, tlvs)


def _sendable(address: Any) -> bool:
    return isinstance(address, (IPv4Address, IPv6Address, UNIXAddress)) and (
        isinstance(address, UNIXAddress) or address.type == "TCP")


@implementer(IStreamClientEndpoint)
class ProxyProtocolClientEndpoint:
    """
    Wraps a client endpoint: each connection sends a PROXY header first.

    @param version: 1 (text) or 2 (binary, the default).
    @param source: the client address to announce when the connecting
        factory gives no original connection (with C{destination}).
    @param destination: the address the client connected to, likewise.
    @param uniqueId: send a random ID (UUID4 text) for each connection
        (version 2).
    """

    def __init__(self, endpoint: IStreamClientEndpoint, version: int = 2,
                 source: IAddress | None = None, destination: IAddress | None = None,
                 uniqueId: bool = False) -> None:
        if version not in (1, 2):
            raise ValueError(f"PROXY protocol version must be 1 or 2, got {version!r}")
        if (source is None) != (destination is None):
            raise ValueError("give both source and destination, or neither")
        self.endpoint: Any = endpoint
        self.version = version
        self.source = source
        self.destination = destination
        self.uniqueId = uniqueId

    def __repr__(self) -> str:
        return f"<ProxyProtocolClientEndpoint v{self.version} of {self.endpoint!r}>"

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """
        Connect through the wrapped endpoint; the header goes first.

        @return: a Deferred that fires with the protocol C{protocolFactory}
            built.
        """
        factory = ProxyHeaderSendingFactory(protocolFactory, self.version, self.source,
                                            self.destination, self.uniqueId)
        connecting: defer.Deferred[Any] = defer.maybeDeferred(self.endpoint.connect, factory)
        connecting.addCallback(lambda protocol: protocol.inner)
        return connecting
