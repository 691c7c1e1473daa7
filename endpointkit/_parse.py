"""
endpointkit's parse API: Twisted's C{clientFromString} and
C{serverFromString}, with clear errors for every type and a cached plugin
lookup.  A description with an insecure setting (see
L{endpointkit._schema.EndpointType.insecure}) is logged, at warn level, once
per description.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint
from twisted.logger import Logger

from endpointkit._grammar import Side
from endpointkit._lookup import parseDescription
from endpointkit._schema import Parsed

_log = Logger()

_WARNED_LIMIT = 1024
"""
How many insecure descriptions are remembered as already logged; past it,
the oldest is forgotten (and would be logged again).
"""

_warned: OrderedDict[tuple[Side, str], None] = OrderedDict()


def logInsecure(parsed: Parsed) -> None:
    """
    Log each insecure setting of C{parsed}, the first time this description
    is parsed: for everything that builds endpoints from descriptions
    (C{clientFromString}, C{serverFromString}; L{endpointkit.listen} and the
    relay should call it too).
    """
    warnings = parsed.warnings()
    if not warnings:
        return
    key = (parsed.side, str(parsed))
    if key in _warned:
        return
    _warned[key] = None
    if len(_warned) > _WARNED_LIMIT:
        _warned.popitem(last=False)
    # Not "warning": the legacy log system reads that key as a Python
    # warning's.
    for problem in warnings:
        _log.warn("insecure {side} description {description}: {problem}",
                  side=parsed.side, description=str(parsed), problem=problem)


def _build(reactor: Any, description: str | bytes, side: Side) -> Any:
    parsed = parseDescription(description, side)
    endpoint = parsed.build(reactor)
    logInsecure(parsed)
    return endpoint


def clientFromString(reactor: Any, description: str | bytes) -> IStreamClientEndpoint:
    """
    Like L{twisted.internet.endpoints.clientFromString}; a bad description
    raises L{endpointkit.DescriptionError}.
    """
    endpoint: IStreamClientEndpoint = _build(reactor, description, "client")
    return endpoint


def serverFromString(reactor: Any, description: str | bytes) -> IStreamServerEndpoint:
    """
    Like L{twisted.internet.endpoints.serverFromString}; a bad description
    raises L{endpointkit.DescriptionError}.
    """
    endpoint: IStreamServerEndpoint = _build(reactor, description, "server")
    return endpoint
