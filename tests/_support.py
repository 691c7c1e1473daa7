"""
Helpers shared by the tests: real peer programs, free ports, subprocesses.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

IN_CI = os.environ.get("CI", "").lower() == "true"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def requirePeer(program: str, package: str | None = None) -> str:
    """
    The path of a real peer program.  Missing, it skips the test on a
    developer's machine and fails it under C{CI=true}: CI must have it.
    """
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}", f"/sbin/{program}")
         if os.access(p, os.X_OK)), None)
    if path is None:
        message = (f"{program} is not installed (apt-get install "
                   f"{package or program}; .ci/run installs it)")
        if IN_CI:
            raise AssertionError(message)
        raise SkipTest(message)
    return path


def freePort(host: str = "127.0.0.1") -> int:
    """
    A TCP port that nothing listens on now.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def waitForPort(port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                process: subprocess.Popen[bytes] | None = None) -> None:
    """
    Block until something accepts on C{host:port}, at most C{timeout}
    seconds (a peer starting up).
    """
    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"peer exited with {process.returncode} before listening")
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect((host, port))
                return
            except OSError:
                time.sleep(0.05)
    raise AssertionError(f"nothing listened on {host}:{port} within {timeout} s")


def stopProcess(process: subprocess.Popen[bytes], timeout: float,
                killTimeout: float = 5.0) -> None:
    """
    Stop C{process} if it is still running: SIGTERM, and SIGKILL if it has
    not exited within C{timeout} seconds (then waiting at most
    C{killTimeout}).
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(killTimeout)


def startPeer(test: TestCase, argv: Sequence[str], port: int | None = None,
              host: str = "127.0.0.1", env: dict[str, str] | None = None,
              stopTimeout: float = 5.0) -> subprocess.Popen[bytes]:
    """
    Start a peer process for the length of C{test}, wait until it listens on
    C{port} (when given), and stop it (SIGTERM, then SIGKILL) at cleanup.
    """
    process = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    test.addCleanup(stopProcess, process, stopTimeout)
    if port is not None:
        waitForPort(port, host, process=process)
    return process


@implementer(IHalfCloseableProtocol)
class Collect(protocol.Protocol):
    """
    Records what arrives and how the connection ends: writes C{send} once
    connected and, with C{halfClose}, then closes its writing side;
    C{done} fires with the exception the connection was lost with.

    @cvar closeOnReadEnd: with C{halfClose}, close the whole connection
        once the peer has closed its writing side too.
    """

    closeOnReadEnd = False

    def __init__(self, send: bytes = b"", halfClose: bool = False) -> None:
        self.send = send
        self.halfClose = halfClose
        self.received = bytearray()
        self.readClosed = False
        self.done: defer.Deferred[BaseException] = defer.Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.send:
            self.transport.write(self.send)
        if self.halfClose:
            self.transport.loseWriteConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.readClosed = True
        assert self.transport is not None
        if self.halfClose and self.closeOnReadEnd:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        # The exception, not the Failure: a Failure would errback.
        self.done.callback(reason.value)


class Exchange(protocol.Protocol):
    """
    Sends C{ping}, closes when it has come back; C{done} fires with what
    came back when the connection is gone.
    """

    def __init__(self) -> None:
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"ping")

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.received == b"ping" and self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.done.called:
            self.done.callback(self.received)


def openFileDescriptors() -> int:
    """
    How many file descriptors this process has open.
    """
    return len(os.listdir("/proc/self/fd"))


def fileDescriptorNumbers() -> set[int]:
    """
    The numbers of the file descriptors this process has open: a test that
    compares them before and after sees its own leaks, and not a descriptor
    of an earlier test that happens to close meanwhile.
    """
    return {int(name) for name in os.listdir("/proc/self/fd")}


def cleanEnvironment() -> dict[str, str]:
    """
    This process's environment without what points Python at this test
    run's modules (trial's workers set PYTHONPATH): for a subprocess that
    must see only its own installation.
    """
    return {key: value for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE")}


PYTHON = sys.executable


def rootOnPath() -> dict[str, str]:
    """
    This process's environment with the repository's root first on
    C{PYTHONPATH}, for a subprocess that imports endpointkit from it.
    """
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


class LoggedProcess:
    """
    A subprocess run from the repository's root (L{rootOnPath}), its output
    and errors together in a temporary file; it is killed, if still
    running, when C{test} cleans up.
    """

    def __init__(self, test: TestCase, argv: Sequence[str], timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT, env=rootOnPath(), cwd=ROOT)
        test.addCleanup(self.kill)

    def output(self) -> str:
        """
        What the process has written so far.
        """
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(self.timeout)
        self.log.close()


def selfSignedCertificate(name: str, addresses: Sequence[str] = ()) -> tuple[bytes, bytes]:
    """
    A fresh self-signed certificate for host C{name} (and the IP
    C{addresses}, as subjectAltNames), allowed to act as its own CA, and its
    key: C{(certificate PEM, key PEM)}.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alternatives: list[x509.GeneralName] = [x509.DNSName(name)]
    alternatives += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
    )


