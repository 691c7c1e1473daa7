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
import datetime
import hashlib
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IProtocolNegotiationFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    AcceptableCiphers,
    Certificate,
    CertificateOptions,
    TLSVersion,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from endpointkit._compat import clientConnectionFrom, wrapClientTLS, wrapServerTLS
from endpointkit._grammar import DescriptionError, buildDescription, didYouMean
from endpointkit._kinds import Bool, Choice, Host, Invalid, Kind, Nested, Path, Seconds, String
from endpointkit._schema import Arg, EndpointType, Parsed
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

_log = Logger()

PREFIX = "tlswrap"


# Errors.


class TLSFileError(DescriptionError):
    """
    A certificate, key or CA file (or directory) named by a C{tlswrap:}
    argument cannot be used; the message names the argument and the file.

    @ivar path: the file or directory.
    """

    def __init__(self, argument: str, path: str, problem: str) -> None:
        DescriptionError.__init__(
            self, f"{PREFIX}: argument {argument!r}: {path!r} {problem}",
            prefix=PREFIX, argument=argument, value=path)
        self.path = path


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


# Reading PEM files.

_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.S)
_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


class _Unusable(Exception):
    """
    A file cannot be used; the argument is why, as a phrase that follows the
    file's name.
    """


def _fileSignature(path: str) -> tuple[int, int, int]:
    info = os.stat(path)
    return (info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass(frozen=True)
class _PEMFile:
    """
    The certificates and keys of one PEM file, as read.
    """

    path: str
    signature: tuple[int, int, int]
    certificates: tuple[x509.Certificate, ...]
    keys: tuple[PrivateKeyTypes, ...]


def _readPEM(path: str) -> _PEMFile:
    """
    Read one PEM file.

    @raise _Unusable: it cannot be read, or a block in it is incomplete or
        does not parse.
    """
    try:
        signature = _fileSignature(path)
        with open(path, "rb") as f:
            data = f.read(4 * 1024 * 1024 + 1)
    except FileNotFoundError:
        raise _Unusable("does not exist") from None
    except IsADirectoryError:
        raise _Unusable("is a directory, not a PEM file") from None
    except OSError as e:
        raise _Unusable(f"cannot be read ({e.strerror or e})") from None
    if len(data) > 4 * 1024 * 1024:
        raise _Unusable("is larger than 4 MiB, which no PEM bundle is")
    certificates: list[x509.Certificate] = []
    keys: list[PrivateKeyTypes] = []
    found = 0
    for match in _BLOCK.finditer(data):
        found += 1
        label = match.group(1)
        block = match.group(0)
        if label == b"CERTIFICATE":
            try:
                certificates.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                raise _Unusable(f"has a certificate that does not parse (block {found})") from None
        elif label == b"ENCRYPTED PRIVATE KEY":
            raise _Unusable("has an encrypted private key; give it unencrypted "
                            "(openssl pkey -in KEY -out PLAIN)")
        elif label.endswith(b"PRIVATE KEY"):
            try:
                keys.append(serialization.load_pem_private_key(block, None))
            except (ValueError, TypeError) as e:
                raise _Unusable(f"has a private key that does not parse ({e})") from None
    begun = len(_BEGIN.findall(data))
    if begun > found:
        raise _Unusable("is incomplete: a BEGIN line has no END line (half written?)")
    if not found:
        raise _Unusable("holds no PEM certificate or key")
    return _PEMFile(path, signature, tuple(certificates), tuple(keys))


def _spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def spkiPin(certificate: x509.Certificate) -> str:
    """
    The pin of C{certificate}'s key, as C{pin=} takes it: C{sha256/} and the
    base64 of the SHA-256 hash of its DER SubjectPublicKeyInfo.
    """
    digest = hashlib.sha256(_spki(certificate.public_key())).digest()
    return "sha256/" + base64.b64encode(digest).decode("ascii")


def _isCA(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        # A version 1 root: self-issued, without extensions.
        return certificate.issuer == certificate.subject
    return bool(constraints.value.ca)


def _names(certificate: x509.Certificate) -> list[str]:
    """
    The DNS names (lower case) and IP addresses a certificate is for, or its
    common names when it has no subjectAltName.
    """
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [str(a.value).lower() for a in
                certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return ([n.lower() for n in sans.get_values_for_type(x509.DNSName)]
            + [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)])


def _shownName(name: x509.Name) -> str:
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common:
        return f"CN={common[0].value!s}"
    return name.rfc4514_string() or "(empty name)"


def _validity(certificate: x509.Certificate) -> tuple[datetime.datetime, datetime.datetime]:
    return certificate.not_valid_before_utc, certificate.not_valid_after_utc


@dataclass(frozen=True)
class _Identity:
    """
    A certificate, its chain and its key: what a server presents.
    """

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes
    names: tuple[str, ...]
    path: str


def _chainFor(leaf: x509.Certificate, pool: Sequence[x509.Certificate]) -> tuple[x509.Certificate, ...]:
    chain: list[x509.Certificate] = []
    current = leaf
    for _ in range(10):
        if current.issuer == current.subject:
            break
        issuer = next((c for c in pool if c.subject == current.issuer and c not in chain
                       and c != current), None)
        if issuer is None:
            break
        chain.append(issuer)
        current = issuer
    return tuple(chain)


def _pair(files: Sequence[_PEMFile]) -> tuple[list[_Identity], list[tuple[str, str]]]:
    """
    Pair the keys of C{files} with their certificates (by public key) and
    chain each to the other certificates.

    @return: the identities, in file order, and the problems as
        C{(path, phrase)}: keys without a certificate, and certificates that
        are not CAs without a key.
    """
    pool = [(f.path, c) for f in files for c in f.certificates]
    bySpki: dict[bytes, tuple[str, x509.Certificate]] = {}
    for path, certificate in pool:
        bySpki.setdefault(_spki(certificate.public_key()), (path, certificate))
    identities: list[_Identity] = []
    problems: list[tuple[str, str]] = []
    used: set[bytes] = set()
    for f in files:
        for key in f.keys:
            spki = _spki(key.public_key())
            found = bySpki.get(spki)
            if found is None:
                problems.append((f.path, "has a private key that matches no certificate"))
                continue
            used.add(spki)
            certificate = found[1]
            others = [c for _, c in pool if c is not certificate]
            identities.append(_Identity(certificate, _chainFor(certificate, others), key,
                                        tuple(_names(certificate)), found[0]))
    for path, certificate in pool:
        if _spki(certificate.public_key()) not in used and not _isCA(certificate):
            problems.append((path, f"has the certificate {_shownName(certificate.subject)} "
                             "but no private key matches it"))
    identities.sort(key=lambda i: i.path)
    return identities, problems


def _pemFilesIn(directory: str) -> list[str]:
    names = sorted(os.listdir(directory))
    found = []
    for name in names:
        if name.startswith(".") or not name.lower().endswith((".pem", ".crt", ".cer")):
            continue
        path = os.path.join(directory, name)
        try:
            if stat.S_ISREG(os.stat(path).st_mode):
                found.append(path)
        except OSError:
            continue
    return found


def _loadCAs(argument: str, path: str) -> list[x509.Certificate]:
    """
    The CA certificates of a PEM file or of the PEM files of a directory.

    @raise TLSFileError: none can be read, or none is a CA certificate.
    """
    if os.path.isdir(path):
        paths = _pemFilesIn(path)
        if not paths:
            raise TLSFileError(argument, path, "is a directory with no *.pem, *.crt or "
                               "*.cer file")
    else:
        paths = [path]
    certificates: list[x509.Certificate] = []
    for each in paths:
        try:
            certificates += _readPEM(each).certificates
        except _Unusable as e:
            if len(paths) == 1:
                raise TLSFileError(argument, each, str(e)) from None
            _log.warn("tlswrap: {argument}: skipped {path}: it {why}", argument=argument,
                      path=each, why=str(e))
    cas = [c for c in certificates if _isCA(c)]
    if not cas:
        what = f"{len(certificates)} certificate(s), none of them a CA" if certificates \
            else "no certificate"
        raise TLSFileError(argument, path, f"holds {what} (a CA certificate has "
                           "basicConstraints CA:TRUE)")
    return cas


def _checkValidity(identity: _Identity, now: datetime.datetime | None = None) -> str | None:
    """
    A sentence when the certificate is expired or not yet valid, else None.
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    start, end = _validity(identity.certificate)
    names = ", ".join(identity.names) or _shownName(identity.certificate.subject)
    if now > end:
        state = "has expired"
    elif now < start:
        state = "is not valid yet"
    else:
        return None
    return (f"tlswrap: the certificate for {names} in {identity.path} {state} "
            f"(valid from {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} UTC)")


# TLS versions, ciphers, ALPN.

_VERSIONS = {"1.0": TLSVersion.TLSv1_0, "1.1": TLSVersion.TLSv1_1,
             "1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}


def _versionOptions(minVersion: str) -> dict[str, Any]:
    version = _VERSIONS[minVersion]
    if minVersion in ("1.0", "1.1"):
        return {"insecurelyLowerMinimumTo": version}
    return {"raiseMinimumTo": version}


def _cipherOptions(argument: str, ciphers: str | None) -> dict[str, Any]:
    if ciphers is None:
        return {}
    ciphersFrom: Any = AcceptableCiphers.fromOpenSSLCipherString
    return {"acceptableCiphers": ciphersFrom(ciphers)}


def _certificateOptions(argument: str, **kw: Any) -> CertificateOptions:
    try:
        return CertificateOptions(**kw)
    except ValueError as e:
        if "ciphers" in str(e):
            raise DescriptionError(
                f"{PREFIX}: argument 'ciphers' selects no cipher this OpenSSL has "
                "(an OpenSSL cipher string, like ECDHE+AESGCM)",
                prefix=PREFIX, argument="ciphers") from None
        raise DescriptionError(f"{PREFIX}: argument {argument!r}: {e}",
                               prefix=PREFIX, argument=argument) from None
    except SSL.Error as e:
        raise DescriptionError(f"{PREFIX}: argument {argument!r}: OpenSSL refused it: "
                               f"{_sslReason(e)}", prefix=PREFIX, argument=argument) from None


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


# The server side.


@dataclass(frozen=True)
class ReloadResult:
    """
    What one look at the certificate files did.

    @ivar loaded: files read again and now in use.
    @ivar kept: files whose new content cannot be used, with why; the
        previous certificate stays in use for them.
    """

    loaded: tuple[str, ...] = ()
    kept: tuple[tuple[str, str], ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.loaded)


@implementer(IOpenSSLServerConnectionCreator)
class ServerCertificates:
    """
    The certificates a C{tlswrap:} server presents, their TLS settings, and
    their reloading: an L{IOpenSSLServerConnectionCreator} whose contexts
    come from Twisted's L{CertificateOptions}, one per certificate, switched
    by SNI.

    @param cert: PEM file with the certificate, chain and (unless C{key}) key.
    @param key: PEM file with the key.
    @param certs: directory of PEM files, chosen among by SNI.
    @param clientCA: PEM file or directory of CA certificates for client
        certificates.
    @param verify: C{"required"} or C{"optional"} client certificates, with
        C{clientCA}.
    @param minVersion: C{"1.2"}, C{"1.3"} (or, insecure, C{"1.0"}, C{"1.1"}).
    @param ciphers: an OpenSSL cipher string, or L{None} for Twisted's.
    @param alpn: ALPN protocol IDs, or L{None} for the application factory's.
    @param reload: seconds between looks at the files (0: only on
        L{ServerCertificates.reload}).
    @param clock: for C{reload}'s interval (default: the reactor).

    @raise TLSFileError: a file cannot be used.
    """

    def __init__(self, *, cert: str | None = None, key: str | None = None,
                 certs: str | None = None, clientCA: str | None = None,
                 verify: str = "required", minVersion: str = "1.2",
                 ciphers: str | None = None, alpn: Sequence[str] | None = None,
                 reload: float = 60.0, clock: Any = None) -> None:
        if (cert is None) == (certs is None):
            raise DescriptionError(f"{PREFIX}: give one of 'cert' (a PEM file) and 'certs' "
                                   "(a directory of PEM files)", prefix=PREFIX)
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock: Any = clock
        self.cert = cert
        self.key = key
        self.certs = certs
        self.reloadInterval = reload
        self._alpn = None if alpn is None else [p.encode("ascii") for p in alpn]
        extra: dict[str, Any] = {**_versionOptions(minVersion), **_cipherOptions("ciphers", ciphers)}
        self.clientCAs: list[x509.Certificate] = []
        if clientCA is not None:
            self.clientCAs = _loadCAs("clientCA", clientCA)
            extra.update(verify=True, requireCertificate=verify == "required",
                         caCerts=[X509.from_cryptography(c) for c in self.clientCAs])
        self._extra = extra
        self._applied: dict[str, _PEMFile] = {}
        self._identities: list[_Identity] = []
        self._byName: dict[str, SSL.Context] = {}
        self._default: SSL.Context | None = None
        self._nextCheck = 0.0
        self._loadStrictly()
        self._scheduleNext()

    def __repr__(self) -> str:
        where = f"cert={self.cert!r}" if self.cert is not None else f"certs={self.certs!r}"
        return f"<ServerCertificates {where} names={self.names()!r}>"

    # What is served.

    def names(self) -> list[str]:
        """
        The names served, each certificate's in order (the default first).
        """
        return [name for identity in self._identities for name in identity.names]

    @property
    def defaultCertificate(self) -> x509.Certificate:
        """
        The certificate for clients that send no name, or a name no
        certificate has.
        """
        return self._identities[0].certificate

    def certificateFor(self, name: str | None) -> x509.Certificate:
        """
        The certificate a client that sends C{name} (SNI) gets.
        """
        return self._identityFor(name).certificate

    def _identityFor(self, name: str | None) -> _Identity:
        if name:
            lowered = name.lower().rstrip(".")
            candidates = [lowered]
            if "." in lowered:
                candidates.append("*." + lowered.split(".", 1)[1])
            for candidate in candidates:
                for identity in self._identities:
                    if candidate in identity.names:
                        return identity
        return self._identities[0]

    # Loading.

    def _paths(self) -> list[str]:
        if self.cert is not None:
            return [self.cert] + ([self.key] if self.key is not None else [])
        assert self.certs is not None
        return _pemFilesIn(self.certs)

    def _loadStrictly(self) -> None:
        if self.certs is not None:
            if not os.path.isdir(self.certs):
                raise TLSFileError("certs", self.certs, "is not a directory" if
                                   os.path.exists(self.certs) else "does not exist")
            files: list[_PEMFile] = []
            skipped: list[str] = []
            for path in self._paths():
                try:
                    files.append(_readPEM(path))
                except _Unusable as e:
                    skipped.append(f"{os.path.basename(path)} {e}")
            identities, problems = _pair(files)
            skipped += [f"{os.path.basename(p)} {why}" for p, why in problems]
            if not identities:
                detail = "; ".join(skipped) if skipped else "it has no *.pem file"
                raise TLSFileError("certs", self.certs, f"has no usable certificate with its "
                                   f"key ({detail})")
            for reason in skipped:
                _log.warn("tlswrap: certs: {directory}: skipped {reason}",
                          directory=self.certs, reason=reason)
        else:
            assert self.cert is not None
            files = []
            named: list[tuple[str, str | None]] = [("cert", self.cert), ("key", self.key)]
            for argument, given in named:
                if given is None:
                    continue
                try:
                    files.append(_readPEM(given))
                except _Unusable as e:
                    raise TLSFileError(argument, given, str(e)) from None
            identities = self._single(files)
        self._apply(files, identities)

    def _single(self, files: Sequence[_PEMFile]) -> list[_Identity]:
        """
        The identity of C{cert=} and C{key=}.

        @raise TLSFileError: no certificate, no key or several, or the key
            does not match.
        """
        certFile = files[0]
        keyFile = files[-1]
        keys = [k for f in files for k in f.keys]
        certificates = certFile.certificates
        if not certificates:
            raise TLSFileError("cert", certFile.path, "holds no certificate")
        if not keys:
            where = "key" if self.key is not None else "cert"
            hint = "" if self.key is not None else " (give key= with the key's file)"
            raise TLSFileError(where, keyFile.path, f"holds no private key{hint}")
        if len(keys) > 1:
            raise TLSFileError("key" if self.key else "cert", keyFile.path,
                               f"holds {len(keys)} private keys; give one")
        key = keys[0]
        spki = _spki(key.public_key())
        leaf = next((c for c in certificates if _spki(c.public_key()) == spki), None)
        if leaf is None:
            argument = "key" if self.key is not None else "cert"
            raise TLSFileError(argument, keyFile.path,
                               f"has a key that does not match the certificate "
                               f"{_shownName(certificates[0].subject)} in {certFile.path}")
        others = [c for c in certificates if c is not leaf]
        return [_Identity(leaf, _chainFor(leaf, others) or tuple(others), key,
                          tuple(_names(leaf)), certFile.path)]

    def _contextFor(self, identity: _Identity) -> SSL.Context:
        options = _certificateOptions(
            "cert" if self.cert is not None else "certs",
            privateKey=PKey.from_cryptography_key(cast(Any, identity.key)),
            certificate=X509.from_cryptography(identity.certificate),
            extraCertChain=[X509.from_cryptography(c) for c in identity.chain],
            **self._extra)
        context: SSL.Context = options.getContext()
        context.set_tlsext_servername_callback(self._switchContext)
        context.set_alpn_select_callback(self._selectProtocol)
        return context

    def _apply(self, files: Sequence[_PEMFile], identities: list[_Identity]) -> None:
        contexts = [self._contextFor(identity) for identity in identities]
        byName: dict[str, SSL.Context] = {}
        for identity, context in zip(identities, contexts, strict=True):
            for name in identity.names:
                byName.setdefault(name, context)
        self._applied = {f.path: f for f in files}
        self._identities = identities
        self._byName = byName
        self._default = contexts[0]

    def warnValidity(self) -> list[str]:
        """
        Log (and return) a warning for each certificate that has expired or
        is not valid yet, with its dates.
        """
        warnings = [w for w in (_checkValidity(i) for i in self._identities) if w]
        for warning in warnings:
            _log.warn("{problem}", problem=warning)
        return warnings

    # Reloading.

    def _scheduleNext(self) -> None:
        if self.reloadInterval > 0:
            self._nextCheck = self._clock.seconds() + self.reloadInterval

    def _maybeReload(self) -> None:
        if self.reloadInterval > 0 and self._clock.seconds() >= self._nextCheck:
            self._scheduleNext()
            try:
                self.reload()
            except Exception:
                _log.failure("tlswrap: while looking at the certificate files")

    def reload(self) -> ReloadResult:
        """
        Look at the files now: read those that changed and use them for new
        handshakes.  A file that cannot be used (half written, key not
        matching) keeps the previous certificate in use, is logged, and is
        looked at again the next time.
        """
        paths = self._paths()
        signatures: dict[str, tuple[int, int, int] | None] = {}
        for path in paths:
            try:
                signatures[path] = _fileSignature(path)
            except OSError:
                signatures[path] = None
        if set(paths) == set(self._applied) and all(
                signatures[p] == self._applied[p].signature for p in paths):
            return ReloadResult()
        files: dict[str, _PEMFile] = {}
        kept: list[tuple[str, str]] = []
        loaded: list[str] = []
        for path in paths:
            previous = self._applied.get(path)
            if previous is not None and signatures[path] == previous.signature:
                files[path] = previous
                continue
            try:
                files[path] = _readPEM(path)
                loaded.append(path)
            except _Unusable as e:
                kept.append((path, str(e)))
                if previous is not None:
                    files[path] = previous
        ordered = [files[p] for p in paths if p in files]
        if self.cert is not None:
            if kept:
                ordered = [self._applied[p] for p in self._applied]
                loaded = []
            try:
                identities = self._single(ordered)
            except TLSFileError as e:
                kept += [(p, e.message) for p in loaded]
                loaded = []
                ordered = list(self._applied.values())
                identities = self._identities
        else:
            identities, problems = _pair(ordered)
            bad = {p for p, _ in problems if p in loaded}
            if bad:
                kept += [(p, why) for p, why in problems if p in bad]
                ordered = [self._applied[f.path] if f.path in bad and f.path in self._applied
                           else f for f in ordered if f.path not in bad or f.path in self._applied]
                loaded = [p for p in loaded if p not in bad]
                identities, _ = _pair(ordered)
            if not identities:
                kept += [(p, "left no usable certificate") for p in loaded]
                loaded = []
                ordered = list(self._applied.values())
                identities = self._identities
        for path, why in kept:
            _log.warn("tlswrap: kept the certificate in use: {path} {why}", path=path, why=why)
        if loaded or set(f.path for f in ordered) != set(self._applied):
            self._apply(ordered, identities)
            if loaded:
                _log.info("tlswrap: reloaded {files}; serving {names}",
                          files=", ".join(loaded), names=", ".join(self.names()))
            self.warnValidity()
        return ReloadResult(tuple(loaded), tuple(kept))

    # IOpenSSLServerConnectionCreator.

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """
        A connection for one handshake: with the default certificate, switched
        by the name the client sends; the files are looked at first when
        C{reload} seconds have passed.
        """
        self._maybeReload()
        assert self._default is not None
        return SSL.Connection(self._default, None)

    def _switchContext(self, connection: SSL.Connection) -> None:
        name = connection.get_servername()
        if not name or len(self._identities) == 1:
            return
        text = name.decode("ascii", "replace").lower().rstrip(".")
        context = self._byName.get(text)
        if context is None and "." in text:
            context = self._byName.get("*." + text.split(".", 1)[1])
        if context is not None and context is not connection.get_context():
            connection.set_context(context)

    def _selectProtocol(self, connection: SSL.Connection, offered: list[bytes]) -> Any:
        ours = self._alpn
        if ours is None:
            tlsProtocol = connection.get_app_data()
            wrapped = getattr(getattr(tlsProtocol, "factory", None), "wrappedFactory", None)
            negotiation = IProtocolNegotiationFactory(wrapped, None)
            ours = list(negotiation.acceptableProtocols()) if negotiation is not None else []
        for protocol in ours:
            if protocol in offered:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS


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


def _sslReason(error: BaseException) -> str:
    args = getattr(error, "args", ())
    reasons: list[str] = []
    if args and isinstance(args[0], list):
        for item in args[0]:
            if isinstance(item, tuple) and item:
                reasons.append(str(item[-1]))
    return "; ".join(r for r in reasons if r) or str(error) or type(error).__name__


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


_DONE: Any = Failure(ConnectionDone())  # type: ignore[no-untyped-call]


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

    def connectionLost(self, reason: Failure = _DONE) -> None:
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


def _clientIdentity(certificate: str, key: str | None) -> _Identity:
    files = []
    for argument, path in (("certificate", certificate), ("key", key)):
        if path is None:
            continue
        try:
            files.append(_readPEM(path))
        except _Unusable as e:
            raise TLSFileError(argument, path, str(e)) from None
    certificates = files[0].certificates
    keys = [k for f in files for k in f.keys]
    if not certificates:
        raise TLSFileError("certificate", certificate, "holds no certificate")
    if len(keys) != 1:
        where, path = ("key", key) if key is not None else ("certificate", certificate)
        hint = "" if key is not None else " (give key= with the key's file)"
        raise TLSFileError(where, path, f"holds {len(keys) or 'no'} private key"
                           f"{'s' if len(keys) > 1 else ''}{hint}")
    spki = _spki(keys[0].public_key())
    leaf = next((c for c in certificates if _spki(c.public_key()) == spki), None)
    if leaf is None:
        raise TLSFileError("key" if key is not None else "certificate", key or certificate,
                           f"has a key that does not match the certificate "
                           f"{_shownName(certificates[0].subject)} in {certificate}")
    return _Identity(leaf, tuple(c for c in certificates if c is not leaf), keys[0],
                     tuple(_names(leaf)), certificate)


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
