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

_API = {
    "DescriptionError": "endpointkit._description",
    "buildDescription": "endpointkit._description",
    "quoteArgument": "endpointkit._description",
    "parseDescription": "endpointkit._description",
    "clientFromString": "endpointkit._parse",
    "serverFromString": "endpointkit._parse",
}

if TYPE_CHECKING:
    from endpointkit._description import (
        DescriptionError,
        buildDescription,
        parseDescription,
        quoteArgument,
    )
    from endpointkit._parse import clientFromString, serverFromString

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
