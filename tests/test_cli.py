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

from twisted.trial.unittest import TestCase

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
