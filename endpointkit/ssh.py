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

This module holds the family: its declarations, endpoints, channels and
connect attempt; the SSH connection, its pool and the channel transport are
in L{endpointkit._sshconn}, the errors, host-key check and user
authentication in L{endpointkit._sshauth}.
"""

from __future__ import annotations

import base64
import getpass
import os
import signal
import struct
from collections.abc import Mapping
from typing import Any

from twisted.conch.ssh import common, forwarding
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProtocol, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
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
from endpointkit._sshauth import DEFAULT_IDENTITIES as DEFAULT_IDENTITIES
from endpointkit._sshauth import (
    SSHAuthenticationFailed,
    SSHChannelOpenFailed,
    SSHCommandRefused,
    SSHConnectionLost,
    SSHError,
    SSHHandshakeTimeout,
    SSHHostKeyChanged,
    SSHHostKeyUnknown,
    SSHKeyError,
    _Settings,
    hostKeyFingerprint,
)
from endpointkit._sshconn import MAX_PACKET as MAX_PACKET
from endpointkit._sshconn import WINDOW as WINDOW
from endpointkit._sshconn import (
    _Connection,
    _connectionFor,
    _StreamChannel,
    closeSharedConnections,
    sharedConnectionCount,
)

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

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


# Channels.


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
