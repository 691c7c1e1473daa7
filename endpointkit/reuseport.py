"""
C{reuseport:} -- a TCP listener with C{SO_REUSEPORT}, so that several
processes can listen on one port and the kernel spreads new connections
among them::

    reuseport:8080
    reuseport:8080:interface=127.0.0.1:backlog=1024
    reuseport:8443:interface=[::]

The address family follows the interface: empty (the default, as for
Twisted's C{tcp:}) or an IPv4 address listens on IPv4; an IPv6 address
(bracketed C{[::1]} or escaped C{\\:\\:1}) listens on IPv6, and C{[::]} also
takes IPv4 where the kernel's C{bindv6only} is off.

On Linux only sockets created by the same effective user ID may share a port
(a different user gets "address already in use"), and every sharer must set
C{SO_REUSEPORT}, so a plain C{tcp:} listener on the port blocks them all.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.python.runtime import platformType
from zope.interface import implementer

from endpointkit._compat import listenTCPReusePort
from endpointkit._kinds import Host, Invalid, Port
from endpointkit._schema import BACKLOG, Arg, EndpointType

__all__ = ["ReusePortServerEndpoint", "reusePortSupported", "reuseportType"]


def reusePortSupported() -> bool:
    """
    Whether this platform has C{SO_REUSEPORT} and Twisted sets it there
    (POSIX, not Cygwin).
    """
    return (
        getattr(socket, "SO_REUSEPORT", None) is not None
        and platformType == "posix"
        and sys.platform != "cygwin"
    )


@implementer(IStreamServerEndpoint)
class ReusePortServerEndpoint:
    """
    Listens on TCP with C{SO_REUSEADDR} and C{SO_REUSEPORT}, through the
    reactor's own TCP port (L{endpointkit._compat.listenTCPReusePort}), so
    the port is an ordinary Twisted TCP port.

    @param interface: an IPv4 or IPv6 address without brackets; empty means
        every IPv4 address.
    """

    def __init__(self, reactor: Any, port: int, backlog: int = 50,
                 interface: str = "") -> None:
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface

    def __repr__(self) -> str:
        host = f"[{self._interface}]" if ":" in self._interface else self._interface
        return f"<ReusePortServerEndpoint {host}:{self._port}>"

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        """
        Listen on the port, sharing it with other C{SO_REUSEPORT} sockets of
        the same user.
        """
        return defer.execute(listenTCPReusePort, self._reactor, self._port, protocolFactory,
                             self._backlog, self._interface)


class _ListenAddress(Host):
    """
    An IP address to listen on (IPv6 bracketed or escaped), or empty for all
    IPv4 addresses; host names are refused, since the family must be known
    before binding.
    """

    def __init__(self) -> None:
        Host.__init__(self, allowEmpty=True, what="local address")
        self.expected = ("an IP address to listen on (IPv6 in brackets, like "
                         "[::1]), or empty for all IPv4 addresses")

    def convert(self, text: str) -> str:
        value = Host.convert(self, text)
        if value:
            try:
                ipaddress.ip_address(value.partition("%")[0])
            except ValueError:
                raise Invalid() from None
        return value


def _checkPlatform(values: Mapping[str, Any], given: frozenset[str]) -> None:
    if not reusePortSupported():
        raise reuseportType.error(
            None, f"SO_REUSEPORT is not available on this platform ({sys.platform}); "
            "use tcp: or tcp6: with one listening process")


def _build(reactor: Any, port: int, interface: str, backlog: int) -> ReusePortServerEndpoint:
    return ReusePortServerEndpoint(reactor, port, backlog, interface)


reuseportType = EndpointType(
    "reuseport", "server",
    (
        Arg("port", Port(allowZero=True), help="TCP port to listen on (0: any free port)",
            positional=True),
        Arg("interface", _ListenAddress(), "",
            "IPv4 or IPv6 address to listen on; empty: all IPv4", True),
        BACKLOG,
    ),
    "TCP (IPv4 or IPv6, by the interface) with SO_REUSEPORT: several processes "
    "share one port and the kernel spreads connections; on Linux only sockets of "
    "the same effective user may share it",
    factory=_build,
    validate=_checkPlatform,
)
