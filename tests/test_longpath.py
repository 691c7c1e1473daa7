"""
The test suite passes wherever a user clones: the tests that make UNIX
sockets, and the one that drops privileges, run again from a copy of the
tree at a path of over 100 characters (as a clone a few project folders
deep is), under a directory only its owner can enter, with C{TMPDIR} long
too.  Trial's C{_trial_temp} is then far too deep for a UNIX socket path,
and the unprivileged user cannot read the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from twisted.trial.unittest import TestCase

from tests._support import PYTHON, cleanEnvironment, shortTempDir

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

AFFECTED = (
    "tests.test_adopt",
    "tests.test_multi",
    "tests.test_lifecycle",
)
"""
The test modules that make UNIX sockets or drop privileges.
"""

LONG = 110

_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "_trial_temp*", "__pycache__", "*.egg-info", ".mypy_cache",
    ".ruff_cache", "dropin.cache", "build", "dist")


class LongPathTests(TestCase):
    """
    The affected test modules, run by trial from a checkout at a long path.
    """

    def test_affectedModulesPass(self) -> None:
        base = shortTempDir(self)
        os.chmod(base, 0o700)
        checkout = os.path.join(base, "home-of-a-user", "projects", "clients",
                                "example-organisation", "services", "endpointkit")
        checkout += "-checkout" * max(0, (LONG - len(checkout) + 8) // 9)
        self.assertGreaterEqual(len(checkout), LONG)
        shutil.copytree(ROOT, checkout, ignore=_NOT_SOURCE)
        temporary = os.path.join(checkout, "a-temporary-directory-as-deep-as-the-checkout")
        os.mkdir(temporary)
        env = {**cleanEnvironment(), "PYTHONPATH": checkout, "TMPDIR": temporary}

        where = subprocess.run(
            [PYTHON, "-c", "import endpointkit, tests; print(endpointkit.__file__); "
             "print(tests.__file__)"],
            cwd=checkout, env=env, capture_output=True, timeout=60, check=True)
        for imported in where.stdout.decode().split():
            self.assertTrue(imported.startswith(checkout + os.sep), imported)

        done = subprocess.run([PYTHON, "-m", "twisted.trial", *AFFECTED], cwd=checkout,
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=600)
        output = done.stdout.decode(errors="replace")
        self.assertEqual(done.returncode, 0, output[-6000:])
        summary = re.findall(r"^PASSED \((.*)\)$", output, re.M)
        self.assertEqual(len(summary), 1, output[-6000:])
        self.assertRegex(summary[0], r"successes=[1-9][0-9]")
