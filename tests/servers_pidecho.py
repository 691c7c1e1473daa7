"""
A tiny echo service for the server-endpoint tests and benchmark: it greets
each connection with a line naming its process, then echoes.

Run it under C{twistd -n -y tests/servers_pidecho.py} or as
C{python tests/servers_pidecho.py [DESCRIPTION [READYFILE]]}; the server
description (parsed with endpointkit) is the first argument or
C{EKIT_LISTEN}, C{EKIT_READY} (or the second argument) a file written once
it listens, and C{EKIT_GREET=no} turns the greeting off (a plain echo).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import Application, Service
from twisted.internet import protocol


class PidEcho(protocol.Protocol):
    """
    Greets with C{pid=... listen_fds=...} and echoes what it receives.
    """

    greet = True

    def connectionMade(self) -> None:
        if self.greet:
            fds = os.environ.get("LISTEN_FDS", "-")
            self.transport.write(f"pid={os.getpid()} listen_fds={fds}\n".encode())  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class Listening(Service):
    """
    Listens on C{EKIT_LISTEN} when started; writes C{EKIT_READY} once it
    does, and stops the reactor if it cannot.
    """

    def startService(self) -> None:
        from twisted.internet import reactor

        import endpointkit

        Service.startService(self)
        PidEcho.greet = os.environ.get("EKIT_GREET", "yes") != "no"
        description = sys.argv[1] if len(sys.argv) > 1 else os.environ["EKIT_LISTEN"]
        endpoint = endpointkit.serverFromString(reactor, description)
        d = endpoint.listen(protocol.Factory.forProtocol(PidEcho))
        d.addCallbacks(self._ready, self._failed)

    def _ready(self, port: Any) -> None:
        self.port = port
        ready = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("EKIT_READY")
        if ready:
            with open(ready + ".tmp", "w") as f:
                f.write(f"{os.getpid()}\n")
            os.rename(ready + ".tmp", ready)

    def _failed(self, failure: Any) -> None:
        from twisted.internet import reactor

        sys.stderr.write(f"cannot listen: {failure.getErrorMessage()}\n")
        reactor.stop()  # type: ignore[attr-defined]


application = Application("pidecho")
Listening().setServiceParent(application)

if __name__ == "__main__":
    from twisted.internet import reactor

    service = Listening()
    service.startService()
    reactor.run()  # type: ignore[attr-defined]
