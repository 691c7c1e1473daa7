"""
C{endpointkit doctor}: is Twisted's plugin discovery in a state where it
finds endpointkit's types, and what to do when it is not.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from typing import TextIO

from endpointkit._grammar import SIDES

PLUGIN_MODULE = "endpointkit_endpoints"
REGENERATE = ("python -c 'from twisted.plugin import IPlugin, getPlugins; "
              "list(getPlugins(IPlugin))'")


@dataclass(frozen=True)
class Finding:
    """
    One thing the doctor looked at: fine or not, and how to fix it.
    """

    ok: bool
    what: str
    fix: str = ""
    warning: bool = False


TESTED_PYTHON = ((3, 10), (3, 13))
"""
The oldest and newest Python CI tests (.ci/matrix), as in pyproject.toml.
"""

TESTED_TWISTED = ((24, 3), (26, 10))
"""
The oldest Twisted pyproject.toml declares and the newest release CI tested.
"""

# Twisted before 26.4 changes an SSL context after making a connection from
# it, which pyOpenSSL refuses from 26.2 on.
_TWISTED_NEEDS_OLD_PYOPENSSL = ((26, 4), (26, 2))


def _release(version: str) -> tuple[int, int]:
    major, minor = ([int(p) for p in version.split(".")[:2] if p.isdigit()] + [0, 0])[:2]
    return major, minor


def _shown(release: tuple[int, int]) -> str:
    return f"{release[0]}.{release[1]}"


def checkVersions(python: tuple[int, int] | None = None, twisted: str | None = None,
                  pyopenssl: str | None = None) -> list[Finding]:
    """
    The Python, Twisted and pyOpenSSL versions in use, with a warning for a
    Python or Twisted outside the range CI tests and for a Twisted and
    pyOpenSSL that do not work together.  Defaults: the running ones.
    """
    from importlib.metadata import version

    python = python or (sys.version_info[0], sys.version_info[1])
    twisted = twisted or version("twisted")
    pyopenssl = pyopenssl or version("pyopenssl")
    findings = []
    low, high = TESTED_PYTHON
    if low <= python <= high:
        findings.append(Finding(True, f"Python {_shown(python)} (tested: "
                                      f"{_shown(low)} to {_shown(high)})"))
    else:
        findings.append(Finding(False, f"Python {_shown(python)} is outside the tested range "
                                       f"{_shown(low)} to {_shown(high)}",
                                "use a tested Python; others may work but are not proven",
                                warning=True))
    low, high = TESTED_TWISTED
    release = _release(twisted)
    if low <= release <= high:
        findings.append(Finding(True, f"Twisted {twisted} (tested: {_shown(low)} to "
                                      f"{_shown(high)})"))
    else:
        findings.append(Finding(False, f"Twisted {twisted} is outside the tested range "
                                       f"{_shown(low)} to {_shown(high)}",
                                f"pip install 'twisted>={_shown(low)},<={_shown(high)}.99' "
                                "for a tested release", warning=True))
    fixedIn, refusedFrom = _TWISTED_NEEDS_OLD_PYOPENSSL
    if release < fixedIn and _release(pyopenssl) >= refusedFrom:
        findings.append(Finding(False, f"pyOpenSSL {pyopenssl} with Twisted {twisted}: TLS "
                                       "servers with ALPN fail (\"Context has already been "
                                       "used\")",
                                f"pip install 'pyopenssl<{_shown(refusedFrom)}', or Twisted "
                                f"{_shown(fixedIn)} or later", warning=True))
    else:
        findings.append(Finding(True, f"pyOpenSSL {pyopenssl}"))
    return findings


def pluginDirectories() -> list[str]:
    """
    The directories Twisted searches for plugin modules.
    """
    import twisted.plugins

    return [os.path.abspath(p) for p in twisted.plugins.__path__ if os.path.isdir(p)]


def checkPluginFound() -> Finding:
    from endpointkit._lookup import scanPlugins

    modules = {module for side in SIDES for _, module in scanPlugins(side)}
    if PLUGIN_MODULE in modules:
        where = next((d for d in pluginDirectories()
                      if os.path.exists(os.path.join(d, PLUGIN_MODULE + ".py"))), "?")
        return Finding(True, f"plugin module {PLUGIN_MODULE} found in {where}")
    return Finding(False, f"Twisted's plugin scan does not find {PLUGIN_MODULE}",
                   "install endpointkit into this Python (pip install endpointkit); "
                   "a package that ships twisted/plugins/__init__.py hides it (see below)")


def checkCaches() -> list[Finding]:
    findings = []
    for directory in pluginDirectories():
        modules = [f for f in os.listdir(directory) if f.endswith(".py") and f != "__init__.py"]
        if not modules:
            continue
        cache = os.path.join(directory, "dropin.cache")
        writable = os.access(directory, os.W_OK)
        if not os.path.exists(cache):
            findings.append(Finding(
                writable, f"{directory}: no dropin.cache"
                + ("; Twisted will write one at the next scan" if writable
                   else " and the directory is read-only, so every scan imports every plugin module"),
                "" if writable else f"as the owner of that directory run: {REGENERATE}"))
            continue
        cacheTime = os.path.getmtime(cache)
        stale = [m for m in modules if os.path.getmtime(os.path.join(directory, m)) > cacheTime]
        if stale:
            findings.append(Finding(
                writable, f"{directory}: dropin.cache is older than {', '.join(sorted(stale))}"
                + ("" if writable else " and cannot be rewritten (read-only)"),
                f"regenerate it{' as the owner of that directory' if not writable else ''}: {REGENERATE}"))
        else:
            findings.append(Finding(True, f"{directory}: dropin.cache is fresh"
                                    + ("" if writable else " (read-only)")))
    return findings


def checkCollisions() -> list[Finding]:
    from endpointkit._lookup import scanPlugins

    findings = []
    for side in SIDES:
        byPrefix: dict[str, list[str]] = defaultdict(list)
        for plugin, module in scanPlugins(side):
            byPrefix[str(plugin.prefix).lower()].append(module)
        for prefix, modules in sorted(byPrefix.items()):
            if len(modules) > 1:
                findings.append(Finding(
                    False, f"{side} prefix {prefix!r} is provided by several plugin modules: "
                    f"{', '.join(modules)}; Twisted uses {modules[0]}",
                    "uninstall one of the packages that provide these modules"))
            if side == "server" and prefix in ("tcp", "unix", "ssl"):
                findings.append(Finding(
                    False, f"plugin module {modules[0]} declares server prefix {prefix!r}, "
                    "which Twisted parses itself: the plugin is never used",
                    "uninstall the package that provides it"))
    if not findings:
        findings.append(Finding(True, "no prefix is provided twice"))
    return findings


def checkStrayInit() -> list[Finding]:
    import twisted

    real = os.path.dirname(os.path.abspath(twisted.__file__))
    findings = []
    for entry in sys.path:
        base = os.path.abspath(entry or ".")
        package = os.path.join(base, "twisted")
        if os.path.abspath(package) == real or not os.path.isdir(package):
            continue
        for stray in ("__init__.py", os.path.join("plugins", "__init__.py")):
            path = os.path.join(package, stray)
            if os.path.exists(path):
                findings.append(Finding(
                    False, f"stray {path}: it shadows Twisted's own package and hides "
                    "plugin modules installed beside it",
                    f"remove it (rm {path}) and reinstall the package that shipped it "
                    "without it"))
    own = os.path.join(real, "plugins", "__init__.py")
    try:
        with open(own, encoding="utf-8") as f:
            intact = "pluginPackagePaths" in f.read()
    except OSError:
        intact = False
    if not intact:
        findings.append(Finding(
            False, f"{own} is not Twisted's own: another package overwrote it",
            "reinstall Twisted: pip install --force-reinstall --no-deps twisted"))
    if not findings:
        findings.append(Finding(True, "no stray twisted/__init__.py or twisted/plugins/__init__.py"))
    return findings


def doctor(out: TextIO) -> int:
    """
    Print every finding; exit status 0 when all are fine or only warned
    about (versions outside the tested range), 1 otherwise.
    """
    # The caches first: the plugin scan that the other checks make rewrites
    # a stale cache where it can.
    findings = [*checkVersions(), *checkCaches(), checkPluginFound(), *checkCollisions(),
                *checkStrayInit()]
    for finding in findings:
        mark = "ok  " if finding.ok else "WARN" if finding.warning else "FIX "
        out.write(f"{mark} {finding.what}\n")
        if finding.fix:
            out.write(f"     fix: {finding.fix}\n")
    return 0 if all(f.ok or f.warning for f in findings) else 1