def portIsFree(port: int, host: str = "127.0.0.1") -> bool:
    """
    Whether a new listener can take C{port} on C{host}.  With SO_REUSEADDR
    on both sides, Linux lets a listener share the port with connections
    that are still closing, but never with another listener.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError:
            return False
        return True


def startMicrosocks(test: TestCase, *extra: str) -> int:
    """
    A real SOCKS5 server (microsocks) on loopback for the length of C{test},
    with C{extra} arguments (C{-u USER -P PASS} for authentication); its
    port.
    """
    program = requirePeer("microsocks")
    port = freePort()
    startPeer(test, [program, "-i", "127.0.0.1", "-p", str(port), *extra], port)
    return port


def startTinyproxy(test: TestCase, *lines: str) -> int:
    """
    A real HTTP proxy (tinyproxy) on loopback for the length of C{test},
    with C{lines} added to its configuration (C{BasicAuth USER PASS},
    C{ConnectPort N}); its port.
    """
    program = requirePeer("tinyproxy")
    port = freePort()
    directory = test.mktemp()
    os.mkdir(directory)
    config = os.path.join(directory, "tinyproxy.conf")
    with open(config, "w") as f:
        f.write(f"Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\n"
                f'LogFile "{directory}/log"\nLogLevel Info\nMaxClients 50\n'
                + "".join(line + "\n" for line in lines))
    startPeer(test, [program, "-d", "-c", config], port)
    return port


def shortTempDir(test: TestCase) -> str:
    """
    A new, empty directory under C{/tmp} for the length of C{test}, removed
    at cleanup.  Its path is short and does not depend on where the checkout
    is (trial's own C{mktemp} is under C{_trial_temp} in the checkout), so
    that a UNIX socket made in it stays well under the 107-byte path limit.
    """
    directory = tempfile.mkdtemp(prefix="ek-", dir="/tmp")
    test.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    return directory


class SSHServer:
    """
    A real OpenSSH server on loopback (see L{startSSHServer}).

    @ivar directory: where its keys, configuration and log are.
    @ivar port: the port it listens on.
    @ivar hostKey: the path of its private host key (C{.pub} beside it).
    @ivar log: the path of its log (C{LogLevel VERBOSE}).
    """

    def __init__(self, directory: str, port: int, hostKey: str, log: str,
                 process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.port = port
        self.hostKey = hostKey
        self.log = log
        self.process = process

    def logText(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def keyscan(self) -> str:
        """
        The known_hosts lines C{ssh-keyscan} reads from this server.
        """
        program = requirePeer("ssh-keyscan", "openssh-client")
        result = subprocess.run([program, "-p", str(self.port), "127.0.0.1"],
                                capture_output=True, timeout=30, check=True)
        return result.stdout.decode("ascii")


def sshKeygen(path: str, kind: str = "ed25519", passphrase: str = "") -> str:
    """
    A new key pair made by C{ssh-keygen} at C{path} (and C{path.pub}).
    """
    program = requirePeer("ssh-keygen", "openssh-client")
    argv = [program, "-q", "-t", kind, "-N", passphrase, "-f", path]
    if kind == "rsa":
        argv[4:4] = ["-b", "2048"]
    subprocess.run(argv, check=True, timeout=60, stdin=subprocess.DEVNULL)
    return path


def startSSHServer(test: TestCase, authorizedKeys: Sequence[str] = (),
                   lines: Sequence[str] = (), hostKeyKind: str = "ed25519",
                   hostKey: str | None = None) -> SSHServer:
    """
    A real OpenSSH C{sshd} on loopback for the length of C{test}, with a
    fresh host key (or C{hostKey}), accepting the public keys
    C{authorizedKeys} (paths of C{.pub} files), with C{lines} added to its
    configuration.
    """
    program = requirePeer("sshd", "openssh-server")
    os.makedirs("/run/sshd", exist_ok=True)
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    if hostKey is None:
        hostKey = sshKeygen(os.path.join(directory, "host_key"), hostKeyKind)
    authorized = os.path.join(directory, "authorized_keys")
    with open(authorized, "w") as f:
        for path in authorizedKeys:
            with open(path) as key:
                f.write(key.read())
    log = os.path.join(directory, "sshd.log")
    open(log, "w").close()
    for attempt in range(5):
        port = freePort()
        config = os.path.join(directory, "sshd_config")
        with open(config, "w") as f:
            f.write(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hostKey}\n"
                    f"AuthorizedKeysFile {authorized}\nUsePAM no\nStrictModes no\n"
                    "PidFile none\nLogLevel VERBOSE\nMaxStartups 100:30:200\n"
                    "MaxSessions 200\n"
                    + "".join(line + "\n" for line in lines)
                    + ("" if any(line.startswith("PasswordAuthentication") for line in lines)
                       else "PasswordAuthentication no\n"))
        process = startPeer(test, [program, "-D", "-f", config, "-E", log])
        try:
            waitForPort(port, process=process)
        except AssertionError:
            if attempt == 4:
                raise
            continue
        return SSHServer(directory, port, hostKey, log, process)
    raise AssertionError("unreachable")

class TestCA:
    """
    A certificate authority made for one test run: it signs server and
    client certificates (EC P-256 keys, SHA-256).

    @ivar certificatePEM: the CA's certificate.
    """

    def __init__(self, name: str = "endpointkit test CA") -> None:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                         False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    @property
    def certificatePEM(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, name: str, dns: Sequence[str] = (), addresses: Sequence[str] = (),
              client: bool = False, validFrom: float = -1.0,
              validTo: float = 2.0) -> tuple[bytes, bytes]:
        """
        A certificate signed by this CA for C{name} (its common name, and a
        DNS subjectAltName with C{dns} unless C{client}), valid from
        C{validFrom} to C{validTo} days from now: C{(certificate PEM, key
        PEM)}.
        """
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in (dns or ([] if client else [name]))]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=validFrom))
            .not_valid_after(now + datetime.timedelta(days=validTo))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.sign(self._key, hashes.SHA256())
        return (
            certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
        )


def writeFile(path: str, data: bytes) -> str:
    """
    Write C{data} to C{path} (replacing it at once, by rename); its path.
    """
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)
    return path
