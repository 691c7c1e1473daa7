"""
Listens on each description given on the command line as an unprivileged
user and prints one JSON line per description: whether listening worked,
and the error.

Started as root, it first listens once as root (so that every module the
listening path needs is imported while the interpreter's files are still
readable), then drops to uid and gid 65534 and tries the descriptions.
The test runs it from a world-readable copy of itself and of endpointkit
(see C{runUnprivileged}), so that what the dropped user reads does not
depend on the checkout's permissions.

    python tests/lifecycle_unprivileged.py tcp:80:interface=127.0.0.1 ...
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.error import CannotListenError

import endpointkit
from endpointkit.lifecycle import listen, stopListening

NOBODY = 65534


def dropPrivileges() -> None:
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


@defer.inlineCallbacks
def run(reactor: Any, descriptions: list[str]) -> Any:
    factory = protocol.Factory.forProtocol(protocol.Protocol)
    with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
        for warmUp in ("tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\:\\:1",
                       f"unix:{scratch}/warm.sock"):
            port = yield listen(warmUp, factory)
            yield stopListening(port)
    dropPrivileges()
    for description in descriptions:
        line: dict[str, object] = {"description": description, "uid": os.getuid(),
                                   "endpointkit": os.path.dirname(endpointkit.__file__)}
        try:
            port = yield listen(description, factory)
        except Exception as e:
            line.update(ok=False, type=type(e).__name__, message=str(e),
                        errno=getattr(e, "errno", None),
                        cannotListen=isinstance(e, CannotListenError))
        else:
            line.update(ok=True)
            yield stopListening(port)
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


def main(argv: list[str]) -> None:
    task.react(run, (argv,))


if __name__ == "__main__":
    main(sys.argv[1:])
