"""
SSH client endpoints: C{ssh:} (a TCP connection through an SSH server, what
C{ssh -W host:port} does) and C{sshexec:} (a remote command's standard input
and output as the connection), on Twisted conch::

    ssh:db.internal:5432:endpoint=tcp\\:bastion.example.com\\:22
    ssh:127.0.0.1:8080:endpoint=tcp\\:127.0.0.1\\:2222:user=deploy:identity=/keys/id_ed25519
    ssh:10.0.0.5:22:endpoint=tcp\\:jump\\:22:hostKey=SHA256\\:Nq3G...
    sshexec:cat:endpoint=tcp\\:127.0.0.1\\:22:user=me:agent=no:password=s3cret

The SSH server is reached by the nested C{endpoint=} description, so C{ssh:}
runs over C{tcp:}, C{hostname:}, C{socks5:}, C{httpconnect:}, C{tls:}, and
over another C{ssh:} (a chain of jump hosts).  For each connect the target
is opened as a C{direct-tcpip} channel (RFC 4254 section 7.2).

Authentication: C{user=} (default: the current user), the private keys of
C{identity=} (C{|}-separated; by default the C{~/.ssh/id_ed25519},
C{id_ecdsa} and C{id_rsa} that exist), with C{passphrase=} for encrypted
ones, the keys of the SSH agent at C{SSH_AUTH_SOCK} (C{agent=no} turns it
off), and C{password=}.  When every method fails the error names each one
tried.

Host keys are always verified: the name looked up is the host and port of
the nested description (C{[host]:port} when the port is not 22, as OpenSSH
does), or C{hostKeyAlias=}, in C{knownHosts=} (default
C{~/.ssh/known_hosts}; hashed entries work), or the key must have the pinned
fingerprint C{hostKey=SHA256\\:...}.  An unknown host fails with its
fingerprint and the line to add; a changed key fails.

Connections are shared (OpenSSH's ControlMaster, built in): connects with
the same server description, user, credentials and host-key settings are
channels of one SSH connection, which closes after C{idle=} seconds without
channels; C{share=no} gives each connect its own.  The shared connections
are closed by L{closeSharedConnections} (a program's shutdown, a test's
cleanup).

Every connect has one deadline, C{handshakeTimeout=}, from the first byte to
the open channel; every failure is an L{SSHError} (a C{ConnectError}).
Secrets never appear in errors, logs, C{repr} or C{check}.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import signal
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.error import ConchError
from twisted.conch.ssh import agent, common, connection, forwarding, keys, transport, userauth
from twisted.conch.ssh.agent import SSHAgentClient
from twisted.conch.ssh.channel import SSHChannel
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.error import (
    ConnectError,
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ProcessDone,
    ProcessTerminated,
)
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IProtocol,
    IPushProducer,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from endpointkit._kinds import (
    Bool,
    Host,
    Invalid,
    Kind,
    Nested,
    Path,
    Port,
    Seconds,
    Secret,
    String,
)
from endpointkit._schema import Arg, EndpointType, Parsed

__all__ = [
    "SSHAuthenticationFailed",
    "SSHChannelOpenFailed",
    "SSHClientEndpoint",
    "SSHCommandAddress",
    "SSHCommandEndpoint",
    "SSHCommandRefused",
    "SSHConnectionLost",
    "SSHError",
    "SSHHandshakeTimeout",
    "SSHHostKeyChanged",
    "SSHHostKeyUnknown",
    "SSHKeyError",
    "closeSharedConnections",
    "hostKeyFingerprint",
    "sharedConnectionCount",
    "sshType",
    "sshexecType",
]

_log = Logger()

DEFAULT_HANDSHAKE_TIMEOUT = 30.0
"""
Seconds from C{connect()} until the channel is open.
"""

DEFAULT_IDLE = 60.0
"""
Seconds a shared connection stays open without channels.
"""

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"

WINDOW = 2 * 1024 * 1024
"""
Each channel's receive window: what a slow reader may have buffered at most.
"""

MAX_PACKET = 32768


# Errors.


class SSHError(ConnectError):
    """
    An SSH connect failed.  The message names the SSH server (its client
    description, secrets masked) and what went wrong.

    @ivar server: the server's description, or L{None} when not known.
    @ivar reason: what went wrong, without the server.
    """

    def __init__(self, reason: str, server: str | None = None) -> None:
        Exception.__init__(self, reason)
        self.osError = None
        self.reason = reason
        self.server = server

    @property
    def message(self) -> str:
        where = f" at {self.server}" if self.server else ""
        return f"ssh server{where}: {self.reason}"

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class SSHAuthenticationFailed(SSHError):
    """
    The server accepted none of the credentials.

    @ivar tried: the methods tried, each with what it offered.
    @ivar allowed: the methods the server said it accepts.
    """

    def __init__(self, reason: str, server: str | None = None,
                 tried: tuple[str, ...] = (), allowed: tuple[str, ...] = ()) -> None:
        SSHError.__init__(self, reason, server)
        self.tried = tried
        self.allowed = allowed


class SSHHostKeyUnknown(SSHError):
    """
    The server's host key is in neither C{knownHosts} nor C{hostKey}.

    @ivar fingerprint: its fingerprint, C{SHA256:...} as OpenSSH shows it.
    @ivar knownHostsLine: the line that trusts it in a known_hosts file.
    """

    def __init__(self, reason: str, server: str | None = None, fingerprint: str = "",
                 knownHostsLine: str = "") -> None:
        SSHError.__init__(self, reason, server)
        self.fingerprint = fingerprint
        self.knownHostsLine = knownHostsLine


class SSHHostKeyChanged(SSHError):
    """
    The server's host key differs from the one known for it (or from the
    pinned C{hostKey}): the connection is refused before authenticating.

    @ivar fingerprint: the fingerprint the server showed.
    """

    def __init__(self, reason: str, server: str | None = None, fingerprint: str = "") -> None:
        SSHError.__init__(self, reason, server)
        self.fingerprint = fingerprint


class SSHChannelOpenFailed(SSHError):
    """
    The server refused to open the channel (RFC 4254 section 5.1).

    @ivar code: the reason code (1 administratively prohibited, 2 connect
        failed, 3 unknown channel type, 4 resource shortage).
    @ivar description: the server's own text.
    """

    def __init__(self, reason: str, server: str | None = None, code: int = 0,
                 description: str = "") -> None:
        SSHError.__init__(self, reason, server)
        self.code = code
        self.description = description


class SSHCommandRefused(SSHError):
    """
    The server opened the session channel but refused to run the command.
    """


class SSHHandshakeTimeout(SSHError):
    """
    The channel was not open within C{handshakeTimeout}.
    """


class SSHConnectionLost(SSHError):
    """
    The SSH connection closed before the channel was open.
    """


class SSHKeyError(SSHError):
    """
    An identity file could not be read or decrypted.
    """


_OPEN_REASONS = {
    connection.OPEN_ADMINISTRATIVELY_PROHIBITED: "administratively prohibited",
    connection.OPEN_CONNECT_FAILED: "connect failed",
    connection.OPEN_UNKNOWN_CHANNEL_TYPE: "unknown channel type",
    connection.OPEN_RESOURCE_SHORTAGE: "resource shortage",
}


def hostKeyFingerprint(key: keys.Key) -> str:
    """
    A host key's fingerprint as OpenSSH shows it: C{SHA256:} and the
    unpadded base64 of the SHA-256 of its blob.
    """
    digest = hashlib.sha256(key.blob()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


# Settings shared by every connect of one endpoint.


@dataclass(frozen=True, repr=False)
class _Settings:
    """
    What one SSH connection is: the server, the credentials, the host-key
    policy.  Two endpoints with equal keys share connections.
    """

    server: str
    serverShown: str
    hostKeyName: str | None
    user: str
    identities: tuple[str, ...]
    passphrase: str | None
    agent: bool
    password: str | None
    knownHosts: str
    hostKey: str | None
    handshakeTimeout: float
    idle: float
    share: bool
    agentSocket: str | None = field(default=None)

    def __repr__(self) -> str:
        return f"<SSH settings {self.user}@{self.serverShown}>"

    def poolKey(self) -> tuple[Any, ...]:
        secrets = hashlib.sha256(repr((self.passphrase, self.password)).encode()).hexdigest()
        return (self.server, self.hostKeyName, self.user, self.identities, secrets,
                self.agentSocket if self.agent else None, self.knownHosts, self.hostKey)

    def loadKeys(self) -> list[tuple[str, keys.Key]]:
        """
        The private keys of the identity files: named ones must load, the
        default ones are used when they exist and need no passphrase.
        """
        found: list[tuple[str, keys.Key]] = []
        named = bool(self.identities)
        passphrase = self.passphrase.encode() if self.passphrase is not None else None
        for name in self.identities or DEFAULT_IDENTITIES:
            path = os.path.expanduser(name)
            if not named and not os.path.exists(path):
                continue
            try:
                key = keys.Key.fromFile(path, passphrase=passphrase)
            except keys.EncryptedKeyError:
                if not named:
                    continue
                raise SSHKeyError(f"identity {name!r} is encrypted: give its passphrase "
                                  "(passphrase=)", self.serverShown) from None
            except (keys.BadKeyError, ValueError) as e:
                if not named:
                    continue
                hint = ("wrong passphrase, or not a private key" if passphrase is not None
                        else "not a private key OpenSSH or Twisted can read")
                raise SSHKeyError(f"identity {name!r} cannot be loaded: {hint} "
                                  f"({type(e).__name__})", self.serverShown) from None
            except OSError as e:
                if not named:
                    continue
                raise SSHKeyError(f"identity {name!r} cannot be read: {e.strerror}",
                                  self.serverShown) from None
            found.append((name, key))
        return found

    def checkHostKey(self, key: keys.Key) -> None:
        """
        Raise L{SSHHostKeyUnknown} or L{SSHHostKeyChanged} unless C{key} is
        the one this server is known by.
        """
        fingerprint = hostKeyFingerprint(key)
        if self.hostKey is not None:
            if fingerprint != self.hostKey:
                raise SSHHostKeyChanged(
                    f"host key {fingerprint} does not match the pinned hostKey={self.hostKey}; "
                    "not connecting", self.serverShown, fingerprint)
            return
        name = self.hostKeyName or ""
        path = os.path.expanduser(self.knownHosts)
        known = KnownHostsFile.fromPath(FilePath(path))
        otherTypes: list[str] = []
        keyType = key.sshType()
        for entry in known.iterentries():
            if not entry.matchesHost(name.encode("utf-8")):
                continue
            if entry.matchesKey(key):
                return
            entryKey = getattr(entry, "publicKey", None)
            if entryKey is not None and entryKey.sshType() == keyType:
                raise SSHHostKeyChanged(
                    f"the host key for {name} has CHANGED (now {fingerprint}); {path} has "
                    "another key of that type for it; not connecting (if the server's key "
                    f"really changed, remove the old line: ssh-keygen -R '{name}' -f {path})",
                    self.serverShown, fingerprint)
            if entryKey is not None:
                otherTypes.append(entryKey.sshType().decode("ascii"))
        line = f"{name} {key.toString('openssh').decode('ascii')}"
        other = (f" ({path} has only {', '.join(sorted(set(otherTypes)))} keys for it)"
                 if otherTypes else "")
        raise SSHHostKeyUnknown(
            f"host {name} is unknown{other}: its {keyType.decode('ascii')} key is {fingerprint}; "
            f"to trust it add this line to {path}: {line} (or give hostKey={fingerprint}, "
            "its colon escaped as \\:)", self.serverShown, fingerprint, line)


# The SSH connection.


class _UserAuth(userauth.SSHUserAuthClient):
    """
    Public keys (files, then the agent's), then the password; records what
    it tried for the error.
    """

    preferredOrder = [b"publickey", b"password"]

    def __init__(self, owner: _Connection, instance: Any, keyList: list[tuple[str, keys.Key]],
                 agent: SSHAgentClient | None, agentKeys: list[tuple[bytes, bytes]]) -> None:
        userauth.SSHUserAuthClient.__init__(self, owner.settings.user.encode("utf-8"), instance)
        self._owner = owner
        self._queue: list[tuple[str, keys.Key, bool]] = [
            (name, key, False) for name, key in keyList]
        for blob, comment in agentKeys:
            try:
                self._queue.append((f"agent key {comment.decode('utf-8', 'replace')!r}",
                                    keys.Key.fromString(blob), True))
            except keys.BadKeyError:
                continue
        self._agent = agent
        self._current: tuple[str, keys.Key, bool] | None = None
        self._passwordUsed = False
        self.triedKeys: list[str] = []
        self.triedPassword = False
        self.allowed: tuple[str, ...] = ()

    def getPublicKey(self) -> keys.Key | None:
        if not self._queue:
            self._current = None
            return None
        self._current = self._queue.pop(0)
        self.triedKeys.append(self._current[0])
        public: keys.Key = self._current[1].public()
        return public

    def _algorithm(self, publicKey: keys.Key) -> bytes:
        """
        The signature algorithm for C{publicKey}: for RSA, SHA-2 (RFC 8332)
        when the server lists it in C{server-sig-algs} (OpenSSH refuses
        SHA-1 C{ssh-rsa}), the key's own type otherwise.
        """
        keyType: bytes = publicKey.sshType()
        if keyType != b"ssh-rsa":
            return keyType
        transport: Any = self.transport
        offered = transport.peerExtensions.get(b"server-sig-algs", b"").split(b",")
        for algorithm in (b"rsa-sha2-512", b"rsa-sha2-256"):
            if algorithm in offered:
                return algorithm
        return keyType

    def _cbGetPublicKey(self, publicKey: Any) -> bool:
        if not isinstance(publicKey, keys.Key):
            return False
        self.lastPublicKey = publicKey
        algorithm = self._algorithm(publicKey)
        self.askForAuth(b"publickey", b"\x00" + common.NS(algorithm) + common.NS(publicKey.blob()))
        return True

    def ssh_USERAUTH_PK_OK_publickey(self, packet: bytes) -> None:
        publicKey: Any = self.lastPublicKey
        transport: Any = self.transport
        algorithm = self._algorithm(publicKey)
        blob = publicKey.blob()
        signed = (common.NS(transport.sessionID) + bytes((userauth.MSG_USERAUTH_REQUEST,))
                  + common.NS(self.user) + common.NS(self.instance.name)
                  + common.NS(b"publickey") + b"\x01" + common.NS(algorithm) + common.NS(blob))
        current = self._current
        if current is not None and current[2] and self._agent is not None:
            flags = {b"rsa-sha2-512": 4, b"rsa-sha2-256": 2}.get(algorithm, 0)
            request = common.NS(blob) + common.NS(signed) + struct.pack(">L", flags)
            d: Deferred[bytes] = self._agent.sendRequest(
                agent.AGENTC_SIGN_REQUEST, request).addCallback(self._agent._cbSignData)
        else:
            assert current is not None
            d = succeed(current[1].sign(signed, signatureType=algorithm))

        def send(signature: bytes) -> None:
            self.askForAuth(b"publickey", b"\x01" + common.NS(algorithm) + common.NS(blob)
                            + common.NS(signature))

        d.addCallback(send)
        d.addErrback(self._ebAuth)

    def getPrivateKey(self) -> Deferred[keys.Key]:
        assert self._current is not None
        return succeed(self._current[1])

    def getPassword(self, prompt: bytes | None = None) -> Deferred[bytes] | None:
        password = self._owner.settings.password
        if password is None or self._passwordUsed:
            return None
        self._passwordUsed = True
        self.triedPassword = True
        return succeed(password.encode("utf-8"))

    def auth_keyboard_interactive(self) -> bool:
        return False

    def ssh_USERAUTH_FAILURE(self, packet: bytes) -> Any:
        methods, _ = common.getNS(packet)
        self.allowed = tuple(m for m in methods.decode("ascii", "replace").split(",") if m)
        return userauth.SSHUserAuthClient.ssh_USERAUTH_FAILURE(self, packet)

    def ssh_USERAUTH_SUCCESS(self, packet: bytes) -> None:
        self._owner.stage = "opening the channel"
        userauth.SSHUserAuthClient.ssh_USERAUTH_SUCCESS(self, packet)

    def failure(self) -> SSHAuthenticationFailed:
        tried: list[str] = []
        if self.triedKeys:
            tried.append(f"publickey ({', '.join(self.triedKeys)})")
        if self.triedPassword:
            tried.append("password")
        user = self._owner.settings.user
        what = "; ".join(tried) if tried else "nothing (no identity, agent key or password)"
        allowed = ", ".join(self.allowed) or "none"
        return SSHAuthenticationFailed(
            f"authentication as {user!r} failed: tried {what}; the server accepts {allowed}",
            self._owner.settings.serverShown, tuple(tried), self.allowed)


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


class _TunnelChannel(_StreamChannel):
    name = b"direct-tcpip"


class SSHCommandAddress:
    """
    The address of a remote command: the SSH server's address, the user and
    the command.
    """

    def __init__(self, server: Any, user: str, command: str) -> None:
        self.server = server
        self.user = user
        self.command = command

    def __repr__(self) -> str:
        return f"SSHCommandAddress({self.server!r}, {self.user!r}, {self.command!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SSHCommandAddress) and (
            (self.server, self.user, self.command) == (other.server, other.user, other.command))

    def __hash__(self) -> int:
        return hash((self.user, self.command))


class _CommandChannel(_StreamChannel):
    """
    A session channel running one command: its stderr logged, its exit
    status or signal in C{connectionLost}'s reason.
    """

    name = b"session"

    def __init__(self, attempt: _Attempt, peer: Any, command: str) -> None:
        _StreamChannel.__init__(self, attempt, peer)
        self.command = command
        self._status: int | None = None
        self._signal: str | None = None
        self._stderr = b""

    def opened(self) -> None:
        request: Deferred[Any] = self.conn.sendRequest(
            self, b"exec", common.NS(self.command.encode("utf-8")), wantReply=True)

        def refused(reason: Failure) -> None:
            attempt, self.attempt = self.attempt, None
            if attempt is not None:
                attempt.fail(SSHCommandRefused(
                    f"refused to run the command {self.command!r}",
                    attempt.endpoint.settings.serverShown))
                if not self.localClosed:
                    self.conn.sendClose(self)

        def accepted(ignored: object) -> None:
            _StreamChannel.opened(self)

        request.addCallbacks(accepted, refused)

    def extReceived(self, dataType: int, data: bytes) -> None:
        self._stderr += data
        *lines, self._stderr = self._stderr.split(b"\n")
        if len(self._stderr) > 4096:
            lines.append(self._stderr)
            self._stderr = b""
        for line in lines:
            _log.info("sshexec {command!r} stderr: {line}", command=self.command,
                      line=line.decode("utf-8", "replace"))

    def request_exit_status(self, data: bytes) -> int:
        (self._status,) = struct.unpack(">L", data[:4])
        return 1

    def request_exit_signal(self, data: bytes) -> int:
        name, _ = common.getNS(data)
        self._signal = name.decode("ascii", "replace")
        return 1

    def _closedReason(self) -> BaseException:
        if self._stderr:
            _log.info("sshexec {command!r} stderr: {line}", command=self.command,
                      line=self._stderr.decode("utf-8", "replace"))
            self._stderr = b""
        if self._signal is not None:
            number = getattr(signal, f"SIG{self._signal}", None)
            return ProcessTerminated(None, int(number) if number is not None else -1, None)
        if self._status is not None:
            if self._status == 0:
                return ProcessDone(0)
            return ProcessTerminated(self._status, None, None)
        return _StreamChannel._closedReason(self)


# One connect.


class _Attempt:
    """
    One C{connect()}: the SSH connection (shared or new), then the channel,
    under one deadline.
    """

    def __init__(self, endpoint: _SSHEndpoint, factory: Any) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.finished = False
        self.result: Deferred[IProtocol] = Deferred(self._cancel)
        self.conn: _Connection | None = None
        self.channel: _StreamChannel | None = None
        self._waiting: Deferred[_Connection] | None = None
        self._timer: Any = None

    def start(self) -> Deferred[IProtocol]:
        endpoint = self.endpoint
        self._timer = endpoint.reactor.callLater(endpoint.settings.handshakeTimeout,
                                                 self._timedOut)
        try:
            conn = _connectionFor(endpoint)
        except SSHError as e:
            self.fail(e)
            return self.result
        self.conn = conn
        waiting = conn.wait()
        self._waiting = waiting
        waiting.addCallbacks(self._connected, self._waitFailed)
        return self.result

    def _connected(self, conn: _Connection) -> None:
        self._waiting = None
        if self.finished:
            return
        assert conn.service is not None
        channel = self.endpoint.newChannel(self)
        self.channel = channel
        conn.addChannel(channel)
        conn.service.openChannel(channel, self.endpoint.channelData(conn))

    def _waitFailed(self, reason: Failure) -> None:
        self._waiting = None
        if self.finished:
            return
        self.fail(reason)

    def channelReady(self, channel: _StreamChannel) -> None:
        if self.finished:
            channel.abortConnection()
            return
        try:
            protocol = self.factory.buildProtocol(channel.peer)
            if protocol is None:
                raise ConnectError(string="the factory built no protocol")
        except BaseException:
            self.fail(Failure())
            return
        self._stop()
        channel.attach(protocol)
        self.result.callback(protocol)

    def _stop(self) -> None:
        self.finished = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def fail(self, error: BaseException | Failure, giveUp: bool = False) -> None:
        """
        End the attempt with C{error}.  When this side gives up (a timeout),
        the channel is closed, and the SSH connection too if nothing else
        uses it.
        """
        if self.finished:
            return
        self._stop()
        self._abandon(giveUp)
        self.result.errback(error)

    def _abandon(self, giveUp: bool) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
        channel, self.channel = self.channel, None
        conn = self.conn
        if channel is not None:
            channel.attempt = None
            channel.abandoned = True
            service = channel.conn
            if service is not None and channel in service.channelsToRemoteChannel:
                channel.abortConnection()
        if giveUp and conn is not None and not conn.closed and not conn.inUse():
            conn.abort()

    def _timedOut(self) -> None:
        self._timer = None
        conn = self.conn
        stage = conn.stage if conn is not None else "connecting"
        seconds = self.endpoint.settings.handshakeTimeout
        self.fail(SSHHandshakeTimeout(
            f"did not open the channel{self.endpoint.what()} within {seconds:g} s "
            f"(handshakeTimeout), during {stage}", self.endpoint.settings.serverShown),
            giveUp=True)

    def _cancel(self, result: Deferred[IProtocol]) -> None:
        if self.finished:
            return
        self._stop()
        self._abandon(giveUp=True)


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


# Endpoints.


@implementer(IStreamClientEndpoint)
class _SSHEndpoint:
    """
    What C{ssh:} and C{sshexec:} share: the SSH server, the credentials, the
    host-key policy, sharing, and the attempt that uses them.
    """

    def __init__(self, reactor: Any, serverEndpoint: Any, *,
                 serverHost: str | None = None, serverPort: int = 22,
                 user: str | None = None, identity: tuple[str, ...] = (),
                 passphrase: str | None = None, agent: bool = True,
                 password: str | None = None, knownHosts: str = DEFAULT_KNOWN_HOSTS,
                 hostKey: str | None = None, hostKeyAlias: str | None = None,
                 share: bool = True, idle: float = DEFAULT_IDLE,
                 handshakeTimeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 serverDescription: str | None = None,
                 serverShown: str | None = None) -> None:
        if hostKey is None and hostKeyAlias is None and serverHost is None:
            raise ValueError("the host key needs a name to be looked up by: give serverHost, "
                             "hostKeyAlias or hostKey")
        if hostKeyAlias is not None:
            name: str | None = hostKeyAlias
        elif serverHost is not None:
            host = f"[{serverHost}]" if ":" in serverHost else serverHost
            name = serverHost if serverPort == 22 else f"[{host.strip('[]')}]:{serverPort}"
        else:
            name = None
        self.reactor = reactor
        self.serverEndpoint = serverEndpoint
        shown = serverShown or serverDescription or repr(serverEndpoint)
        self.settings = _Settings(
            server=serverDescription or f"{id(serverEndpoint)}", serverShown=shown,
            hostKeyName=name, user=user or getpass.getuser(), identities=tuple(identity),
            passphrase=passphrase, agent=agent, password=password, knownHosts=knownHosts,
            hostKey=hostKey, handshakeTimeout=handshakeTimeout, idle=idle, share=share,
            agentSocket=os.environ.get("SSH_AUTH_SOCK") if agent else None)

    def what(self) -> str:
        return ""

    def newChannel(self, attempt: _Attempt) -> _StreamChannel:
        raise NotImplementedError()

    def channelData(self, conn: _Connection) -> bytes:
        return b""

    def connect(self, protocolFactory: Any) -> Deferred[IProtocol]:
        """
        Connect C{protocolFactory}'s protocol through the SSH server.  The
        L{Deferred} fails with an L{SSHError} when the server does not open
        the channel, or with the nested endpoint's error when the server
        cannot be reached.
        """
        return _Attempt(self, protocolFactory).start()


class SSHClientEndpoint(_SSHEndpoint):
    """
    A TCP connection to C{host:port} made by the SSH server, as a
    C{direct-tcpip} channel (RFC 4254 section 7.2).  The protocol's
    transport reports the target as its peer.
    """

    def __init__(self, reactor: Any, host: str, port: int, serverEndpoint: Any,
                 **kwargs: Any) -> None:
        _SSHEndpoint.__init__(self, reactor, serverEndpoint, **kwargs)
        self.host = host
        self.port = port

    def __repr__(self) -> str:
        from endpointkit._httpconnect import authority
        return (f"<SSHClientEndpoint to {authority(self.host, self.port)} via "
                f"{self.settings.user}@{self.settings.serverShown}>")

    def what(self) -> str:
        from endpointkit._httpconnect import authority
        return f" to {authority(self.host, self.port)}"

    def newChannel(self, attempt: _Attempt) -> _StreamChannel:
        from endpointkit.proxy import targetAddress
        return _TunnelChannel(attempt, targetAddress(self.host, self.port))

    def channelData(self, conn: _Connection) -> bytes:
        origin = ("127.0.0.1", 0)
        service: Any = conn.service
        tcp: Any = service.transport.transport if service is not None else None
        host = getattr(tcp.getHost(), "host", None) if tcp is not None else None
        if isinstance(host, str):
            origin = (host, getattr(tcp.getHost(), "port", 0))
        packed: bytes = forwarding.packOpen_direct_tcpip((self.host, self.port), origin)
        return packed


class SSHCommandEndpoint(_SSHEndpoint):
    """
    A remote command's standard input and output as the connection, in a
    session channel; its stderr is logged; its exit status or signal is in
    C{connectionLost}'s reason (L{ProcessDone}, L{ProcessTerminated}).
    """

    def __init__(self, reactor: Any, command: str, serverEndpoint: Any,
                 **kwargs: Any) -> None:
        _SSHEndpoint.__init__(self, reactor, serverEndpoint, **kwargs)
        self.command = command

    def __repr__(self) -> str:
        return (f"<SSHCommandEndpoint {self.command!r} via "
                f"{self.settings.user}@{self.settings.serverShown}>")

    def what(self) -> str:
        return f" for {self.command!r}"

    def newChannel(self, attempt: _Attempt) -> _StreamChannel:
        return _CommandChannel(attempt, SSHCommandAddress(
            self.settings.serverShown, self.settings.user, self.command), self.command)


# Descriptions.


class Identities(Kind):
    name = "paths"
    expected = "private key files separated by '|'"

    def convert(self, text: str) -> tuple[str, ...]:
        paths = tuple(text.split("|"))
        if not text or any(not p or "\0" in p for p in paths):
            raise Invalid()
        return paths

    def format(self, value: Any) -> str:
        return "|".join(value)


class Fingerprint(Kind):
    name = "fingerprint"
    expected = "a host key fingerprint SHA256:<base64>, its colon escaped as SHA256\\:"

    def convert(self, text: str) -> str:
        prefix, _, body = text.partition(":")
        if prefix.upper() != "SHA256" or not body:
            raise Invalid(hint="OpenSSH shows it: ssh-keygen -lf HOSTKEY.pub, or ssh-keyscan "
                          "HOST | ssh-keygen -lf -")
        body = body.rstrip("=")
        try:
            digest = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except ValueError:
            raise Invalid() from None
        if len(digest) != 32:
            raise Invalid(reason=f"{self.expected} (32 bytes; this one has {len(digest)})")
        return "SHA256:" + body


def serverName(parsed: Parsed) -> tuple[str, int] | None:
    """
    The host and port a nested description connects to (the outermost that
    names them), as OpenSSH would look the host key up for it.
    """
    values = parsed.values
    host, port = values.get("host"), values.get("port")
    if isinstance(host, str) and isinstance(port, int):
        return host, port
    inner = values.get("endpoint")
    if isinstance(inner, Parsed):
        return serverName(inner)
    return None


def _validate(etype: Any) -> Any:
    def validate(values: Mapping[str, Any], given: frozenset[str]) -> None:
        if "hostKey" in given and "knownHosts" in given:
            raise etype().error("hostKey", "and 'knownHosts' are both given; the pinned "
                                "fingerprint is checked instead of the file: give one")
        if "passphrase" in given and not values["identity"]:
            raise etype().error("passphrase", "is given without 'identity' (the key files it "
                                "decrypts)")
        inner = values.get("endpoint")
        if (isinstance(inner, Parsed) and serverName(inner) is None
                and values.get("hostKeyAlias") is None and values.get("hostKey") is None):
            raise etype().error("endpoint", f"({inner}) names no host and port to look the "
                                "host key up by; give hostKeyAlias= or hostKey=")
    return validate


def _builder(cls: type[_SSHEndpoint], first: str) -> Any:
    def build(reactor: Any, parsed: Parsed) -> _SSHEndpoint:
        values = dict(parsed.values)
        inner = values.pop("endpoint")
        name = serverName(inner)
        head = values.pop(first)
        kwargs: dict[str, Any] = dict(values)
        if name is not None:
            kwargs["serverHost"], kwargs["serverPort"] = name
        if first == "host":
            port = kwargs.pop("port")
            return cls(reactor, head, port, inner.build(reactor),  # type: ignore[call-arg]
                       serverDescription=inner.description(),
                       serverShown=inner.description(masked=True), **kwargs)
        return cls(reactor, head, inner.build(reactor),  # type: ignore[call-arg]
                   serverDescription=inner.description(),
                   serverShown=inner.description(masked=True), **kwargs)
    return build


_COMMON = (
    Arg("endpoint", Nested("client"), help="the client description that reaches the SSH "
        "server, escaped"),
    Arg("user", String(), None, help="user name on the SSH server (default: the current user)"),
    Arg("identity", Identities(), (), help="private key files, '|'-separated (default: the "
        "~/.ssh/id_ed25519, id_ecdsa, id_rsa that exist)"),
    Arg("passphrase", Secret(), None, help="passphrase of the encrypted identity files"),
    Arg("agent", Bool(), True, help="also try the keys of the SSH agent at SSH_AUTH_SOCK"),
    Arg("password", Secret(nonEmpty=False), None, help="password for password authentication"),
    Arg("knownHosts", Path(), DEFAULT_KNOWN_HOSTS, help="known_hosts file the host key is "
        "verified against"),
    Arg("hostKey", Fingerprint(), None, help="the server's pinned host key fingerprint, "
        "SHA256\\:... (instead of knownHosts)"),
    Arg("hostKeyAlias", String(), None, help="name the host key is looked up by, instead of "
        "the nested description's [host]:port"),
    Arg("share", Bool(), True, help="share one SSH connection among connects with the same "
        "server, credentials and host-key settings"),
    Arg("idle", Seconds(allowZero=True), DEFAULT_IDLE, help="seconds a shared connection "
        "stays open without channels"),
    Arg("handshakeTimeout", Seconds(), DEFAULT_HANDSHAKE_TIMEOUT, help="seconds from the "
        "first byte to the open channel"),
)

sshType = EndpointType(
    "ssh", "client",
    args=(
        Arg("host", Host(what="target host"), positional=True,
            help="the target host the SSH server connects to"),
        Arg("port", Port(), positional=True, help="the target port"),
        *_COMMON,
    ),
    help="TCP to a target through an SSH server (a direct-tcpip channel, like ssh -W); "
         "host keys verified, connections shared",
    validate=_validate(lambda: _types["ssh"]),
    build=_builder(SSHClientEndpoint, "host"),
)

sshexecType = EndpointType(
    "sshexec", "client",
    args=(
        Arg("command", String(), positional=True,
            help="the command the SSH server runs (its colons escaped)"),
        *_COMMON,
    ),
    help="a remote command's stdin/stdout through an SSH server; exit status in "
         "connectionLost; host keys verified",
    validate=_validate(lambda: _types["sshexec"]),
    build=_builder(SSHCommandEndpoint, "command"),
)


_types: dict[str, EndpointType] = {"ssh": sshType, "sshexec": sshexecType}
