"""
The client side of C{tlswrap:} (L{endpointkit.tlswrap}): the verification
of the server's certificate (the chain against the trust roots, the host
name or IP address through service_identity, SPKI pins), the handshake gate
that connects the application only once the handshake is done, and the
errors that say why a handshake failed (L{TLSHandshakeError} and its
subclasses), which L{endpointkit.tlswrap} re-exports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet import defer
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocolFactory,
    IProtocolNegotiationFactory,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from endpointkit._compat import clientConnectionFrom
from endpointkit._tlscerts import _names, _shownName, _sslReason, spkiPin

if TYPE_CHECKING:
    from endpointkit.tlswrap import TLSWrapClientEndpoint

__all__ = [
    "CertificateHostnameMismatch",
    "CertificateNotTrusted",
    "PinMismatch",
    "TLSHandshakeError",
    "TLSHandshakeTimeout",
    "TLSVersionRefused",
]

# Logged under the family's namespace, as before the split.
_log = Logger(namespace="endpointkit.tlswrap")


# Errors.


class TLSHandshakeError(ConnectError):
    """
    The TLS handshake of a C{tlswrap:} client failed; the message says why.

    @ivar reason: what went wrong.
    @ivar hostname: the host name that was to be verified, if any.
    """

    def __init__(self, reason: str, hostname: str | None = None) -> None:
        Exception.__init__(self, reason)
        self.osError = None
        self.reason = reason
        self.hostname = hostname

    def __str__(self) -> str:
        where = f" with {self.hostname}" if self.hostname else ""
        return f"TLS handshake{where} failed: {self.reason}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class CertificateHostnameMismatch(TLSHandshakeError):
    """
    The server's certificate is not for the host name verified.

    @ivar names: the DNS names and IP addresses the certificate is for.
    """

    def __init__(self, hostname: str, names: Sequence[str]) -> None:
        shown = ", ".join(names) if names else "no names"
        TLSHandshakeError.__init__(
            self, f"the certificate is for {shown}, not {hostname}", hostname)
        self.names = tuple(names)


class CertificateNotTrusted(TLSHandshakeError):
    """
    The server's certificate chain does not verify against the trust roots
    (unknown issuer, self-signed, expired...).

    @ivar subject: the subject of the certificate that failed.
    @ivar issuer: its issuer.
    @ivar code: OpenSSL's X509_V_ERR code.
    """

    def __init__(self, why: str, subject: str, issuer: str, code: int,
                 hostname: str | None = None) -> None:
        TLSHandshakeError.__init__(
            self, f"the certificate {subject} (issued by {issuer}) is not trusted: {why}",
            hostname)
        self.subject = subject
        self.issuer = issuer
        self.code = code


class PinMismatch(TLSHandshakeError):
    """
    The server's key matches none of the pins.

    @ivar expected: the pins given.
    @ivar actual: the pins of the server's keys (the leaf's first).
    """

    def __init__(self, expected: Sequence[str], actual: Sequence[str],
                 hostname: str | None = None) -> None:
        TLSHandshakeError.__init__(
            self, f"the server's key has pin {actual[0] if actual else '(none)'}, "
            f"which is not among {'|'.join(expected)}", hostname)
        self.expected = tuple(expected)
        self.actual = tuple(actual)


class TLSVersionRefused(TLSHandshakeError):
    """
    The two sides have no TLS version in common (for example a server
    limited to TLS 1.2 and C{minVersion=1.3}).
    """


class TLSHandshakeTimeout(TLSHandshakeError):
    """
    The handshake did not finish within C{handshakeTimeout} seconds.
    """


# Verifying the server.

_X509_ERRORS = {
    2: "the issuer's certificate is not among the trust roots (unknown issuer)",
    9: "it is not valid yet",
    10: "it has expired",
    18: "it is self-signed and not among the trust roots",
    19: "the chain ends in a self-signed certificate that is not among the trust roots",
    20: "its issuer is not among the trust roots (unknown issuer)",
    21: "its issuer is not among the trust roots (unknown issuer)",
    24: "an issuer in the chain is not a CA",
    26: "it is not meant for TLS servers",
}



_VERSION_REASONS = ("unsupported protocol", "protocol version", "no protocols available",
                    "wrong ssl version", "version too low", "tlsv1 alert protocol version")



@dataclass
class _Verification:
    """
    What the verify callback saw on one connection.
    """

    problem: TLSHandshakeError | None = None
    chain: list[x509.Certificate] = field(default_factory=list)


@implementer(IOpenSSLClientConnectionCreator)
class _ClientCreator:
    """
    Client connections from Twisted's L{CertificateOptions}, with the
    verification L{optionsForClientTLS} does (chain, then host name through
    service_identity) plus pins, recording why it fails.
    """

    def __init__(self, options: CertificateOptions, hostname: str | None, verifyChain: bool,
                 pins: Sequence[str], verifyPeer: bool) -> None:
        self._options = options
        self.hostname = hostname
        self._verifyChain = verifyChain
        self._pins = tuple(pins)
        self._verifyPeer = verifyPeer
        self._isIP = False
        self._sni: bytes | None = None
        if hostname:
            try:
                ipaddress.ip_address(hostname.partition("%")[0])
                self._isIP = True
            except ValueError:
                self._sni = hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection: SSL.Connection = clientConnectionFrom(self._options, tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        if not self._verifyPeer:
            connection.set_verify(SSL.VERIFY_NONE, None)
            return connection
        state = _Verification()
        gate = getattr(tlsProtocol, "wrappedProtocol", None)
        if isinstance(gate, _HandshakeGate):
            gate.verification = state
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                              self._callback(state))
        return connection

    def _callback(self, state: _Verification) -> Callable[..., bool]:
        def verify(connection: SSL.Connection, certificate: X509, code: int, depth: int,
                   ok: int) -> bool:
            try:
                return self._verify(state, certificate.to_cryptography(), code, depth, bool(ok))
            except Exception:
                _log.failure("tlswrap: while verifying the server's certificate")
                state.problem = TLSHandshakeError("verifying the certificate raised an "
                                                  "error (see the log)", self.hostname)
                return False
        return verify

    def _verify(self, state: _Verification, certificate: x509.Certificate, code: int,
                depth: int, ok: bool) -> bool:
        state.chain.append(certificate)
        if self._verifyChain and not ok:
            why = _X509_ERRORS.get(code, f"OpenSSL verification error {code}")
            state.problem = CertificateNotTrusted(
                why, _shownName(certificate.subject), _shownName(certificate.issuer), code,
                self.hostname)
            return False
        if depth != 0:
            return True
        if self._verifyChain and self.hostname:
            problem = self._checkName(certificate)
            if problem is not None:
                state.problem = problem
                return False
        if self._pins:
            keys = state.chain if self._verifyChain else [certificate]
            actual = [spkiPin(c) for c in reversed(keys)]
            if not set(actual) & set(self._pins):
                state.problem = PinMismatch(self._pins, actual, self.hostname)
                return False
        return True

    def _checkName(self, certificate: x509.Certificate) -> TLSHandshakeError | None:
        from service_identity import CertificateError, VerificationError
        from service_identity.cryptography import (
            verify_certificate_hostname,
            verify_certificate_ip_address,
        )

        assert self.hostname is not None
        try:
            if self._isIP:
                verify_certificate_ip_address(certificate, self.hostname.partition("%")[0])
            else:
                verify_certificate_hostname(certificate, self._sni.decode("ascii")
                                            if self._sni else self.hostname)
        except (VerificationError, CertificateError):
            return CertificateHostnameMismatch(self.hostname, _names(certificate))
        return None


@implementer(IHandshakeListener)
class _HandshakeGate(Protocol):
    """
    Between the TLS transport and the application: the application's
    protocol is built and connected once the handshake is done, so that
    C{connect} fails with the handshake's error.
    """

    verification: _Verification | None = None

    def __init__(self, factory: _GateFactory, address: IAddress | None) -> None:
        self.gateFactory = factory
        self.address = address
        self.app: Any = None
        self.ready: defer.Deferred[Any] = defer.Deferred()
        self._timer: Any = None
        self._buffer: list[bytes] = []
        self._timedOut = False

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        owner = self.gateFactory.owner
        if owner.handshakeTimeout:
            self._timer = owner.clock.callLater(owner.handshakeTimeout, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._timedOut = True
        self.abort()

    def abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def handshakeCompleted(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.app is not None or self.ready.called:
            return
        app = self.gateFactory.wrappedFactory.buildProtocol(self.address)
        if app is None:
            self.ready.errback(TLSHandshakeError("the application's factory built no "
                                                 "protocol", self.gateFactory.owner.hostname))
            cast(Any, self.transport).loseConnection()
            return
        relayed = [i for i in (IHalfCloseableProtocol,) if i.providedBy(app)]
        if relayed:
            alsoProvides(self, *relayed)
        self.app = app
        app.makeConnection(self.transport)
        if IHandshakeListener.providedBy(app):
            app.handshakeCompleted()
        self.ready.callback(app)
        for data in self._buffer:
            app.dataReceived(data)
        self._buffer = []

    def dataReceived(self, data: bytes) -> None:
        if self.app is not None:
            self.app.dataReceived(data)
        else:
            self._buffer.append(data)

    def readConnectionLost(self) -> None:
        if self.app is not None:
            self.app.readConnectionLost()

    def writeConnectionLost(self) -> None:
        if self.app is not None:
            self.app.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.app is not None:
            self.app.connectionLost(reason)
            self.app = None
            return
        if not self.ready.called:
            self.ready.errback(self._explain(reason))

    def _explain(self, reason: Failure) -> TLSHandshakeError:
        owner = self.gateFactory.owner
        if self._timedOut:
            return TLSHandshakeTimeout(f"no handshake within {owner.handshakeTimeout:g} s",
                                       owner.hostname)
        if self.verification is not None and self.verification.problem is not None:
            return self.verification.problem
        if isinstance(reason.value, SSL.Error):
            text = _sslReason(reason.value)
            if any(r in text.lower() for r in _VERSION_REASONS):
                return TLSVersionRefused(
                    f"the server and this client have no TLS version in common "
                    f"(minVersion={owner.minVersion}; OpenSSL: {text})", owner.hostname)
            return TLSHandshakeError(f"OpenSSL: {text}", owner.hostname)
        if isinstance(reason.value, ConnectError) and not isinstance(
                reason.value, TLSHandshakeError):
            return TLSHandshakeError(str(reason.value), owner.hostname)
        return TLSHandshakeError("the server closed the connection during the handshake "
                                 f"({reason.getErrorMessage()})", owner.hostname)


class _GateFactory(Factory):
    noisy = False

    def __init__(self, owner: TLSWrapClientEndpoint, wrappedFactory: IProtocolFactory) -> None:
        self.owner = owner
        self.wrappedFactory: Any = wrappedFactory
        if IProtocolNegotiationFactory.providedBy(wrappedFactory):
            alsoProvides(self, IProtocolNegotiationFactory)

    def acceptableProtocols(self) -> list[bytes]:
        return list(self.wrappedFactory.acceptableProtocols())

    def doStart(self) -> None:
        self.wrappedFactory.doStart()

    def doStop(self) -> None:
        self.wrappedFactory.doStop()

    def buildProtocol(self, addr: IAddress | None) -> _HandshakeGate:
        return _HandshakeGate(self, addr)
