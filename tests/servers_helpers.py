"""
Loopback clients shared by the server-endpoint tests.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure


class Collect(protocol.Protocol):
    """
    A client that sends C{data} once connected, collects what it receives,
    and fires C{done} with it when the connection closes.
    """

    def __init__(self, data: bytes = b"", closeAfter: bytes | None = None) -> None:
        self.data = data
        self.closeAfter = closeAfter
        self.received = b""
        self.made: defer.Deferred[Collect] = defer.Deferred()
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.data:
            self.transport.write(self.data)  # type: ignore[union-attr]
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.closeAfter is not None and self.closeAfter in self.received:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.done.callback(self.received)


def connect(reactor: Any, port: int, host: str = "127.0.0.1", data: bytes = b"",
            closeAfter: bytes | None = None, bindAddress: tuple[str, int] | None = None,
            timeout: float = 10.0) -> defer.Deferred[Collect]:
    """
    Connect a L{Collect} client; fires with it once connected.
    """
    client = Collect(data, closeAfter)
    factory = protocol.ClientFactory.forProtocol(lambda: client)

    def failed(connector: Any, reason: Failure) -> None:
        client.made.errback(reason)

    factory.clientConnectionFailed = failed  # type: ignore[method-assign]
    reactor.connectTCP(host, port, factory, timeout=timeout, bindAddress=bindAddress)
    return client.made


def bounded(reactor: IReactorTime, d: defer.Deferred[Any], seconds: float = 20.0) -> defer.Deferred[Any]:
    """
    C{d}, failing with a timeout after C{seconds}.
    """
    return d.addTimeout(seconds, reactor)


@defer.inlineCallbacks
def waitUntil(reactor: Any, condition: Any, seconds: float = 20.0,
              step: float = 0.02) -> Any:
    """
    Poll C{condition()} until it is true, at most C{seconds}.
    """
    from twisted.internet.task import deferLater

    waited = 0.0
    while not condition():
        if waited >= seconds:
            raise AssertionError(f"condition not met within {seconds} s")
        yield deferLater(reactor, step, lambda: None)
        waited += step
