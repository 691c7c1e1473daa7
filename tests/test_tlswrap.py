"""
Tests for C{tlswrap:}: descriptions and their errors, then the server
against real curl, openssl s_client, systemd-socket-activate and twistd,
and the client against real openssl s_server, nginx, microsocks and
tinyproxy.  Every certificate is made by the test (L{TestCA}).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor, threads
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

import endpointkit
from endpointkit import buildDescription
from endpointkit._grammar import DescriptionError
from endpointkit._lookup import parseDescription
from endpointkit.lifecycle import (
    clientDescriptionFor,
    clientDescriptionsFor,
    gracefulStop,
    listen,
    stopListening,
)
from endpointkit.tlswrap import (
    CertificateHostnameMismatch,
    CertificateNotTrusted,
    PinMismatch,
    ServerCertificates,
    TLSHandshakeError,
    TLSVersionRefused,
    TLSWrapPort,
    reloadCertificates,
    spkiPin,
    targetHost,
)
from tests._support import (
    TestCA,
    freePort,
    requirePeer,
    selfSignedCertificate,
    startMicrosocks,
    startPeer,
    startTinyproxy,
    writeFile,
)

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
WAIT = 30.0


def _pemCertificate(pem: bytes) -> Any:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem)


class _Files:
    """
    A test CA, a server certificate for localhost (and 127.0.0.1, ::1), a
    client certificate, and a client certificate from another CA, written
    to C{directory}.
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.ca = TestCA()
        self.caFile = writeFile(self.path("ca.pem"), self.ca.certificatePEM)
        certificate, key = self.ca.issue("localhost", addresses=["127.0.0.1", "::1"])
        self.serverPEM = certificate
        self.server = writeFile(self.path("server.pem"), certificate + key)
        self.serverCert = writeFile(self.path("server.crt"), certificate)
        self.serverKey = writeFile(self.path("server.key"), key)
        certificate, key = self.ca.issue("alice", client=True)
        self.client = writeFile(self.path("alice.pem"), certificate + key)
        self.clientCert = writeFile(self.path("alice.crt"), certificate)
        self.clientKey = writeFile(self.path("alice.key"), key)
        other = TestCA("another CA")
        certificate, key = other.issue("mallory", client=True)
        self.otherClient = writeFile(self.path("mallory.pem"), certificate + key)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)


class Answer(protocol.Protocol):
    """
    A minimal HTTP/1.x server: after the request head, answers 200 with the
    client certificate's common name and the negotiated ALPN protocol, then
    closes.
    """

    def __init__(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        transport: Any = self.transport
        peer = transport.getPeerCertificate()
        subject = "none"
        if peer is not None:
            from cryptography.x509.oid import NameOID

            names = peer.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            subject = str(names[0].value)
        negotiated = transport.negotiatedProtocol
        body = f"subject={subject} alpn={negotiated.decode() if negotiated else 'none'}\n"
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                        % len(body) + body.encode())
        transport.loseConnection()


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


