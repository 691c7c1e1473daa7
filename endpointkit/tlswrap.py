"""
C{tlswrap:} -- TLS over any stream endpoint, client and server, verifying
peers by default.

Server::

    tlswrap:cert=/etc/tls/site.pem:endpoint=tcp\\:443
    tlswrap:cert=fullchain.pem:key=privkey.pem:endpoint=systemd\\:domain=INET\\:index=0
    tlswrap:certs=/etc/tls/sites:reload=30:endpoint=multi\\:tcp\\\\\\:443\\:tcp6\\\\\\:443
    tlswrap:cert=srv.pem:clientCA=clients-ca.pem:verify=required:endpoint=unix\\:/run/app.sock
    tlswrap:cert=srv.pem:minVersion=1.3:alpn=h2,http/1.1:endpoint=reuseport\\:443

Client::

    tlswrap:endpoint=tcp\\:example.com\\:443
    tlswrap:hostname=api.internal:trustRoots=/etc/tls/internal-ca.pem:endpoint=unix\\:/run/api.sock
    tlswrap:pin=sha256/n5gcgLuCZz6RaZ1kJK14qPwmJgp08z3suC2z+B/M7QM=:endpoint=tcp\\:10.0.0.7\\:8443
    tlswrap:certificate=me.pem:key=me.key:endpoint=socks5\\:db.internal\\:5432\\:endpoint=tcp\\\\\\:127.0.0.1\\\\\\:1080

The server takes its certificate from C{cert=} (a PEM file with the
certificate, its chain and, unless C{key=} names another file, the key) or
from C{certs=DIR} (every C{*.pem}, C{*.crt} and C{*.cer} file in the
directory; keys and certificates are paired by their public key, as
Twisted's C{tls:} server pairs them, and each certificate serves the DNS
names of its subjectAltNames, wildcards included, chosen by the name the
client sends (SNI); a client that sends no name, or a name no certificate
has, gets the certificate of the first file by name).  Every C{reload}
seconds at most (checked when a handshake starts), the files are looked at
again (their size, modification time and inode): a renewed certificate is
used for new handshakes, open connections keep theirs.  A file that does not
parse (half written) or whose key does not match keeps the previous
certificate in use, and the log says why.  L{TLSWrapServerEndpoint.reload},
L{TLSWrapPort.reload} and L{reloadCertificates} do the same at once (for
twistd's SIGHUP).

C{clientCA=} (a PEM file or a directory of them) asks clients for a
certificate signed by one of those CAs: C{verify=required} (the default)
refuses a client without one, C{verify=optional} lets it through; the
application reads the verified certificate with the transport's
C{getPeerCertificate()}.  Without C{alpn=} the application factory's own
ALPN list (L{IProtocolNegotiationFactory}, as C{twisted.web} gives with
C{h2} installed) is offered; with it, that list.  A client whose ALPN list
has nothing in common still connects, with no protocol negotiated.

The client verifies the server's certificate chain against the platform's
trust store, or the CA certificates of C{trustRoots=} (a PEM file or
directory), and the host name, which is C{hostname=} or else the target
host of the wrapped description (see L{targetHost}); an IP address is
checked against the certificate's IP subjectAltNames and sent without SNI.
Around C{srv:} that host is the SRV domain (RFC 6125); C{verifyTarget=yes}
verifies each SRV target's own name instead, on the connection to that
target.
C{pin=} (SPKI SHA-256 hashes, as C{openssl x509 -pubkey | openssl pkey
-pubin -outform der | openssl dgst -sha256 -binary | base64} prints them)
accepts only those keys: alone (no C{trustRoots=}), the pins replace CA
and host name verification, for a self-signed service, and the server's own
key must match; with C{trustRoots=} both are checked and any key of the
verified chain may match.  C{verify=none} checks nothing (C{endpointkit
check} and the log say so).  C{connect} fires once the handshake is done;
a failed handshake is a L{TLSHandshakeError} saying why.

The server keeps no handshake deadline of its own: wrap the inner
description in C{limit:idle=...} for one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any, cast

from OpenSSL.crypto import X509, PKey
from twisted.internet import defer
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import Certificate, platformTrust, trustRootFromCertificates
from zope.interface import implementer

from endpointkit._compat import wrapClientTLS, wrapServerTLS
from endpointkit._grammar import DescriptionError, buildDescription, didYouMean
from endpointkit._kinds import Bool, Choice, Host, Invalid, Kind, Nested, Path, Seconds, String
from endpointkit._schema import Arg, EndpointType, Parsed
from endpointkit._tlscerts import (
    PREFIX,
    ReloadResult,
    ServerCertificates,
    TLSFileError,
    _certificateOptions,
    _cipherOptions,
    _clientIdentity,
    _loadCAs,
    _names,
    _versionOptions,
    spkiPin,
)
from endpointkit._tlsverify import (
    CertificateHostnameMismatch,
    CertificateNotTrusted,
    PinMismatch,
    TLSHandshakeError,
    TLSHandshakeTimeout,
    TLSVersionRefused,
    _ClientCreator,
    _GateFactory,
    _HandshakeGate,
)
from endpointkit._wrapping import PassThroughPort

__all__ = [
    "CertificateHostnameMismatch",
    "CertificateNotTrusted",
    "PinMismatch",
    "ReloadResult",
    "ServerCertificates",
    "TLSFileError",
    "TLSHandshakeError",
    "TLSHandshakeTimeout",
    "TLSVersionRefused",
    "TLSWrapClientEndpoint",
    "TLSWrapPort",
    "TLSWrapServerEndpoint",
    "reloadCertificates",
    "spkiPin",
    "targetHost",
    "tlswrapClientType",
    "tlswrapServerType",
]



# The IANA registry of ALPN protocol IDs (RFC 7301).
ALPN_PROTOCOLS = (
    "http/0.9", "http/1.0", "http/1.1", "spdy/1", "spdy/2", "spdy/3", "stun.turn",
    "stun.nat-discovery", "h2", "h2c", "webrtc", "c-webrtc", "ftp", "imap", "pop3",
    "managesieve", "coap", "xmpp-client", "xmpp-server", "acme-tls/1", "mqtt", "dot",
    "ntske/1", "sunrpc", "h3", "smb", "irc", "nntp", "nnsp", "doq", "sip/2", "tds/8.0",
    "dicom", "postgresql", "radius/1.0", "radius/1.1",
)


class _Protocols(Kind):
    """
    A comma-separated list of ALPN protocol IDs from the IANA registry.
    """

    name = "alpn"
    expected = "a comma-separated list of ALPN protocol IDs, like h2,http/1.1"

    def convert(self, text: str) -> tuple[str, ...]:
        items = tuple(item.strip() for item in text.split(","))
        if not text or not all(items):
            raise Invalid()
        for item in items:
            if item not in ALPN_PROTOCOLS:
                guess = didYouMean(item.lower(), list(ALPN_PROTOCOLS))
                raise Invalid(
                    f"ALPN protocol IDs from the IANA registry ({item!r} is not one)",
                    hint=f"did you mean {guess!r}?" if guess else "known: h2, http/1.1, "
                    "acme-tls/1, ...")
        if len(set(items)) != len(items):
            raise Invalid("a list of ALPN protocol IDs, each once")
        return items

    def format(self, value: Any) -> str:
        return ",".join(value)


class _Pins(Kind):
    """
    One or more SPKI pins, C{sha256/BASE64}, separated by C{|}.
    """

    name = "pins"
    expected = ("one or more sha256/BASE64 pins (base64 of the SHA-256 of the key's "
                "SubjectPublicKeyInfo, 44 characters) separated by '|'")

    def convert(self, text: str) -> tuple[str, ...]:
        pins = tuple(text.split("|"))
        for pin in pins:
            algorithm, _, encoded = pin.partition("/")
            if algorithm != "sha256":
                raise Invalid(hint=f"{pin!r} does not start with sha256/")
            try:
                digest = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise Invalid(hint=f"{encoded!r} is not base64") from None
            if len(digest) != 32:
                raise Invalid(hint=f"{encoded!r} is {len(digest)} bytes, not the 32 of SHA-256")
        return pins

    def format(self, value: Any) -> str:
        return "|".join(value)


_VERSION = Choice("1.2", "1.3", "1.0", "1.1")
_VERSION.expected = "1.2 or 1.3 (1.0 and 1.1 only with a warning)"



def reloadCertificates(portOrEndpoint: Any) -> list[ReloadResult]:
    """
    Reload the certificates of every C{tlswrap:} under C{portOrEndpoint} (a
    listening port, seen through C{wrappedPort} and C{ports}, as
    L{endpointkit.lifecycle.listen} returns it, or an endpoint), for
    twistd's SIGHUP.
    """
    found: list[ReloadResult] = []
    todo = [portOrEndpoint]
    seen: set[int] = set()
    while todo and len(seen) < 1000:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (TLSWrapPort, TLSWrapServerEndpoint)):
            found.append(current.reload())
        members = getattr(current, "ports", None)
        if isinstance(members, (list, tuple)):
            todo += list(members)
        for attribute in ("wrappedPort", "endpoint"):
            inner = getattr(current, attribute, None)
            if inner is not None and not isinstance(inner, (str, bytes)):
                todo.append(inner)
        inner = getattr(current, "endpoints", None)
        if isinstance(inner, (list, tuple)):
            todo += list(inner)
    return found


class TLSWrapPort(PassThroughPort):
    """
    The listening port of a C{tlswrap:} server: the wrapped port
    (C{wrappedPort}, as L{endpointkit.lifecycle} looks for it), plus
    L{reload} and the client description that reaches it with TLS.

    @ivar wrappedPort: the port of the wrapped endpoint.
    @ivar certificates: the L{ServerCertificates} it serves.
    """

    def __init__(self, wrappedPort: IListeningPort, certificates: ServerCertificates) -> None:
        PassThroughPort.__init__(self, wrappedPort)
        self.certificates = certificates

    def __repr__(self) -> str:
        return f"<TLSWrapPort {self.certificates.names()!r} over {self.wrappedPort!r}>"

    def reload(self) -> ReloadResult:
        """
        Look at the certificate files now; see L{ServerCertificates.reload}.
        """
        return self.certificates.reload()

    def clientDescriptions(self, hostname: str | None = None,
                           trustRoots: str | None = None) -> list[str]:
        """
        One C{tlswrap:} client description per address of the wrapped port
        (several for C{multi:}).

        @param hostname: the name to verify; by default the default
            certificate's first DNS name (then IP address, then common name).
        @param trustRoots: the CA file or directory the client trusts; by
            default the platform's.
        """
        if hostname is None:
            names = [n for n in _names(self.certificates.defaultCertificate) if "*" not in n]
            if not names:
                from endpointkit.lifecycle import CannotDescribePort

                raise CannotDescribePort(
                    f"the certificate of {self!r} names no host; pass hostname=")
            hostname = names[0]
        found = []
        for inner in _innerClientDescriptions(self.wrappedPort):
            from endpointkit._lookup import parseDescription

            target = targetHost(parseDescription(inner, "client"))
            named = None if target == hostname else hostname
            found.append(buildDescription(PREFIX, hostname=named, trustRoots=trustRoots,
                                          endpoint=inner))
        return found

    def clientDescription(self, hostname: str | None = None,
                          trustRoots: str | None = None) -> str:
        """
        The C{tlswrap:} client description that reaches this port; see
        L{clientDescriptions}.

        @raise endpointkit.lifecycle.CannotDescribePort: the wrapped port
            has several addresses, or none a description reaches.
        """
        found = self.clientDescriptions(hostname, trustRoots)
        if len(found) != 1:
            from endpointkit.lifecycle import CannotDescribePort

            raise CannotDescribePort(
                f"{self!r} listens on {len(found)} addresses; use its clientDescriptions()")
        return found[0]


def _innerClientDescriptions(port: Any) -> list[str]:
    """
    The plain client descriptions (no TLS) that reach C{port}.
    """
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

    from endpointkit.lifecycle import CannotDescribePort, clientDescriptionFor

    members = getattr(port, "ports", None)
    if isinstance(members, (list, tuple)):
        return [d for member in members for d in _innerClientDescriptions(member)]
    own = getattr(port, "clientDescription", None)
    if callable(own):
        return [str(own())]
    inner = getattr(port, "wrappedPort", None)
    if inner is not None:
        return _innerClientDescriptions(inner)
    host = port.getHost()
    if isinstance(host, (IPv4Address, IPv6Address)) and host.type == "TCP":
        loopback = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}
        return [buildDescription("tcp", loopback.get(host.host, host.host), host.port)]
    if isinstance(host, UNIXAddress) and host.name:
        name = host.name.decode() if isinstance(host.name, bytes) else str(host.name)
        if name.startswith("\0"):
            raise CannotDescribePort(f"{port!r} is an abstract UNIX socket")
        return [buildDescription("unix", name)]
    return [clientDescriptionFor(port)]


@implementer(IStreamServerEndpoint)
class TLSWrapServerEndpoint:
    """
    TLS over another server endpoint, through Twisted's C{wrapServerTLS}.

    @ivar endpoint: the wrapped endpoint.
    @ivar certificates: the L{ServerCertificates} it serves.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, certificates: ServerCertificates,
                 clock: Any = None) -> None:
        self.endpoint: Any = endpoint
        self.certificates = certificates
        self._clock = clock

    def __repr__(self) -> str:
        return f"<TLSWrapServerEndpoint {self.certificates.names()!r} over {self.endpoint!r}>"

    def reload(self) -> ReloadResult:
        """
        Look at the certificate files now; see L{ServerCertificates.reload}.
        """
        return self.certificates.reload()

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        """
        Listen on the wrapped endpoint with TLS; an expired certificate, or
        one not valid yet, is logged with its dates.
        """
        self.certificates.warnValidity()
        wrapped = wrapServerTLS(self.certificates, self.endpoint, self._clock)
        listening: defer.Deferred[Any] = defer.maybeDeferred(wrapped.listen, protocolFactory)
        listening.addCallback(lambda port: TLSWrapPort(port, self.certificates))
        return listening


