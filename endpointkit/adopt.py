"""
C{adopt:} -- listen on an already-open listening socket inherited by file
descriptor number, from einhorn, s6, circus, supervisord,
C{systemd-socket-activate} or a parent process::

    adopt:3
    adopt:fd=3

The address family (IPv4, IPv6 or UNIX) is read from the socket itself.  The
descriptor is checked when the endpoint is built and again when it listens:
one that is not open, not a socket, not a stream socket or not listening is
a L{DescriptionError} naming the descriptor and what it is.

Inherited sockets are often blocking (systemd and most supervisors pass them
so); the endpoint makes the socket non-blocking before adopting it, as
Twisted's C{AdoptedStreamServerEndpoint} does, or the reactor would hang in
C{accept()}.

Twisted's port listens on a duplicate of the descriptor.  Who closes the
original depends on who owns it:

  - C{adopt:N} descriptions own the inherited descriptor: it is closed at
    once, so that the port's C{stopListening} really closes the socket (in
    this process), and the endpoint listens only once;
  - from Python, the descriptor stays the caller's:
    C{AdoptedServerEndpoint(reactor, sock.fileno())} never closes it
    (closing it would later close whatever reused the number), and
    C{stopListening} closes only the port's duplicate, so the socket
    listens until the caller closes it too.  Pass
    C{closeAfterAdopting=True} to hand the descriptor over instead, as
    C{adopt:N} does.  (The socket is non-blocking from then on for the
    caller too: the flag belongs to the socket, which the duplicate shares.)

    port = yield AdoptedServerEndpoint(reactor, sock.fileno()).listen(factory)
    yield port.stopListening()
    sock.close()                      # still the caller's to close
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from zope.interface import implementer

from endpointkit._grammar import DescriptionError
from endpointkit._kinds import Int
from endpointkit._schema import Arg, EndpointType

__all__ = ["AdoptedServerEndpoint", "adoptType", "inspectListeningSocket"]

_FAMILIES = {
    socket.AF_INET: "an IPv4",
    socket.AF_INET6: "an IPv6",
    getattr(socket, "AF_UNIX", -1): "a UNIX",
}


def _kindOfFile(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISFIFO, "a pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a socket"


def inspectListeningSocket(fd: int) -> int:
    """
    Check that C{fd} is an open, listening stream socket of a family the
    reactor can adopt, and return its address family.

    @raise DescriptionError: naming C{fd} and what it is instead.
    """

    def refuse(what: str) -> DescriptionError:
        return adoptType.error("fd", "must be a listening stream socket (IPv4, "
                               f"IPv6 or UNIX), but descriptor {fd} is {what}", str(fd))

    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        if e.errno == errno.EBADF:
            raise refuse("not open in this process") from None
        raise refuse(f"not usable ({e.strerror})") from None
    if not stat.S_ISSOCK(mode):
        raise refuse(_kindOfFile(mode))
    # socket.socket(fileno=...) reads the family and type from the socket; on
    # a duplicate, so that the inherited descriptor stays as it is.
    probe = socket.socket(fileno=os.dup(fd))
    try:
        family, kind = probe.family, probe.type
        if family not in _FAMILIES:
            raise refuse(f"a socket of address family {family!r}")
        if kind != socket.SOCK_STREAM:
            raise refuse(f"{_FAMILIES[family]} {_typeName(kind)} socket, not a stream socket")
        acceptConn = getattr(socket, "SO_ACCEPTCONN", None)
        if acceptConn is not None and not probe.getsockopt(socket.SOL_SOCKET, acceptConn):
            raise refuse(f"{_FAMILIES[family]} stream socket that is not listening "
                         "(listen() was not called on it)")
    finally:
        probe.close()
    return int(family)


def _typeName(kind: int) -> str:
    names = {socket.SOCK_DGRAM: "datagram", socket.SOCK_RAW: "raw",
             getattr(socket, "SOCK_SEQPACKET", -1): "seqpacket"}
    return names.get(kind, f"type-{int(kind)}")


@implementer(IStreamServerEndpoint)
class AdoptedServerEndpoint:
    """
    Listens on an inherited listening socket, given by descriptor number,
    through the reactor's C{adoptStreamPort}.

    @param fd: the descriptor of a listening stream socket.
    @param closeAfterAdopting: whether the endpoint owns C{fd}: if true, it
        closes C{fd} once adopted (the port keeps its own duplicate), and
        so listens at most once, as C{adopt:N} descriptions do.  By default
        C{fd} stays open and the caller's to close; each listen adopts a
        new duplicate of it.
    """

    def __init__(self, reactor: Any, fd: int, closeAfterAdopting: bool = False) -> None:
        self._reactor = reactor
        self.fd = fd
        self.closeAfterAdopting = closeAfterAdopting
        self._closed = False

    def __repr__(self) -> str:
        owned = ", closed once adopted" if self.closeAfterAdopting else ""
        return f"<AdoptedServerEndpoint fd {self.fd}{owned}>"

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        """
        Make the socket non-blocking and adopt it; then close the original
        descriptor if the endpoint owns it (C{closeAfterAdopting}).
        """
        if self._closed:
            return defer.fail(adoptType.error(
                "fd", f"is {self.fd}, a descriptor this endpoint already adopted "
                "and closed; build a new endpoint", str(self.fd)))
        try:
            family = inspectListeningSocket(self.fd)
            os.set_blocking(self.fd, False)
            port = self._reactor.adoptStreamPort(self.fd, family, protocolFactory)
        except Exception:
            return defer.fail()
        if self.closeAfterAdopting:
            self._closed = True
            os.close(self.fd)
        result: defer.Deferred[IListeningPort] = defer.succeed(port)
        return result


def _build(reactor: Any, fd: int) -> AdoptedServerEndpoint:
    inspectListeningSocket(fd)
    # A description names a descriptor this process inherited: it is the
    # endpoint's to close.
    return AdoptedServerEndpoint(reactor, fd, closeAfterAdopting=True)


adoptType = EndpointType(
    "adopt", "server",
    (
        Arg("fd", Int(0), help="number of an inherited, listening stream socket "
            "(IPv4, IPv6 or UNIX; systemd passes the first one as 3)", positional=True),
    ),
    "an inherited listening socket, by file descriptor number (from a parent "
    "process or supervisor); its family is read from the socket, it is made "
    "non-blocking, and the original descriptor is closed once adopted",
    factory=_build,
)
