"""
endpointkit: more kinds of Twisted endpoint, and the helpers that make
endpoints safe to run.

The public API is loaded on first use, so that Twisted's plugin scan, which
imports C{endpointkit._plugin}, pays for none of it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_MODULES = {
    "endpointkit._grammar": (
        "DescriptionError",
        "buildDescription",
        "quoteArgument",
    ),
    "endpointkit._lookup": (
        "parseDescription",
    ),
    "endpointkit._parse": (
        "clientFromString",
        "serverFromString",
    ),
    "endpointkit.deadline": (
        "ConnectTimeout",
        "TimeoutEndpoint",
        "connectWithTimeout",
    ),
    "endpointkit.lifecycle.describing": (
        "CannotDescribePort",
        "clientDescriptionFor",
        "clientDescriptionsFor",
    ),
    "endpointkit.lifecycle.diagnosis": (
        "ListenError",
    ),
    "endpointkit.lifecycle.draining": (
        "DrainResult",
        "gracefulStop",
    ),
    "endpointkit.lifecycle.listening": (
        "listen",
    ),
    "endpointkit.lifecycle.service": (
        "EndpointService",
    ),
    "endpointkit.lifecycle.stopping": (
        "stopListening",
    ),
    "endpointkit.lifecycle.tracking": (
        "TrackedPort",
        "TrackingFactory",
    ),
    "endpointkit.proxy": (
        "HTTPConnectClientEndpoint",
        "SOCKS4aClientEndpoint",
        "SOCKS5ClientEndpoint",
        "TunnelTransport",
    ),
    "endpointkit._socks": (
        "AddressTypeNotSupported",
        "CommandNotSupported",
        "ConnectionNotAllowedByRuleset",
        "ConnectionRefused",
        "GeneralSOCKSFailure",
        "HTTPProxyAuthenticationRequired",
        "HTTPProxyRefused",
        "HostUnreachable",
        "MalformedProxyReply",
        "NetworkUnreachable",
        "ProxyAuthenticationFailed",
        "ProxyClosedConnection",
        "ProxyError",
        "ProxyHandshakeTimeout",
        "ProxyRefused",
        "ProxyReplyTooLarge",
        "SOCKS4IdentdMismatch",
        "SOCKS4IdentdUnreachable",
        "SOCKS4Rejected",
        "TTLExpired",
        "TruncatedProxyReply",
        "UnassignedSOCKSReply",
        "WrongProxyVersion",
    ),
    "endpointkit.memory": (
        "MemoryAddress",
        "MemoryClientEndpoint",
        "MemoryServerEndpoint",
        "pump",
    ),
    "endpointkit.reuseport": (
        "ReusePortServerEndpoint",
    ),
    "endpointkit.adopt": (
        "AdoptedServerEndpoint",
    ),
    "endpointkit.multi": (
        "MultiListenError",
        "MultiServerEndpoint",
    ),
    "endpointkit.limit": (
        "LimitServerEndpoint",
    ),
    "endpointkit.failover": (
        "AllMembersFailed",
        "FallbackClientEndpoint",
        "MemberCoolingDown",
        "RaceClientEndpoint",
        "servedBy",
    ),
    "endpointkit.metrics": (
        "FailoverMetrics",
        "LifecycleMetrics",
        "LimitMetrics",
        "RelayMetrics",
        "serveMetrics",
    ),
    "endpointkit.proxyprotocol": (
        "IOriginalConnection",
        "IProxyHeaderTransport",
        "InvalidProxyHeader",
        "OriginalConnection",
        "ProxyHeader",
        "ProxyHeaderTimeout",
        "ProxyHeaderTooLarge",
        "ProxyProtocolClientEndpoint",
        "ProxyProtocolServerEndpoint",
        "ProxySSLInfo",
        "UntrustedProxyPeer",
        "recordOriginalConnection",
        "sendProxyDescription",
    ),
}
_API = {name: module for module, names in _MODULES.items() for name in names}

if TYPE_CHECKING:
    from endpointkit._grammar import DescriptionError as DescriptionError
    from endpointkit._grammar import buildDescription as buildDescription
    from endpointkit._grammar import quoteArgument as quoteArgument
    from endpointkit._lookup import parseDescription as parseDescription
    from endpointkit._parse import (
        clientFromString as clientFromString,
    )
    from endpointkit._parse import (
        serverFromString as serverFromString,
    )
    from endpointkit._socks import (
        AddressTypeNotSupported as AddressTypeNotSupported,
    )
    from endpointkit._socks import (
        CommandNotSupported as CommandNotSupported,
    )
    from endpointkit._socks import (
        ConnectionNotAllowedByRuleset as ConnectionNotAllowedByRuleset,
    )
    from endpointkit._socks import (
        ConnectionRefused as ConnectionRefused,
    )
    from endpointkit._socks import (
        GeneralSOCKSFailure as GeneralSOCKSFailure,
    )
    from endpointkit._socks import (
        HostUnreachable as HostUnreachable,
    )
    from endpointkit._socks import (
        HTTPProxyAuthenticationRequired as HTTPProxyAuthenticationRequired,
    )
    from endpointkit._socks import (
        HTTPProxyRefused as HTTPProxyRefused,
    )
    from endpointkit._socks import (
        MalformedProxyReply as MalformedProxyReply,
    )
    from endpointkit._socks import (
        NetworkUnreachable as NetworkUnreachable,
    )
    from endpointkit._socks import (
        ProxyAuthenticationFailed as ProxyAuthenticationFailed,
    )
    from endpointkit._socks import (
        ProxyClosedConnection as ProxyClosedConnection,
    )
    from endpointkit._socks import (
        ProxyError as ProxyError,
    )
    from endpointkit._socks import (
        ProxyHandshakeTimeout as ProxyHandshakeTimeout,
    )
    from endpointkit._socks import (
        ProxyRefused as ProxyRefused,
    )
    from endpointkit._socks import (
        ProxyReplyTooLarge as ProxyReplyTooLarge,
    )
    from endpointkit._socks import (
        SOCKS4IdentdMismatch as SOCKS4IdentdMismatch,
    )
    from endpointkit._socks import (
        SOCKS4IdentdUnreachable as SOCKS4IdentdUnreachable,
    )
    from endpointkit._socks import (
        SOCKS4Rejected as SOCKS4Rejected,
    )
    from endpointkit._socks import (
        TruncatedProxyReply as TruncatedProxyReply,
    )
    from endpointkit._socks import (
        TTLExpired as TTLExpired,
    )
    from endpointkit._socks import (
        UnassignedSOCKSReply as UnassignedSOCKSReply,
    )
    from endpointkit._socks import (
        WrongProxyVersion as WrongProxyVersion,
    )
    from endpointkit.adopt import (
        AdoptedServerEndpoint as AdoptedServerEndpoint,
    )
    from endpointkit.deadline import (
        ConnectTimeout as ConnectTimeout,
    )
    from endpointkit.deadline import (
        TimeoutEndpoint as TimeoutEndpoint,
    )
    from endpointkit.deadline import (
        connectWithTimeout as connectWithTimeout,
    )
    from endpointkit.failover import (
        AllMembersFailed as AllMembersFailed,
    )
    from endpointkit.failover import (
        FallbackClientEndpoint as FallbackClientEndpoint,
    )
    from endpointkit.failover import (
        MemberCoolingDown as MemberCoolingDown,
    )
    from endpointkit.failover import (
        RaceClientEndpoint as RaceClientEndpoint,
    )
    from endpointkit.failover import (
        servedBy as servedBy,
    )
    from endpointkit.lifecycle.describing import (
        CannotDescribePort as CannotDescribePort,
    )
    from endpointkit.lifecycle.describing import (
        clientDescriptionFor as clientDescriptionFor,
    )
    from endpointkit.lifecycle.describing import (
        clientDescriptionsFor as clientDescriptionsFor,
    )
    from endpointkit.lifecycle.diagnosis import (
        ListenError as ListenError,
    )
    from endpointkit.lifecycle.draining import (
        DrainResult as DrainResult,
    )
    from endpointkit.lifecycle.draining import (
        gracefulStop as gracefulStop,
    )
    from endpointkit.lifecycle.listening import (
        listen as listen,
    )
    from endpointkit.lifecycle.service import (
        EndpointService as EndpointService,
    )
    from endpointkit.lifecycle.stopping import (
        stopListening as stopListening,
    )
    from endpointkit.lifecycle.tracking import (
        TrackedPort as TrackedPort,
    )
    from endpointkit.lifecycle.tracking import (
        TrackingFactory as TrackingFactory,
    )
    from endpointkit.limit import (
        LimitServerEndpoint as LimitServerEndpoint,
    )
    from endpointkit.memory import (
        MemoryAddress as MemoryAddress,
    )
    from endpointkit.memory import (
        MemoryClientEndpoint as MemoryClientEndpoint,
    )
    from endpointkit.memory import (
        MemoryServerEndpoint as MemoryServerEndpoint,
    )
    from endpointkit.memory import (
        pump as pump,
    )
    from endpointkit.metrics import (
        FailoverMetrics as FailoverMetrics,
    )
    from endpointkit.metrics import (
        LifecycleMetrics as LifecycleMetrics,
    )
    from endpointkit.metrics import (
        LimitMetrics as LimitMetrics,
    )
    from endpointkit.metrics import (
        RelayMetrics as RelayMetrics,
    )
    from endpointkit.metrics import (
        serveMetrics as serveMetrics,
    )
    from endpointkit.multi import (
        MultiListenError as MultiListenError,
    )
    from endpointkit.multi import (
        MultiServerEndpoint as MultiServerEndpoint,
    )
    from endpointkit.proxy import (
        HTTPConnectClientEndpoint as HTTPConnectClientEndpoint,
    )
    from endpointkit.proxy import (
        SOCKS4aClientEndpoint as SOCKS4aClientEndpoint,
    )
    from endpointkit.proxy import (
        SOCKS5ClientEndpoint as SOCKS5ClientEndpoint,
    )
    from endpointkit.proxy import (
        TunnelTransport as TunnelTransport,
    )
    from endpointkit.proxyprotocol import (
        InvalidProxyHeader as InvalidProxyHeader,
    )
    from endpointkit.proxyprotocol import (
        IOriginalConnection as IOriginalConnection,
    )
    from endpointkit.proxyprotocol import (
        IProxyHeaderTransport as IProxyHeaderTransport,
    )
    from endpointkit.proxyprotocol import (
        OriginalConnection as OriginalConnection,
    )
    from endpointkit.proxyprotocol import (
        ProxyHeader as ProxyHeader,
    )
    from endpointkit.proxyprotocol import (
        ProxyHeaderTimeout as ProxyHeaderTimeout,
    )
    from endpointkit.proxyprotocol import (
        ProxyHeaderTooLarge as ProxyHeaderTooLarge,
    )
    from endpointkit.proxyprotocol import (
        ProxyProtocolClientEndpoint as ProxyProtocolClientEndpoint,
    )
    from endpointkit.proxyprotocol import (
        ProxyProtocolServerEndpoint as ProxyProtocolServerEndpoint,
    )
    from endpointkit.proxyprotocol import (
        ProxySSLInfo as ProxySSLInfo,
    )
    from endpointkit.proxyprotocol import (
        UntrustedProxyPeer as UntrustedProxyPeer,
    )
    from endpointkit.proxyprotocol import (
        recordOriginalConnection as recordOriginalConnection,
    )
    from endpointkit.proxyprotocol import (
        sendProxyDescription as sendProxyDescription,
    )
    from endpointkit.reuseport import (
        ReusePortServerEndpoint as ReusePortServerEndpoint,
    )

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'endpointkit' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
