"""
Client descriptions of listening ports: the description that connects to
a port, for a test, a health check or a configuration file to hand on::

    port = yield listen("tcp:0", factory)
    clientDescriptionFor(port)      # "tcp:127.0.0.1:41234"
    clientDescriptionsFor(multi)    # one per member of a multi: port

A TCP port gives C{tcp:} to its address (the loopback address when it
listens on every address), a UNIX port C{unix:} to its path, a TLS port
C{tls:} verifying the name its certificate carries (read from the
certificate the port serves, unless a C{hostname} is given), and a port
type of its own says how through a C{clientDescription()} method.  Wrapper
ports (C{wrappedPort}) are seen through; a port that expects the PROXY
protocol header, or an abstract UNIX socket, has no client description
(L{CannotDescribePort}).
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any, cast

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IListeningPort

from endpointkit._compat import makeTLSConnection
from endpointkit._grammar import buildDescription
from endpointkit.lifecycle._shared import text

__all__ = ["CannotDescribePort", "clientDescriptionFor", "clientDescriptionsFor"]


class CannotDescribePort(ValueError):
    """
    There is no client description for this listening port.
    """


_LOOPBACK = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def _forTLS(hostname: str | None, trustRoots: str | None) -> tuple[str | None, ...]:
    # What a port that describes itself is given: nothing when there is
    # nothing to say, so that a clientDescription() of no arguments works.
    return (hostname, trustRoots) if (hostname, trustRoots) != (None, None) else ()


def clientDescriptionsFor(port: IListeningPort | Any, hostname: str | None = None,
                          trustRoots: str | None = None) -> list[str]:
    """
    The client descriptions that reach C{port}: one for an ordinary port,
    one per member of a C{multi:} port (attribute C{ports}).

    See L{clientDescriptionFor} for C{hostname} and C{trustRoots}.
    """
    own = getattr(port, "clientDescriptions", None)
    if callable(own):
        described: list[str] = own(*_forTLS(hostname, trustRoots))
        return described
    members = getattr(port, "ports", None)
    if isinstance(members, (list, tuple)):
        return [d for member in members
                for d in clientDescriptionsFor(member, hostname, trustRoots)]
    inner = getattr(port, "wrappedPort", None)
    if inner is not None and not callable(getattr(port, "clientDescription", None)):
        return clientDescriptionsFor(inner, hostname, trustRoots)
    return [clientDescriptionFor(port, hostname, trustRoots)]


def clientDescriptionFor(port: IListeningPort | Any, hostname: str | None = None,
                         trustRoots: str | None = None) -> str:
    """
    The client description that connects to C{port}: C{tcp:} to its
    address (the loopback address when it listens on every address),
    C{unix:} to its path, C{tls:} for a TLS port, or whatever a port that
    has C{clientDescription(hostname, trustRoots)} says (with
    C{clientDescriptions(hostname, trustRoots)} for several addresses: a
    port type of its own says how a client reaches it this way); wrappers
    are seen through (C{wrappedPort}).

    For TLS, the name to verify is C{hostname}, or else the first DNS name
    (then IP address, then common name) of the certificate the port serves;
    the description connects to the port's own address and verifies that
    name, trusting the PEM certificates in the directory C{trustRoots} (as
    Twisted's C{tls:} client reads it) or, without it, the platform's.  Both
    are ignored for ports without TLS.

    @raise CannotDescribePort: for a port with several addresses (use
        L{clientDescriptionsFor}) or one no client description reaches.
    """
    members = getattr(port, "ports", None)
    if isinstance(members, (list, tuple)):
        raise CannotDescribePort(
            f"{port!r} listens on {len(members)} addresses; use "
            "clientDescriptionsFor(port) for one description per address")
    own = getattr(port, "clientDescription", None)
    if callable(own):
        described: str = own(*_forTLS(hostname, trustRoots))
        return described
    inner = getattr(port, "wrappedPort", None)
    if inner is not None:
        return clientDescriptionFor(inner, hostname, trustRoots)
    try:
        host: Any = cast(Any, port).getHost()
    except Exception as e:
        raise CannotDescribePort(f"{port!r} is not listening ({e})") from None
    factories = list(_factoryChain(getattr(port, "factory", None)))
    if any(type(f).__name__ == "HAProxyWrappingFactory" for f in factories):
        raise CannotDescribePort(
            f"{port!r} expects the PROXY protocol header, which no client description sends")
    if isinstance(host, (IPv4Address, IPv6Address)) and host.type == "TCP":
        address = _LOOPBACK.get(host.host, host.host)
        tcp = buildDescription("tcp", address, host.port)
        tls = next((f for f in factories if type(f).__name__ == "TLSMemoryBIOFactory"), None)
        if tls is None:
            return tcp
        name = hostname or _certificateName(tls, port)
        if name == address:
            return buildDescription("tls", address, host.port, trustRoots=trustRoots)
        return buildDescription("tls", name, host.port, trustRoots=trustRoots, endpoint=tcp)
    if isinstance(host, UNIXAddress):
        path = text(host.name)
        if not path or path.startswith("\0"):
            raise CannotDescribePort(
                f"{port!r} listens on an abstract or unnamed UNIX socket, which a "
                "description cannot name")
        return buildDescription("unix", path)
    raise CannotDescribePort(
        f"no client description reaches {port!r} (address {host!r}); a port type of "
        "its own can say how by implementing clientDescription()")


def _factoryChain(factory: object) -> Iterator[object]:
    depth = 0
    while factory is not None and depth < 16:
        yield factory
        factory = getattr(factory, "wrappedFactory", None)
        depth += 1


def _certificateName(tlsFactory: Any, port: object) -> str:
    from cryptography import x509

    try:
        # A connection made for a stand-in protocol (never used on the
        # wire) holds the certificate the port serves.
        standIn = types.SimpleNamespace(factory=tlsFactory)
        connection = makeTLSConnection(tlsFactory, standIn)
        certificate: x509.Certificate = connection.get_certificate().to_cryptography()
    except Exception:
        raise CannotDescribePort(
            f"cannot read the certificate of TLS port {port!r}; pass hostname= with "
            "the name to verify") from None
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [n for n in names.get_values_for_type(x509.DNSName) if "*" not in n]
        ips = [str(n) for n in names.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    common = [str(a.value) for a in
              certificate.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]
    for name in dns + ips + [c for c in common if "*" not in c]:
        return name
    raise CannotDescribePort(
        f"the certificate of TLS port {port!r} names no host; pass hostname= with "
        "the name to verify")
