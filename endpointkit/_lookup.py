"""
Finding the parser for a prefix: endpointkit's types and Twisted's built-ins
by their declarations, third-party types by one cached plugin scan (Twisted
rescans its plugins at every parse); and L{parseDescription}, which checks a
whole description, nested ones included, on top of that lookup.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from endpointkit._grammar import (
    SIDES,
    DescriptionError,
    Side,
    argumentText,
    didYouMean,
    splitDescription,
    tokenize,
)
from endpointkit._schema import EndpointType, Parsed, parseArguments


@dataclass(frozen=True)
class Found:
    """
    One endpoint type that this Python can resolve.
    """

    side: Side
    prefix: str
    provider: str
    type: EndpointType | None
    plugin: Any


def ourParsers() -> list[Any]:
    """
    endpointkit's parser objects, from its plugin module.
    """
    from twisted.plugins import endpointkit_endpoints

    return [value for value in vars(endpointkit_endpoints).values()
            if hasattr(value, "endpointType") and hasattr(value, "prefix")]


_plugins: dict[Side, dict[str, Any]] = {}
_modules: dict[int, str] = {}
_loaded: dict[int, ModuleType | None] = {}


def ourParsersBySide(side: Side) -> dict[str, Any]:
    """
    endpointkit's parser objects for C{side}, by prefix, not yet loaded.
    """
    from endpointkit._plugin import ClientParser, ServerParser

    kind = ServerParser if side == "server" else ClientParser
    return {parser.prefix.lower(): parser for parser in ourParsers()
            if isinstance(parser, kind)}


def ourTypes(side: Side) -> dict[str, EndpointType]:
    """
    endpointkit's declared types for C{side}, by prefix (this loads every
    endpoint family).
    """
    return {prefix: parser.endpointType()
            for prefix, parser in ourParsersBySide(side).items()}


def builtinTypes(side: Side) -> dict[str, EndpointType]:
    from endpointkit._builtin import builtinTypes as types

    return {etype.prefix: etype for etype in types() if etype.side == side}


def _interface(side: Side) -> Any:
    from twisted.internet.interfaces import (
        IStreamClientEndpointStringParserWithReactor,
        IStreamServerEndpointStringParser,
    )

    return (IStreamServerEndpointStringParser if side == "server"
            else IStreamClientEndpointStringParserWithReactor)


def scanPlugins(side: Side) -> list[tuple[Any, str]]:
    """
    Every parser plugin Twisted finds for C{side}, in Twisted's order, with
    the name of the plugin module that holds it.
    """
    import twisted.plugins
    from twisted.plugin import getCache

    interface = _interface(side)
    found = []
    dropins = getCache(twisted.plugins)  # type: ignore[no-untyped-call]
    for module, dropin in dropins.items():
        for cached in dropin.plugins:
            try:
                adapted = interface(cached, None)
            except Exception:
                continue
            if adapted is not None:
                found.append((adapted, module))
    return found


def pluginParsers(side: Side, rescan: bool = False) -> dict[str, Any]:
    if rescan or side not in _plugins:
        found: dict[str, Any] = {}
        for plugin, module in scanPlugins(side):
            _modules[id(plugin)] = module
            _loaded[id(plugin)] = sys.modules.get("twisted.plugins." + module)
            found.setdefault(str(plugin.prefix).lower(), plugin)
        _plugins[side] = found
    return _plugins[side]


def _current(plugin: Any) -> bool:
    """
    Whether the plugin module that held C{plugin} when it was scanned is
    still the one Python has loaded (a plugin module that was unloaded or
    reloaded since, as Twisted's own tests do with their fake plugins, gives
    new parser objects: the cached one is stale).
    """
    module = sys.modules.get(pluginModule(plugin))
    return module is not None and module is _loaded.get(id(plugin))


def findParser(side: Side, prefix: str) -> EndpointType | Any:
    """
    The declared type for C{prefix}, or the third-party plugin that parses
    it; an unknown prefix is a L{DescriptionError} with a suggestion.
    """
    key = prefix.lower()
    ours = ourParsersBySide(side).get(key)
    if ours is not None:
        declared: EndpointType = ours.endpointType()
        return declared
    builtin = builtinTypes(side).get(key)
    if builtin is not None:
        return builtin
    plugins = pluginParsers(side)
    if key not in plugins or not _current(plugins[key]):
        plugins = pluginParsers(side, rescan=True)
    if key in plugins:
        return plugins[key]
    known = sorted(set(ourParsersBySide(side)) | set(builtinTypes(side)) | set(plugins))
    guess = didYouMean(key, known)
    other: Side = "server" if side == "client" else "client"
    if guess:
        hint = f"did you mean {guess!r}?"
    elif key in ourParsersBySide(other) or key in builtinTypes(other) or key in pluginParsers(other):
        hint = f"{prefix!r} is a {other} type"
    else:
        hint = "known types: " + ", ".join(known)
    raise DescriptionError(
        f"unknown {side} endpoint type {prefix!r}; {hint}", prefix=prefix
    )


def allTypes() -> Iterator[Found]:
    """
    Every endpoint type this Python can resolve: endpointkit's, Twisted's
    built-ins and third-party plugins.
    """
    for side in SIDES:
        seen = set()
        for table in (ourTypes(side), builtinTypes(side)):
            for prefix, etype in sorted(table.items()):
                if prefix not in seen:
                    seen.add(prefix)
                    yield Found(side, prefix, etype.provider, etype, None)
        for prefix, plugin in sorted(pluginParsers(side).items()):
            if prefix not in seen:
                seen.add(prefix)
                yield Found(side, prefix, providerOf(plugin), None, plugin)


def pluginModule(plugin: Any) -> str:
    """
    The name of the plugin module (under C{twisted.plugins}) holding
    C{plugin}.
    """
    return "twisted.plugins." + _modules.get(id(plugin), "?")


def providerOf(plugin: Any) -> str:
    """
    The distribution that installed the plugin module of C{plugin}.
    """
    from importlib import metadata

    filename = pluginModule(plugin).replace(".", "/") + ".py"
    for dist in metadata.distributions():
        for file in dist.files or ():
            if str(file) == filename:
                return str(dist.metadata["Name"])
    return "unknown"


def parseDescription(description: str | bytes, side: Side) -> Parsed:
    """
    Check a whole description for one side, without building anything.
    """
    if isinstance(description, bytes):
        description = argumentText("description", None, description)
    if not isinstance(description, str):
        raise DescriptionError(
            f"a description must be a string, got {type(description).__name__}"
        )
    prefix, args, kwargs = splitDescription(description)
    found = findParser(side, prefix)
    if isinstance(found, EndpointType):
        return parseArguments(found, args, kwargs, parseDescription,
                              ordered=tokenize(description)[1:])
    return Parsed(side, prefix.lower(), None, {}, (), tuple(args), tuple(kwargs),
                  plugin=found)
