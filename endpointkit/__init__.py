"""
endpointkit: more kinds of Twisted endpoint, and the helpers that make
endpoints safe to run.

The public API is loaded on first use, so that Twisted's plugin scan, which
imports C{endpointkit._plugin}, pays for none of it.

Each public name is written once, in the C{if TYPE_CHECKING:} block below:
one C{from MODULE import NAME as NAME} line per name, which is what type
checkers read.  At run time that block does not run; on first use, the
names and their modules are read from it (from this file's source), and a
name is imported from its module when it is first looked up.  To export a
name, add its line there; nothing else lists it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0.dev0"

if TYPE_CHECKING:
    from endpointkit._grammar import DescriptionError as DescriptionError
    from endpointkit._grammar import buildDescription as buildDescription
    from endpointkit._grammar import quoteArgument as quoteArgument
    from endpointkit._handshake import MalformedProxyReply as MalformedProxyReply
    from endpointkit._handshake import ProxyClosedConnection as ProxyClosedConnection
    from endpointkit._handshake import ProxyError as ProxyError
    from endpointkit._handshake import ProxyHandshakeTimeout as ProxyHandshakeTimeout
    from endpointkit._handshake import ProxyRefused as ProxyRefused
    from endpointkit._handshake import ProxyReplyTooLarge as ProxyReplyTooLarge
    from endpointkit._handshake import TruncatedProxyReply as TruncatedProxyReply
    from endpointkit._handshake import WrongProxyVersion as WrongProxyVersion
    from endpointkit._httpconnect import (
        HTTPProxyAuthenticationRequired as HTTPProxyAuthenticationRequired,
    )
    from endpointkit._httpconnect import HTTPProxyRefused as HTTPProxyRefused
    from endpointkit._lookup import parseDescription as parseDescription
    from endpointkit._parse import clientFromString as clientFromString
    from endpointkit._parse import serverFromString as serverFromString
    from endpointkit._socks import AddressTypeNotSupported as AddressTypeNotSupported
    from endpointkit._socks import CommandNotSupported as CommandNotSupported
    from endpointkit._socks import (
        ConnectionNotAllowedByRuleset as ConnectionNotAllowedByRuleset,
    )
    from endpointkit._socks import ConnectionRefused as ConnectionRefused
    from endpointkit._socks import GeneralSOCKSFailure as GeneralSOCKSFailure
    from endpointkit._socks import HostUnreachable as HostUnreachable
    from endpointkit._socks import NetworkUnreachable as NetworkUnreachable
    from endpointkit._socks import ProxyAuthenticationFailed as ProxyAuthenticationFailed
    from endpointkit._socks import SOCKS4IdentdMismatch as SOCKS4IdentdMismatch
    from endpointkit._socks import SOCKS4IdentdUnreachable as SOCKS4IdentdUnreachable
    from endpointkit._socks import SOCKS4Rejected as SOCKS4Rejected
    from endpointkit._socks import TTLExpired as TTLExpired
    from endpointkit._socks import UnassignedSOCKSReply as UnassignedSOCKSReply
    from endpointkit.adopt import AdoptedServerEndpoint as AdoptedServerEndpoint
    from endpointkit.deadline import ConnectTimeout as ConnectTimeout
    from endpointkit.deadline import TimeoutEndpoint as TimeoutEndpoint
    from endpointkit.deadline import connectWithTimeout as connectWithTimeout
    from endpointkit.failover import AllMembersFailed as AllMembersFailed
    from endpointkit.failover import FallbackClientEndpoint as FallbackClientEndpoint
    from endpointkit.failover import MemberCoolingDown as MemberCoolingDown
    from endpointkit.failover import RaceClientEndpoint as RaceClientEndpoint
    from endpointkit.failover import servedBy as servedBy
    from endpointkit.lifecycle.describing import CannotDescribePort as CannotDescribePort
    from endpointkit.lifecycle.describing import clientDescriptionFor as clientDescriptionFor
    from endpointkit.lifecycle.describing import clientDescriptionsFor as clientDescriptionsFor
    from endpointkit.lifecycle.diagnosis import ListenError as ListenError
    from endpointkit.lifecycle.draining import DrainResult as DrainResult
    from endpointkit.lifecycle.draining import gracefulStop as gracefulStop
    from endpointkit.lifecycle.listening import listen as listen
    from endpointkit.lifecycle.service import EndpointService as EndpointService
    from endpointkit.lifecycle.stopping import stopListening as stopListening
    from endpointkit.lifecycle.tracking import TrackedPort as TrackedPort
    from endpointkit.lifecycle.tracking import TrackingFactory as TrackingFactory
    from endpointkit.limit import LimitServerEndpoint as LimitServerEndpoint
    from endpointkit.memory import MemoryAddress as MemoryAddress
    from endpointkit.memory import MemoryClientEndpoint as MemoryClientEndpoint
    from endpointkit.memory import MemoryServerEndpoint as MemoryServerEndpoint
    from endpointkit.memory import pump as pump
    from endpointkit.metrics import FailoverMetrics as FailoverMetrics
    from endpointkit.metrics import LifecycleMetrics as LifecycleMetrics
    from endpointkit.metrics import LimitMetrics as LimitMetrics
    from endpointkit.metrics import RelayMetrics as RelayMetrics
    from endpointkit.metrics import serveMetrics as serveMetrics
    from endpointkit.multi import MultiListenError as MultiListenError
    from endpointkit.multi import MultiServerEndpoint as MultiServerEndpoint
    from endpointkit.process import ExecClientEndpoint as ExecClientEndpoint
    from endpointkit.process import ExecError as ExecError
    from endpointkit.process import ExecNotFound as ExecNotFound
    from endpointkit.process import ProcessAddress as ProcessAddress
    from endpointkit.proxy import HTTPConnectClientEndpoint as HTTPConnectClientEndpoint
    from endpointkit.proxy import SOCKS4aClientEndpoint as SOCKS4aClientEndpoint
    from endpointkit.proxy import SOCKS5ClientEndpoint as SOCKS5ClientEndpoint
    from endpointkit.proxy import TunnelTransport as TunnelTransport
    from endpointkit.proxyprotocol import InvalidProxyHeader as InvalidProxyHeader
    from endpointkit.proxyprotocol import IOriginalConnection as IOriginalConnection
    from endpointkit.proxyprotocol import IProxyHeaderTransport as IProxyHeaderTransport
    from endpointkit.proxyprotocol import OriginalConnection as OriginalConnection
    from endpointkit.proxyprotocol import ProxyHeader as ProxyHeader
    from endpointkit.proxyprotocol import ProxyHeaderTooLarge as ProxyHeaderTooLarge
    from endpointkit.proxyprotocol import ProxyProtocolClientEndpoint as ProxyProtocolClientEndpoint
    from endpointkit.proxyprotocol import ProxyProtocolServerEndpoint as ProxyProtocolServerEndpoint
    from endpointkit.proxyprotocol import ProxySSLInfo as ProxySSLInfo
    from endpointkit.proxyprotocol import recordOriginalConnection as recordOriginalConnection
    from endpointkit.proxyprotocol import sendProxyDescription as sendProxyDescription
    from endpointkit.relay import RelayFactory as RelayFactory
    from endpointkit.relay import RelayService as RelayService
    from endpointkit.relay import RelayStats as RelayStats
    from endpointkit.reuseport import ReusePortServerEndpoint as ReusePortServerEndpoint
    from endpointkit.srv import AllTargetsFailed as AllTargetsFailed
    from endpointkit.srv import NoSRVRecords as NoSRVRecords
    from endpointkit.srv import ServiceNotAvailable as ServiceNotAvailable
    from endpointkit.srv import SRVCache as SRVCache
    from endpointkit.srv import SRVClientEndpoint as SRVClientEndpoint
    from endpointkit.srv import SRVError as SRVError
    from endpointkit.srv import SRVLookupFailed as SRVLookupFailed
    from endpointkit.srv import SRVResolveTimeout as SRVResolveTimeout
    from endpointkit.srv import SRVTarget as SRVTarget
    from endpointkit.srv import orderTargets as orderTargets
    from endpointkit.srv import targetOf as targetOf
    from endpointkit.ssh import SSHAuthenticationFailed as SSHAuthenticationFailed
    from endpointkit.ssh import SSHChannelOpenFailed as SSHChannelOpenFailed
    from endpointkit.ssh import SSHClientEndpoint as SSHClientEndpoint
    from endpointkit.ssh import SSHCommandAddress as SSHCommandAddress
    from endpointkit.ssh import SSHCommandEndpoint as SSHCommandEndpoint
    from endpointkit.ssh import SSHCommandRefused as SSHCommandRefused
    from endpointkit.ssh import SSHConnectionLost as SSHConnectionLost
    from endpointkit.ssh import SSHError as SSHError
    from endpointkit.ssh import SSHHandshakeTimeout as SSHHandshakeTimeout
    from endpointkit.ssh import SSHHostKeyChanged as SSHHostKeyChanged
    from endpointkit.ssh import SSHHostKeyUnknown as SSHHostKeyUnknown
    from endpointkit.ssh import SSHKeyError as SSHKeyError
    from endpointkit.ssh import closeSharedConnections as closeSharedConnections
    from endpointkit.tlswrap import CertificateHostnameMismatch as CertificateHostnameMismatch
    from endpointkit.tlswrap import CertificateNotTrusted as CertificateNotTrusted
    from endpointkit.tlswrap import PinMismatch as PinMismatch
    from endpointkit.tlswrap import ReloadResult as ReloadResult
    from endpointkit.tlswrap import ServerCertificates as ServerCertificates
    from endpointkit.tlswrap import TLSFileError as TLSFileError
    from endpointkit.tlswrap import TLSHandshakeError as TLSHandshakeError
    from endpointkit.tlswrap import TLSHandshakeTimeout as TLSHandshakeTimeout
    from endpointkit.tlswrap import TLSVersionRefused as TLSVersionRefused
    from endpointkit.tlswrap import TLSWrapClientEndpoint as TLSWrapClientEndpoint
    from endpointkit.tlswrap import TLSWrapPort as TLSWrapPort
    from endpointkit.tlswrap import TLSWrapServerEndpoint as TLSWrapServerEndpoint
    from endpointkit.tlswrap import reloadCertificates as reloadCertificates
    from endpointkit.tlswrap import spkiPin as spkiPin
    from endpointkit.tlswrap import targetHost as targetHost


_API: dict[str, str] | None = None


def _publicNames() -> dict[str, str]:
    """
    Each public name and the module it is imported from, as the
    C{TYPE_CHECKING} block of this file writes them.
    """
    global _API
    if _API is None:
        _API = _readPublicNames()
    return _API


def _readPublicNames() -> dict[str, str]:
    import ast

    loader: Any = __spec__.loader if __spec__ is not None else None
    source = loader.get_source(__name__) if loader is not None else None
    if source is None:
        raise ImportError(
            "endpointkit finds its public names in the source of endpointkit/__init__.py, "
            "which this installation does not have")
    table = {}
    for node in ast.parse(source).body:
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                and node.test.id == "TYPE_CHECKING"):
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    for alias in statement.names:
                        table[alias.asname or alias.name] = statement.module
    return table


# Hidden from type checkers, which then see only the names above (a
# module-level __getattr__ would let any name through).
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        if name == "__all__":
            return sorted(_publicNames())
        module = _publicNames().get(name) if not name.startswith("__") else None
        if module is None:
            raise AttributeError(f"module 'endpointkit' has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(module), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_publicNames()))
