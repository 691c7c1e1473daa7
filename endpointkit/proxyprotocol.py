"""
C{proxyprotocol:} -- the PROXY protocol (v1 and v2) both ways: a server
wrapper that reads the header a load balancer sends, from the balancers it
trusts only, and a client wrapper that sends one.

Server::

    proxyprotocol:trusted=127.0.0.1:endpoint=tcp\\:8080
    proxyprotocol:trusted=10.0.0.0/8|fd00\\:\\:/8:untrusted=direct:endpoint=reuseport\\:8080
    limit:perPeer=20:endpoint=proxyprotocol\\:trusted=10.0.0.5\\:endpoint=tcp\\\\\\:8080

C{trusted=} is required: the addresses and networks (C{|}-separated, IPv4
and IPv6, C{a.b.c.d/n} for a network) of the balancers allowed to send a
header; C{unix} trusts every peer on a UNIX socket (whose file permissions
say who may connect), C{any} trusts everyone (C{endpointkit check} warns:
then anyone who reaches the port can claim any client address).

  - A connection from a peer that is not trusted is closed
    (C{untrusted=reject}, the default; logged at most once a minute with
    the peer's address) or served as a direct connection with its real
    address and no header expected (C{untrusted=direct}).
  - A trusted peer must send a header (C{require=yes}, the default) within
    C{headerTimeout} seconds (default 5), or it is closed.  With
    C{require=no} a trusted peer may also connect directly (a health check):
    a connection whose first bytes cannot start a header, or that sends
    nothing before C{headerTimeout}, is served as a direct one.
  - A version 2 C{LOCAL} header (a balancer's own health check), a version 1
    C{UNKNOWN} one, and one without addresses are served as a direct
    connection from the balancer.
  - A malformed header, or one over its size (107 bytes for version 1,
    C{maxHeader} bytes, default 4096, for version 2 with its TLVs), closes
    the connection; nothing of it reaches the application.

The application sees the real client from the start: the wrapped factory's
C{buildProtocol} is called with the header's source address once the header
is parsed, and the transport's C{getPeer()} and C{getHost()} give the
header's addresses from C{connectionMade} on.  So C{limit:perPeer} around
C{proxyprotocol:} counts real clients (inside it, it would count the
balancer), and twisted.web's C{request.getClientAddress()} is the client's.
The header itself (its version 2 TLVs: ALPN, authority, unique ID, TLS) is
the transport's C{proxyHeader}, through L{IProxyHeaderTransport}::

    header = IProxyHeaderTransport(self.transport).proxyHeader
    if header is not None and header.ssl is not None:
        print(header.authority, header.ssl.version, header.ssl.commonName)

TLS composes either way: C{tlswrap:} (or Twisted's TLS) around
C{proxyprotocol:} reads the header first and TLS after it, as haproxy sends
them; inside it, the header is read inside TLS.

Client::

    proxyprotocol:endpoint=tcp\\:127.0.0.1\\:8080
    proxyprotocol:version=1:source=192.0.2.7\\:5555:destination=[2001\\:db8\\:\\:1]\\:443:endpoint=...
    proxyprotocol:uniqueId=yes:endpoint=tcp\\:backend\\:80

It sends a header (version 2 by default, C{version=1} for the text one) as
the first bytes of each connection, in one write, before the application's
first byte.  The addresses in it are, in this order: those of the original
connection, when the connecting factory (or a factory it wraps) provides
L{IOriginalConnection} (a relay or proxy does: see
L{recordOriginalConnection}); else C{source=} and C{destination=}
(C{host:port}, IPv6 in brackets, both or neither); else none, a version 2
C{LOCAL} or version 1 C{UNKNOWN} header.  Version 2 headers also carry the
original connection's authority (TLS SNI) and ALPN when the factory gives
them, and with C{uniqueId=yes} a fresh random ID for each connection (a
UUID4 in text, 36 bytes: C{PP2_TYPE_UNIQUE_ID}).

The wire format is L{endpointkit._proxyheader}, a sans-I/O parser and
builder; the sending side lives in L{endpointkit._proxysend}, and its names
are imported from here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import (
    Attribute,
    Interface,
    implementer,
    providedBy,
)
from zope.interface.declarations import Provides

from endpointkit._grammar import buildDescription
from endpointkit._kinds import Bool, Choice, Int, Invalid, Kind, Nested, Seconds
from endpointkit._proxyheader import (
    MAX_V1,
    HeaderParser,
    InvalidProxyHeader,
    ProxyHeader,
    ProxyHeaderTooLarge,
    ProxySSLInfo,
)
from endpointkit._proxysend import (
    IOriginalConnection,
    OriginalConnection,
    ProxyProtocolClientEndpoint,
    recordOriginalConnection,
)
from endpointkit._proxysend import ProxyHeaderSendingFactory as ProxyHeaderSendingFactory
from endpointkit._proxysend import ProxyHeaderSendingProtocol as ProxyHeaderSendingProtocol
from endpointkit._schema import Arg, EndpointType
from endpointkit._wrapping import (
    _RELAYED,
    PassThroughFactory,
    PassThroughPort,
    PassThroughProtocol,
)

__all__ = [
    "IOriginalConnection",
    "IProxyHeaderTransport",
    "InvalidProxyHeader",
    "OriginalConnection",
    "ProxyHeader",
    "ProxyHeaderTooLarge",
    "ProxyProtocolClientEndpoint",
    "ProxyProtocolServerEndpoint",
    "ProxySSLInfo",
    "proxyprotocolClientType",
    "proxyprotocolServerType",
    "recordOriginalConnection",
    "sendProxyDescription",
]

_log = Logger()

LOG_INTERVAL = 60.0
"""
Refused connections are logged at most once in this many seconds each kind
(untrusted peers, bad headers), with their count and the latest peer.
"""

DEFAULT_HEADER_TIMEOUT = 5.0
DEFAULT_MAX_HEADER = 4096
_MIN_MAX_HEADER = 16 + 216  # the fixed part and a UNIX address block


class IProxyHeaderTransport(Interface):
    """
    The transport of a connection accepted through C{proxyprotocol:}.  Its
    C{getPeer()} and C{getHost()} are the header's addresses (the client and
    the address it connected to) when the header carried them.

    Adapt a transport to read it, wrappers in between included::

        proxied = IProxyHeaderTransport(transport, None)
        header = proxied.proxyHeader if proxied is not None else None
    """

    proxyHeader = Attribute(
        """
        The L{ProxyHeader} the balancer sent (its C{alpn}, C{authority},
        C{uniqueId} and C{ssl}, a L{ProxySSLInfo} with C{version},
        C{verified} and C{commonName}, come from its version 2 TLVs), or
        L{None} for a connection served directly (an untrusted peer with
        C{untrusted=direct}, a trusted one without a header with
        C{require=no}).
        """)

    realPeer = Attribute("The address of the peer that connected (the balancer).")

    realHost = Attribute("The local address the peer connected to.")


def sendProxyDescription(connectDescription: str, version: int | str = 2) -> str:
    """
    The client description that connects as C{connectDescription} does and
    sends a PROXY header first: what C{endpointkit relay --send-proxy v1|v2}
    connects with.

    @param version: 1, 2, or C{"v1"}, C{"v2"}, C{"1"}, C{"2"}.
    @raise ValueError: for another version.
    """
    text = str(version).lower().removeprefix("v")
    if text not in ("1", "2"):
        raise ValueError(f"--send-proxy must be v1 or v2, got {version!r}")
    return buildDescription("proxyprotocol", version=int(text), endpoint=connectDescription)


# Trust.

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Trust:
    """
    Who may send a PROXY header: networks, every UNIX-socket peer, or
    everyone.
    """

    networks: tuple[Network, ...] = ()
    unix: bool = False
    everyone: bool = False
    _known: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def trusts(self, address: IAddress | None) -> bool:
        """
        Whether a connection from C{address} may send a header.
        """
        if self.everyone:
            return True
        if isinstance(address, UNIXAddress):
            return self.unix
        host = getattr(address, "host", None)
        if not isinstance(host, str):
            return False
        # The per-connection check is a dict look-up (bounded: cleared
        # when full).
        cache = self._known
        known = cache.get(host)
        if known is None:
            if len(cache) >= 4096:
                cache.clear()
            known = cache[host] = self._trustsHost(host)
        return known

    def _trustsHost(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def __str__(self) -> str:
        if self.everyone:
            return "any"
        shown = [str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n)
                 for n in self.networks]
        return "|".join(shown + (["unix"] if self.unix else []))


_SPECS: dict[tuple[Any, ...], Any] = {}


def _provide(protocol: Any, transportSpec: Any, *extra: Any) -> None:
    """
    Make C{protocol} provide what its transport provides, plus C{extra}:
    what C{directlyProvides} does, with the declaration cached by
    transport type (building one per connection costs more than the rest of
    the wrapper).
    """
    key = (type(protocol), transportSpec, *extra)
    spec = _SPECS.get(key)
    if spec is None:
        if len(_SPECS) >= 256:
            _SPECS.clear()
        spec = _SPECS[key] = Provides(type(protocol), transportSpec, *extra)
    protocol.__provides__ = spec


class _Trusted(Kind):
    name = "trusted"
    expected = ("addresses or networks separated by |, like 127.0.0.1|10.0.0.0/8|[::1] "
                "(unix: UNIX-socket peers; any: everyone)")

    def convert(self, text: str) -> Trust:
        if text.lower() == "any":
            return Trust(everyone=True)
        networks: list[Network] = []
        unix = False
        items = text.split("|")
        if not text or len(items) > 1024:
            raise Invalid()
        for item in items:
            if item.lower() == "unix":
                unix = True
                continue
            if item.lower() == "any":
                raise Invalid(hint="'any' trusts everyone and cannot be combined with addresses")
            bare = item[1:-1] if item.startswith("[") and item.endswith("]") else item
            if bare.startswith("[") and "]/" in bare:
                bare = bare[1:].replace("]/", "/")
            try:
                networks.append(ipaddress.ip_network(bare, strict=False))
            except ValueError:
                raise Invalid(reason=self.expected,
                              hint=f"{item!r} is not an IP address or network") from None
        return Trust(tuple(networks), unix)

    def format(self, value: Any) -> str:
        return str(value)


class _AddressPort(Kind):
    """
    An IP address and port, C{host:port}, IPv6 in brackets; the typed value
    is a Twisted L{IPv4Address} or L{IPv6Address}.
    """

    name = "address"
    expected = "an IP address and port, like 192.0.2.7:5555 or [2001:db8::1]:443"

    def convert(self, text: str) -> IPv4Address | IPv6Address:
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
        else:
            host, sep, port = text.rpartition(":")
            if ":" in host:
                raise Invalid(hint="put an IPv6 address in brackets, like [::1]:80")
        if not sep or not port.isdigit() or len(port) > 5 or int(port) > 65535:
            raise Invalid()
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise Invalid() from None
        if ip.version == 4:
            return IPv4Address("TCP", str(ip), int(port))
        return IPv6Address("TCP", str(ip), int(port))

    def format(self, value: Any) -> str:
        if isinstance(value, IPv6Address):
            return f"[{value.host}]:{value.port}"
        return f"{value.host}:{value.port}"


class _RateLimitedLog:
    """
    One log line at most every L{LOG_INTERVAL} seconds, with the count since
    the last one.
    """

    def __init__(self, clock: Any, text: str) -> None:
        self.clock = clock
        self.text = text
        self.count = 0
        self.unlogged = 0
        self.loggedAt: float | None = None

    def note(self, peer: IAddress | None, reason: str) -> None:
        self.count += 1
        self.unlogged += 1
        now = self.clock.seconds()
        if self.loggedAt is None or now - self.loggedAt >= LOG_INTERVAL:
            _log.warn(self.text, count=self.unlogged, peer=_describe(peer), reason=reason)
            self.loggedAt = now
            self.unlogged = 0


def _describe(address: IAddress | None) -> str:
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        return f"unix:{name.decode('utf-8', 'replace') if isinstance(name, bytes) else name}"
    return repr(address)


# Server.


class ProxyHeaderProtocol(PassThroughProtocol):
    """
    An accepted connection: reads the PROXY header (from a trusted peer),
    then builds the application's protocol with the header's source address
    and becomes its transport, with the header's addresses.
    """

    factory: ProxyHeaderFactory
    wrappedProtocol: Any

    def __init__(self, factory: ProxyHeaderFactory) -> None:
        self.factory = factory
        self.wrappedProtocol = None
        self.proxyHeader: ProxyHeader | None = None
        self.realPeer: IAddress | None = None
        self._realHost: IAddress | None = None
        self._peer: IAddress | None = None
        self._host: IAddress | None = None
        self._parser: HeaderParser | None = None
        self._timer: Any = None
        self._closed = False

    def logPrefix(self) -> str:
        inner = self.wrappedProtocol
        if inner is None:
            return "ProxyHeaderProtocol"
        return f"{type(inner).__name__} (PROXY)"

    def makeConnection(self, transport: Any) -> None:
        self._transportSpec = providedBy(transport)
        _provide(self, self._transportSpec, IProxyHeaderTransport)
        Protocol.makeConnection(self, transport)  # type: ignore[no-untyped-call]

    def connectionMade(self) -> None:
        transport: Any = self.transport
        factory = self.factory
        self.realPeer = self._peer = transport.getPeer()
        if not factory.trust.trusts(self.realPeer):
            if factory.direct:
                self._serve(None, b"")
            else:
                factory.untrustedLog.note(self.realPeer, "")
                self._close()
            return
        self._parser = HeaderParser(factory.maxHeader)
        self._timer = factory.clock.callLater(factory.headerTimeout, self._timedOut)

    def _close(self) -> None:
        self._closed = True
        self._stopTimer()
        transport: Any = self.transport
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    def _stopTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timedOut(self) -> None:
        self._timer = None
        parser = self._parser
        if parser is None or self.wrappedProtocol is not None:
            return
        if not self.factory.require:
            self._serve(None, parser.buffered)
            return
        self.factory.invalidLog.note(
            self.realPeer, f"no complete header within {self.factory.headerTimeout:g} s")
        self._close()

    def dataReceived(self, data: bytes) -> None:
        inner = self.wrappedProtocol
        if inner is not None:
            inner.dataReceived(data)
            return
        parser = self._parser
        if parser is None or self._closed:
            return
        if not self.factory.require:
            start = parser.buffered + data
            if not parser.startsLikeHeader(start):
                self._parser = None
                self._serve(None, start)
                return
        try:
            header = parser.feed(data)
        except InvalidProxyHeader as e:
            self._parser = None
            self.factory.invalidLog.note(self.realPeer, str(e))
            self._close()
            return
        if header is not None:
            self._parser = None
            self._serve(header, parser.rest)

    def _serve(self, header: ProxyHeader | None, rest: bytes) -> None:
        self._stopTimer()
        self.proxyHeader = header
        if header is not None and not header.local:
            self._peer = header.source
            self._host = header.destination
            if self._realHost is None:
                self._realHost = self.transport.getHost()  # type: ignore[union-attr]
        inner = self.factory.wrappedFactory.buildProtocol(self._peer)
        if inner is None:
            self._close()
            return
        self.wrappedProtocol = inner
        relayed = [i for i in _RELAYED if i.providedBy(inner)]
        if relayed:
            _provide(self, self._transportSpec, IProxyHeaderTransport, *relayed)
        inner.makeConnection(self)
        if rest and self.wrappedProtocol is not None and not self._closed:
            inner.dataReceived(rest)

    def getPeer(self) -> IAddress:
        assert self._peer is not None
        return self._peer

    def getHost(self) -> IAddress:
        if self._host is None:
            self._host = self.realHost
        return self._host

    @property
    def realHost(self) -> IAddress:
        """
        The local address the balancer (or a direct peer) connected to.
        """
        if self._realHost is None:
            self._realHost = self.transport.getHost()  # type: ignore[union-attr]
        return self._realHost

    def readConnectionLost(self) -> None:
        if self.wrappedProtocol is not None:
            PassThroughProtocol.readConnectionLost(self)

    def writeConnectionLost(self) -> None:
        if self.wrappedProtocol is not None:
            PassThroughProtocol.writeConnectionLost(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stopTimer()
        self._parser = None
        inner = self.wrappedProtocol
        if inner is not None:
            self.wrappedProtocol = None
            inner.connectionLost(reason)


class ProxyHeaderFactory(PassThroughFactory):
    """
    Wraps a server factory: each connection reads its PROXY header before the
    wrapped factory builds a protocol for it (see L{ProxyHeaderProtocol}).
    """

    noisy = False

    def __init__(self, wrappedFactory: IProtocolFactory, trust: Trust,
                 direct: bool = False, require: bool = True,
                 headerTimeout: float = DEFAULT_HEADER_TIMEOUT,
                 maxHeader: int = DEFAULT_MAX_HEADER,
                 clock: IReactorTime | None = None) -> None:
        PassThroughFactory.__init__(self, wrappedFactory)
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock: Any = clock
        self.trust = trust
        self.direct = direct
        self.require = require
        self.headerTimeout = headerTimeout
        self.maxHeader = maxHeader
        self.untrustedLog = _RateLimitedLog(
            self.clock, "proxyprotocol: refused {count} connection(s) from peers not in "
            "trusted=, the latest from {peer}")
        self.invalidLog = _RateLimitedLog(
            self.clock, "proxyprotocol: closed {count} connection(s) without a valid "
            "PROXY header, the latest from {peer}: {reason}")

    def buildProtocol(self, addr: IAddress | None) -> Any:
        return ProxyHeaderProtocol(self)


class ProxyProtocolPort(PassThroughPort):
    """
    The listening port of a C{proxyprotocol:} server endpoint: the wrapped
    port (C{wrappedPort}); its client description sends a PROXY header.
    """

    def __init__(self, wrappedPort: IListeningPort, factory: ProxyHeaderFactory) -> None:
        PassThroughPort.__init__(self, wrappedPort)
        self.factory = factory

    def __repr__(self) -> str:
        return f"<ProxyProtocolPort trusted={self.factory.trust} of {self.wrappedPort!r}>"

    def clientDescription(self, hostname: str | None = None,
                          trustRoots: str | None = None) -> str:
        """
        A client description that reaches this port: C{proxyprotocol:}
        around the wrapped port's own (a TLS port inside verifies
        C{hostname} against C{trustRoots}).  Its C{LOCAL} header is served
        as a direct connection when the client's address is trusted.
        """
        from endpointkit.lifecycle.describing import clientDescriptionFor

        return buildDescription("proxyprotocol", endpoint=clientDescriptionFor(
            self.wrappedPort, hostname, trustRoots))


@implementer(IStreamServerEndpoint)
class ProxyProtocolServerEndpoint:
    """
    Wraps a server endpoint: connections from C{trusted} peers start with a
    PROXY header (v1 or v2) that gives the application the real client's
    address.

    @param trusted: who may send a header (see the module's description of
        C{trusted=}).
    @param untrusted: C{"reject"} closes a connection from anyone else,
        C{"direct"} serves it with its real address.
    @param require: a trusted peer must send a header (else it may connect
        directly too).
    @param headerTimeout: seconds a trusted peer has to send its header.
    @param maxHeader: the largest version 2 header, TLVs included, in bytes.
    @param clock: for the header deadline and the log's rate (default: the
        reactor).
    """

    def __init__(self, endpoint: IStreamServerEndpoint, trusted: Trust | str,
                 untrusted: str = "reject", require: bool = True,
                 headerTimeout: float = DEFAULT_HEADER_TIMEOUT,
                 maxHeader: int = DEFAULT_MAX_HEADER,
                 clock: IReactorTime | None = None) -> None:
        if isinstance(trusted, str):
            trusted = _Trusted().convert(trusted)
        if untrusted not in ("reject", "direct"):
            raise ValueError(f"untrusted must be 'reject' or 'direct', got {untrusted!r}")
        self.endpoint: Any = endpoint
        self.trust = trusted
        self.untrusted = untrusted
        self.require = require
        self.headerTimeout = headerTimeout
        self.maxHeader = maxHeader
        self.clock = clock

    def __repr__(self) -> str:
        return (f"<ProxyProtocolServerEndpoint trusted={self.trust} untrusted={self.untrusted}"
                f" of {self.endpoint!r}>")

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        """
        Listen on the wrapped endpoint, reading a PROXY header on each
        connection before C{protocolFactory} builds its protocol.
        """
        factory = ProxyHeaderFactory(protocolFactory, self.trust,
                                     self.untrusted == "direct", self.require,
                                     self.headerTimeout, self.maxHeader, self.clock)
        listening: defer.Deferred[Any] = defer.maybeDeferred(self.endpoint.listen, factory)
        listening.addCallback(lambda port: ProxyProtocolPort(port, factory))
        return listening


# The description layer.


def _checkServer(values: Mapping[str, Any], given: frozenset[str]) -> None:
    if values["untrusted"] == "direct" and values["trusted"].everyone:
        raise proxyprotocolServerType.error(
            "untrusted", "has no effect with trusted=any (every peer is trusted)")


def _insecureServer(values: Mapping[str, Any]) -> Iterable[str]:
    if values["trusted"].everyone:
        yield ("trusted=any: anyone who can connect may send a PROXY header and claim "
               "any client address")


def _buildServer(reactor: Any, endpoint: IStreamServerEndpoint, trusted: Trust,
                 untrusted: str, require: bool, headerTimeout: float,
                 maxHeader: int) -> ProxyProtocolServerEndpoint:
    return ProxyProtocolServerEndpoint(endpoint, trusted, untrusted, require, headerTimeout,
                                       maxHeader, clock=reactor)


proxyprotocolServerType = EndpointType(
    "proxyprotocol", "server",
    (
        Arg("endpoint", Nested("server"), help="the server description it wraps"),
        Arg("trusted", _Trusted(), help=(
            "required, so that nobody else can claim a client address: the balancers "
            "allowed to send a PROXY header, addresses or networks separated by | "
            "(127.0.0.1|10.0.0.0/8|[::1]); unix: UNIX-socket peers; any: everyone")),
        Arg("untrusted", Choice("reject", "direct"), "reject",
            "a connection from anyone else: reject closes it, direct serves it "
            "with its real address and no header"),
        Arg("require", Bool(), True,
            "a trusted peer must send a header (no: it may also connect directly)"),
        Arg("headerTimeout", Seconds(), DEFAULT_HEADER_TIMEOUT,
            "seconds a trusted peer has to send its header"),
        Arg("maxHeader", Int(_MIN_MAX_HEADER, 16 + 65535), DEFAULT_MAX_HEADER,
            f"largest PROXY v2 header in bytes, TLVs included (v1: {MAX_V1})"),
    ),
    "reads the PROXY protocol header (v1 or v2) from trusted balancers, so the "
    "application and limit: around it see the real client's address",
    factory=_buildServer,
    validate=_checkServer,
    insecure=_insecureServer,
)


def _checkClient(values: Mapping[str, Any], given: frozenset[str]) -> None:
    if (values["source"] is None) != (values["destination"] is None):
        missing = "destination" if values["destination"] is None else "source"
        raise proxyprotocolClientType.error(
            missing, "is needed too: give source and destination together, or neither "
            "(then the header says LOCAL / UNKNOWN)")
    if values["version"] == 1 and values["uniqueId"]:
        raise proxyprotocolClientType.error("uniqueId", "needs version=2 (v1 has no TLVs)")


def _buildClient(reactor: Any, endpoint: IStreamClientEndpoint, version: int,
                 source: IAddress | None, destination: IAddress | None,
                 uniqueId: bool) -> ProxyProtocolClientEndpoint:
    return ProxyProtocolClientEndpoint(endpoint, version, source, destination, uniqueId)


proxyprotocolClientType = EndpointType(
    "proxyprotocol", "client",
    (
        Arg("endpoint", Nested("client"), help="the client description it wraps"),
        Arg("version", Int(1, 2), 2, "PROXY protocol version to send: 1 (text) or 2"),
        Arg("source", _AddressPort(), None,
            "client address to announce, host:port (IPv6 in brackets), when the "
            "application gives no original connection"),
        Arg("destination", _AddressPort(), None,
            "the address that client connected to, host:port"),
        Arg("uniqueId", Bool(), False,
            "send a random unique ID (UUID4 text) for each connection (v2)"),
    ),
    "sends a PROXY protocol header (v2 or v1) first on each connection, with the "
    "original connection's addresses, or source=/destination=, or LOCAL",
    factory=_buildClient,
    validate=_checkClient,
)