class Client(protocol.Protocol):
    """
    Sends C{request}, collects the reply, fires C{done} at close.
    """

    def __init__(self, request: bytes = b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n") -> None:
        self.request = request
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.got: defer.Deferred[bytes] | None = None

    def connectionMade(self) -> None:
        if self.request:
            assert self.transport is not None
            self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.got is not None:
            got, self.got = self.got, None
            got.callback(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.received)


def _run(argv: list[str], stdin: bytes = b"", timeout: float = WAIT) -> defer.Deferred[Any]:
    return threads.deferToThread(
        subprocess.run, argv, input=stdin, capture_output=True, timeout=timeout)


def _curl(*args: str) -> defer.Deferred[Any]:
    return _run([requirePeer("curl"), "-sS", "--max-time", "20", *args])


def _port(port: Any) -> int:
    number: int = port.getHost().port
    return number


def _peerSubject(output: str) -> str:
    """
    The common name of the server certificate that openssl s_client printed.
    """
    found = re.search(r"^subject=.*CN\s*=\s*([^,\s/]+)", output, re.M)
    assert found is not None, output[-2000:]
    return found.group(1)


class DescriptionTests(SynchronousTestCase):
    """
    Descriptions, their errors (at parse and at build), warnings and the
    host name taken from the wrapped description.
    """

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())

    def serverError(self, description: str) -> str:
        error = self.assertRaises(DescriptionError, endpointkit.serverFromString, Clock(),
                                  description)
        self.assertNotIn("\n", str(error))
        return str(error)

    def clientError(self, description: str) -> str:
        error = self.assertRaises(DescriptionError, endpointkit.clientFromString, Clock(),
                                  description)
        self.assertNotIn("\n", str(error))
        return str(error)

    def test_builds(self) -> None:
        server = endpointkit.serverFromString(
            Clock(), buildDescription("tlswrap", cert=self.files.server, endpoint="tcp:0"))
        self.assertEqual(server.certificates.names(), ["localhost", "127.0.0.1", "::1"])
        client = endpointkit.clientFromString(
            Clock(), buildDescription("tlswrap", endpoint="tcp:example.com:443"))
        self.assertEqual(client.hostname, "example.com")

    def test_throughTwistedsParser(self) -> None:
        server = endpoints.serverFromString(
            Clock(), buildDescription("tlswrap", cert=self.files.server, endpoint="tcp:0"))
        self.assertEqual(type(server).__name__, "TLSWrapServerEndpoint")

    def test_missingFiles(self) -> None:
        missing = self.files.path("nope.pem")
        self.assertEqual(
            self.serverError(buildDescription("tlswrap", cert=missing, endpoint="tcp:0")),
            f"tlswrap: argument 'cert': {missing!r} does not exist")
        self.assertEqual(
            self.serverError(buildDescription("tlswrap", cert=self.files.serverCert,
                                              key=missing, endpoint="tcp:0")),
            f"tlswrap: argument 'key': {missing!r} does not exist")
        self.assertIn("argument 'cert':", self.serverError(
            buildDescription("tlswrap", cert=self.files.directory, endpoint="tcp:0")))
        self.assertIn("is a directory", self.serverError(
            buildDescription("tlswrap", cert=self.files.directory, endpoint="tcp:0")))
        self.assertIn(
            "argument 'certificate'", self.clientError(buildDescription(
                "tlswrap", certificate=missing, endpoint="tcp:localhost:443")))

    def test_unreadable(self) -> None:
        if os.geteuid() == 0:
            # root reads any file; a directory stands for what cannot be read.
            path = self.files.directory
        else:
            path = writeFile(self.files.path("secret.pem"), b"x")
            os.chmod(path, 0)
        error = self.serverError(buildDescription("tlswrap", cert=path, endpoint="tcp:0"))
        self.assertTrue(error.startswith(f"tlswrap: argument 'cert': {path!r} "), error)

    def test_noKey(self) -> None:
        error = self.serverError(buildDescription("tlswrap", cert=self.files.serverCert,
                                                  endpoint="tcp:0"))
        self.assertEqual(error, f"tlswrap: argument 'cert': {self.files.serverCert!r} holds "
                         "no private key (give key= with the key's file)")

    def test_keyNotMatching(self) -> None:
        error = self.serverError(buildDescription("tlswrap", cert=self.files.serverCert,
                                                  key=self.files.clientKey, endpoint="tcp:0"))
        self.assertEqual(
            error, f"tlswrap: argument 'key': {self.files.clientKey!r} has a key that does "
            f"not match the certificate CN=localhost in {self.files.serverCert}")

    def test_halfWritten(self) -> None:
        data = open(self.files.server, "rb").read()
        path = writeFile(self.files.path("half.pem"), data[: len(data) // 2])
        error = self.serverError(buildDescription("tlswrap", cert=path, endpoint="tcp:0"))
        self.assertIn("a BEGIN line has no END line (half written?)", error)

    def test_directoryWithoutUsablePEM(self) -> None:
        empty = self.files.path("empty")
        os.mkdir(empty)
        writeFile(os.path.join(empty, "junk.pem"), b"not a certificate\n")
        writeFile(os.path.join(empty, "only.pem"), open(self.files.serverCert, "rb").read())
        error = self.serverError(buildDescription("tlswrap", certs=empty, endpoint="tcp:0"))
        self.assertEqual(
            error, f"tlswrap: argument 'certs': {empty!r} has no usable certificate with its "
            "key (junk.pem holds no PEM certificate or key; only.pem has the certificate "
            "CN=localhost but no private key matches it)")

    def test_caFileWithoutCA(self) -> None:
        error = self.serverError(buildDescription(
            "tlswrap", cert=self.files.server, clientCA=self.files.clientCert, endpoint="tcp:0"))
        self.assertEqual(
            error, f"tlswrap: argument 'clientCA': {self.files.clientCert!r} holds 1 "
            "certificate(s), none of them a CA (a CA certificate has basicConstraints CA:TRUE)")
        error = self.clientError(buildDescription(
            "tlswrap", trustRoots=self.files.serverCert, endpoint="tcp:localhost:443"))
        self.assertIn("argument 'trustRoots'", error)

    def test_malformedPins(self) -> None:
        for pin, hint in (("md5/AAAA", "does not start with sha256/"),
                          ("sha256/???", "is not base64"),
                          ("sha256/AAAA", "is 3 bytes, not the 32 of SHA-256")):
            error = self.clientError(buildDescription("tlswrap", pin=pin,
                                                      endpoint="tcp:localhost:443"))
            self.assertTrue(error.startswith("tlswrap: argument 'pin' must be one or more "
                                             "sha256/BASE64 pins"), error)
            self.assertIn(hint, error)

    def test_unknownALPNAndVersion(self) -> None:
        error = self.clientError(buildDescription("tlswrap", alpn="h2,http/1.2",
                                                  endpoint="tcp:localhost:443"))
        self.assertIn("argument 'alpn' must be ALPN protocol IDs from the IANA registry "
                      "('http/1.2' is not one)", error)
        self.assertIn("did you mean 'http/1.1'?", error)
        error = self.serverError(buildDescription("tlswrap", cert=self.files.server,
                                                  minVersion="1.4", endpoint="tcp:0"))
        self.assertIn("argument 'minVersion' must be 1.2 or 1.3", error)

    def test_argumentCombinations(self) -> None:
        self.assertIn("needs one of 'cert'", self.serverError("tlswrap:endpoint=tcp\\:0"))
        self.assertIn("needs one of 'cert'", self.serverError(buildDescription(
            "tlswrap", cert=self.files.server, certs=self.files.directory, endpoint="tcp:0")))
        self.assertIn("argument 'verify' needs clientCA=", self.serverError(buildDescription(
            "tlswrap", cert=self.files.server, verify="optional", endpoint="tcp:0")))
        self.assertIn("argument 'pin' checks the server, which verify=none turns off",
                      self.clientError(buildDescription(
                          "tlswrap", verify="none", pin="sha256/" + "A" * 43 + "=",
                          endpoint="tcp:localhost:443")))

    def test_hostnameNeeded(self) -> None:
        error = self.clientError(buildDescription("tlswrap", endpoint="unix:/run/app.sock"))
        self.assertEqual(error, "tlswrap: argument 'hostname' is needed: unix: has no host "
                         "to verify the certificate against (give hostname=NAME)")
        built = endpointkit.clientFromString(Clock(), buildDescription(
            "tlswrap", hostname="app.internal", endpoint="unix:/run/app.sock"))
        self.assertEqual(built.hostname, "app.internal")

    def test_targetHost(self) -> None:
        cases = {
            "tcp:example.com:443": "example.com",
            "hostname:example.org:443": "example.org",
            "tcp:\\:\\:1:443": "::1",
            "timeout:3:endpoint=tcp\\:a.example\\:443": "a.example",
            "socks5:target.example:443:endpoint=tcp\\:127.0.0.1\\:1080": "target.example",
            "httpconnect:t.example:443:endpoint=tcp\\:127.0.0.1\\:3128": "t.example",
            "timeout:3:endpoint=socks5\\:deep.example\\:443\\:endpoint="
            "tcp\\\\\\:127.0.0.1\\\\\\:1080": "deep.example",
            "unix:/run/app.sock": None,
            "memory:name": None,
        }
        for description, host in cases.items():
            self.assertEqual(targetHost(parseDescription(description, "client")), host,
                             description)

    def test_insecureWarnings(self) -> None:
        parsed = parseDescription(buildDescription("tlswrap", verify="none", minVersion="1.1",
                                                   endpoint="tcp:localhost:443"), "client")
        self.assertEqual(parsed.warnings(), [
            "tlswrap: verify=none: the server's certificate is not verified, so anyone on "
            "the way can pose as the server",
            "tlswrap: minVersion=1.1 accepts TLS versions below 1.2"])
        parsed = parseDescription(buildDescription(
            "tlswrap", cert=self.files.server, minVersion="1.0", endpoint="tcp:0"), "server")
        self.assertEqual(parsed.warnings(),
                         ["tlswrap: minVersion=1.0 accepts TLS versions below 1.2"])
        secure = parseDescription(buildDescription("tlswrap", endpoint="tcp:localhost:443"),
                                  "client")
        self.assertEqual(secure.warnings(), [])

    def test_expiredWarnedAtListen(self) -> None:
        certificate, key = self.files.ca.issue("old.example", validFrom=-10, validTo=-1)
        path = writeFile(self.files.path("old.pem"), certificate + key)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        endpoint = endpointkit.serverFromString(
            reactor, buildDescription("tlswrap", cert=path, endpoint="memory:expired-test"))
        port = self.successResultOf(endpoint.listen(protocol.Factory.forProtocol(Echo)))
        self.addCleanup(port.stopListening)
        warnings = [e["problem"] for e in events if "problem" in e]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertRegex(warnings[0], r"tlswrap: the certificate for old.example in .*old.pem "
                         r"has expired \(valid from \d{4}-\d\d-\d\d \d\d:\d\d:\d\d to "
                         r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)")

    def test_spkiPin(self) -> None:
        # The same as openssl's pipeline computes.
        pubkey = subprocess.run([requirePeer("openssl"), "x509", "-pubkey", "-noout", "-in",
                                 self.files.serverCert], capture_output=True, check=True).stdout
        der = subprocess.run([requirePeer("openssl"), "pkey", "-pubin", "-outform", "der"],
                             input=pubkey, capture_output=True, check=True).stdout
        import base64
        import hashlib

        self.assertEqual(spkiPin(_pemCertificate(self.files.serverPEM)),
                         "sha256/" + base64.b64encode(hashlib.sha256(der).digest()).decode())


class ReloadUnitTests(SynchronousTestCase):
    """
    When the files are looked at, and what a bad file does, with a fake
    clock.
    """

    def setUp(self) -> None:
        self.files = _Files(self.mktemp())
        self.clock = Clock()
        self.path = writeFile(self.files.path("live.pem"), open(self.files.server, "rb").read())

    def renew(self, name: str) -> bytes:
        certificate, key = self.files.ca.issue(name, dns=["localhost"])
        # A different size or mtime is what is looked at; a new inode too.
        writeFile(self.path, certificate + key)
        return certificate

    def test_intervalAndReload(self) -> None:
        certificates = ServerCertificates(cert=self.path, reload=10, clock=self.clock)
        first = certificates.defaultCertificate
        new = self.renew("renewed")
        certificates.serverConnectionForTLS(None)
        self.assertEqual(certificates.defaultCertificate, first)
        self.clock.advance(10)
        certificates.serverConnectionForTLS(None)
        self.assertEqual(certificates.defaultCertificate, _pemCertificate(new))

    def test_off(self) -> None:
        certificates = ServerCertificates(cert=self.path, reload=0, clock=self.clock)
        first = certificates.defaultCertificate
        new = self.renew("renewed")
        self.clock.advance(3600)
        certificates.serverConnectionForTLS(None)
        self.assertEqual(certificates.defaultCertificate, first)
        result = certificates.reload()
        self.assertEqual(result.loaded, (self.path,))
        self.assertEqual(certificates.defaultCertificate, _pemCertificate(new))
        self.assertFalse(certificates.reload().changed)

    def test_halfWrittenKeepsOld(self) -> None:
        certificates = ServerCertificates(cert=self.path, reload=0, clock=self.clock)
        first = certificates.defaultCertificate
        data = open(self.files.server, "rb").read()
        writeFile(self.path, data[: len(data) - 40])
        result = certificates.reload()
        self.assertEqual(result.loaded, ())
        self.assertEqual(result.kept[0][0], self.path)
        self.assertIn("half written", result.kept[0][1])
        self.assertEqual(certificates.defaultCertificate, first)
        # Once written whole, it is used.
        new = self.renew("whole")
        self.assertEqual(certificates.reload().loaded, (self.path,))
        self.assertEqual(certificates.defaultCertificate, _pemCertificate(new))

    def test_keyNotMatchingKeepsOld(self) -> None:
        certFile = writeFile(self.files.path("c.crt"), self.files.serverPEM)
        keyFile = writeFile(self.files.path("c.key"), open(self.files.serverKey, "rb").read())
        certificates = ServerCertificates(cert=certFile, key=keyFile, reload=0, clock=self.clock)
        first = certificates.defaultCertificate
        certificate, key = self.files.ca.issue("next", dns=["localhost"])
        writeFile(certFile, certificate)
        result = certificates.reload()
        self.assertEqual(result.loaded, ())
        self.assertIn("does not match", result.kept[0][1])
        self.assertEqual(certificates.defaultCertificate, first)
        writeFile(keyFile, key)
        self.assertTrue(certificates.reload().changed)
        self.assertEqual(certificates.defaultCertificate, _pemCertificate(certificate))

    def test_directoryKnownNameRenewed(self) -> None:
        """
        Unlike Twisted's directory helper, a renewed certificate for a name
        already served is picked up; a broken file keeps its old one.
        """
        directory = self.files.path("sites")
        os.mkdir(directory)
        names = {}
        for name in ("a.test", "b.test"):
            certificate, key = self.files.ca.issue(name)
            names[name] = writeFile(os.path.join(directory, name + ".pem"), certificate + key)
        certificates = ServerCertificates(certs=directory, reload=0, clock=self.clock)
        before = certificates.certificateFor("b.test")
        certificate, key = self.files.ca.issue("a.test")
        writeFile(names["a.test"], certificate + key)
        writeFile(names["b.test"], b"-----BEGIN CERTIFICATE-----\nMIIB")
        result = certificates.reload()
        self.assertEqual(result.loaded, (names["a.test"],))
        self.assertEqual(certificates.certificateFor("a.test"), _pemCertificate(certificate))
        self.assertEqual(certificates.certificateFor("b.test"), before)

    def test_reloadCertificatesFindsThemThroughWrappers(self) -> None:
        endpoint = endpointkit.serverFromString(self.clock, buildDescription(
            "tlswrap", cert=self.path, reload=0, endpoint="tcp:0"))
        new = self.renew("renewed")
        results = reloadCertificates(endpoint)
        self.assertEqual([r.loaded for r in results], [(self.path,)])
        self.assertEqual(endpoint.certificates.defaultCertificate, _pemCertificate(new))


class _ServerBase(TestCase):
    def setUp(self) -> None:
        self.files = _Files(os.path.abspath(self.mktemp()))

    @defer.inlineCallbacks
    def serve(self, description: str, factory: Any = None) -> Any:
        port = yield listen(description, factory or protocol.Factory.forProtocol(Answer))
        self.addCleanup(stopListening, port)
        return port

    def describe(self, inner: str, **kw: Any) -> str:
        kw.setdefault("cert", self.files.server)
        return buildDescription("tlswrap", endpoint=inner, **kw)

    @defer.inlineCallbacks
    def curlOK(self, number: int, *extra: str, host: str = "localhost") -> Any:
        result = yield _curl("--cacert", self.files.caFile, "--resolve",
                             f"{host}:{number}:127.0.0.1", *extra, f"https://{host}:{number}/")
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        return result.stdout.decode()

    @defer.inlineCallbacks
    def sClient(self, number: int, servername: str, *extra: str,
                address: str = "127.0.0.1") -> Any:
        result = yield _run([requirePeer("openssl"), "s_client", "-connect",
                             f"{address}:{number}" if ":" not in address
                             else f"[{address}]:{number}",
                             "-servername", servername, "-CAfile", self.files.caFile, *extra],
                            stdin=b"GET / HTTP/1.0\r\n\r\n")
        return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")


class ServerTests(_ServerBase):
    """
    The server around each listenable type, against real clients.
    """

    @defer.inlineCallbacks
    def test_curlAndOpensslAroundTCP(self) -> Any:
        port = yield self.serve(self.describe("tcp:0:interface=127.0.0.1"))
        number = _port(port)
        body = yield self.curlOK(number)
        # The application's factory names no ALPN protocols: none is chosen.
        self.assertEqual(body, "subject=none alpn=none\n")
        # -ign_eof: read the answer until the server closes.
        output = yield self.sClient(number, "localhost", "-ign_eof")
        self.assertIn("Verify return code: 0 (ok)", output)
        self.assertEqual(_peerSubject(output), "localhost")
        self.assertIn("subject=none", output)

    @defer.inlineCallbacks
    def test_separateKeyFile(self) -> Any:
        port = yield self.serve(self.describe("tcp:0:interface=127.0.0.1",
                                              cert=self.files.serverCert,
                                              key=self.files.serverKey))
        body = yield self.curlOK(_port(port))
        self.assertTrue(body.startswith("subject=none"), body)

    @defer.inlineCallbacks
    def test_unix(self) -> Any:
        path = self.files.path("s.sock")
        yield self.serve(self.describe(buildDescription("unix", path)))
        result = yield _curl("--cacert", self.files.caFile, "--unix-socket", path,
                             "https://localhost/")
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertTrue(result.stdout.startswith(b"subject=none"), result.stdout)

    @defer.inlineCallbacks
    def test_multiIPv4AndIPv6(self) -> Any:
        inner = buildDescription("multi", "tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\:\\:1")
        port = yield self.serve(self.describe(inner))
        members = port.wrappedPort.wrappedPort.ports
        result = yield _curl("--cacert", self.files.caFile, "-g",
                             f"https://[::1]:{_port(members[1])}/")
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        body = yield self.curlOK(_port(members[0]))
        self.assertTrue(body.startswith("subject=none"))
        output = yield self.sClient(_port(members[1]), "localhost", address="::1")
        self.assertIn("Verify return code: 0 (ok)", output)
        # One client description per address, each verifying the name.
        descriptions = clientDescriptionsFor(port, trustRoots=self.files.caFile)
        self.assertEqual(len(descriptions), 2)
        for description in descriptions:
            client = Client()
            yield endpoints.connectProtocol(
                endpointkit.clientFromString(reactor, description), client)
            received = yield client.done.addTimeout(WAIT, reactor)
            self.assertIn(b"subject=none", received)

    @defer.inlineCallbacks
    def test_limit(self) -> Any:
        port = yield self.serve(self.describe(buildDescription(
            "limit", endpoint="tcp:0:interface=127.0.0.1", max=5)))
        body = yield self.curlOK(_port(port))
        self.assertTrue(body.startswith("subject=none"))
        limited = port.wrappedPort.wrappedPort
        self.assertEqual(type(limited).__name__, "LimitPort")
        self.assertEqual(limited.counts.peak, 1)

    @defer.inlineCallbacks
    def test_memoryInProcess(self) -> Any:
        port = yield self.serve(self.describe("memory:tlswrap-test"), protocol.Factory.forProtocol(Echo))
        description = clientDescriptionFor(port, trustRoots=self.files.caFile)
        self.assertEqual(description, buildDescription(
            "tlswrap", hostname="localhost", trustRoots=self.files.caFile,
            endpoint="memory:tlswrap-test"))
        client = Client(b"over memory")
        connected = yield endpoints.connectProtocol(
            endpointkit.clientFromString(reactor, description), client)
        client.got = defer.Deferred()
        echoed = yield client.got.addTimeout(WAIT, reactor)
        self.assertEqual(echoed, b"over memory")
        self.assertEqual(connected.transport.getPeerCertificate().to_cryptography(),
                         _pemCertificate(self.files.serverPEM))
        connected.transport.loseConnection()
        yield client.done.addTimeout(WAIT, reactor)

    @defer.inlineCallbacks
    def test_gracefulStopThroughTLS(self) -> Any:
        port = yield listen(self.describe("tcp:0:interface=127.0.0.1"),
                            protocol.Factory.forProtocol(Echo))
        client = Client(b"")
        description = clientDescriptionFor(port, trustRoots=self.files.caFile)
        connected = yield endpoints.connectProtocol(
            endpointkit.clientFromString(reactor, description), client)
        result = yield gracefulStop(port, timeout=0.2)
        self.assertEqual((result.finished, result.closed), (0, 1))
        yield client.done.addTimeout(WAIT, reactor)
        self.assertIsNotNone(connected)

    @defer.inlineCallbacks
    def test_sniAmongThree(self) -> Any:
        directory = self.files.path("sites")
        os.mkdir(directory)
        for name, dns in (("alpha", ["alpha.test"]), ("beta", ["*.beta.test"]),
                          ("gamma", ["gamma.test", "www.gamma.test"])):
            certificate, key = self.files.ca.issue(name, dns=dns)
            writeFile(os.path.join(directory, f"{name}.pem"), certificate + key)
        port = yield self.serve(buildDescription("tlswrap", certs=directory,
                                                 endpoint="tcp:0:interface=127.0.0.1"))
        number = _port(port)
        for servername, subject in (("alpha.test", "alpha"), ("x.beta.test", "beta"),
                                    ("www.gamma.test", "gamma"), ("unknown.test", "alpha")):
            output = yield self.sClient(number, servername)
            self.assertEqual(_peerSubject(output), subject, servername)
        body = yield self.curlOK(number, host="x.beta.test")
        self.assertTrue(body.startswith("subject=none"))

    @defer.inlineCallbacks
    def test_mutualRequired(self) -> Any:
        port = yield self.serve(self.describe("tcp:0:interface=127.0.0.1",
                                              clientCA=self.files.caFile))
        number = _port(port)
        url = f"https://localhost:{number}/"
        resolve = f"localhost:{number}:127.0.0.1"
        without = yield _curl("--cacert", self.files.caFile, "--resolve", resolve, url)
        self.assertNotEqual(without.returncode, 0)
        self.assertNotIn(b"subject=", without.stdout)
        other = yield _curl("--cacert", self.files.caFile, "--resolve", resolve,
                            "--cert", self.files.otherClient, url)
        self.assertNotEqual(other.returncode, 0)
        self.assertNotIn(b"subject=", other.stdout)
        body = yield self.curlOK(number, "--cert", self.files.client)
        self.assertTrue(body.startswith("subject=alice "), body)

    @defer.inlineCallbacks
    def test_mutualOptional(self) -> Any:
        port = yield self.serve(self.describe("tcp:0:interface=127.0.0.1",
                                              clientCA=self.files.caFile, verify="optional"))
        number = _port(port)
        body = yield self.curlOK(number)
        self.assertTrue(body.startswith("subject=none "), body)
        body = yield self.curlOK(number, "--cert", self.files.clientCert,
                                 "--key", self.files.clientKey)
        self.assertTrue(body.startswith("subject=alice "), body)
        other = yield _curl("--cacert", self.files.caFile, "--resolve",
                            f"localhost:{number}:127.0.0.1", "--cert", self.files.otherClient,
                            f"https://localhost:{number}/")
        self.assertNotEqual(other.returncode, 0)

    @defer.inlineCallbacks
    def test_minVersion13(self) -> Any:
        port = yield self.serve(self.describe("tcp:0:interface=127.0.0.1", minVersion="1.3"))
        number = _port(port)
        old = yield _curl("--cacert", self.files.caFile, "--resolve",
                          f"localhost:{number}:127.0.0.1", "--tls-max", "1.2",
                          f"https://localhost:{number}/")
        self.assertEqual(old.returncode, 35, old.stderr.decode())
        body = yield self.curlOK(number)
        self.assertTrue(body.startswith("subject=none"))
        output = yield self.sClient(number, "localhost")
        self.assertIn("TLSv1.3", output)

    @defer.inlineCallbacks
    def test_alpnExplicit(self) -> Any:
        port = yield self.serve(self.describe("tcp:0:interface=127.0.0.1", alpn="h2,http/1.1"))
        output = yield self.sClient(_port(port), "localhost", "-alpn", "foo,h2")
        self.assertIn("ALPN protocol: h2", output)

    @defer.inlineCallbacks
    def test_http2WithTwistedWeb(self) -> Any:
        try:
            import h2  # noqa: F401
        except ImportError:
            self.fail("h2 is in the test extras: pip install -e '.[test]'")
        from twisted.web.resource import Resource
        from twisted.web.server import Site
        from twisted.web.static import Data

        root = Resource()
        root.putChild(b"hi", Data(b"hello over h2", "text/plain"))
        port = yield self.serve(self.describe("tcp:0:interface=127.0.0.1"), Site(root))
        number = _port(port)
        result = yield _curl("--http2", "-w", " %{http_version}", "--cacert", self.files.caFile,
                             "--resolve", f"localhost:{number}:127.0.0.1",
                             f"https://localhost:{number}/hi")
        self.assertEqual(result.stdout, b"hello over h2 2", result.stderr)
        result = yield _curl("--http1.1", "-w", " %{http_version}", "--cacert",
                             self.files.caFile, "--resolve", f"localhost:{number}:127.0.0.1",
                             f"https://localhost:{number}/hi")
        self.assertEqual(result.stdout, b"hello over h2 1.1", result.stderr)

    @defer.inlineCallbacks
    def test_reloadWhileOpen(self) -> Any:
        path = writeFile(self.files.path("live.pem"), open(self.files.server, "rb").read())
        port = yield self.serve(self.describe("tcp:0:interface=127.0.0.1", cert=path,
                                              reload=0.2), protocol.Factory.forProtocol(Echo))
        number = _port(port)
        client = Client(b"")
        connected = yield endpoints.connectProtocol(
            endpointkit.clientFromString(reactor, buildDescription(
                "tlswrap", trustRoots=self.files.caFile, endpoint=f"tcp:localhost:{number}")),
            client)
        certificate, key = self.files.ca.issue("renewed", dns=["localhost"])
        writeFile(path, certificate + key)
        yield deferLater(reactor, 0.3, lambda: None)
        output = yield self.sClient(number, "localhost")
        self.assertEqual(_peerSubject(output), "renewed")
        # The open connection goes on with the certificate it had.
        client.got = defer.Deferred()
        connected.transport.write(b"still here")
        echoed = yield client.got.addTimeout(WAIT, reactor)
        self.assertEqual(echoed, b"still here")
        self.assertEqual(connected.transport.getPeerCertificate().to_cryptography(),
                         _pemCertificate(self.files.serverPEM))
        # A half-written file keeps the renewed certificate in use.
        data = certificate + key
        with open(path, "wb") as f:
            f.write(data[:200])
        yield deferLater(reactor, 0.3, lambda: None)
        output = yield self.sClient(number, "localhost")
        self.assertEqual(_peerSubject(output), "renewed")
        connected.transport.loseConnection()
        yield client.done.addTimeout(WAIT, reactor)


class ProcessTests(_ServerBase):
    """
    tlswrap: in real twistd processes: under systemd-socket-activate, and
    two of them sharing a reuseport: port.
    """

    def twistdWeb(self, listenOn: str, name: str) -> list[str]:
        root = self.files.path(f"root-{name}")
        os.makedirs(root)
        writeFile(os.path.join(root, "who.txt"), name.encode())
        log = self.files.path(f"{name}.log")
        return [TWISTD, "-n", "--pidfile=", "-l", log, "web", "--listen",
                self.describe(listenOn), "--path", root]

    def test_systemdSocketActivation(self) -> None:
        activate = requirePeer("systemd-socket-activate", "systemd")
        curl = requirePeer("curl")
        for _ in range(5):
            number = freePort()
            process = startPeer(self, [activate, "-l", f"127.0.0.1:{number}", "--fdname=web",
                                       *self.twistdWeb("systemd:domain=INET:index=0",
                                                       f"systemd{number}")])
            time.sleep(0.5)
            if process.poll() is None:
                break
        else:
            self.fail("systemd-socket-activate never kept a port")
        result = subprocess.run(
            [curl, "-sS", "--max-time", "30", "--cacert", self.files.caFile, "--resolve",
             f"localhost:{number}:127.0.0.1", f"https://localhost:{number}/who.txt"],
            capture_output=True, timeout=40)
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertEqual(result.stdout, f"systemd{number}".encode())

    def test_twoTwistdOnReuseport(self) -> None:
        curl = requirePeer("curl")
        number = freePort()
        inner = buildDescription("reuseport", number, interface="127.0.0.1")
        for name in ("first", "second"):
            startPeer(self, self.twistdWeb(inner, name))
        deadline = time.monotonic() + WAIT
        while not _accepts(number) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        served: dict[str, int] = {}
        for _ in range(40):
            result = subprocess.run(
                [curl, "-sS", "--max-time", "20", "--cacert", self.files.caFile, "--resolve",
                 f"localhost:{number}:127.0.0.1", f"https://localhost:{number}/who.txt"],
                capture_output=True, timeout=30)
            self.assertEqual(result.returncode, 0, result.stderr.decode())
            served[result.stdout.decode()] = served.get(result.stdout.decode(), 0) + 1
            if len(served) == 2 and sum(served.values()) >= 10:
                break
        self.assertEqual(set(served), {"first", "second"})


def _accepts(number: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        try:
            s.connect(("127.0.0.1", number))
        except OSError:
            return False
        return True


class _ClientBase(TestCase):
    def setUp(self) -> None:
        self.files = _Files(os.path.abspath(self.mktemp()))

    def sServer(self, *extra: str, cert: str | None = None) -> int:
        number = freePort()
        startPeer(self, [requirePeer("openssl"), "s_server", "-accept", f"127.0.0.1:{number}",
                         "-cert", cert or self.files.server, "-www", *extra], number)
        return number

    @defer.inlineCallbacks
    def fetch(self, description: str) -> Any:
        client = Client()
        connected = yield endpoints.connectProtocol(
            endpointkit.clientFromString(reactor, description), client)
        received = yield client.done.addTimeout(WAIT, reactor)
        return connected, received

    def failure(self, description: str, kind: type[Exception]) -> defer.Deferred[Any]:
        d = endpoints.connectProtocol(endpointkit.clientFromString(reactor, description),
                                      Client())
        return self.assertFailure(d.addTimeout(WAIT, reactor), kind)


class ClientTests(_ClientBase):
    """
    The client against openssl s_server and nginx.
    """

    @defer.inlineCallbacks
    def test_verifiesByDefault(self) -> Any:
        certificate, key = selfSignedCertificate("localhost", ["127.0.0.1"])
        path = writeFile(self.files.path("self.pem"), certificate + key)
        number = self.sServer(cert=path)
        error = yield self.failure(f"tlswrap:endpoint=tcp\\:localhost\\:{number}",
                                   CertificateNotTrusted)
        self.assertEqual(str(error), "TLS handshake with localhost failed: the certificate "
                         "CN=localhost (issued by CN=localhost) is not trusted: it is "
                         "self-signed and not among the trust roots")
        self.assertIsInstance(error, TLSHandshakeError)

    @defer.inlineCallbacks
    def test_unknownIssuer(self) -> Any:
        number = self.sServer()
        error = yield self.failure(f"tlswrap:endpoint=tcp\\:localhost\\:{number}",
                                   CertificateNotTrusted)
        self.assertIn("(unknown issuer)", str(error))

    @defer.inlineCallbacks
    def test_trustRoots(self) -> Any:
        number = self.sServer()
        for roots in (self.files.caFile, self.files.directory):
            _, received = yield self.fetch(buildDescription(
                "tlswrap", trustRoots=roots, endpoint=f"tcp:localhost:{number}"))
            self.assertTrue(received.startswith(b"HTTP/1.0 200 ok"), received[:100])
        # By IP address: checked against the IP subjectAltNames.
        _connected, received = yield self.fetch(buildDescription(
            "tlswrap", trustRoots=self.files.caFile, endpoint=f"tcp:127.0.0.1:{number}"))
        self.assertTrue(received.startswith(b"HTTP/1.0 200 ok"))

    @defer.inlineCallbacks
    def test_hostnameMismatch(self) -> Any:
        number = self.sServer()
        error = yield self.failure(buildDescription(
            "tlswrap", hostname="other.example", trustRoots=self.files.caFile,
            endpoint=f"tcp:127.0.0.1:{number}"), CertificateHostnameMismatch)
        self.assertEqual(str(error), "TLS handshake with other.example failed: the "
                         "certificate is for localhost, 127.0.0.1, ::1, not other.example")
        self.assertEqual(error.names, ("localhost", "127.0.0.1", "::1"))

    @defer.inlineCallbacks
    def test_pins(self) -> Any:
        certificate, key = selfSignedCertificate("service")
        path = writeFile(self.files.path("self.pem"), certificate + key)
        number = self.sServer(cert=path)
        right = spkiPin(_pemCertificate(certificate))
        wrong = spkiPin(_pemCertificate(self.files.serverPEM))
        _, received = yield self.fetch(buildDescription(
            "tlswrap", pin=f"{wrong}|{right}", endpoint=f"tcp:127.0.0.1:{number}"))
        self.assertTrue(received.startswith(b"HTTP/1.0 200 ok"))
        error = yield self.failure(buildDescription(
            "tlswrap", pin=wrong, endpoint=f"tcp:127.0.0.1:{number}"), PinMismatch)
        self.assertEqual(error.actual, (right,))
        self.assertIn(f"the server's key has pin {right}, which is not among {wrong}",
                      str(error))

    @defer.inlineCallbacks
    def test_pinsWithCA(self) -> Any:
        number = self.sServer()
        caPin = spkiPin(_pemCertificate(self.files.ca.certificatePEM))
        _, received = yield self.fetch(buildDescription(
            "tlswrap", pin=caPin, trustRoots=self.files.caFile,
            endpoint=f"tcp:localhost:{number}"))
        self.assertTrue(received.startswith(b"HTTP/1.0 200 ok"))
        # With CA verification on, a right pin does not excuse a wrong name.
        yield self.failure(buildDescription(
            "tlswrap", pin=caPin, trustRoots=self.files.caFile, hostname="x.example",
            endpoint=f"tcp:127.0.0.1:{number}"), CertificateHostnameMismatch)

    @defer.inlineCallbacks
    def test_versionRefused(self) -> Any:
        number = self.sServer("-tls1_2")
        error = yield self.failure(buildDescription(
            "tlswrap", minVersion="1.3", trustRoots=self.files.caFile,
            endpoint=f"tcp:localhost:{number}"), TLSVersionRefused)
        self.assertIn("no TLS version in common (minVersion=1.3", str(error))
        _, received = yield self.fetch(buildDescription(
            "tlswrap", trustRoots=self.files.caFile, endpoint=f"tcp:localhost:{number}"))
        self.assertIn(b"TLSv1.2", received)

    @defer.inlineCallbacks
    def test_alpn(self) -> Any:
        number = self.sServer("-alpn", "h2")
        connected, _ = yield self.fetch(buildDescription(
            "tlswrap", alpn="h2,http/1.1", trustRoots=self.files.caFile,
            endpoint=f"tcp:localhost:{number}"))
        self.assertEqual(connected.transport.negotiatedProtocol, b"h2")

    @defer.inlineCallbacks
    def test_verifyNone(self) -> Any:
        certificate, key = selfSignedCertificate("whatever")
        number = self.sServer(cert=writeFile(self.files.path("self.pem"), certificate + key))
        _, received = yield self.fetch(buildDescription(
            "tlswrap", verify="none", endpoint=f"tcp:127.0.0.1:{number}"))
        self.assertTrue(received.startswith(b"HTTP/1.0 200 ok"))

    @defer.inlineCallbacks
    def test_handshakeTimeout(self) -> Any:
        silent = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(protocol.Protocol))
        self.addCleanup(silent.stopListening)
        error = yield self.failure(buildDescription(
            "tlswrap", handshakeTimeout=0.3, trustRoots=self.files.caFile,
            endpoint=f"tcp:localhost:{silent.getHost().port}"), TLSHandshakeError)
        self.assertEqual(type(error).__name__, "TLSHandshakeTimeout")
        self.assertEqual(str(error), "TLS handshake with localhost failed: no handshake "
                         "within 0.3 s")

    def nginx(self, verifyClient: bool) -> int:
        program = requirePeer("nginx")
        number = freePort()
        directory = self.files.path("nginx")
        os.mkdir(directory)
        temp = "".join(f"{t}_temp_path {directory}/{t};\n" for t in
                       ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        verify = (f"ssl_client_certificate {self.files.caFile};\nssl_verify_client on;\n"
                  if verifyClient else "")
        with open(os.path.join(directory, "nginx.conf"), "w") as f:
            f.write(f"""
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {directory}/access.log;
  {temp}
  server {{
    listen 127.0.0.1:{number} ssl;
    ssl_certificate {self.files.serverCert};
    ssl_certificate_key {self.files.serverKey};
    {verify}
    location / {{ return 200 "nginx says hi $ssl_client_s_dn\\n"; }}
  }}
}}
""")
        startPeer(self, [program, "-p", directory, "-c", os.path.join(directory, "nginx.conf"),
                         "-g", "daemon off; master_process off;"], number)
        return number

    @defer.inlineCallbacks
    def test_nginxClientCertificate(self) -> Any:
        number = self.nginx(verifyClient=True)
        target = f"tcp:localhost:{number}"
        _, received = yield self.fetch(buildDescription(
            "tlswrap", trustRoots=self.files.caFile, certificate=self.files.clientCert,
            key=self.files.clientKey, endpoint=target))
        self.assertIn(b"200 OK", received)
        self.assertIn(b"nginx says hi CN=alice", received)
        _, received = yield self.fetch(buildDescription(
            "tlswrap", trustRoots=self.files.caFile, endpoint=target))
        self.assertIn(b"400 No required SSL certificate was sent", received)

    @defer.inlineCallbacks
    def test_nginxVerified(self) -> Any:
        number = self.nginx(verifyClient=False)
        _, received = yield self.fetch(buildDescription(
            "tlswrap", trustRoots=self.files.caFile, endpoint=f"tcp:localhost:{number}"))
        self.assertIn(b"nginx says hi", received)
        yield self.failure(f"tlswrap:endpoint=tcp\\:localhost\\:{number}", CertificateNotTrusted)

    @defer.inlineCallbacks
    def test_throughSocks5(self) -> Any:
        number = self.sServer()
        proxy = startMicrosocks(self)
        _, received = yield self.fetch(buildDescription(
            "tlswrap", trustRoots=self.files.caFile, endpoint=buildDescription(
                "socks5", "localhost", number, endpoint=f"tcp:127.0.0.1:{proxy}")))
        self.assertTrue(received.startswith(b"HTTP/1.0 200 ok"))

    @defer.inlineCallbacks
    def test_throughHTTPConnect(self) -> Any:
        number = self.sServer()
        proxy = startTinyproxy(self)
        description = buildDescription(
            "tlswrap", trustRoots=self.files.caFile, endpoint=buildDescription(
                "timeout", 20, endpoint=buildDescription(
                    "httpconnect", "localhost", number, endpoint=f"tcp:127.0.0.1:{proxy}")))
        self.assertEqual(endpointkit.clientFromString(reactor, description).hostname,
                         "localhost")
        _, received = yield self.fetch(description)
        self.assertTrue(received.startswith(b"HTTP/1.0 200 ok"))


class PortTests(SynchronousTestCase):
    def test_portExposesWrappedPort(self) -> None:
        files = _Files(self.mktemp())
        endpoint = endpointkit.serverFromString(reactor, buildDescription(
            "tlswrap", cert=files.server, endpoint="memory:port-test"))
        port = self.successResultOf(endpoint.listen(protocol.Factory.forProtocol(Echo)))
        self.assertIsInstance(port, TLSWrapPort)
        self.assertEqual(port.getHost(), port.wrappedPort.getHost())
        self.assertEqual(port.clientDescription(), buildDescription(
            "tlswrap", hostname="localhost", endpoint="memory:port-test"))
        self.successResultOf(port.stopListening())