# The client side.


def targetHost(parsed: Parsed) -> str | None:
    """
    The host that the connections of a client description reach, for TLS to
    verify and send as SNI, or L{None} when it has none (C{unix:},
    C{memory:}, a third-party type without declared arguments).

    How a type offers it: it declares the target host as an argument named
    C{host}, as C{tcp:}, C{hostname:}, C{ssl:}, C{tls:} and the proxies
    (C{socks5:}, C{socks4a:}, C{httpconnect:}, whose C{endpoint=} is the way
    to the proxy) do, or as C{domain}, as C{srv:} does (the domain whose name
    the certificate must have, RFC 6125); a wrapper with neither is seen
    through to its C{endpoint=} (C{timeout:}).
    """
    current: Parsed | None = parsed
    for _ in range(32):
        if current is None or current.type is None:
            return None
        host = current.values.get("host") or current.values.get("domain")
        if isinstance(host, str) and host:
            return host
        inner = current.values.get("endpoint")
        current = inner if isinstance(inner, Parsed) else None
    return None


@implementer(IStreamClientEndpoint)
class TLSWrapClientEndpoint:
    """
    TLS over another client endpoint, through Twisted's C{wrapClientTLS};
    C{connect} fires with the application's protocol once the handshake is
    done, or fails with a L{TLSHandshakeError}.

    @param hostname: the name to verify and send as SNI (an IP address is
        verified against IP subjectAltNames and not sent).
    @param trustRoots: CA file or directory (default: the platform's).
    @param pins: C{sha256/BASE64} pins; without C{trustRoots}, they replace
        CA and host name verification.
    @param verify: L{False} verifies nothing.
    @param certificate: PEM file with a client certificate (and its key,
        unless C{key}).
    @param handshakeTimeout: seconds for the handshake (0: no deadline).

    @raise TLSFileError: a file cannot be used.
    """

    def __init__(self, reactor: Any, endpoint: IStreamClientEndpoint,
                 hostname: str | None = None, trustRoots: str | None = None,
                 pins: Sequence[str] = (), verify: bool = True,
                 certificate: str | None = None, key: str | None = None,
                 minVersion: str = "1.2", ciphers: str | None = None,
                 alpn: Sequence[str] | None = None, handshakeTimeout: float = 30.0) -> None:
        self.endpoint: Any = endpoint
        self.clock: Any = reactor
        self.hostname = hostname
        self.minVersion = minVersion
        self.handshakeTimeout = handshakeTimeout
        verifyChain = verify and not (pins and trustRoots is None)
        if verifyChain and not hostname:
            raise DescriptionError(
                f"{PREFIX}: argument 'hostname' is needed: the wrapped description has "
                "no host to verify", prefix=PREFIX, argument="hostname")
        extra: dict[str, Any] = {**_versionOptions(minVersion),
                                 **_cipherOptions("ciphers", ciphers)}
        if alpn:
            extra["acceptableProtocols"] = [p.encode("ascii") for p in alpn]
        if verifyChain:
            if trustRoots is not None:
                cas = _loadCAs("trustRoots", trustRoots)
                fromCertificates: Any = trustRootFromCertificates
                wrap: Any = Certificate
                extra["trustRoot"] = fromCertificates(
                    [wrap(X509.from_cryptography(c)) for c in cas])
            else:
                platform: Any = platformTrust
                extra["trustRoot"] = platform()
        if certificate is not None:
            identity = _clientIdentity(certificate, key)
            extra.update(certificate=X509.from_cryptography(identity.certificate),
                         privateKey=PKey.from_cryptography_key(cast(Any, identity.key)),
                         extraCertChain=[X509.from_cryptography(c) for c in identity.chain])
        options = _certificateOptions("minVersion", **extra)
        self._creator = _ClientCreator(options, hostname, verifyChain, pins, verify)
        self._tls = wrapClientTLS(self._creator, endpoint, reactor)

    def __repr__(self) -> str:
        return f"<TLSWrapClientEndpoint {self.hostname} over {self.endpoint!r}>"

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[Any]:
        """
        Connect through the wrapped endpoint, then run the TLS handshake.
        """
        gates: list[_HandshakeGate] = []

        def cancel(_: object) -> None:
            if gates:
                gates[0].abort()
            else:
                connecting.cancel()

        result: defer.Deferred[Any] = defer.Deferred(cancel)
        connecting: defer.Deferred[Any] = self._tls.connect(_GateFactory(self, protocolFactory))

        def connected(gate: _HandshakeGate) -> None:
            gates.append(gate)
            gate.ready.chainDeferred(result)

        connecting.addCallbacks(connected, result.errback)
        return result


