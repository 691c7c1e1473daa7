"""
Declarations of Twisted's own endpoint types, as documented for Twisted 26,
so that C{endpointkit check} and endpointkit's parse API give them the same
clear errors.  Twisted still builds them: the checked description is handed
to Twisted's own parser.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Mapping
from typing import Any

from endpointkit._compat import HAS_TLS_SERVER_PARSER
from endpointkit._grammar import DescriptionError, Side
from endpointkit._kinds import Bool, Choice, Host, Int, Mode, Nested, Path, Port, Rest, String
from endpointkit._schema import BACKLOG, Arg, EndpointType, Parsed

_PROVIDER = "twisted"


def _buildWithTwisted(reactor: Any, parsed: Parsed) -> Any:
    from twisted.internet import endpoints

    parse = (endpoints.serverFromString if parsed.side == "server"
             else endpoints.clientFromString)
    try:
        return parse(reactor, parsed.description())  # type: ignore[no-untyped-call]
    except DescriptionError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, ImportError) as e:
        # FilePath's UnlistableError carries the OSError that says why.
        cause = getattr(e, "originalException", None) or e
        reason = (cause.strerror if isinstance(cause, OSError) and cause.strerror
                  else str(cause) or type(cause).__name__)
        where = (f" {cause.filename!r}" if isinstance(cause, OSError) and cause.filename
                 else "")
        raise DescriptionError(
            f"{parsed.prefix}: cannot build this endpoint:{where} {reason}",
            prefix=parsed.prefix,
        ) from e


def _twisted(prefix: str, side: Side, help: str, *args: Arg, **kw: Any) -> EndpointType:
    return EndpointType(prefix, side, tuple(args), help, provider=_PROVIDER,
                        build=_buildWithTwisted, **kw)


def _systemdOneOf(values: Mapping[str, Any], given: frozenset[str]) -> None:
    if ("index" in given) == ("name" in given):
        raise DescriptionError(
            "systemd: give exactly one of 'index' and 'name' (the name is "
            "FileDescriptorName= from the socket unit)",
            prefix="systemd",
        )


_SSL_METHODS = ("SSLv23_METHOD", "TLS_METHOD", "TLS_SERVER_METHOD",
                "TLSv1_METHOD", "TLSv1_1_METHOD", "TLSv1_2_METHOD")

_LEGACY_SSL_METHODS = {"TLSv1_METHOD": "TLS 1.0", "TLSv1_1_METHOD": "TLS 1.1"}


def _sslServerInsecure(values: Mapping[str, Any]) -> list[str]:
    method = values.get("sslmethod")
    if method in _LEGACY_SSL_METHODS:
        return [f"sslmethod={method} speaks only {_LEGACY_SSL_METHODS[method]}, "
                "which is deprecated (RFC 8996); leave sslmethod out to negotiate "
                "TLS 1.2 or later"]
    return []


def _sslClientInsecure(values: Mapping[str, Any]) -> list[str]:
    # Twisted's ssl: client verifies a certificate only against caCertsDir=
    # and a name only when given hostname=.
    if values.get("hostname") is not None:
        return []
    if values.get("caCertsDir") is None:
        return ["verifies nothing: any certificate is accepted, for any host "
                "(give hostname= to verify the server, or use tls:)"]
    return ["checks the certificate chain against caCertsDir but not the host "
            "name: any certificate those CAs issued is accepted (give hostname=)"]


def _unixServerProbe(values: Mapping[str, Any]) -> None:
    # What binding the socket file would fail on, told as the OSError that
    # bind() raises, so that it is explained as a failed listen is.
    from twisted.internet.error import CannotListenError

    from endpointkit.lifecycle.diagnosis import UNIX_PATH_LIMIT

    path = os.fsdecode(values["address"])
    directory = os.path.dirname(path) or "."
    problem: OSError | None = None
    if len(os.fsencode(path)) > UNIX_PATH_LIMIT:
        problem = OSError("AF_UNIX path too long")  # as bind() says it
    elif not os.path.isdir(directory):
        code = errno.ENOTDIR if os.path.exists(directory) else errno.ENOENT
        problem = OSError(code, os.strerror(code), path)
    elif not os.access(directory, os.W_OK | os.X_OK, effective_ids=True):
        problem = OSError(errno.EACCES, os.strerror(errno.EACCES), path)
    if problem is not None:
        raise CannotListenError(None, path, problem)  # type: ignore[no-untyped-call]


def _tlsServerProbe(values: Mapping[str, Any]) -> None:
    # Twisted reads the directory at each handshake: a missing one does not
    # fail the listen, it fails every connection.
    path = values["path"]
    if not os.path.isdir(path):
        what = "is not a directory" if os.path.exists(path) else "does not exist"
        raise DescriptionError(
            f"tls: argument 'path' must be a directory of PEM files, but {path} {what}",
            prefix="tls", argument="path", value=path)


def _tlsServer() -> tuple[EndpointType, ...]:
    # Twisted's tls: server description exists from Twisted 26.4.
    if not HAS_TLS_SERVER_PARSER:
        return ()
    return (_twisted(
        "tls", "server", "TLS with SNI over TCP/IPv6, certificates from a directory of PEM files",
        Arg("path", Path(), help="directory of PEM files named by host", positional=True),
        Arg("port", Port(allowZero=True), 443, "port to listen on", True),
        BACKLOG,
        Arg("interface", Host(allowEmpty=True, what="local address"), "::", "address to listen on", True),
        probe=_tlsServerProbe,
    ),)


@functools.cache
def builtinTypes() -> tuple[EndpointType, ...]:
    return (
        _twisted(
            "tcp", "server", "TCP over IPv4, listening",
            Arg("port", Port(allowZero=True), help="port to listen on (0: any free port)", positional=True),
            Arg("interface", Host(allowEmpty=True, what="local address"), "", "address to listen on (empty: all IPv4)", True),
            BACKLOG,
        ),
        _twisted(
            "tcp6", "server", "TCP over IPv6, listening",
            Arg("port", Port(allowZero=True), help="port to listen on (0: any free port)", positional=True),
            BACKLOG,
            Arg("interface", Host(allowEmpty=True, what="local address"), "::", "IPv6 address to listen on", True),
        ),
        _twisted(
            "ssl", "server", "TLS over TCP/IPv4 with one certificate, listening",
            Arg("port", Port(allowZero=True), help="port to listen on", positional=True),
            Arg("privateKey", Path(), "server.pem", "PEM file with the private key", True),
            Arg("certKey", Path(), None, "PEM file with the certificate (default: privateKey)", True),
            Arg("sslmethod", Choice(*_SSL_METHODS, caseSensitive=True), None, "OpenSSL method name", True),
            Arg("interface", Host(allowEmpty=True, what="local address"), "", "address to listen on", True),
            BACKLOG,
            Arg("extraCertChain", Path(), None, "PEM file with the chain to the root", True),
            Arg("dhParameters", Path(), None, "file with Diffie-Hellman parameters", True),
            insecure=_sslServerInsecure,
        ),
        _twisted(
            "unix", "server", "UNIX stream socket, listening",
            Arg("address", Path(), help="path of the socket file", positional=True),
            Arg("mode", Mode(), 0o666, "permissions of the socket file", True),
            BACKLOG,
            Arg("lockfile", Bool(), True, "guard the path with a PID lock file", True),
            probe=_unixServerProbe,
        ),
        _twisted(
            "systemd", "server", "a socket passed by systemd socket activation",
            Arg("domain", Choice("INET", "INET6", "UNIX", caseSensitive=True), help="address family of the socket", positional=True),
            Arg("index", Int(0), None, "position among the passed sockets", True),
            Arg("name", String(), None, "FileDescriptorName of the passed socket", True),
            validate=_systemdOneOf,
        ),
        _twisted("stdio", "server", "standard input and output as one connection"),
        *_tlsServer(),
        _twisted(
            "haproxy", "server", "the HAProxy PROXY protocol in front of another server description",
            Arg("endpoint", Rest("server"), help="the server description it wraps (the rest)"),
        ),
        _twisted(
            "tcp", "client", "TCP, to a host name (first address) or IP address",
            Arg("host", Host(), help="host to connect to", positional=True),
            Arg("port", Port(), help="port to connect to", positional=True),
            Arg("timeout", Int(0), 30, "seconds to wait for the connection (0 gives up at once)"),
            Arg("bindAddress", Host(what="local address"), None, "local address to connect from"),
        ),
        _twisted(
            "ssl", "client", "TLS over TCP (prefer tls:, which verifies host names)",
            Arg("host", Host(), help="host to connect to", positional=True),
            Arg("port", Port(), help="port to connect to", positional=True),
            Arg("timeout", Int(0), 30, "seconds to wait for the connection"),
            Arg("bindAddress", Host(what="local address"), None, "local address to connect from"),
            Arg("certKey", Path(), None, "PEM file with a client certificate"),
            Arg("privateKey", Path(), None, "PEM file with the client certificate's key"),
            Arg("caCertsDir", Path(), None, "directory of trusted CA certificates (*.pem)"),
            Arg("hostname", Host(), None, "host name to verify in the certificate"),
            insecure=_sslClientInsecure,
        ),
        _twisted(
            "unix", "client", "UNIX stream socket",
            Arg("path", Path(), help="path of the socket file", positional=True),
            Arg("timeout", Int(0), 30, "seconds to wait for the connection"),
            Arg("lockfile", Bool(), False, "refuse if the server's PID lock file is stale"),
        ),
        _twisted(
            "tls", "client", "TLS with certificate and host name verification, over happy-eyeballs TCP or another endpoint",
            Arg("host", Host(), help="host to connect to and verify", positional=True),
            Arg("port", Port(), help="port to connect to", positional=True),
            Arg("timeout", Int(0), 30, "seconds to wait for the connection", True),
            Arg("bindAddress", Host(what="local address"), None, "local address to connect from", True),
            Arg("certificate", Path(), None, "PEM file with a client certificate", True),
            Arg("privateKey", Path(), None, "PEM file with the client certificate's key", True),
            Arg("trustRoots", Path(), None, "directory of trusted CA certificates, *.pem (default: the platform's)", True),
            Arg("endpoint", Nested("client"), None, "client description to run TLS over (host is then only verified)", True),
        ),
    )
