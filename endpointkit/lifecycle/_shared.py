"""
What every module of the listening lifecycle uses: the type of a protocol
factory, the running reactor, text from a path, and the default deadlines.
"""

from __future__ import annotations

import os
from typing import Any, TypeAlias

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory

# A string: Factory is generic at run time only from Twisted 26.4.
ProtocolFactory: TypeAlias = "IProtocolFactory | Factory[Any]"
"""
A protocol factory: anything that provides L{IProtocolFactory}, spelled so
that type checkers without the zope.interface plugin accept a L{Factory}.
"""

DEFAULT_LISTEN_TIMEOUT = 30.0
DEFAULT_DRAIN_TIMEOUT = 30.0
DEFAULT_ABORT_GRACE = 2.0


def defaultReactor() -> Any:
    """
    The global reactor, imported only when a caller gave none.
    """
    from twisted.internet import reactor

    return reactor


def text(value: object) -> str:
    """
    C{value} as text: a path given as bytes is decoded as the file system
    does, L{None} is empty.
    """
    if isinstance(value, bytes):
        return os.fsdecode(value)
    return "" if value is None else str(value)
