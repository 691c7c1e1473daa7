"""
The transport of a C{memory:} connection and its address: TCP's behaviour
(buffered writes delivered from the reactor, half-close, flow control, a
write to a peer gone for good ending the writer) without a socket.
L{endpointkit.memory} holds the registry of names, the ports and endpoints,
and is where these names are imported from.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
)
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit._grammar import quoteArgument

if TYPE_CHECKING:
    from endpointkit.memory import _Network

__all__ = ["HIGH_WATER", "LOW_WATER", "READ_SIZE", "MemoryAddress", "MemoryTransport"]

_log = Logger(namespace="endpointkit.memory")

#: Unread bytes (written but not yet delivered to the peer's protocol) above
#: which the writer's registered streaming producer is paused.
HIGH_WATER = 64 * 1024
#: Unread bytes below which a paused producer is resumed.
LOW_WATER = 16 * 1024
#: The most bytes handed to C{dataReceived} at once, like one TCP read.
READ_SIZE = 64 * 1024

@implementer(IAddress)
@dataclass(frozen=True)
class MemoryAddress:
    """
    The address of one end of a C{memory:} connection.

    @ivar name: the name listened on.
    @ivar connectionNumber: 0 for the listener (the server side of every
        connection), and for a client a number unique on that listener,
        counted from 1, like an ephemeral port.
    """

    name: str
    connectionNumber: int = 0

    def __str__(self) -> str:
        return f"memory:{quoteArgument(self.name)}#{self.connectionNumber}"


def _failure(error: BaseException | None = None) -> Failure:
    """
    A L{Failure} of C{error}, or of the exception being handled.
    """
    return Failure(error)  # type: ignore[no-untyped-call]


def _done() -> Failure:
    return _failure(ConnectionDone())


@implementer(ITransport, IConsumer, IPushProducer)
class MemoryTransport:
    """
    One end of a C{memory:} connection.  What is written is kept in this
    end's outgoing buffer until the pump moves it into the peer's incoming
    buffer, from which it is delivered while the peer reads.

    Besides L{ITransport} it has the rest of TCP's transport methods
    (C{loseWriteConnection}, C{abortConnection}, the socket options), but it
    does not declare L{ITCPTransport}, whose addresses are IP addresses.
    """

    disconnecting = False
    disconnected = False
    connected = False

    def __init__(
        self,
        reactor: Any,
        network: _Network,
        host: MemoryAddress,
        peerAddress: MemoryAddress,
        onLost: Callable[[], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self._network = network
        self._host = host
        self._peerAddress = peerAddress
        self._onLost = onLost
        self.protocol: Any = None
        self._peer: MemoryTransport | None = None
        self._outbound: list[bytes] = []
        self._outboundSize = 0
        self._inbound: deque[bytes] = deque()
        self._inboundSize = 0
        self._inboundEnd: Failure | None = None
        self._reading = True
        self._readDisconnected = False
        self._writeDisconnecting = False
        self._writeDisconnected = False
        self._aborting = False
        self._queued = False
        self.producer: Any = None
        self.streamingProducer = False
        self._producerPaused = False
        self._noDelay = True
        self._keepAlive = False

    def __repr__(self) -> str:
        return f"<MemoryTransport {self._host} -> {self._peerAddress}>"

    # Scheduling.

    def _schedule(self) -> None:
        if not self._queued and not self.disconnected:
            self._queued = True
            self._network.schedule(self.reactor, self._service)

    def _backlog(self) -> int:
        """
        Bytes written by this end that the peer's protocol has not read.
        """
        peer = self._peer
        inPeer = peer._inboundSize if peer is not None else 0
        return self._outboundSize + inPeer

    def _service(self) -> None:
        """
        Move written data to the peer, deliver what the peer wrote, and carry
        out a pending close: one step of the pump for this end.
        """
        self._queued = False
        if self.disconnected or self._aborting:
            return
        self._deliver()
        if self.disconnected or self._aborting:
            return
        peer = self._peer
        if self._outbound:
            if peer is None or peer.disconnected:
                # Written to a peer that has closed for good: on TCP the
                # peer answers with a reset and the write fails (EPIPE).
                self._connectionLost(_failure(ConnectionLost(
                    "the peer has closed the connection (broken pipe)")))
                return
            peer._inbound.extend(self._outbound)
            peer._inboundSize += self._outboundSize
            peer._schedule()
            self._outbound = []
            self._outboundSize = 0
        producer = self.producer
        if producer is not None and (not self.streamingProducer or self._producerPaused):
            if self._backlog() <= LOW_WATER:
                self._producerPaused = False
                producer.resumeProducing()
            return
        if self.disconnecting:
            self._connectionLost(_done())
        elif self._writeDisconnecting and not self._writeDisconnected:
            self._writeDisconnected = True
            if peer is not None and not peer.disconnected and peer._inboundEnd is None:
                peer._inboundEnd = _done()
                peer._schedule()
            halfCloseable: Any = IHalfCloseableProtocol(self.protocol, None)
            if halfCloseable is not None:
                self._call(halfCloseable.writeConnectionLost)

    def _deliver(self) -> None:
        """
        Hand incoming data, then the end of the stream, to the protocol while
        it reads.
        """
        inbound = self._inbound
        chunks = 0
        while inbound and self._isReading():
            if len(inbound) == 1 or len(inbound[0]) >= READ_SIZE:
                data = inbound.popleft()
            else:
                parts = []
                size = 0
                while inbound and size + len(inbound[0]) <= READ_SIZE:
                    part = inbound.popleft()
                    parts.append(part)
                    size += len(part)
                data = b"".join(parts)
            self._inboundSize -= len(data)
            peer = self._peer
            if (
                peer is not None
                and peer.producer is not None
                and (peer._producerPaused or not peer.streamingProducer)
                and peer._backlog() <= LOW_WATER
            ):
                peer._schedule()
            assert self.protocol is not None
            self._call(self.protocol.dataReceived, data)
            chunks += 1
            if chunks >= 16 and inbound:
                self._schedule()
                return
        if not inbound and self._inboundEnd is not None and self._isReading():
            reason = self._inboundEnd
            self._inboundEnd = None
            if isinstance(reason.value, ConnectionDone):
                halfCloseable: Any = IHalfCloseableProtocol(self.protocol, None)
                if halfCloseable is not None:
                    self._readDisconnected = True
                    self._call(halfCloseable.readConnectionLost)
                    return
            self._connectionLost(reason)

    def _isReading(self) -> bool:
        return (
            self._reading
            and not self.disconnecting
            and not self.disconnected
            and not self._readDisconnected
            and not self._aborting
        )

    def _call(self, method: Callable[..., object], *args: object) -> None:
        """
        Call the protocol; like a reactor, log what it raises and drop the
        connection with that failure.
        """
        try:
            method(*args)
        except BaseException:
            failure = _failure()
            _log.failure("unhandled error in a memory: protocol", failure)
            self._connectionLost(failure)

    def _connectionLost(self, reason: Failure) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        self.connected = False
        self._reading = False
        self._outbound = []
        self._outboundSize = 0
        self._inbound.clear()
        self._inboundSize = 0
        self._inboundEnd = None
        self._network.connections.discard(self)
        peer = self._peer
        if peer is not None and not peer.disconnected:
            if isinstance(reason.value, ConnectionAborted):
                peer._inboundEnd = _failure(ConnectionLost("connection reset by peer"))
            elif peer._inboundEnd is None and not self._writeDisconnected:
                peer._inboundEnd = _done()
            peer._schedule()
        producer = self.producer
        self.producer = None
        if producer is not None:
            try:
                producer.stopProducing()
            except BaseException:
                _log.failure("error stopping the producer of a memory: transport")
        protocol = self.protocol
        if protocol is not None:
            try:
                protocol.connectionLost(reason)
            except BaseException:
                _log.failure("unhandled error in a memory: protocol's connectionLost")
        if self._onLost is not None:
            onLost, self._onLost = self._onLost, None
            onLost()

    # ITransport

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        if not self.connected or self._writeDisconnected or self._aborting:
            return
        if data:
            self._outbound.append(data)
            self._outboundSize += len(data)
            self._maybePauseProducer()
            self._schedule()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        chunks = list(data)
        for chunk in chunks:
            if not isinstance(chunk, bytes):
                raise TypeError(f"data must be bytes, not {type(chunk).__name__}")
        for chunk in chunks:
            self.write(chunk)

    def _maybePauseProducer(self) -> None:
        producer = self.producer
        if (
            producer is not None
            and self.streamingProducer
            and not self._producerPaused
            and self._backlog() > HIGH_WATER
        ):
            self._producerPaused = True
            producer.pauseProducing()

    def loseConnection(self) -> None:
        if not self.connected or self.disconnecting:
            return
        self.disconnecting = True
        self._schedule()

    def abortConnection(self) -> None:
        if self.disconnected or self._aborting:
            return
        self._aborting = True
        self._outbound = []
        self._outboundSize = 0
        self._network.schedule(
            self.reactor, lambda: self._connectionLost(_failure(ConnectionAborted()))
        )

    def loseWriteConnection(self) -> None:
        if not self.connected:
            return
        self._writeDisconnecting = True
        self._schedule()

    def getPeer(self) -> MemoryAddress:
        return self._peerAddress

    def getHost(self) -> MemoryAddress:
        return self._host

    # TCP's socket options: accepted and remembered, no effect.

    def getTcpNoDelay(self) -> bool:
        return self._noDelay

    def setTcpNoDelay(self, enabled: bool) -> None:
        self._noDelay = bool(enabled)

    def getTcpKeepAlive(self) -> bool:
        return self._keepAlive

    def setTcpKeepAlive(self, enabled: bool) -> None:
        self._keepAlive = bool(enabled)

    # IConsumer

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError(
                f"cannot register producer {producer!r}, because producer "
                f"{self.producer!r} was never unregistered"
            )
        if self.disconnected:
            producer.stopProducing()
            return
        self.producer = producer
        self.streamingProducer = bool(streaming)
        self._producerPaused = False
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        self.producer = None
        self._producerPaused = False
        if self.connected and (self.disconnecting or self._writeDisconnecting):
            self._schedule()

    # IPushProducer: the reading side.

    def pauseProducing(self) -> None:
        self._reading = False

    def resumeProducing(self) -> None:
        if self.connected and not self.disconnecting:
            self._reading = True
            if self._inbound or self._inboundEnd is not None:
                self._schedule()

    def stopProducing(self) -> None:
        self.loseConnection()
