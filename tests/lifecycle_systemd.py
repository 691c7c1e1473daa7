"""
Run under systemd-socket-activate with one socket named C{web}: listens on
it through endpointkit.lifecycle, prints one JSON line with the client
description of the adopted port and the error for a socket that was not
passed, echoes one connection, then stops listening and exits.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import defer, protocol, task

from endpointkit.lifecycle import clientDescriptionFor, listen, stopListening


class EchoOnce(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.done.callback(None)


@defer.inlineCallbacks
def run(reactor: Any) -> Any:
    factory = protocol.Factory.forProtocol(EchoOnce)
    factory.done = defer.Deferred()
    report: dict[str, object] = {}
    try:
        yield listen("systemd:domain=INET:index=7", factory)
    except Exception as e:
        report["missing"] = f"{type(e).__name__}: {e}"
    port = yield listen("systemd:domain=INET:name=web", factory)
    report["description"] = clientDescriptionFor(port)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    yield factory.done.addTimeout(30, reactor)
    yield stopListening(port)


if __name__ == "__main__":
    task.react(run)