# The description layer.

_COMMON = (
    Arg("minVersion", _VERSION, "1.2", "lowest TLS version accepted: 1.2 or 1.3"),
    Arg("ciphers", String(), None, "OpenSSL cipher string for TLS 1.2 (default: Twisted's)"),
)


def _insecureVersion(values: Mapping[str, Any]) -> list[str]:
    if values.get("minVersion") in ("1.0", "1.1"):
        return [f"minVersion={values['minVersion']} accepts TLS versions below 1.2"]
    return []


def _checkServer(values: Mapping[str, Any], given: frozenset[str]) -> None:
    if ("cert" in given) == ("certs" in given):
        raise tlswrapServerType.error(
            None, "needs one of 'cert' (a PEM file with the certificate) and 'certs' "
            "(a directory of PEM files chosen by SNI)")
    if "key" in given and "cert" not in given:
        raise tlswrapServerType.error("key", "goes with cert=; in certs=DIR every key is "
                                      "paired with its certificate")
    if "verify" in given and "clientCA" not in given:
        raise tlswrapServerType.error("verify", "needs clientCA= (the CAs that sign client "
                                      "certificates)")


def _buildServer(reactor: Any, endpoint: IStreamServerEndpoint, cert: str | None,
                 key: str | None, certs: str | None, reload: float, clientCA: str | None,
                 verify: str, minVersion: str, ciphers: str | None,
                 alpn: tuple[str, ...] | None) -> TLSWrapServerEndpoint:
    certificates = ServerCertificates(cert=cert, key=key, certs=certs, clientCA=clientCA,
                                      verify=verify, minVersion=minVersion, ciphers=ciphers,
                                      alpn=alpn, reload=reload, clock=reactor)
    return TLSWrapServerEndpoint(endpoint, certificates, clock=reactor)


