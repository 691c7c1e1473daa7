"""
Tests for the C{endpointkit} command: C{types}, C{check}, C{doctor}, and the
README table made from the declarations.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from typing import Any

from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from endpointkit import DescriptionError, buildDescription, serverFromString
from endpointkit.cli import main, readmeTable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

THIRD_PARTY = '''
"""A third-party plugin module, as another package would install it."""
from zope.interface import implementer
from twisted.plugin import IPlugin
from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
from twisted.internet.endpoints import TCP4ClientEndpoint


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class FakeParser:
    """Connects to a host and port over TCP, the third-party way."""

    def __init__(self, prefix):
        self.prefix = prefix

    def parseStreamClient(self, reactor, host, port):
        return TCP4ClientEndpoint(reactor, host, int(port))


zzfake = FakeParser("zzfake")
clashing = FakeParser("hostname")
'''


def runCommand(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(args), out, err)
    return status, out.getvalue(), err.getvalue()


def thirdPartyPath(test: TestCase) -> str:
    """
    A directory with a third-party plugin module and the dist-info that says
    which distribution installed it.
    """
    root = tempfile.mkdtemp(prefix="endpointkit-thirdparty-")
    test.addCleanup(subprocess.run, ["rm", "-rf", root])
    plugins = os.path.join(root, "twisted", "plugins")
    os.makedirs(plugins)
    with open(os.path.join(plugins, "fakeendpoints.py"), "w") as f:
        f.write(THIRD_PARTY)
    info = os.path.join(root, "fakeendpoints-1.0.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: fakeendpoints\nVersion: 1.0\n")
    with open(os.path.join(info, "RECORD"), "w") as f:
        f.write("twisted/plugins/fakeendpoints.py,,\nfakeendpoints-1.0.dist-info/METADATA,,\n")
    return root


def subprocessCommand(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run([sys.executable, "-m", "endpointkit", *args], env=env,
                          capture_output=True, text=True, timeout=120, cwd="/")


class TypesTests(TestCase):
    def test_listsBuiltinsAndOurs(self) -> None:
        status, out, _ = runCommand("types", "--json")
        self.assertEqual(status, 0)
        found = {(t["side"], t["prefix"]): t for t in json.loads(out)}
        for key in [("client", "tcp"), ("client", "tls"), ("server", "tcp6"),
                    ("server", "systemd"), ("server", "haproxy"), ("server", "stdio")]:
            self.assertEqual(found[key]["provider"], "twisted")
        for key in [("client", "timeout"), ("client", "hostname"), ("client", "socks5"),
                    ("client", "socks4a"), ("client", "httpconnect"), ("client", "memory"),
                    ("server", "memory"), ("server", "reuseport"), ("server", "adopt"),
                    ("server", "multi"), ("server", "limit")]:
            self.assertEqual(found[key]["provider"], "endpointkit")
            self.assertTrue(found[key]["help"])
            self.assertTrue(all(a["help"] for a in found[key]["arguments"]), key)
        port = next(a for a in found[("server", "tcp")]["arguments"] if a["name"] == "port")
        self.assertEqual(port["kind"], "port")
        self.assertTrue(port["required"])

    def test_text(self) -> None:
        status, out, _ = runCommand("types")
        self.assertEqual(status, 0)
        self.assertIn("timeout  (client, endpointkit)", out)
        self.assertIn("    seconds: seconds [required, positional]", out)

    def test_thirdParty(self) -> None:
        """
        A third-party plugin is listed with the distribution that installed
        it; its arguments are its own business.
        """
        result = subprocessCommand(thirdPartyPath(self), "types", "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        found = {(t["side"], t["prefix"]): t for t in json.loads(result.stdout)}
        fake = found[("client", "zzfake")]
        self.assertEqual(fake["provider"], "fakeendpoints")
        self.assertEqual(fake["help"], "Connects to a host and port over TCP, the third-party way.")
        self.assertIsNone(fake["arguments"])


class CheckTests(TestCase):
    def test_showsStructure(self) -> None:
        status, out, _ = runCommand(
            "check", "--client", r"tls:example.com:443:endpoint=tcp\:[::1]\:8443")
        self.assertEqual(status, 0)
        self.assertIn("client tls  (twisted)", out)
        self.assertIn("endpoint = client tcp  (twisted)", out)
        self.assertIn("host = '::1'", out)
        self.assertIn("port = 8443", out)
        self.assertIn("timeout = 30  (default)", out)

    def test_secretsMasked(self) -> None:
        """
        A password shows as C{***} in C{check}'s output and in its errors,
        however deep it is nested.
        """
        description = (r"timeout:5:endpoint=socks5\:example.com\:443\:user=me\:password=hunter2"
                       r"\:endpoint=tcp\\\:127.0.0.1\\\:1080")
        status, out, err = runCommand("check", "--client", description)
        self.assertEqual((status, err), (0, ""))
        self.assertNotIn("hunter2", out)
        self.assertIn("password = ***", out)
        self.assertIn(r"password\=***", out.splitlines()[0])
        status, out, err = runCommand(
            "check", "--client", r"socks5:example.com:443:password=hunter2:endpoint=tcp\:h\:x")
        self.assertEqual(status, 2)
        self.assertNotIn("hunter2", out + err)

    def test_bothSides(self) -> None:
        """
        Without --client or --server, every side the prefix exists on is
        shown.
        """
        status, out, _ = runCommand("check", "unix:/run/app.sock")
        self.assertEqual(status, 0)
        self.assertIn("client unix", out)
        self.assertIn("server unix", out)

    def test_error(self) -> None:
        status, out, err = runCommand("check", "--server", "tcp:8080:backlg=5")
        self.assertEqual(status, 2)
        self.assertEqual(out, "")
        self.assertEqual(err, "endpointkit: tcp: unknown argument 'backlg'; did you mean 'backlog'?\n")

    def test_errorFromTheSideThatKnowsThePrefix(self) -> None:
        status, _, err = runCommand("check", "stdio:x")
        self.assertEqual(status, 2)
        self.assertIn("stdio: takes arguments only as key=value", err)

    def test_wrapsThirdParty(self) -> None:
        """
        An endpointkit wrapper takes a third-party type as its inner
        description, and the whole thing builds.
        """
        root = thirdPartyPath(self)
        result = subprocessCommand(root, "check", r"timeout:2:endpoint=zzfake\:127.0.0.1\:80")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("endpoint = client zzfake  (third-party plugin)", result.stdout)
        built = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(r"""
                from twisted.internet import reactor
                from twisted.internet.endpoints import clientFromString
                import endpointkit
                ours = endpointkit.clientFromString(reactor, r"timeout:2:endpoint=zzfake\:127.0.0.1\:80")
                twisteds = clientFromString(reactor, r"timeout:2:endpoint=zzfake\:127.0.0.1\:80")
                print(type(ours).__name__, type(twisteds).__name__)
            """)], env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True,
            timeout=120, cwd="/")
        self.assertEqual(built.returncode, 0, built.stderr)
        self.assertEqual(built.stdout.split(), ["TimeoutEndpoint", "TimeoutEndpoint"])

    def test_pythonDashM(self) -> None:
        result = subprocess.run([sys.executable, "-m", "endpointkit", "check", "--server", "tcp:0"],
                                capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("server tcp", result.stdout)


class InsecureWarningTests(TestCase):
    """
    C{check} warns about each insecure setting; only C{--strict} makes a
    warning change the exit status.
    """

    def test_sslClientWithoutHostname(self) -> None:
        status, out, err = runCommand("check", "ssl:example.com:443")
        self.assertEqual(status, 0)
        self.assertIn("client ssl", out)
        self.assertEqual(err.splitlines(), [
            "endpointkit: warning: ssl: verifies nothing: any certificate is accepted, "
            "for any host (give hostname= to verify the server, or use tls:)"])

    def test_sslClientChainOnly(self) -> None:
        status, _, err = runCommand("check", "ssl:example.com:443:caCertsDir=/etc/ssl/certs")
        self.assertEqual(status, 0)
        self.assertIn("ssl: checks the certificate chain against caCertsDir but not the "
                      "host name", err)
        self.assertEqual(len(err.splitlines()), 1)

    def test_verifiedIsQuiet(self) -> None:
        for description in ("ssl:example.com:443:hostname=example.com",
                            "tls:example.com:443", "ssl:8443:privateKey=server.pem"):
            status, _, err = runCommand("check", "--strict", description)
            self.assertEqual((status, err), (0, ""), description)

    def test_legacySSLMethod(self) -> None:
        for method, version in (("TLSv1_METHOD", "TLS 1.0"), ("TLSv1_1_METHOD", "TLS 1.1")):
            status, _, err = runCommand(
                "check", "--server", f"ssl:8443:privateKey=server.pem:sslmethod={method}")
            self.assertEqual(status, 0)
            self.assertIn(f"warning: ssl: sslmethod={method} speaks only {version}", err)
        status, _, err = runCommand(
            "check", "--server", "ssl:8443:privateKey=server.pem:sslmethod=TLSv1_2_METHOD")
        self.assertEqual((status, err), (0, ""))

    def test_strict(self) -> None:
        status, _, err = runCommand("check", "--strict", "ssl:example.com:443")
        self.assertEqual(status, 1)
        self.assertIn("warning: ssl: verifies nothing", err)

    def test_nested(self) -> None:
        """
        A warning from inside a wrapper is shown, and secrets stay masked.
        """
        description = buildDescription(
            "timeout", 5, endpoint=buildDescription("ssl", "example.com", 443))
        status, _, err = runCommand("check", "--strict", description)
        self.assertEqual(status, 1)
        self.assertIn("warning: ssl: verifies nothing", err)

    def test_loggedOncePerDescription(self) -> None:
        """
        endpointkit's clientFromString logs each warning once per
        description, at warn level, with secrets masked.
        """
        from twisted.internet.testing import MemoryReactorClock
        from twisted.logger import LogLevel, capturedLogs, formatEvent

        from endpointkit import clientFromString

        reactor = MemoryReactorClock()
        description = buildDescription(
            "socks5", "example.com", 443, user="me", password="s3cret-pw",
            endpoint=buildDescription("ssl", "proxy.example", 1080, timeout=7))
        with capturedLogs() as events:
            for _ in range(3):
                clientFromString(reactor, description)
            clientFromString(reactor, "ssl:example.com:443:hostname=example.com")
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        text = formatEvent(warnings[0])
        self.assertIn("ssl: verifies nothing", text)
        self.assertIn("socks5:example.com:443", text)
        self.assertNotIn("s3cret-pw", text)

    def test_listenAndRelayLog(self) -> None:
        """
        L{endpointkit.listen} and the relay, which build from descriptions
        themselves, log the same warnings.
        """
        from twisted.internet.testing import MemoryReactorClock
        from twisted.logger import LogLevel, capturedLogs, formatEvent

        from endpointkit import listen
        from endpointkit.relay import RelayService

        key, certificate = selfSigned(self)
        legacy = buildDescription("ssl", 0, privateKey=key, certKey=certificate,
                                  interface="127.0.0.1", sslmethod="TLSv1_METHOD")
        with capturedLogs() as events:
            listen(legacy, Factory(), MemoryReactorClock())
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertTrue(any("sslmethod=TLSv1_METHOD" in w for w in warnings), warnings)
        with capturedLogs() as events:
            RelayService("tcp:0:interface=127.0.0.1", "ssl:relay-target.example:443",
                         reactor=MemoryReactorClock())
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertTrue(any("ssl: verifies nothing" in w and "relay-target.example" in w
                            for w in warnings), warnings)

    def test_serverLogged(self) -> None:
        from twisted.internet.testing import MemoryReactorClock
        from twisted.logger import LogLevel, capturedLogs, formatEvent

        from endpointkit import serverFromString

        key, certificate = selfSigned(self)
        description = buildDescription("ssl", 0, privateKey=key, certKey=certificate,
                                       sslmethod="TLSv1_1_METHOD")
        with capturedLogs() as events:
            serverFromString(MemoryReactorClock(), description)
            serverFromString(MemoryReactorClock(), description)
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("ssl: sslmethod=TLSv1_1_METHOD speaks only TLS 1.1", warnings[0])


def selfSigned(test: TestCase) -> tuple[str, str]:
    """
    The paths of a key and a self-signed certificate, removed at cleanup.
    """
    from tests._support import selfSignedCertificate

    directory = tempfile.mkdtemp(prefix="ek-cli-")
    test.addCleanup(subprocess.run, ["rm", "-rf", directory])
    certificate, key = selfSignedCertificate("localhost")
    paths = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    for path, data in zip(paths, (key, certificate), strict=True):
        with open(path, "wb") as f:
            f.write(data)
    return paths


class BuildTests(TestCase):
    """
    C{check --build} builds the endpoint without listening or connecting,
    and reports what would fail at run time with the run-time error.
    """

    def failsLikeRunTime(self, description: str, expected: str) -> str:
        status, _, err = runCommand("check", "--server", "--build", description)
        self.assertEqual(status, 2, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn(expected, err)
        return err.strip().removeprefix("endpointkit: ")

    def runTimeListenError(self, description: str) -> str:
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory

        from endpointkit import listen

        failure = self.failureResultOf(listen(description, Factory(), reactor=reactor))
        return str(failure.value)

    def test_adoptNotOpen(self) -> None:
        fd = os.open(os.devnull, os.O_RDONLY)
        os.close(fd)
        shown = self.failsLikeRunTime(f"adopt:{fd}", f"descriptor {fd} is not open")
        with self.assertRaises(DescriptionError) as caught:
            serverFromString(None, f"adopt:{fd}")
        self.assertEqual(shown, str(caught.exception))

    def test_adoptPipe(self) -> None:
        reading, writing = os.pipe()
        self.addCleanup(os.close, reading)
        self.addCleanup(os.close, writing)
        shown = self.failsLikeRunTime(f"adopt:{reading}", f"descriptor {reading} is a pipe")
        with self.assertRaises(DescriptionError) as caught:
            serverFromString(None, f"adopt:{reading}")
        self.assertEqual(shown, str(caught.exception))

    def test_missingKey(self) -> None:
        missing = os.path.join(tempfile.gettempdir(), f"ek-missing-{os.getpid()}.pem")
        self.failsLikeRunTime(buildDescription("ssl", 0, privateKey=missing),
                              f"'{missing}' No such file or directory")

    def test_unixDirectoryMissing(self) -> None:
        path = f"/nonexistent-{os.getpid()}/dir/s.sock"
        shown = self.failsLikeRunTime(buildDescription("unix", path), "does not exist")
        self.assertEqual(shown, self.runTimeListenError(buildDescription("unix", path)))

    def test_unixDirectoryNested(self) -> None:
        """
        A wrapper's inner description is probed too.
        """
        path = f"/nonexistent-{os.getpid()}/s.sock"
        description = buildDescription("limit", max=1, endpoint=buildDescription("unix", path))
        self.failsLikeRunTime(description, f"directory /nonexistent-{os.getpid()} does not exist")

    def test_unixParentIsAFile(self) -> None:
        description = buildDescription("unix", "/etc/passwd/s.sock")
        shown = self.failsLikeRunTime(description, "not a directory")
        self.assertEqual(shown, self.runTimeListenError(description))

    def test_unixPathTooLong(self) -> None:
        path = "/tmp/" + "a" * 120
        shown = self.failsLikeRunTime(buildDescription("unix", path), "too long")
        self.assertEqual(shown, self.runTimeListenError(buildDescription("unix", path)))

    def test_unixDirectoryNotWritable(self) -> None:
        """
        A directory the user cannot write in; as root (who writes anywhere),
        checked with the effective user nobody.
        """
        directory = tempfile.mkdtemp(prefix="ek-ro-")
        self.addCleanup(os.rmdir, directory)
        description = buildDescription("unix", os.path.join(directory, "s.sock"))
        # Everything imported first, while the effective user can read it.
        self.failsLikeRunTime(buildDescription("unix", "/nonexistent/s.sock"), "does not exist")
        self.runTimeListenError(buildDescription("unix", "/nonexistent/s.sock"))
        if os.getuid() == 0:
            os.chmod(directory, 0o755)
            os.seteuid(65534)
            try:
                shown = self.failsLikeRunTime(description, "permission denied")
                atRunTime = self.runTimeListenError(description)
            finally:
                os.seteuid(0)
        else:
            os.chmod(directory, 0o500)
            self.addCleanup(os.chmod, directory, 0o700)
            shown = self.failsLikeRunTime(description, "permission denied")
            atRunTime = self.runTimeListenError(description)
        self.assertEqual(shown, atRunTime)

    def test_tlsDirectoryMissing(self) -> None:
        """
        Twisted's C{tls:} server (from Twisted 26.4; before, there is no
        such type) with a missing certificate directory.
        """
        from endpointkit._compat import HAS_TLS_SERVER_PARSER

        path = f"/nonexistent-{os.getpid()}/certs"
        if not HAS_TLS_SERVER_PARSER:
            status, _, err = runCommand("check", "--server", "--build",
                                        buildDescription("tls", path, port=0))
            self.assertEqual(status, 2)
            self.assertIn("unknown server endpoint type 'tls'", err)
            return
        self.failsLikeRunTime(buildDescription("tls", path, port=0),
                              f"tls: argument 'path' must be a directory of PEM files, "
                              f"but {path} does not exist")

    def test_caCertsDirMissing(self) -> None:
        path = f"/nonexistent-{os.getpid()}/cas"
        status, _, err = runCommand("check", "--client", "--build",
                                    buildDescription("ssl", "example.com", 443, caCertsDir=path,
                                                     hostname="example.com"))
        self.assertEqual(status, 2)
        self.assertEqual(err, f"endpointkit: ssl: cannot build this endpoint: '{path}' "
                         "No such file or directory\n")

    def test_good(self) -> None:
        key, certificate = selfSigned(self)
        directory = tempfile.mkdtemp(prefix="ek-sock-")
        self.addCleanup(os.rmdir, directory)
        for description in (buildDescription("unix", os.path.join(directory, "s.sock")),
                            buildDescription("ssl", 0, privateKey=key, certKey=certificate),
                            "tcp:0", "memory:check-build"):
            status, _, err = runCommand("check", "--server", "--build", description)
            self.assertEqual((status, err), (0, ""), description)
        self.assertEqual(os.listdir(directory), [])

    def test_withoutBuildNothingChecked(self) -> None:
        status, _, err = runCommand("check", "--server", "unix:/nonexistent/dir/s.sock")
        self.assertEqual((status, err), (0, ""))


class VersionTests(TestCase):
    def test_version(self) -> None:
        import platform

        import twisted

        import endpointkit

        status, out, err = runCommand("--version")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, f"endpointkit {endpointkit.__version__} (Twisted "
                         f"{twisted.__version__}, {platform.python_implementation()} "
                         f"{platform.python_version()})\n")

    def test_commandStillRequired(self) -> None:
        self.patch(sys, "stderr", io.StringIO())
        with self.assertRaises(SystemExit) as caught:
            runCommand()
        self.assertEqual(caught.exception.code, 2)


class DoctorTests(TestCase):
    def test_healthy(self) -> None:
        status, out, _ = runCommand("doctor")
        self.assertEqual(status, 0, out)
        self.assertIn("plugin module endpointkit_endpoints found", out)
        self.assertNotIn("FIX", out)

    def test_collision(self) -> None:
        result = subprocessCommand(thirdPartyPath(self), "doctor")
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn("client prefix 'hostname' is provided by several plugin modules", result.stdout)
        self.assertIn("fakeendpoints", result.stdout)

    def test_strayInit(self) -> None:
        root = thirdPartyPath(self)
        with open(os.path.join(root, "twisted", "plugins", "__init__.py"), "w"):
            pass
        result = subprocessCommand(root, "doctor")
        self.assertEqual(result.returncode, 1, result.stdout)
        self.assertIn(f"FIX  stray {root}/twisted/plugins/__init__.py", result.stdout)
        self.assertIn("fix: remove it", result.stdout)

    def test_staleReadOnlyCache(self) -> None:
        """
        A plugin directory whose cache is older than a module in it is named,
        with the command that regenerates the cache.
        """
        root = thirdPartyPath(self)
        plugins = os.path.join(root, "twisted", "plugins")
        with open(os.path.join(plugins, "dropin.cache"), "wb"):
            pass
        os.utime(os.path.join(plugins, "dropin.cache"), (1, 1))
        result = subprocessCommand(root, "doctor")
        self.assertIn(f"{plugins}: dropin.cache is older than fakeendpoints.py", result.stdout)
        self.assertIn("getPlugins(IPlugin)", result.stdout)


class ReadmeTests(TestCase):
    def test_tableIsCurrent(self) -> None:
        """
        The README's table of types is the one the declarations make
        (regenerate it with C{endpointkit types --rst}).
        """
        with open(os.path.join(REPO, "README.rst"), encoding="utf-8") as f:
            readme = f.read()
        start = readme.index(".. types-table-start\n") + len(".. types-table-start\n")
        end = readme.index(".. types-table-end")
        self.assertEqual(readme[start:end].strip("\n"), readmeTable().strip("\n"))


class DoctorVersionTests(TestCase):
    """
    C{endpointkit doctor} reports the Python, Twisted and pyOpenSSL versions
    and warns about any outside the tested range or not working together.
    """

    def findings(self, **versions: Any) -> dict[str, Any]:
        from endpointkit._doctor import checkVersions

        found = checkVersions(**versions)
        return {f.what.split()[0]: f for f in found}

    def test_inRange(self) -> None:
        found = self.findings(python=(3, 11), twisted="26.10.0", pyopenssl="26.4.0")
        self.assertEqual([f.ok for f in found.values()], [True, True, True])
        self.assertIn("Twisted 26.10.0 (tested: 24.3 to 26.10)", found["Twisted"].what)

    def test_outsideRange(self) -> None:
        found = self.findings(python=(3, 9), twisted="23.10.0", pyopenssl="24.0.0")
        self.assertTrue(found["Python"].warning and not found["Python"].ok)
        self.assertIn("outside the tested range 3.10 to 3.13", found["Python"].what)
        self.assertTrue(found["Twisted"].warning)
        self.assertIn("outside the tested range 24.3 to 26.10", found["Twisted"].what)
        found = self.findings(python=(3, 14), twisted="27.1.0", pyopenssl="24.0.0")
        self.assertFalse(found["Python"].ok)
        self.assertFalse(found["Twisted"].ok)

    def test_oldTwistedNewPyOpenSSL(self) -> None:
        found = self.findings(python=(3, 11), twisted="24.3.0", pyopenssl="26.2.0")
        self.assertTrue(found["Twisted"].ok)
        self.assertTrue(found["pyOpenSSL"].warning)
        self.assertIn("pip install 'pyopenssl<26.2'", found["pyOpenSSL"].fix)
        self.assertTrue(self.findings(python=(3, 11), twisted="26.4.0",
                                      pyopenssl="26.4.0")["pyOpenSSL"].ok)

    def test_doctorPrintsVersionsAndExitsZeroOnWarnings(self) -> None:
        from io import StringIO

        from endpointkit import _doctor

        out = StringIO()
        self.patch(_doctor, "checkVersions", lambda: [_doctor.Finding(
            False, "Python 3.9 is outside the tested range 3.10 to 3.13", "use a tested Python",
            warning=True)])
        self.patch(_doctor, "checkCaches", lambda: [])
        self.patch(_doctor, "checkPluginFound", lambda: _doctor.Finding(True, "found"))
        self.patch(_doctor, "checkCollisions", lambda: [])
        self.patch(_doctor, "checkStrayInit", lambda: [])
        self.assertEqual(_doctor.doctor(out), 0)
        self.assertEqual(out.getvalue().splitlines()[0],
                         "WARN Python 3.9 is outside the tested range 3.10 to 3.13")
