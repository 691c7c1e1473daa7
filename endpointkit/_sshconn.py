"""
The SSH connection machinery of L{endpointkit.ssh}, over Twisted conch: the
transport (L{_Transport}: host-key check, agent, authentication, why it
closed), the connection service (L{_Service}), one SSH connection with its
waiters, channels and idle close (L{_Connection}), the pool of shared
connections (L{sharedConnectionCount}, L{closeSharedConnections},
L{_connectionFor}), and the channel as a stream transport with half-close
and flow control (L{_StreamChannel}, the base of the family's channels).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from twisted.conch.error import ConchError
from twisted.conch.ssh import connection, keys, transport
from twisted.conch.ssh.agent import SSHAgentClient
from twisted.conch.ssh.channel import SSHChannel
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit._sshauth import (
    SSHChannelOpenFailed,
    SSHConnectionLost,
    SSHError,
    SSHHostKeyUnknown,
    _Settings,
    _UserAuth,
)

if TYPE_CHECKING:
    from endpointkit.ssh import _Attempt, _SSHEndpoint

# The log namespace these messages had before the connection machinery left
# endpointkit.ssh, kept so that filters by namespace see no change.
_log = Logger(namespace="endpointkit.ssh")

WINDOW = 2 * 1024 * 1024
"""
Each channel's receive window: what a slow reader may have buffered at most.
"""

MAX_PACKET = 32768


# The SSH connection.


class _Service(connection.SSHConnection):
    """
    The connection service: the channels of one SSH connection.  Data for
    L{_StreamChannel}s does not adjust the window here: the channel does,
    when its protocol is not paused.
    """

    def __init__(self, owner: _Connection) -> None:
        connection.SSHConnection.__init__(self)
        self.owner = owner
        self.lostReason: Failure | None = None

    def logPrefix(self) -> str:
        return "SSHConnection"

    def serviceStarted(self) -> None:
        connection.SSHConnection.serviceStarted(self)
        self.owner.ready(self)

    def ssh_CHANNEL_DATA(self, packet: bytes) -> None:
        localChannel, dataLength = struct.unpack(">2L", packet[:8])
        channel = self.channels.get(localChannel)
        if not isinstance(channel, _StreamChannel):
            connection.SSHConnection.ssh_CHANNEL_DATA(self, packet)
            return
        if dataLength > channel.localWindowLeft or dataLength > channel.localMaxPacket:
            _log.error("ssh: the server sent more than the channel window; closing it")
            self.sendClose(channel)
            return
        channel.localWindowLeft -= dataLength
        channel.dataReceived(packet[8:8 + dataLength])


class _Transport(transport.SSHClientTransport):
    """
    The SSH transport: verifies the host key, then authenticates, and says
    why it closed.
    """

    def __init__(self, owner: _Connection) -> None:
        self.owner = owner
        self.error: SSHError | None = None
        self._userauth: _UserAuth | None = None
        self._agent: SSHAgentClient | None = None
        self._service: _Service | None = None

    def logPrefix(self) -> str:
        return "SSHClientTransport"

    def connectionMade(self) -> None:
        self.owner.stage = "the key exchange"
        transport.SSHClientTransport.connectionMade(self)

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        try:
            self.owner.settings.checkHostKey(keys.Key.fromString(hostKey))
        except SSHError as e:
            self.error = e
            failed: Deferred[bool] = Deferred()
            failed.errback(e)
            return failed
        except keys.BadKeyError:
            self.error = SSHHostKeyUnknown("the server's host key cannot be read",
                                           self.owner.settings.serverShown)
            unreadable: Deferred[bool] = Deferred()
            unreadable.errback(self.error)
            return unreadable
        return succeed(True)

    def connectionSecure(self) -> None:
        self.owner.stage = "authenticating"
        settings = self.owner.settings
        self._service = _Service(self.owner)
        if settings.agent and settings.agentSocket:
            agentEndpoint = UNIXClientEndpoint(self.owner.reactor, settings.agentSocket,
                                               timeout=max(1, int(settings.handshakeTimeout)))
            d: Deferred[Any] = connectProtocol(agentEndpoint, SSHAgentClient())

            def gotAgent(agent: SSHAgentClient) -> Deferred[Any]:
                self._agent = agent
                identities: Deferred[Any] = agent.requestIdentities()
                return identities

            def noAgent(reason: Failure) -> list[Any]:
                _log.debug("ssh: no agent at {path}: {reason}", path=settings.agentSocket,
                           reason=reason.getErrorMessage())
                return []

            d.addCallback(gotAgent).addErrback(noAgent)
            d.addCallback(self._authenticate)
        else:
            self._authenticate([])

    def _authenticate(self, agentKeys: list[tuple[bytes, bytes]]) -> None:
        if self.transport is None or self.owner.closed:
            return
        self._userauth = _UserAuth(self.owner, self._service, self.owner.keys, self._agent,
                                   agentKeys)
        self.requestService(self._userauth)

    def sendDisconnect(self, reason: int, desc: bytes) -> None:
        if (reason == transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE
                and self.error is None and self._userauth is not None):
            self.error = self._userauth.failure()
        transport.SSHClientTransport.sendDisconnect(self, reason, desc)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        if self.error is None:
            text = description.decode("utf-8", "replace")
            self.error = SSHConnectionLost(
                f"the server disconnected during {self.owner.stage}: {text} (code {reasonCode})",
                self.owner.settings.serverShown)
        transport.SSHClientTransport.receiveError(self, reasonCode, description)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._service is not None:
            self._service.lostReason = reason
        if self._agent is not None and self._agent.transport is not None:
            self._agent.transport.loseConnection()
            self._agent = None
        transport.SSHClientTransport.connectionLost(self, reason)
        self.owner.lost(self.error, reason)


class _Connection:
    """
    One SSH connection: connecting, ready, closed; who waits for it, its
    channels, and its idle timer.
    """

    def __init__(self, reactor: Any, endpoint: Any, settings: _Settings,
                 key: tuple[Any, ...] | None) -> None:
        self.reactor = reactor
        self.settings = settings
        self.poolKey = key
        self.keys = settings.loadKeys()
        self.stage = "connecting to the server"
        self.closed = False
        self.service: _Service | None = None
        self.channels: set[_StreamChannel] = set()
        self._waiters: list[Deferred[_Connection]] = []
        self._idleTimer: Any = None
        self._endpoint = endpoint
        self._pending: Deferred[Any] | None = None
        self._transport: _Transport | None = None
        self.lostDeferreds: list[Deferred[None]] = []

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("ready" if self.service else self.stage)
        return f"<SSH connection {self.settings.user}@{self.settings.serverShown} {state}>"

    def start(self) -> None:
        self._transport = _Transport(self)
        pending: Deferred[Any] = connectProtocol(self._endpoint, self._transport)
        self._pending = pending

        def connected(protocol: Any) -> None:
            self._pending = None

        def failed(reason: Failure) -> None:
            self._pending = None
            if not self.closed:
                self._close(reason)

        pending.addCallbacks(connected, failed)

    @property
    def usable(self) -> bool:
        if self.closed:
            return False
        tcp = self._transport.transport if self._transport is not None else None
        return not (tcp is not None and getattr(tcp, "disconnecting", False))

    def wait(self) -> Deferred[_Connection]:
        """
        A L{Deferred} that fires with this connection once it is ready.
        """
        if self.service is not None:
            self._stopIdle()
            return succeed(self)

        def cancel(d: Deferred[_Connection]) -> None:
            if d in self._waiters:
                self._waiters.remove(d)
            self.checkIdle()

        d: Deferred[_Connection] = Deferred(cancel)
        self._waiters.append(d)
        return d

    def ready(self, service: _Service) -> None:
        self.service = service
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self)
        self.checkIdle()

    def addChannel(self, channel: _StreamChannel) -> None:
        self.channels.add(channel)
        self._stopIdle()

    def removeChannel(self, channel: _StreamChannel) -> None:
        self.channels.discard(channel)
        self.checkIdle()

    def inUse(self) -> bool:
        return bool(self._waiters) or any(not c.abandoned for c in self.channels)

    def checkIdle(self) -> None:
        """
        Close an unused connection: at once when not shared or still being
        set up, else after C{idle} seconds.
        """
        if self.closed or self.inUse():
            return
        if self.service is None:
            self.abort()
            return
        if self.channels:
            return
        if not self.settings.share or self.settings.idle <= 0:
            self.close()
            return
        if self._idleTimer is None:
            self._idleTimer = self.reactor.callLater(self.settings.idle, self._idled)

    def _stopIdle(self) -> None:
        if self._idleTimer is not None and self._idleTimer.active():
            self._idleTimer.cancel()
        self._idleTimer = None

    def _idled(self) -> None:
        self._idleTimer = None
        if not self.inUse() and not self.channels:
            self.close()

    def _forget(self) -> None:
        if self.poolKey is not None and _POOL.get(self.poolKey) is self:
            del _POOL[self.poolKey]

    def close(self) -> None:
        """
        Close the SSH connection cleanly.
        """
        self._forget()
        self._stopIdle()
        if self._transport is not None and self._transport.transport is not None:
            self._transport.loseConnection()
        else:
            self.abort()

    def abort(self) -> None:
        """
        Close the SSH connection at once.
        """
        self._forget()
        self._stopIdle()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
            return
        tcp: Any = self._transport.transport if self._transport is not None else None
        if tcp is not None:
            tcp.abortConnection()

    def lost(self, error: SSHError | None, reason: Failure | None) -> None:
        if error is None and self.service is None:
            text = reason.getErrorMessage() if reason is not None else "closed"
            error = SSHConnectionLost(f"the connection closed during {self.stage}: {text}",
                                      self.settings.serverShown)
        self._close(Failure(error) if error is not None else reason)

    def _close(self, reason: Failure | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._forget()
        self._stopIdle()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(reason if reason is not None else Failure(ConnectionLost()))
        lostDeferreds, self.lostDeferreds = self.lostDeferreds, []
        for done in lostDeferreds:
            done.callback(None)


_POOL: dict[tuple[Any, ...], _Connection] = {}


def sharedConnectionCount() -> int:
    """
    How many shared SSH connections are open or opening now.
    """
    return sum(1 for c in _POOL.values() if not c.closed)


def closeSharedConnections() -> Deferred[None]:
    """
    Close every shared SSH connection (their channels too); the L{Deferred}
    fires when all are closed.  For a program's shutdown and tests.
    """
    waits: list[Deferred[None]] = []
    for conn in list(_POOL.values()):
        if conn.closed:
            continue
        lost: Deferred[None] = Deferred()
        conn.lostDeferreds.append(lost)
        waits.append(lost)
        conn.close()
    _POOL.clear()
    done: Deferred[None] = DeferredList(waits).addCallback(lambda _: None)
    return done


def _connectionFor(endpoint: _SSHEndpoint) -> _Connection:
    settings = endpoint.settings
    if not settings.share:
        conn = _Connection(endpoint.reactor, endpoint.serverEndpoint, settings, None)
        conn.start()
        return conn
    key = (id(endpoint.reactor), *settings.poolKey())
    found = _POOL.get(key)
    if found is not None and found.usable:
        return found
    shared = _Connection(endpoint.reactor, endpoint.serverEndpoint, settings, key)
    _POOL[key] = shared
    shared.start()
    return shared


_OPEN_REASONS = {
    connection.OPEN_ADMINISTRATIVELY_PROHIBITED: "administratively prohibited",
    connection.OPEN_CONNECT_FAILED: "connect failed",
    connection.OPEN_UNKNOWN_CHANNEL_TYPE: "unknown channel type",
    connection.OPEN_RESOURCE_SHORTAGE: "resource shortage",
}


# Channels.


@implementer(ITransport, IPushProducer, IConsumer)
class _StreamChannel(SSHChannel):
    """
    A channel as a stream transport, like TCP's: half-close through channel
    EOF both ways, the remote window for the user's producer, the local
    window held back while the user's protocol is paused.
    """

    conn: Any

    def __init__(self, attempt: _Attempt, peer: Any) -> None:
        SSHChannel.__init__(self, localWindow=WINDOW, localMaxPacket=MAX_PACKET)
        self.attempt: _Attempt | None = attempt
        self.peer = peer
        self.protocol: Any = None
        self.abandoned = False
        self.connected = False
        self.disconnecting = False
        self._paused = False
        self._inbox: list[bytes] = []
        self._eofIn = False
        self._eofInDelivered = False
        self._eofOut = False
        self._wantEOF = False
        self._aborted = False
        self._producer: Any = None
        self._streaming = True
        self._producerPaused = False
        self._reason: BaseException | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} to {self.peer}>"

    def logPrefix(self) -> str:
        return type(self.protocol).__name__ if self.protocol is not None else "SSHChannel"

    # Opening.

    def openFailed(self, reason: Any) -> None:
        owner = self.conn.owner if self.conn is not None else None
        if owner is not None:
            owner.removeChannel(self)
        attempt, self.attempt = self.attempt, None
        if attempt is None:
            return
        attempt.channel = None
        if isinstance(reason, ConchError):
            code = reason.data if isinstance(reason.data, int) else 0
            text = reason.value.decode("utf-8", "replace") if isinstance(reason.value, bytes) \
                else str(reason.value)
            attempt.fail(self._openError(code, text, attempt))
        else:
            attempt.fail(SSHConnectionLost("the connection closed before the channel opened",
                                           attempt.endpoint.settings.serverShown))

    def _openError(self, code: int, text: str, attempt: _Attempt) -> SSHError:
        name = _OPEN_REASONS.get(code, f"reason {code}")
        return SSHChannelOpenFailed(
            f"refused to open the {self.name.decode()} channel{attempt.endpoint.what()}: "
            f"{name}: {text}", attempt.endpoint.settings.serverShown, code, text)

    def channelOpen(self, specificData: bytes) -> None:
        if self.abandoned:
            self.conn.sendClose(self)
            return
        self.opened()

    def opened(self) -> None:
        attempt = self.attempt
        if attempt is not None:
            attempt.channelReady(self)

    def attach(self, protocol: Any) -> None:
        self.attempt = None
        self.protocol = protocol
        self.connected = True
        protocol.makeConnection(self)

    # Incoming.

    def dataReceived(self, data: bytes) -> None:
        if self.protocol is None or self._paused or self._inbox:
            self._inbox.append(data)
            return
        self.protocol.dataReceived(data)
        self._adjust()

    def _adjust(self) -> None:
        if (not self._paused and not self.localClosed and self.conn is not None
                and self.localWindowLeft < self.localWindowSize // 2):
            self.conn.adjustWindow(self, self.localWindowSize - self.localWindowLeft)

    def _drain(self) -> None:
        while self._inbox and not self._paused and self.protocol is not None:
            self.protocol.dataReceived(self._inbox.pop(0))
        if not self._inbox:
            self._adjust()
            if self._eofIn and not self._eofInDelivered and not self._paused:
                self._deliverEOF()

    def eofReceived(self) -> None:
        self._eofIn = True
        if self.protocol is not None and not self._inbox and not self._paused:
            self._deliverEOF()

    def _deliverEOF(self) -> None:
        self._eofInDelivered = True
        if self.disconnecting:
            return
        if IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.readConnectionLost()
            if self._eofOut:
                self._close()
        else:
            self.loseConnection()

    def closeReceived(self) -> None:
        # The remote side will take no more data: what is buffered is lost.
        # A CLOSE answering ours is the clean end (sshd stops reading the
        # target when it gets our CLOSE, so no EOF comes first); one that
        # comes first, before the server's EOF or while our bytes still wait
        # for window space, ends the connection before its stream did.
        if (not self.localClosed and not self._eofIn) or self.buf:
            self._reason = ConnectionLost("the channel was closed by the server")
        self.buf = b""
        self.extBuf = []
        if not self.localClosed and self.conn is not None:
            self.conn.sendClose(self)

    def closed(self) -> None:
        owner = self.conn.owner if self.conn is not None else None
        attempt, self.attempt = self.attempt, None
        if owner is not None:
            owner.removeChannel(self)
        if attempt is not None:
            attempt.channel = None
            attempt.fail(SSHConnectionLost("the channel closed before it was ready",
                                           attempt.endpoint.settings.serverShown))
        protocol, self.protocol = self.protocol, None
        self.connected = False
        if protocol is None:
            return
        lost = self.conn.lostReason if self.conn is not None else None
        if self._aborted:
            reason: BaseException = ConnectionAborted()
        elif lost is not None and not self._eofIn:
            reason = ConnectionLost(f"the SSH connection was lost: {lost.getErrorMessage()}")
        else:
            reason = self._closedReason()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            if not self._streaming or hasattr(producer, "stopProducing"):
                producer.stopProducing()
        protocol.connectionLost(Failure(reason))

    def _closedReason(self) -> BaseException:
        if self._reason is not None:
            return self._reason
        return ConnectionDone("the channel was closed")

    # Outgoing.

    def write(self, data: bytes) -> None:
        # The user's writes stop at loseWriteConnection; what was written
        # before it still goes (see addWindowBytes).
        if self.localClosed or self._aborted or self._eofOut or self._wantEOF:
            return
        if data:
            SSHChannel.write(self, data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def stopWriting(self) -> None:
        producer = self._producer
        if producer is not None and self._streaming and not self._producerPaused:
            self._producerPaused = True
            producer.pauseProducing()

    def startWriting(self) -> None:
        # addWindowBytes resumes the producer once the buffer is sent.
        pass

    def addWindowBytes(self, data: int) -> None:
        # Not SSHChannel.addWindowBytes: it sends the buffer through
        # self.write, which takes nothing once EOF is pending, so the bytes
        # still waiting for window space at loseWriteConnection were dropped.
        self.remoteWindowLeft += data
        if self.buf and not self.localClosed and self.conn is not None:
            pending, self.buf = self.buf, b""
            SSHChannel.write(self, pending)
        if self.buf:
            return
        self._flushed()
        producer = self._producer
        if producer is not None and self._producerPaused:
            self._producerPaused = False
            producer.resumeProducing()

    def _flushed(self) -> None:
        if self._wantEOF and not self._eofOut and not self.buf:
            self._sendEOF()
        if self.disconnecting and not self.buf and not self.localClosed:
            self._close()

    def _sendEOF(self) -> None:
        self._eofOut = True
        self._wantEOF = False
        if self.conn is not None and not self.localClosed:
            self.conn.sendEOF(self)
        if self._eofInDelivered and IHalfCloseableProtocol.providedBy(self.protocol):
            self._close()

    def loseWriteConnection(self) -> None:
        """
        Send EOF once what is written has gone (a half-close).
        """
        if self._eofOut or self.localClosed:
            return
        self._wantEOF = True
        if not self.buf:
            self._sendEOF()

    def loseConnection(self) -> None:
        """
        Send what is written, then EOF, then close the channel.
        """
        if self.disconnecting or self.localClosed:
            return
        self.disconnecting = True
        if not self.buf:
            self._close()

    def _close(self) -> None:
        if self.localClosed or self.conn is None:
            return
        if not self._eofOut and not self.remoteClosed:
            self._eofOut = True
            self.conn.sendEOF(self)
        self.conn.sendClose(self)

    def abortConnection(self) -> None:
        """
        Close the channel at once, dropping what is not sent.
        """
        if self.localClosed or self.conn is None:
            return
        self._aborted = True
        self.disconnecting = True
        self.buf = b""
        self.extBuf = []
        self.conn.sendClose(self)

    # Producer (for the user's protocol) and consumer (of the user's producer).

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        if not self._paused:
            return
        self._paused = False
        self._drain()

    def stopProducing(self) -> None:
        self.loseConnection()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self._producer is not None:
            raise RuntimeError(f"Cannot register producer {producer!r}, because producer "
                               f"{self._producer!r} was never unregistered.")
        if self.localClosed:
            producer.stopProducing()
            return
        self._producer = producer
        self._streaming = streaming
        self._producerPaused = False
        if streaming and self.buf:
            self._producerPaused = True
            producer.pauseProducing()
        elif not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        self._producer = None
        self._producerPaused = False

    # Addresses.

    def getPeer(self) -> Any:
        return self.peer

    def getHost(self) -> Any:
        return self.conn.transport.transport.getHost()