tlswrapServerType = EndpointType(
    PREFIX, "server",
    (
        Arg("endpoint", Nested("server"), help="the server description TLS runs over"),
        Arg("cert", Path(), None, "PEM file: certificate, its chain, and the key unless key="),
        Arg("key", Path(), None, "PEM file with the private key of cert="),
        Arg("certs", Path(), None, "directory of PEM files, the certificate chosen by SNI"),
        Arg("reload", Seconds(allowZero=True), 60.0,
            "look for renewed certificate files at most this often (0: off)"),
        Arg("clientCA", Path(), None, "CA certificates (file or directory) for client "
            "certificates (mTLS)"),
        Arg("verify", Choice("required", "optional"), "required",
            "with clientCA: refuse clients without a certificate, or let them through"),
        *_COMMON,
        Arg("alpn", _Protocols(), None, "ALPN protocols, like h2,http/1.1 (default: the "
            "application's)"),
    ),
    "TLS around any server description: one certificate or a directory chosen by SNI, "
    "renewed files reloaded, client certificates (mTLS), minimum version, ALPN",
    factory=_buildServer,
    validate=_checkServer,
    insecure=_insecureVersion,
)


def _checkClient(values: Mapping[str, Any], given: frozenset[str]) -> None:
    if values["verifyTarget"]:
        if values["endpoint"].prefix != "srv":
            raise tlswrapClientType.error(
                "verifyTarget", "is for an srv: description inside (endpoint=srv\\:...), "
                f"got {values['endpoint'].prefix}:")
        if "hostname" in given:
            raise tlswrapClientType.error(
                "verifyTarget", "verifies each SRV target's own name: leave hostname= out")
    if "key" in given and "certificate" not in given:
        raise tlswrapClientType.error("key", "goes with certificate= (the client certificate)")
    if values["verify"] == "none":
        for other in ("pin", "trustRoots"):
            if other in given:
                raise tlswrapClientType.error(
                    other, "checks the server, which verify=none turns off; give one of the two")
        return
    if "hostname" in given:
        return
    pinOnly = "pin" in given and "trustRoots" not in given
    if not pinOnly and targetHost(values["endpoint"]) is None:
        raise tlswrapClientType.error(
            "hostname", f"is needed: {values['endpoint'].prefix}: has no host to verify the "
            "certificate against (give hostname=NAME)")


