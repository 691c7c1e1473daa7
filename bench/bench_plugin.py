"""
Plugin module import cost and parse cost, each against its baseline in the
same run.

  - Import: the time to import C{twisted.plugins.endpointkit_endpoints} in a
    fresh interpreter that has already imported C{twisted.internet.endpoints}
    (what every C{twistd} start and plugin scan pays), next to Twisted's own
    C{twisted.plugins.twisted_core}.  Target: under 5 ms.
  - Parse: one description through Twisted's C{clientFromString} and through
    C{endpointkit.clientFromString}, for Twisted's C{tcp:} and for a plugin
    type (C{timeout:} around C{tcp:}).

Usage: python bench/bench_plugin.py [--quick]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable

IMPORT_PROBE = """
import time
import twisted.internet.endpoints, twisted.plugins
start = time.perf_counter()
import twisted.plugins.{module}
print(time.perf_counter() - start)
"""


def importCost(module: str, runs: int) -> float:
    """
    Median seconds to import a plugin module after Twisted's endpoints.
    """
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(module=module)],
                             capture_output=True, text=True, check=True)
        times.append(float(out.stdout))
    return statistics.median(times)


def perCall(function: Callable[[], object], calls: int) -> float:
    """
    Best of five runs of C{calls} calls, in seconds per call.
    """
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main() -> None:
    quick = "--quick" in sys.argv
    runs = 7 if quick else 31
    ours = importCost("endpointkit_endpoints", runs)
    twisteds = importCost("twisted_core", runs)
    print(f"plugin module import after twisted.internet.endpoints (median of {runs} fresh interpreters)")
    print(f"  endpointkit_endpoints  {ours * 1000:7.3f} ms   (target < 5 ms)")
    print(f"  twisted_core           {twisteds * 1000:7.3f} ms   (Twisted's own plugin module)")
    print(f"  ratio                  {ours / twisteds:7.2f}x")

    from twisted.internet import endpoints, reactor

    import endpointkit

    tcp = "tcp:127.0.0.1:80"
    wrapped = r"timeout:30:endpoint=tcp\:127.0.0.1\:80"
    calls = 200 if quick else 1000
    rows = [
        ("twisted  clientFromString tcp:", perCall(lambda: endpoints.clientFromString(reactor, tcp), calls)),  # type: ignore[no-untyped-call]
        ("twisted  clientFromString timeout:", perCall(lambda: endpoints.clientFromString(reactor, wrapped), calls)),  # type: ignore[no-untyped-call]
        ("endpointkit clientFromString tcp:", perCall(lambda: endpointkit.clientFromString(reactor, tcp), calls)),
        ("endpointkit clientFromString timeout:", perCall(lambda: endpointkit.clientFromString(reactor, wrapped), calls)),
    ]
    base = rows[0][1]
    print(f"\nparse cost per description (best of 5 x {calls} calls)")
    for name, seconds in rows:
        print(f"  {name:40s} {seconds * 1e6:9.1f} us   {seconds / base:6.2f}x twisted tcp:")


if __name__ == "__main__":
    main()
