"""
endpointkit's parse API: Twisted's C{clientFromString} and
C{serverFromString}, with clear errors for every type and a cached plugin
lookup.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint

from endpointkit._lookup import parseDescription


def clientFromString(reactor: Any, description: str | bytes) -> IStreamClientEndpoint:
    """
    Like L{twisted.internet.endpoints.clientFromString}; a bad description
    raises L{endpointkit.DescriptionError}.
    """
    endpoint: IStreamClientEndpoint = parseDescription(description, "client").build(reactor)
    return endpoint


def serverFromString(reactor: Any, description: str | bytes) -> IStreamServerEndpoint:
    """
    Like L{twisted.internet.endpoints.serverFromString}; a bad description
    raises L{endpointkit.DescriptionError}.
    """
    endpoint: IStreamServerEndpoint = parseDescription(description, "server").build(reactor)
    return endpoint