def _insecureClient(values: Mapping[str, Any]) -> list[str]:
    found = []
    if values.get("verify") == "none":
        found.append("verify=none: the server's certificate is not verified, so anyone "
                     "on the way can pose as the server")
    return found + _insecureVersion(values)


def _buildClient(reactor: Any, parsed: Parsed) -> IStreamClientEndpoint:
    values = parsed.values
    inner = values["endpoint"]

    def wrap(endpoint: IStreamClientEndpoint, hostname: str | None) -> TLSWrapClientEndpoint:
        return TLSWrapClientEndpoint(
            reactor, endpoint, hostname=hostname, trustRoots=values["trustRoots"],
            pins=values["pin"] or (), verify=values["verify"] != "none",
            certificate=values["certificate"], key=values["key"],
            minVersion=values["minVersion"], ciphers=values["ciphers"], alpn=values["alpn"],
            handshakeTimeout=values["handshakeTimeout"])

    built = inner.build(reactor)
    if values["verifyTarget"]:
        # Each SRV target's connection verifies that target's own name.
        wrapped: IStreamClientEndpoint = built.wrapTargets(
            lambda endpoint, target: wrap(endpoint, target.host))
        return wrapped
    return wrap(built, values["hostname"] or targetHost(inner))


tlswrapClientType = EndpointType(
    PREFIX, "client",
    (
        Arg("endpoint", Nested("client"), help="the client description TLS runs over"),
        Arg("hostname", Host(), None, "name to verify and send as SNI (default: the "
            "wrapped description's target host)"),
        Arg("trustRoots", Path(), None, "CA certificates to trust, file or directory "
            "(default: the platform's)"),
        Arg("pin", _Pins(), None, "accept only these keys: sha256/BASE64|...; without "
            "trustRoots they replace CA verification"),
        Arg("verify", Choice("required", "none"), "required",
            "none: do not verify the server at all (insecure)"),
        Arg("certificate", Path(), None, "PEM file with a client certificate (and its key "
            "unless key=)"),
        Arg("key", Path(), None, "PEM file with the client certificate's key"),
        *_COMMON,
        Arg("alpn", _Protocols(), None, "ALPN protocols to offer, like h2,http/1.1"),
        Arg("handshakeTimeout", Seconds(allowZero=True), 30.0,
            "seconds for the TLS handshake (0: no deadline)"),
        Arg("verifyTarget", Bool(), False, "around srv: only: verify each target's own "
            "name instead of the SRV domain (the default, as RFC 6125 recommends)"),
    ),
    "TLS around any client description, verifying the server (platform CAs, "
    "trustRoots=, or pins) and the host name by default; client certificates, ALPN",
    build=_buildClient,
    validate=_checkClient,
    insecure=_insecureClient,
)

