"""
Why listening failed, in one line an administrator can act on.

L{ListenError} is what L{endpointkit.listen} fails with: what was asked, what
went wrong and, where one helps, a hint::

    listen tcp:8080: address already in use: port 8080 on every IPv4 address
    is taken (find the holder with: ss -ltnp 'sport = :8080')

L{explainListenFailure} turns whatever an endpoint raised (Twisted's
L{CannotListenError}, a bare L{OSError}, the failure of one member of a
C{multi:} port) into a L{ListenError}: for TCP it names the address and the
port, the privileged port range and the command that finds the holder; for
a UNIX socket the missing or read-only directory, the stale socket file,
the live server, a path over the 107-byte limit, and which running process
holds the lock file (its name read from C{/proc}).  L{explainSystemd} says
why a C{systemd:} description found no socket to adopt.
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Iterator
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.python.failure import Failure

from endpointkit.lifecycle._shared import text

__all__ = ["UNIX_PATH_LIMIT", "ListenError", "explainListenFailure", "explainSystemd",
           "lockHolder"]

UNIX_PATH_LIMIT = 107
"""
The longest path, in bytes, that a UNIX socket can portably be bound to
(C{sun_path} holds 108 bytes with the terminating NUL).
"""


class ListenError(CannotListenError):
    """
    Listening failed.  C{str()} is one line an administrator can act on:
    what was asked, what went wrong and, where one helps, a hint.

    A L{CannotListenError}, so handlers written for Twisted's own error
    still catch it.

    @ivar description: what was asked (the description, secrets masked, or
        a short form of the endpoint).
    @ivar problem: what went wrong, without the description.
    @ivar hint: what to do about it, or L{None}.
    @ivar errno: the operating system's error number, when there is one.
    """

    def __init__(self, description: str, problem: str, hint: str | None = None, *,
                 interface: str | None = None, port: object = None,
                 socketError: object = None, errno: int | None = None) -> None:
        CannotListenError.__init__(self, interface, port, socketError)  # type: ignore[no-untyped-call]
        self.description = description
        self.problem = problem
        self.hint = hint
        self.errno = errno
        self.message = f"listen {description}: {problem}" + (f" ({hint})" if hint else "")

    def __str__(self) -> str:
        return self.message


def _unprivilegedPortStart() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 1024


def _where(interface: str, port: object) -> str:
    if interface in ("", "0.0.0.0"):
        return f"port {port} on every IPv4 address"
    if interface == "::":
        return f"port {port} on every address"
    shown = f"[{interface}]" if ":" in interface else interface
    return f"port {port} on {shown}"


def _holderHint(port: object) -> str:
    return f"find the holder with: ss -ltnp 'sport = :{port}'"


def _looksLikePath(port: object) -> bool:
    shown = text(port)
    return "/" in shown and re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", shown) is None


def _reason(cause: object) -> str:
    return (cause.strerror if isinstance(cause, OSError) and cause.strerror
            else str(cause)).lower()


def _explainUnix(description: str, path: str, cause: object) -> ListenError:
    directory = os.path.dirname(path) or "."
    code = cause.errno if isinstance(cause, OSError) else None
    extra: dict[str, Any] = {"port": path, "socketError": cause, "errno": code}
    if isinstance(cause, str) and "lock" in cause.lower():
        holder = lockHolder(path + ".lock")
        if holder is None:
            return ListenError(description, f"lock file {path}.lock is held by a running process",
                               "another server uses this socket; stop it first", **extra)
        name = _processName(holder)
        return ListenError(
            description,
            f"lock file {path}.lock is held by running process {holder}"
            + (f" ({name})" if name else ""),
            f"another server uses this socket; stop it first, or if process {holder} "
            f"is not that server, remove the stale {path}.lock", **extra)
    length = len(os.fsencode(path))
    if length > UNIX_PATH_LIMIT and code in (None, errno.ENAMETOOLONG, errno.EINVAL):
        # Python refuses a path longer than sun_path before any system call
        # (an OSError without errno); the kernel says ENAMETOOLONG or EINVAL.
        return ListenError(
            description,
            f"path too long ({length} bytes, the limit is {UNIX_PATH_LIMIT})",
            "a UNIX socket needs a short path, such as one under /run or /tmp", **extra)
    if code == errno.ENOENT:
        return ListenError(description, f"directory {directory} does not exist",
                           f"create it first: mkdir -p {directory}", **extra)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "read-only" if code == errno.EROFS else f"not writable by uid {os.getuid()}"
        return ListenError(description,
                           f"permission denied creating {path} (directory {directory} is {what})",
                           None, **extra)
    if code == errno.EADDRINUSE:
        if _somethingListens(path):
            return ListenError(description, f"another server is listening on {path}",
                               "stop it first, or choose another path", **extra)
        return ListenError(
            description, f"{path} already exists and nothing listens on it",
            "a stale socket file left by a server that exited; remove it, "
            "or listen with lockfile=1 so it is cleaned up", **extra)
    return ListenError(description, f"cannot listen on {path}: {_reason(cause)}", None, **extra)


def lockHolder(lockPath: str) -> str | None:
    """
    The process id that holds the lock file C{lockPath} (Twisted's lock is
    a symbolic link to it), or L{None} if nothing holds it.
    """
    try:
        return os.readlink(lockPath)
    except OSError:
        return None


def _processName(pid: str) -> str | None:
    try:
        with open(f"/proc/{int(pid)}/comm") as f:
            return f.read().strip() or None
    except (OSError, ValueError):
        return None


def _somethingListens(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:
            return False
        return True


def _explainInet(description: str, interface: str, port: object, cause: object) -> ListenError:
    code = cause.errno if isinstance(cause, OSError) else None
    extra: dict[str, Any] = {"interface": interface, "port": port,
                             "socketError": cause, "errno": code}
    where = _where(interface, port)
    if code == errno.EADDRINUSE:
        return ListenError(description, f"address already in use: {where} is taken",
                           _holderHint(port), **extra)
    if code in (errno.EACCES, errno.EPERM):
        start = _unprivilegedPortStart()
        if isinstance(port, int) and 0 < port < start:
            return ListenError(description, f"permission denied binding port {port}",
                               f"ports below {start} need privileges", **extra)
        return ListenError(description, f"permission denied binding {where}",
                           "a security policy forbids it", **extra)
    if code == errno.EADDRNOTAVAIL:
        return ListenError(description, f"address {interface} is not on this host",
                           "no interface has it; list them with: ip -brief address", **extra)
    if code == errno.EAFNOSUPPORT:
        return ListenError(description, f"address family of {interface!r} is not supported here",
                           None, **extra)
    if isinstance(cause, socket.gaierror):
        return ListenError(description, f"cannot resolve interface {interface!r}: "
                           f"{cause.strerror or cause}", "give an IP address", **extra)
    return ListenError(description, f"cannot listen on {where}: {_reason(cause)}", None, **extra)


def _explainOther(description: str, address: str, cause: object) -> ListenError:
    code = cause.errno if isinstance(cause, OSError) else None
    extra: dict[str, Any] = {"port": address, "socketError": cause, "errno": code}
    if code == errno.EADDRINUSE:
        return ListenError(description, f"address already in use: {address} is taken",
                           None, **extra)
    return ListenError(description, f"cannot listen on {address}: {_reason(cause)}", None,
                       **extra)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        if isinstance(reason, Failure) and isinstance(reason.value, BaseException):
            todo.append(reason.value)
        elif isinstance(reason, BaseException):
            todo.append(reason)
        todo += [current.__cause__, current.__context__]


def _carriesItsCause(error: CannotListenError) -> bool:
    """
    Whether C{error} only wraps the failure that caused it (as
    L{endpointkit.multi.MultiListenError} wraps its member's), which then
    explains it better.
    """
    return isinstance(getattr(error, "reason", None), Failure)


def explainListenFailure(exc: BaseException, description: str,
                         unixPath: str | None = None) -> ListenError | None:
    """
    The L{ListenError} that explains C{exc}, a failure to listen on
    C{description} (a UNIX socket at C{unixPath}, if given).

    @return: the explanation, or L{None} if C{exc} is not a failure to
        listen.
    """
    for cause in _causes(exc):
        if isinstance(cause, ListenError):
            return cause
        if isinstance(cause, CannotListenError) and not _carriesItsCause(cause):
            if cause.interface is None and not isinstance(cause.port, int):
                if unixPath is not None or _looksLikePath(cause.port):
                    return _explainUnix(description, text(cause.port), cause.socketError)
                return _explainOther(description, text(cause.port), cause.socketError)
            return _explainInet(description, text(cause.interface), cause.port,
                                cause.socketError)
    for cause in _causes(exc):
        if isinstance(cause, OSError):
            if unixPath is not None:
                return _explainUnix(description, unixPath, cause)
            reason = (cause.strerror or str(cause)).lower()
            filename = cause.filename2 or cause.filename
            problem = (f"cannot use {text(filename)}: {reason}" if filename
                       else f"cannot listen: {reason}")
            return ListenError(description, problem, socketError=cause, errno=cause.errno)
    return None


def explainSystemd(description: str, error: Exception) -> ListenError:
    """
    Why a C{systemd:} description has no socket to adopt, from what
    Twisted read of C{LISTEN_FDS} and C{LISTEN_FDNAMES} (it removes them
    from the environment).
    """
    try:
        from twisted.internet.endpoints import _SystemdParser

        passed = _SystemdParser._sddaemon
        count = len(passed.inheritedDescriptors())
        names = list(passed.inheritedNamedDescriptors())
    except Exception:
        count, names = 0, []
    if not count:
        return ListenError(description, "systemd passed no sockets to this process",
                           "run it from a socket unit, or under systemd-socket-activate",
                           socketError=str(error))
    named = f", named {', '.join(names)}" if names else ""
    return ListenError(description, f"no such passed socket: systemd passed {count}{named}",
                       "check index= or name= against FileDescriptorName= in the socket unit",
                       socketError=str(error))
