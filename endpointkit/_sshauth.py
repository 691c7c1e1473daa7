"""
The credentials and host-key side of an SSH connection, for
L{endpointkit.ssh}: the family's errors (L{SSHError} and its subclasses,
re-exported by L{endpointkit.ssh}), L{hostKeyFingerprint}, the settings one
SSH connection is made with (L{_Settings}: its sharing key, its identity
files, the check of the server's host key against C{known_hosts} or a pinned
fingerprint), and the user authentication (L{_UserAuth}: the identity files'
keys, the agent's keys, then the password, and an error naming each method
tried).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.conch.client.knownhosts import KnownHostsFile
from twisted.conch.ssh import agent, common, keys, userauth
from twisted.conch.ssh.agent import SSHAgentClient
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectError
from twisted.python.filepath import FilePath

if TYPE_CHECKING:
    from endpointkit._sshconn import _Connection

DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


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


# User authentication.


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
