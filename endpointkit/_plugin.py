"""
The parser objects that C{twisted/plugins/endpointkit_endpoints.py}
instantiates.  Twisted imports that module at every plugin scan, so this
module imports only what C{twisted.internet.endpoints} has already imported;
each parser imports its endpoint family when it is first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import (
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

if TYPE_CHECKING:
    from endpointkit._schema import EndpointType


class _LazyParser:
    """
    A parser that knows its prefix and where its L{EndpointType} lives
    (C{"module:attribute"}), and loads it on first use.
    """

    def __init__(self, prefix: str, location: str) -> None:
        self.prefix = prefix
        self.location = location

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.prefix}: {self.location}>"

    def endpointType(self) -> EndpointType:
        module, _, name = self.location.partition(":")
        found: EndpointType = getattr(import_module(module), name)
        return found

    def _parse(self, reactor: Any, args: tuple[object, ...], kwargs: dict[str, object]) -> Any:
        from endpointkit._grammar import rejoinBrackets
        from endpointkit._lookup import parseDescription
        from endpointkit._schema import parseArguments

        positional, keywords = rejoinBrackets(self.prefix, args, kwargs)
        parsed = parseArguments(self.endpointType(), positional, keywords, parseDescription)
        return parsed.build(reactor)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class ClientParser(_LazyParser):
    """
    Parses an endpointkit client description for Twisted's
    C{clientFromString}.
    """

    def parseStreamClient(self, reactor: Any, *args: object, **kwargs: object) -> IStreamClientEndpoint:
        endpoint: IStreamClientEndpoint = self._parse(reactor, args, kwargs)
        return endpoint


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ServerParser(_LazyParser):
    """
    Parses an endpointkit server description for Twisted's
    C{serverFromString}.
    """

    def parseStreamServer(self, reactor: Any, *args: object, **kwargs: object) -> IStreamServerEndpoint:
        endpoint: IStreamServerEndpoint = self._parse(reactor, args, kwargs)
        return endpoint
