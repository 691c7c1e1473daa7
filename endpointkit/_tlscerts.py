"""
The certificates of C{tlswrap:} (L{endpointkit.tlswrap}): reading PEM files,
pairing keys with their certificates by public key, the chain and the names
of each identity, validity checks, trust roots (C{clientCA=},
C{trustRoots=}), SPKI pins (L{spkiPin}), the TLS options both sides share,
and the server's certificate store, L{ServerCertificates}: SNI selection
(wildcards included), reloading by size, modification time and inode
(L{ReloadResult}), and the connection creator Twisted's TLS wrapper uses.

It also holds L{TLSFileError}, the family's error for a file that cannot be
used, so that the store can raise it without importing the family module;
L{endpointkit.tlswrap} re-exports both public names.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IProtocolNegotiationFactory
from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion
from twisted.logger import Logger
from zope.interface import implementer

from endpointkit._grammar import DescriptionError

__all__ = ["ReloadResult", "ServerCertificates", "TLSFileError", "spkiPin"]

# Logged under the family's namespace, as before the split.
_log = Logger(namespace="endpointkit.tlswrap")

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


def _readNamed(named: Iterable[tuple[str, str | None]]) -> list[_PEMFile]:
    """
    Read the PEM files given to the named arguments (those given), in
    order; a file that cannot be used is a L{TLSFileError} naming its
    argument.
    """
    files = []
    for argument, path in named:
        if path is None:
            continue
        try:
            files.append(_readPEM(path))
        except _Unusable as e:
            raise TLSFileError(argument, path, str(e)) from None
    return files


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


# TLS versions and ciphers (both sides).

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



def _sslReason(error: BaseException) -> str:
    args = getattr(error, "args", ())
    reasons: list[str] = []
    if args and isinstance(args[0], list):
        for item in args[0]:
            if isinstance(item, tuple) and item:
                reasons.append(str(item[-1]))
    return "; ".join(r for r in reasons if r) or str(error) or type(error).__name__



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
            files = _readNamed((("cert", self.cert), ("key", self.key)))
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



# The client's own certificate.


def _clientIdentity(certificate: str, key: str | None) -> _Identity:
    files = _readNamed((("certificate", certificate), ("key", key)))
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

