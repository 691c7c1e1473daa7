"""
Proxy client endpoints: C{socks5:}, C{socks4a:} and C{httpconnect:}.

Each connects to the proxy through a nested client endpoint (C{tcp:},
C{unix:}, C{tls:}, C{timeout:}, another proxy), runs a sans-I/O handshake
(L{endpointkit._socks}, L{endpointkit._httpconnect}) under a thin protocol,
and then hands the proxy connection to the user's protocol, whose transport
reports the target as its peer::

    socks5:example.com:443:endpoint=tcp\\:127.0.0.1\\:1080
    httpconnect:example.com:443:endpoint=tcp\\:proxy\\:3128:user=me:password=s3cret
    tls:example.com:443:endpoint=socks5\\:example.com\\:443\\:endpoint=tcp\\:...

The whole attempt (connecting to the proxy and the handshake) has a deadline,
C{handshakeTimeout}; every bad reply fails at once with a specific
L{ProxyError}.  The errors live with their protocol: those of SOCKS in
L{endpointkit._socks}, those of HTTP CONNECT in L{endpointkit._httpconnect},
the ones every protocol shares in L{endpointkit._handshake}; all are
importable from C{endpointkit}.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.address import HostnameAddress, IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError, NoProtocol
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IProtocol,
    IResolutionReceiver,
    ISSLTransport,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from endpointkit._grammar import SECRET_MASK, formatDuration
from endpointkit._handshake import (
    Event,
    ProxyError,
    ProxyHandshakeTimeout,
    SendData,
    TunnelReady,
)
from endpointkit._httpconnect import DEFAULT_MAX_REPLY_HEADER, HTTPConnectHandshake, authority
from endpointkit._kinds import Choice, Host, Invalid, Kind, Nested, Port, Seconds, Secret, String
from endpointkit._schema import Arg, EndpointType, Parsed
from endpointkit._socks import (
    SOCKS4Handshake,
    SOCKS5Handshake,
    _addressType,
)

__all__ = [
    "HTTPConnectClientEndpoint",
    "SOCKS4aClientEndpoint",
    "SOCKS5ClientEndpoint",
    "TunnelTransport",
    "httpconnectType",
    "socks4aType",
    "socks5Type",
]

DEFAULT_HANDSHAKE_TIMEOUT = 30.0
"""
Seconds from C{connect()} until the tunnel must be open.
"""

Handshake = SOCKS5Handshake | SOCKS4Handshake | HTTPConnectHandshake


def targetAddress(host: str, port: int) -> Any:
    """
    The address of a tunnel's target: an L{IPv4Address} or L{IPv6Address}
    for an address, a L{HostnameAddress} for a name.
    """
    kind = _addressType(host)
    if kind == "ipv4":
        return IPv4Address("TCP", host, port)
    if kind == "ipv6":
        return IPv6Address("TCP", host, port)
    return HostnameAddress(host.encode("idna"), port)


class TunnelTransport:
    """
    The transport of a protocol connected through a proxy: the proxy
    connection's own transport, except that L{getPeer} is the target.  Data,
    flow control and half-close go straight to the proxy connection.
    """

    def __init__(self, transport: Any, peer: Any) -> None:
        self.transport = transport
        self._peer = peer
        directlyProvides(self, *[iface for iface in providedBy(transport)
                                 if not iface.isOrExtends(ISSLTransport)])
        # Bound methods, so that the tunnel costs no extra call per write.
        for name in ("write", "writeSequence", "loseConnection", "abortConnection",
                     "registerProducer", "unregisterProducer", "pauseProducing",
                     "resumeProducing", "stopProducing", "loseWriteConnection"):
            method = getattr(transport, name, None)
            if method is not None:
                setattr(self, name, method)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    def getPeer(self) -> Any:
        """
        The target, as the proxy was asked to reach it.
        """
        return self._peer

    def getHost(self) -> Any:
        """
        This side's address on the connection to the proxy.
        """
        return self.transport.getHost()

    def __repr__(self) -> str:
        return f"<TunnelTransport to {self._peer} over {self.transport!r}>"


@implementer(IHalfCloseableProtocol)
class _HandshakeProtocol(Protocol):
    """
    Runs the handshake on the proxy connection, then forwards every event to
    the user's protocol (as Twisted's C{_WrappingProtocol} does).  It is
    half-closeable so that a half-close reaches a user's protocol that is.
    """

    def __init__(self, attempt: _Attempt, handshake: Handshake) -> None:
        self._attempt = attempt
        self._handshake = handshake
        self.user: Any = None
        self.transport: Any = None

    def logPrefix(self) -> str:
        if self.user is not None:
            return type(self.user).__name__
        return f"{self._handshake.protocol}Handshake"

    def connectionMade(self) -> None:
        if not self._attempt.attach(self):
            self.transport.abortConnection()
            return
        self._events(self._handshake.initiate())

    def _events(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, SendData):
                self.transport.write(event.data)
            else:
                self._handOver(event)

    def dataReceived(self, data: bytes) -> None:
        if self.user is not None:
            self.user.dataReceived(data)
            return
        if self._attempt.finished:
            return
        try:
            events = self._handshake.receiveData(data)
        except ProxyError as e:
            self._attempt.fail(e)
            return
        self._events(events)

    def _handOver(self, ready: TunnelReady) -> None:
        attempt = self._attempt
        peer = attempt.target
        try:
            user = attempt.factory.buildProtocol(peer)
            if user is None:
                raise NoProtocol()
        except BaseException:
            attempt.fail(Failure())  # type: ignore[no-untyped-call]
            return
        self.user = user
        try:
            user.makeConnection(TunnelTransport(self.transport, peer))
        except BaseException:
            attempt.fail(Failure())  # type: ignore[no-untyped-call]
            return
        attempt.succeed(user)
        if ready.trailing:
            user.dataReceived(ready.trailing)

    def readConnectionLost(self) -> None:
        user = self.user
        if user is None:
            self._attempt.fail(self._handshake.connectionClosed())
        elif IHalfCloseableProtocol.providedBy(user):
            user.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if self.user is not None and IHalfCloseableProtocol.providedBy(self.user):
            self.user.writeConnectionLost()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.user is not None:
            self.user.connectionLost(reason)
            return
        if not self._attempt.finished:
            self._attempt.fail(self._handshake.connectionClosed())
        self._attempt.detach()


class _HandshakeFactory(Factory):
    noisy = False

    def __init__(self, attempt: _Attempt, handshake: Handshake) -> None:
        self._attempt = attempt
        self._handshake = handshake

    def buildProtocol(self, addr: Any) -> Protocol:
        return _HandshakeProtocol(self._attempt, self._handshake)


@implementer(IResolutionReceiver)
class _Collect:
    """
    Collects a resolution's addresses into a L{Deferred}.
    """

    def __init__(self) -> None:
        self.addresses: list[Any] = []
        self.deferred: Deferred[list[Any]] = Deferred()

    def resolutionBegan(self, resolutionInProgress: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        if not self.deferred.called:
            self.deferred.callback(self.addresses)


class _Attempt:
    """
    One C{connect()}: resolving (when asked to resolve locally), connecting
    to the proxy, the handshake, all under one deadline.
    """

    def __init__(self, endpoint: _ProxyClientEndpoint, factory: Any) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.target = targetAddress(endpoint.host, endpoint.port)
        self.finished = False
        self.result: Deferred[IProtocol] = Deferred(self._cancel)
        self._pending: Deferred[Any] | None = None
        self._protocol: _HandshakeProtocol | None = None
        self._timer: Any = None

    def start(self) -> Deferred[IProtocol]:
        endpoint = self.endpoint
        reactor: Any = endpoint._reactor
        self._timer = reactor.callLater(endpoint.handshakeTimeout, self._timedOut)
        host = endpoint.host
        if endpoint.resolve == "local" and _addressType(host) == "name":
            self._resolve(host)
        else:
            self._connect(host)
        return self.result

    def _resolve(self, host: str) -> None:
        collect = _Collect()
        types = [IPv4Address] if isinstance(self.endpoint, SOCKS4aClientEndpoint) else None
        self._pending = collect.deferred
        self.endpoint._reactor.nameResolver.resolveHostName(
            collect, host, self.endpoint.port, addressTypes=types)

        def resolved(addresses: list[Any]) -> None:
            self._pending = None
            if not addresses:
                self.fail(DNSLookupError(
                    f"{host!r} did not resolve to an "
                    + ("IPv4 address (SOCKS4 carries no IPv6)" if types else "address")))
                return
            self._connect(addresses[0].host)

        collect.deferred.addCallbacks(resolved, self._pendingFailed)

    def _connect(self, host: str) -> None:
        try:
            handshake = self.endpoint._newHandshake(host)
        except ValueError as e:
            self.fail(e)
            return
        pending: Deferred[Any] = self.endpoint.proxyEndpoint.connect(_HandshakeFactory(self, handshake))
        self._pending = pending

        def connected(protocol: object) -> None:
            self._pending = None

        pending.addCallbacks(connected, self._pendingFailed)

    def _pendingFailed(self, failure: Failure) -> None:
        self._pending = None
        if self.finished:
            return
        self.fail(failure)

    def attach(self, protocol: _HandshakeProtocol) -> bool:
        """
        The connection to the proxy is open; C{False} when too late.
        """
        if self.finished:
            return False
        self._protocol = protocol
        return True

    def detach(self) -> None:
        self._protocol = None

    def _stop(self) -> None:
        self.finished = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def succeed(self, protocol: Any) -> None:
        if self.finished:
            return
        self._stop()
        self._protocol = None
        self.result.callback(protocol)

    def fail(self, error: BaseException | Failure) -> None:
        """
        End the attempt with C{error}, closing whatever is open.
        """
        if self.finished:
            return
        self._stop()
        if isinstance(error, ProxyError) and error.proxy is None:
            error.proxy = self.endpoint.proxyDescription
        self._abort()
        self.result.errback(error)

    def _abort(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abortConnection()

    def _timedOut(self) -> None:
        self._timer = None
        seconds = self.endpoint.handshakeTimeout
        self.fail(self.endpoint._error(
            ProxyHandshakeTimeout,
            f"did not open the tunnel to {authority(self.endpoint.host, self.endpoint.port)} "
            f"within {formatDuration(seconds)} (handshakeTimeout)"))

    def _cancel(self, result: Deferred[IProtocol]) -> None:
        if self.finished:
            return
        self._stop()
        self._abort()


@implementer(IStreamClientEndpoint)
class _ProxyClientEndpoint:
    """
    What the three proxy endpoints share: the target, the endpoint that
    reaches the proxy, the deadline, and the attempt that uses them.
    """

    protocolName = "proxy"

    def __init__(self, reactor: Any, host: str, port: int,
                 proxyEndpoint: Any, *,
                 handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 resolve: str = "proxy", proxyDescription: str | None = None) -> None:
        if resolve not in ("proxy", "local"):
            raise ValueError(f"resolve must be 'proxy' or 'local', not {resolve!r}")
        self._reactor = reactor
        self.host = host
        self.port = port
        self.proxyEndpoint = proxyEndpoint
        self.handshakeTimeout = handshakeTimeout
        self.resolve = resolve
        self.proxyDescription = proxyDescription

    def __repr__(self) -> str:
        via = self.proxyDescription or repr(self.proxyEndpoint)
        return (f"<{type(self).__name__} to {authority(self.host, self.port)} "
                f"via {via}{self._reprExtra()}>")

    def _reprExtra(self) -> str:
        return ""

    def _error(self, kind: type[ProxyError], reason: str) -> ProxyError:
        return kind(self.protocolName, reason, self.proxyDescription)

    def _newHandshake(self, host: str) -> Handshake:
        raise NotImplementedError()

    def connect(self, protocolFactory: Any) -> Deferred[IProtocol]:
        """
        Connect C{protocolFactory}'s protocol to the target through the proxy.
        The L{Deferred} fails with a L{ProxyError} when the proxy does not
        open the tunnel, or with the nested endpoint's error when the proxy
        cannot be reached.
        """
        return _Attempt(self, protocolFactory).start()


class SOCKS5ClientEndpoint(_ProxyClientEndpoint):
    """
    Connects through a SOCKS5 proxy (RFC 1928), with username/password
    authentication (RFC 1929) when C{user} is given.  Names are resolved by
    the proxy unless C{resolve="local"}.
    """

    protocolName = "socks5"

    def __init__(self, reactor: Any, host: str, port: int,
                 proxyEndpoint: Any, *, user: str | None = None,
                 password: str | None = None,
                 handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 resolve: str = "proxy", proxyDescription: str | None = None) -> None:
        _ProxyClientEndpoint.__init__(
            self, reactor, host, port, proxyEndpoint, handshakeTimeout=handshakeTimeout,
            resolve=resolve, proxyDescription=proxyDescription)
        self.user = user
        self._password = password
        SOCKS5Handshake(host, port, user, password)

    def _reprExtra(self) -> str:
        return f" user={self.user!r}" if self.user is not None else ""

    def _newHandshake(self, host: str) -> Handshake:
        return SOCKS5Handshake(host, self.port, self.user, self._password)


class SOCKS4aClientEndpoint(_ProxyClientEndpoint):
    """
    Connects through a SOCKS4 proxy, with SOCKS4a's remote names unless
    C{resolve="local"} (then the request is plain SOCKS4, IPv4 only).
    """

    protocolName = "socks4a"

    def __init__(self, reactor: Any, host: str, port: int,
                 proxyEndpoint: Any, *, user: str = "",
                 handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 resolve: str = "proxy", proxyDescription: str | None = None) -> None:
        _ProxyClientEndpoint.__init__(
            self, reactor, host, port, proxyEndpoint, handshakeTimeout=handshakeTimeout,
            resolve=resolve, proxyDescription=proxyDescription)
        self.user = user
        SOCKS4Handshake(host, port, user)

    def _newHandshake(self, host: str) -> Handshake:
        return SOCKS4Handshake(host, self.port, self.user)


class HTTPConnectClientEndpoint(_ProxyClientEndpoint):
    """
    Connects through an HTTP proxy with C{CONNECT host:port} (RFC 9110
    section 9.3.6), with Basic proxy authentication when C{user} is given and
    extra request C{headers}.
    """

    protocolName = "httpconnect"

    def __init__(self, reactor: Any, host: str, port: int,
                 proxyEndpoint: Any, *, user: str | None = None,
                 password: str | None = None, headers: Sequence[tuple[str, str]] = (),
                 handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 maxReplyHeader: int = DEFAULT_MAX_REPLY_HEADER,
                 proxyDescription: str | None = None) -> None:
        _ProxyClientEndpoint.__init__(
            self, reactor, host, port, proxyEndpoint, handshakeTimeout=handshakeTimeout,
            proxyDescription=proxyDescription)
        if user is not None and ":" in user:
            raise ValueError("a Basic authentication user name cannot contain ':'")
        problem = checkHeaders(user, headers)
        if problem is not None:
            raise ValueError(f"headers {problem}")
        self.user = user
        self._password = password
        self.headers = HeaderList(headers)
        self.maxReplyHeader = maxReplyHeader

    def _reprExtra(self) -> str:
        return f" user={self.user!r}" if self.user is not None else ""

    def _newHandshake(self, host: str) -> Handshake:
        return HTTPConnectHandshake(host, self.port, self.user, self._password,
                                    self.headers, self.maxReplyHeader)


# Descriptions.

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_AUTH_SCHEMES = frozenset({"basic", "bearer", "digest", "negotiate", "ntlm", "token"})


def _maskHeaderValue(name: str, value: str) -> str:
    """
    The value of header C{name} as it is shown: a credential header's value
    is C{***}, after its authentication scheme if it has one.
    """
    if name.lower() not in _CREDENTIAL_HEADERS or not value:
        return value
    scheme, space, _ = value.partition(" ")
    if space and name.lower() != "cookie" and _TOKEN.fullmatch(scheme):
        return f"{scheme} {SECRET_MASK}"
    return SECRET_MASK


def _maskHeaderItem(item: str) -> str:
    """
    One C{Name: value} item of a user's text, as an error message shows it,
    well formed or not: after a credential header's name, or after an
    authentication scheme that has lost its header name, C{***}.
    """
    cuts = [i for i in (item.find(":"), item.find("=")) if i >= 0]
    if cuts:
        cut = min(cuts)
        head = item[:cut].split()
        if len(head) == 1:
            value = item[cut + 1 :].strip()
            if head[0].lower() in _CREDENTIAL_HEADERS and value:
                return f"{item[: cut + 1]} {_maskHeaderValue(head[0], value)}"
            return item
    # No separator, or spaces before it (where a credential may be).
    words = item.split()
    if len(words) > 1:
        first = re.split("[:=]", words[0], maxsplit=1)[0]
        if first.lower() in _CREDENTIAL_HEADERS or first.lower() in _AUTH_SCHEMES:
            return f"{first} {SECRET_MASK}"
    return item


class HeaderList(tuple[tuple[str, str], ...]):
    """
    Request headers as C{(name, value)} pairs, whose C{repr} (and so
    C{endpointkit check}) shows the values of C{Authorization},
    C{Proxy-Authorization} and C{Cookie} as C{***}.
    """

    def __repr__(self) -> str:
        return repr(tuple((name, _maskHeaderValue(name, value)) for name, value in self))


class Headers(Kind):
    """
    Extra request headers: C{Name: value} (or C{Name=value}, which needs no
    escaping) items separated by C{|}.  The values of C{Authorization},
    C{Proxy-Authorization} and C{Cookie} are credentials: wherever a
    description is shown they are C{***}.
    """

    name = "headers"
    expected = "headers like 'Name: value', separated by '|'"

    def convert(self, text: str) -> HeaderList:
        headers = []
        for item in text.split("|"):
            colon, equals = item.find(":"), item.find("=")
            cuts = [i for i in (colon, equals) if i >= 0]
            if not cuts:
                raise Invalid(f"{self.expected}; {_maskHeaderItem(item)!r} has no ':'")
            cut = min(cuts)
            name, value = item[:cut].strip(), item[cut + 1 :].strip()
            if not _TOKEN.fullmatch(name):
                masked = _maskHeaderItem(item)
                shown = name if masked == item else masked
                raise Invalid(f"{self.expected}; {shown!r} is not a header name")
            if name.lower() in _RESERVED_HEADERS:
                raise Invalid(f"{self.expected}; {name} is set by the endpoint itself")
            if any(c in value for c in "\r\n\0"):
                raise Invalid(f"{self.expected}; the value of {name} has a control character")
            headers.append((name, value))
        return HeaderList(headers)

    def format(self, value: Any) -> str:
        return "|".join(f"{name}: {text}" for name, text in value)

    def formatMasked(self, value: Any) -> str:
        return "|".join(f"{name}: {_maskHeaderValue(name, text)}" for name, text in value)

    def maskText(self, text: str) -> str:
        return "|".join(_maskHeaderItem(item) for item in text.split("|"))

    def cutSecret(self, text: str) -> bool:
        # "headers=Proxy-Authorization: Basic ..." with the colon unescaped
        # leaves only the name here; the credential is the next value.
        last = text.split("|")[-1]
        return last.split(":")[0].split("=")[0].strip().lower() in _CREDENTIAL_HEADERS


def checkHeaders(user: str | None, headers: Sequence[tuple[str, str]]) -> str | None:
    """
    Why C{headers} cannot be sent with Basic authentication as C{user}, if
    they cannot: a C{Proxy-Authorization} header besides C{user}, or twice,
    would send two credentials.
    """
    count = sum(1 for name, _ in headers if name.lower() == "proxy-authorization")
    if count and user is not None:
        return ("has a Proxy-Authorization header and 'user' is given too: two "
                "credentials would be sent; give one of them")
    if count > 1:
        return "has more than one Proxy-Authorization header: two credentials would be sent"
    return None


_TARGET = (
    Arg("host", Host(what="target host"), positional=True,
        help="the target host the proxy connects to"),
    Arg("port", Port(), positional=True, help="the target port"),
    Arg("endpoint", Nested("client"),
        help="the client description that reaches the proxy, escaped"),
)
_TIMEOUT = Arg("handshakeTimeout", Seconds(), DEFAULT_HANDSHAKE_TIMEOUT,
               help="seconds to reach the proxy and open the tunnel")
_RESOLVE = Arg("resolve", Choice("proxy", "local"), "proxy",
               help="who resolves a target name: the proxy (no local DNS), or local")


def _checkCredentials(etype: Callable[[], EndpointType], maxBytes: int | None,
                      colon: bool) -> Callable[[Mapping[str, Any], frozenset[str]], None]:
    def validate(values: Mapping[str, Any], given: frozenset[str]) -> None:
        user, password = values.get("user"), values.get("password")
        if password is not None and user is None:
            raise etype().error("password", "is given without 'user'")
        if maxBytes is not None:
            if user is not None and len(user.encode()) > maxBytes:
                raise etype().error("user", f"is longer than {maxBytes} bytes")
            if password is not None and len(password.encode()) > maxBytes:
                raise etype().error("password", f"is longer than {maxBytes} bytes")
        if colon and user is not None and ":" in user:
            raise etype().error("user", "cannot contain ':' (Basic authentication)")
        host = values.get("host")
        if maxBytes is not None and host and _addressType(host) == "name" and \
                len(host.encode("idna")) > 255:
            raise etype().error("host", "is longer than 255 bytes")
    return validate


def _socks4aValidate(values: Mapping[str, Any], given: frozenset[str]) -> None:
    if _addressType(values["host"]) == "ipv6":
        raise _types['socks4a'].error("host", "is an IPv6 address, which SOCKS4 cannot carry; "
                                "use socks5", values["host"])


_httpconnectCredentials = _checkCredentials(lambda: _types['httpconnect'], None, True)


def _httpconnectValidate(values: Mapping[str, Any], given: frozenset[str]) -> None:
    _httpconnectCredentials(values, given)
    problem = checkHeaders(values.get("user"), values.get("headers") or ())
    if problem is not None:
        raise _types['httpconnect'].error("headers", problem)


def _builder(factory: Callable[..., _ProxyClientEndpoint]) -> Callable[[Any, Parsed], Any]:
    """
    Build from a parsed description, passing the proxy's description (secrets
    masked) so that errors can name the proxy.
    """
    def build(reactor: Any, parsed: Parsed) -> _ProxyClientEndpoint:
        values = dict(parsed.values)
        inner = values.pop("endpoint")
        return factory(reactor, proxyEndpoint=inner.build(reactor),
                       proxyDescription=inner.description(masked=True), **values)
    return build


def _socks5(reactor: Any, endpoint: Any, **values: Any) -> SOCKS5ClientEndpoint:
    return SOCKS5ClientEndpoint(reactor, proxyEndpoint=endpoint, **values)


def _socks4a(reactor: Any, endpoint: Any, **values: Any) -> SOCKS4aClientEndpoint:
    return SOCKS4aClientEndpoint(reactor, proxyEndpoint=endpoint, **values)


def _httpconnect(reactor: Any, endpoint: Any,
                 **values: Any) -> HTTPConnectClientEndpoint:
    return HTTPConnectClientEndpoint(reactor, proxyEndpoint=endpoint, **values)


socks5Type = EndpointType(
    "socks5", "client",
    args=(
        *_TARGET,
        Arg("user", String(), None, help="username for RFC 1929 authentication"),
        Arg("password", Secret(nonEmpty=False), None, help="password for RFC 1929 authentication"),
        _RESOLVE,
        _TIMEOUT,
    ),
    help="TCP to a target through a SOCKS5 proxy (RFC 1928), optional username/password",
    factory=_socks5,
    validate=_checkCredentials(lambda: _types['socks5'], 255, False),
    build=_builder(SOCKS5ClientEndpoint),
)

socks4aType = EndpointType(
    "socks4a", "client",
    args=(
        *_TARGET,
        Arg("user", String(nonEmpty=False), "", help="the SOCKS4 user id"),
        _RESOLVE,
        _TIMEOUT,
    ),
    help="TCP to a target through a SOCKS4/4a proxy (names resolved by the proxy)",
    factory=_socks4a,
    validate=_socks4aValidate,
    build=_builder(SOCKS4aClientEndpoint),
)

httpconnectType = EndpointType(
    "httpconnect", "client",
    args=(
        *_TARGET,
        Arg("user", String(), None, help="user for Basic proxy authentication"),
        Arg("password", Secret(nonEmpty=False), None,
            help="password for Basic proxy authentication"),
        Arg("headers", Headers(), (),
            help="extra request headers, 'Name: value' items separated by '|'"),
        _TIMEOUT,
    ),
    help="TCP to a target through an HTTP proxy's CONNECT (RFC 9110), optional Basic auth",
    factory=_httpconnect,
    validate=_httpconnectValidate,
    build=_builder(HTTPConnectClientEndpoint),
)

_types: dict[str, EndpointType] = {
    "socks5": socks5Type, "socks4a": socks4aType, "httpconnect": httpconnectType}
