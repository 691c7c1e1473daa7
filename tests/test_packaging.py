"""
Packaging: the wheel ships the plugin module and no C{twisted/__init__.py},
and Twisted's plugin discovery finds endpointkit's types after
C{pip install .}, after C{pip install -e .}, and from a wheel installed into a
fresh virtual environment whose site-packages is read-only.  Each case runs
in a real subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

from twisted.trial.unittest import TestCase

from tests._support import cleanEnvironment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a fresh interpreter: finds endpointkit's types through Twisted's own
# parse functions, and says where everything came from.
PROBE = r"""
import json, os, sys
from twisted.internet import reactor
from twisted.internet.endpoints import clientFromString, serverFromString
import endpointkit, twisted.plugins
client = clientFromString(reactor, r"timeout:5:endpoint=tcp\:127.0.0.1\:9")
server = serverFromString(reactor, "memory:probe")
print(json.dumps({
    "endpointkit": endpointkit.__file__,
    "client": type(client).__name__,
    "server": type(server).__name__,
    "pluginPaths": list(twisted.plugins.__path__),
}))
"""

_wheel: list[str] = []


def run(argv: list[str], cwd: str | None = None, timeout: float = 300) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env=cleanEnvironment())
    if result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def buildWheel() -> str:
    """
    Build endpointkit's wheel once for this test run.
    """
    if not _wheel:
        out = tempfile.mkdtemp(prefix="endpointkit-wheel-")
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "-q", "-w", out, REPO])
        [name] = [n for n in os.listdir(out) if n.endswith(".whl")]
        _wheel.append(os.path.join(out, name))
    return _wheel[0]


class FreshVenv:
    """
    A new virtual environment in which the test installs endpointkit; its
    dependencies come from this test run's environment through a C{.pth}
    file (a path there is not itself scanned for C{.pth} files, so this
    run's own endpointkit stays out of sight).
    """

    def __init__(self, test: TestCase) -> None:
        self.root = tempfile.mkdtemp(prefix="endpointkit-venv-")
        test.addCleanup(self.remove)
        run([sys.executable, "-m", "venv", "--without-pip", self.root])
        self.python = os.path.join(self.root, "bin", "python")
        self.site = run([self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
        with open(os.path.join(self.site, "dependencies.pth"), "w") as f:
            f.write(sysconfig.get_paths()["purelib"] + "\n")

    def pip(self, *args: str) -> None:
        run([sys.executable, "-m", "pip", "--python", self.python, "install", "-q",
             "--no-deps", "--no-build-isolation", *args])

    def probe(self, readOnly: bool = False) -> dict[str, object]:
        argv = [self.python, "-c", PROBE]
        if readOnly:
            argv = readOnlyCommand(self.site, argv)
        output = run(argv, cwd="/")
        result: dict[str, object] = json.loads(output.strip().splitlines()[-1])
        return result

    def remove(self) -> None:
        for dirpath, _dirnames, _ in os.walk(self.root):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(self.root, ignore_errors=True)


def readOnlyCommand(path: str, argv: list[str]) -> list[str]:
    """
    C{argv} run with C{path} read-only: for root (whom file modes do not
    stop) a read-only bind mount in a private mount namespace; for anyone
    else, C{path} loses its write bits.
    """
    if os.geteuid() == 0:
        return ["unshare", "-m", "sh", "-c",
                'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && shift && exec "$@"',
                path, "--", *argv]
    for dirpath, _dirnames, _filenames in os.walk(path):
        os.chmod(dirpath, 0o555)
    return argv


class WheelContentsTests(TestCase):
    def test_pluginModuleAndNoPackageInit(self) -> None:
        """
        The wheel ships the plugin modules, the typed package, and no
        C{twisted/__init__.py}, C{twisted/plugins/__init__.py} or cache.
        """
        names = zipfile.ZipFile(buildWheel()).namelist()
        self.assertIn("twisted/plugins/endpointkit_endpoints.py", names)
        self.assertIn("endpointkit/py.typed", names)
        for forbidden in ("twisted/__init__.py", "twisted/plugins/__init__.py"):
            self.assertNotIn(forbidden, names)
        twistedFiles = [n for n in names if n.startswith("twisted/")]
        self.assertEqual(
            [n for n in twistedFiles if not (n.startswith("twisted/plugins/endpointkit_")
                                             and n.endswith(".py"))], [])

    def test_consoleScript(self) -> None:
        names = zipfile.ZipFile(buildWheel()).namelist()
        [entryPoints] = [n for n in names if n.endswith("entry_points.txt")]
        text = zipfile.ZipFile(buildWheel()).read(entryPoints).decode()
        self.assertIn("endpointkit = endpointkit.cli:run", text)


class DiscoveryTests(TestCase):
    def test_wheelReadOnlySitePackages(self) -> None:
        """
        From a wheel in a fresh venv whose site-packages cannot be written
        (so no dropin.cache can be saved), Twisted's own parse functions
        find endpointkit's client and server types.
        """
        venv = FreshVenv(self)
        venv.pip(buildWheel())
        result = venv.probe(readOnly=True)
        self.assertTrue(str(result["endpointkit"]).startswith(venv.site), result)
        self.assertEqual((result["client"], result["server"]),
                         ("TimeoutEndpoint", "MemoryServerEndpoint"))
        self.assertFalse(os.path.exists(
            os.path.join(venv.site, "twisted", "plugins", "dropin.cache")))

    def test_pipInstall(self) -> None:
        """
        After C{pip install .} Twisted finds the types and caches them.
        """
        venv = FreshVenv(self)
        venv.pip(REPO)
        result = venv.probe()
        self.assertTrue(str(result["endpointkit"]).startswith(venv.site), result)
        self.assertEqual((result["client"], result["server"]),
                         ("TimeoutEndpoint", "MemoryServerEndpoint"))
        self.assertTrue(os.path.exists(
            os.path.join(venv.site, "twisted", "plugins", "dropin.cache")))

    def test_editableInstall(self) -> None:
        """
        After C{pip install -e .} Twisted finds the types in the source tree,
        from any working directory.
        """
        venv = FreshVenv(self)
        venv.pip("-e", REPO)
        result = venv.probe()
        self.assertEqual(result["endpointkit"], os.path.join(REPO, "endpointkit", "__init__.py"))
        self.assertIn(os.path.join(REPO, "twisted", "plugins"), result["pluginPaths"])
        self.assertEqual((result["client"], result["server"]),
                         ("TimeoutEndpoint", "MemoryServerEndpoint"))
