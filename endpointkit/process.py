"""
C{exec:} -- a local process's standard input and output as a client
connection, through Twisted's C{spawnProcess}::

    exec:cat
    exec:'/usr/bin/env python3 -u worker.py':path=/srv/app:env=MODE\\=prod|DEBUG\\=0
    exec:nc 127.0.0.1 25:stderr=drop:grace=2

The command is split as a shell splits it (quotes and backslashes; no shell
is run) and found on C{PATH}.  The child inherits this process's
environment, plus the C{env=} additions (C{NAME=value|NAME2=value}, each
C{=} escaped inside a description); C{path=} is its working directory.  Its
standard error is logged (C{stderr=log}, the default), dropped
(C{stderr=drop}) or left on this process's own (C{stderr=inherit}).

The connection is the process: writes go to its stdin, its stdout is
C{dataReceived}; C{loseWriteConnection} closes its stdin (EOF) and the end
of its stdout is C{readConnectionLost}.  Closing the connection closes stdin
once what was written is in the pipe, then ends the process with
C{SIGTERM}, then C{SIGKILL} after C{grace=} seconds (default 5);
C{abortConnection} sends C{SIGTERM} at once.  The exit status or signal is
in C{connectionLost}'s reason (L{ProcessDone}, L{ProcessTerminated}); the
child is reaped, never left a zombie.

A command that is not found or not executable is a clear error when the
description is built (so C{endpointkit check --build} shows it) and, if it
has gone since, at connect time (L{ExecNotFound}).

C{endpointkit relay tcp:8080:interface=127.0.0.1 exec:cat} starts one
process per accepted connection, as inetd does.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectError, ProcessExitedAlready
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    IProtocol,
    IPushProducer,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from endpointkit._kinds import Choice, Invalid, Kind, Path, Seconds
from endpointkit._schema import Arg, EndpointType

__all__ = ["ExecClientEndpoint", "ExecError", "ExecNotFound", "ProcessAddress", "execType"]

_log = Logger()

DEFAULT_GRACE = 5.0
"""
Seconds between C{SIGTERM} and C{SIGKILL} when a connection is closed.
"""

STDERR_CHOICES = ("log", "drop", "inherit")


class ExecError(ConnectError):
    """
    A process could not be started.
    """

    def __init__(self, reason: str) -> None:
        Exception.__init__(self, reason)
        self.osError = None
        self.reason = reason

    def __str__(self) -> str:
        return f"exec: {self.reason}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ExecNotFound(ExecError):
    """
    The command is not on C{PATH}, or not executable.
    """


@implementer(IAddress)
class ProcessAddress:
    """
    The address of a connection to a local process: its command line, and
    its process ID once it runs.
    """

    def __init__(self, argv: Sequence[str], pid: int | None = None) -> None:
        self.argv = tuple(argv)
        self.pid = pid

    def __repr__(self) -> str:
        return f"ProcessAddress({shlex.join(self.argv)!r}, pid={self.pid})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProcessAddress) and (self.argv, self.pid) == (other.argv,
                                                                                other.pid)

    def __hash__(self) -> int:
        return hash((self.argv, self.pid))


def findExecutable(command: str, environment: Mapping[str, str], cwd: str | None) -> str:
    """
    The path of C{command}: as given when it has a C{/} (relative to C{cwd}),
    else found on the C{PATH} of C{environment}.

    @raise ExecNotFound: it is not there, or not executable.
    """
    if "/" in command:
        path = command if os.path.isabs(command) or cwd is None else os.path.join(cwd, command)
        if not os.path.exists(path):
            raise ExecNotFound(f"command {command!r} does not exist")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise ExecNotFound(f"command {command!r} is not executable")
        return path
    search = environment.get("PATH", os.defpath)
    found = shutil.which(command, path=search)
    if found is None:
        raise ExecNotFound(f"command {command!r} is not found on PATH ({search})")
    return found


class _ProcessProtocol(ProcessProtocol):
    """
    Connects one process's pipes to the user's protocol.
    """

    def __init__(self, transport: _ProcessTransport) -> None:
        self._owner = transport
        self._stderr = b""

    def connectionMade(self) -> None:
        self._owner.process = self.transport
        self._owner.started()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self._owner.protocol.dataReceived(data)
        elif childFD == 2 and self._owner.endpoint.stderr == "log":
            self._stderr += data
            *lines, self._stderr = self._stderr.split(b"\n")
            if len(self._stderr) > 4096:
                lines.append(self._stderr)
                self._stderr = b""
            for line in lines:
                self._logLine(line)

    def _logLine(self, line: bytes) -> None:
        _log.info("exec {command!r} stderr: {line}", command=self._owner.endpoint.command,
                  line=line.decode("utf-8", "replace"))

    def childConnectionLost(self, childFD: int) -> None:
        self._owner.pipeClosed(childFD)

    def processEnded(self, reason: Failure) -> None:
        if self._stderr:
            self._logLine(self._stderr)
            self._stderr = b""
        self._owner.ended(reason)


@implementer(ITransport, IPushProducer, IConsumer)
class _ProcessTransport:
    """
    The transport of a protocol connected to a process: stdin to write,
    stdout to read, signals to end it.
    """

    def __init__(self, endpoint: ExecClientEndpoint, protocol: Any) -> None:
        self.endpoint = endpoint
        self.protocol = protocol
        self.process: Any = None
        self.connected = False
        self.disconnecting = False
        self._address = ProcessAddress(endpoint.argv)
        self._killTimer: Any = None
        self._stdinClosed = False
        self._stdoutClosed = False
        self._ended = False

    def __repr__(self) -> str:
        return f"<exec transport {self._address!r}>"

    def started(self) -> None:
        self._address = ProcessAddress(self.endpoint.argv, self.process.pid)
        self.connected = True
        self.protocol.makeConnection(self)

    # Writing.

    def write(self, data: bytes) -> None:
        if not self._stdinClosed and not self._ended:
            self.process.write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """
        Close the process's stdin, once what is written is in the pipe.
        """
        if not self._stdinClosed and not self._ended:
            self._stdinClosed = True
            self.process.closeStdin()

    def loseConnection(self) -> None:
        """
        Close stdin (after what is written), then end the process: SIGTERM,
        then SIGKILL after C{grace} seconds.
        """
        if self.disconnecting or self._ended:
            return
        self.disconnecting = True
        if 0 not in self.process.pipes:
            self._terminate()
            return
        self._stdinClosed = True
        self.process.closeStdin()

    def abortConnection(self) -> None:
        """
        End the process at once (SIGTERM, then SIGKILL after C{grace}).
        """
        if self._ended:
            return
        self.disconnecting = True
        self._stdinClosed = True
        self._terminate()

    def _terminate(self) -> None:
        if self._killTimer is not None or self._ended:
            return
        self._signal("TERM")
        self._killTimer = self.endpoint.reactor.callLater(self.endpoint.grace, self._kill)

    def _kill(self) -> None:
        self._killTimer = None
        self._signal("KILL")

    def _signal(self, name: str) -> None:
        try:
            self.process.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            pass

    def pipeClosed(self, childFD: int) -> None:
        if childFD == 0:
            self._stdinClosed = True
            if self.disconnecting:
                self._terminate()
            elif self._stdoutClosed:
                self._bothClosed()
        elif childFD == 1:
            self._stdoutClosed = True
            if self.disconnecting or self._ended:
                return
            if IHalfCloseableProtocol.providedBy(self.protocol):
                self.protocol.readConnectionLost()
                if self._stdinClosed:
                    self._bothClosed()
            else:
                self.loseConnection()

    def _bothClosed(self) -> None:
        # Both directions are closed, as a TCP connection after two
        # half-closes: the process has C{grace} seconds to exit by itself.
        if not self.disconnecting and self._killTimer is None and not self._ended:
            self.disconnecting = True
            self._killTimer = self.endpoint.reactor.callLater(self.endpoint.grace,
                                                              self._graceOver)

    def _graceOver(self) -> None:
        self._killTimer = None
        self._terminate()

    def ended(self, reason: Failure) -> None:
        self._ended = True
        self.connected = False
        if self._killTimer is not None and self._killTimer.active():
            self._killTimer.cancel()
        self._killTimer = None
        protocol, self.protocol = self.protocol, None
        if protocol is not None:
            protocol.connectionLost(reason)

    # Flow control.

    def pauseProducing(self) -> None:
        if not self._ended:
            self.process.pauseProducing()

    def resumeProducing(self) -> None:
        if not self._ended:
            self.process.resumeProducing()

    def stopProducing(self) -> None:
        self.loseConnection()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.process.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        if not self._ended:
            self.process.unregisterProducer()

    # Addresses.

    def getPeer(self) -> Any:
        return self._address

    def getHost(self) -> Any:
        return self._address


@implementer(IStreamClientEndpoint)
class ExecClientEndpoint:
    """
    Connects to a new local process for each C{connect()}: its stdin and
    stdout are the connection.

    @param argv: the command line, already split; C{argv[0]} is found on
        C{PATH} unless it has a C{/}.
    @param env: variables added to (or replacing) this process's own
        environment.
    @param path: the working directory, or L{None} for this process's.
    @param stderr: C{"log"}, C{"drop"} or C{"inherit"}.
    @param grace: seconds between C{SIGTERM} and C{SIGKILL} on close.
    """

    def __init__(self, reactor: Any, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 path: str | None = None, stderr: str = "log",
                 grace: float = DEFAULT_GRACE) -> None:
        if not argv:
            raise ValueError("exec: needs a command")
        if stderr not in STDERR_CHOICES:
            raise ValueError(f"stderr must be one of {', '.join(STDERR_CHOICES)}, "
                             f"not {stderr!r}")
        self.reactor = reactor
        self.argv = tuple(argv)
        self.command = shlex.join(self.argv)
        self.env = dict(env or {})
        self.path = path
        self.stderr = stderr
        self.grace = grace

    def __repr__(self) -> str:
        return f"<ExecClientEndpoint {self.command!r}>"

    def environment(self) -> dict[str, str]:
        """
        The child's environment: this process's, with C{env} added.
        """
        return {**os.environ, **self.env}

    def executable(self) -> str:
        """
        The path of the program to run.

        @raise ExecNotFound: it is not found or not executable.
        """
        if self.path is not None and not os.path.isdir(self.path):
            raise ExecNotFound(f"working directory {self.path!r} does not exist")
        return findExecutable(self.argv[0], self.environment(), self.path)

    def connect(self, protocolFactory: Any) -> Deferred[IProtocol]:
        """
        Start the process and connect C{protocolFactory}'s protocol to it.
        """
        try:
            executable = self.executable()
        except ExecNotFound as e:
            return fail(e)
        try:
            protocol = protocolFactory.buildProtocol(ProcessAddress(self.argv))
        except BaseException:
            return fail()
        if protocol is None:
            return fail(ExecError("the factory built no protocol"))
        transport = _ProcessTransport(self, protocol)
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: 2 if self.stderr == "inherit" else "r"}
        try:
            transport.process = self.reactor.spawnProcess(
                _ProcessProtocol(transport), executable, self.argv, env=self.environment(),
                path=self.path, childFDs=childFDs)
        except OSError as e:
            return fail(ExecError(f"cannot start {self.command!r}: {e.strerror or e}"))
        if not transport.connected:
            # The reactor may connect the process protocol later.
            transport.started()
        return succeed(protocol)


# Descriptions.


class CommandLine(Kind):
    """
    A command line split as a POSIX shell splits it (quotes, backslashes),
    with no shell run.
    """

    name = "command"
    expected = "a command line (split like a shell does; no shell is run)"

    def convert(self, text: str) -> tuple[str, ...]:
        try:
            argv = tuple(shlex.split(text))
        except ValueError as e:
            raise Invalid(f"{self.expected}; {e}") from None
        if not argv:
            raise Invalid()
        return argv

    def format(self, value: Any) -> str:
        return shlex.join(value)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Environment(Kind):
    """
    Environment variables, C{NAME=value} items separated by C{|}.
    """

    name = "environment"
    expected = "variables like NAME=value, separated by '|'"

    def convert(self, text: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for item in text.split("|"):
            name, equals, value = item.partition("=")
            if not equals:
                raise Invalid(f"{self.expected}; {item!r} has no '=' (escaped as \\= inside "
                              "a description)")
            if not _NAME.fullmatch(name):
                raise Invalid(f"{self.expected}; {name!r} is not a variable name")
            if "\0" in value:
                raise Invalid(f"{self.expected}; the value of {name} has a NUL")
            found[name] = value
        return found

    def format(self, value: Any) -> str:
        return "|".join(f"{name}={text}" for name, text in value.items())


def _build(reactor: Any, command: tuple[str, ...], env: dict[str, str], path: str | None,
           stderr: str, grace: float) -> ExecClientEndpoint:
    endpoint = ExecClientEndpoint(reactor, command, env, path, stderr, grace)
    try:
        endpoint.executable()
    except ExecNotFound as e:
        raise execType.error("command", e.reason, shlex.join(command)) from None
    return endpoint


execType = EndpointType(
    "exec", "client",
    (
        Arg("command", CommandLine(), positional=True,
            help="the command line, split like a shell does (no shell is run), found on PATH"),
        Arg("env", Environment(), {}, help="environment additions, NAME=value items "
            "separated by '|'"),
        Arg("path", Path(), None, help="the process's working directory"),
        Arg("stderr", Choice(*STDERR_CHOICES), "log",
            help="the process's stderr: log it, drop it, or inherit this process's"),
        Arg("grace", Seconds(allowZero=True), DEFAULT_GRACE,
            help="seconds from SIGTERM to SIGKILL when the connection closes"),
    ),
    "a local process's stdin/stdout (spawnProcess); exit status in connectionLost; "
    "SIGTERM then SIGKILL on close",
    factory=_build,
)
