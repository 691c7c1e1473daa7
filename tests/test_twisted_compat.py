"""
Twisted's own tests of its string parsers, run with endpointkit's parse API
in place of Twisted's, so that compatibility is proven on whichever Twisted
this runs with.

Each class here subclasses the Twisted test class of the same name and, in
C{setUp}, puts endpointkit's functions where the Twisted tests look them up:

  - C{twisted.internet.test.test_endpoints} calls
    C{endpoints.serverFromString} and C{endpoints.clientFromString} through
    its module-level name C{endpoints}; that name is replaced by a module
    that is Twisted's C{endpoints} except for those two functions and
    C{quoteStringArgument} (L{endpointkit.quoteArgument}).  Twisted's
    C{endpoints} module itself is left alone: endpointkit builds Twisted's
    own types with it.
  - L{ParserTests} tests Twisted's low-level C{_parseServer}; here each
    description is first checked by L{endpointkit.parseDescription} and the
    canonical text endpointkit writes for it is what C{_parseServer} is
    given, so the test proves that endpointkit reads and rewrites each one
    as Twisted means it.
  - C{twisted.protocols.haproxy.test.test_parser} imports
    C{serverFromString}, C{_parse} and C{unparseEndpoint} by name; those
    names are replaced by endpointkit's parse function, tokenizer and
    unparser.

Every test method of those classes runs as it is, except the ones named in
L{KNOWN_DIFFERENCES}: there endpointkit's message is better than Twisted's
(it names the side and suggests a spelling, or names the type whose build
failed), and the override asserts endpointkit's message instead.  Every
class exists in each Twisted that endpointkit supports (checked back to
Twisted 24.3), so they are imported plainly.
"""

from __future__ import annotations

import types
from typing import Any

from twisted.internet import endpoints as twistedEndpoints
from twisted.internet.test import test_endpoints as twistedTests
from twisted.protocols.haproxy.test import test_parser as haproxyTests
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

import endpointkit
from endpointkit._grammar import tokenize, unparse


class _EndpointsWithEndpointkit(types.ModuleType):
    """
    L{twisted.internet.endpoints} as Twisted's tests see it here: the same
    module, with endpointkit's parse functions and quoting.
    """

    serverFromString = staticmethod(endpointkit.serverFromString)
    clientFromString = staticmethod(endpointkit.clientFromString)
    quoteStringArgument = staticmethod(endpointkit.quoteArgument)

    def __getattr__(self, name: str) -> Any:
        return getattr(twistedEndpoints, name)


_ENDPOINTS = _EndpointsWithEndpointkit("twisted.internet.endpoints")


def _parseEndpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Twisted's C{endpoints._parse} (positional values with the prefix first,
    and keywords), from endpointkit's tokenizer.
    """
    pairs = tokenize(description)
    return ([value for key, value in pairs if key is None],
            {key: value for key, value in pairs if key is not None})


def _unparseEndpoint(args: list[str], kwargs: dict[str, str]) -> str:
    """
    The haproxy parser's C{unparseEndpoint} (keywords sorted), from
    endpointkit's unparser.
    """
    return unparse(args, sorted(kwargs.items()))


class _WithEndpointkit(SynchronousTestCase):
    """
    Puts endpointkit's functions where Twisted's endpoint tests call them.
    """

    def setUp(self) -> None:
        self.patch(twistedTests, "endpoints", _ENDPOINTS)
        self.patch(haproxyTests, "serverFromString", endpointkit.serverFromString)
        self.patch(haproxyTests, "parseEndpoint", _parseEndpoint)
        self.patch(haproxyTests, "unparseEndpoint", _unparseEndpoint)
        super().setUp()


KNOWN_DIFFERENCES = {
    "ServerStringTests.test_unknownType":
        "endpointkit names the side and suggests a known type: \"unknown server "
        "endpoint type 'ftl'; did you mean 'tls'?\" where Twisted says "
        "\"Unknown endpoint type: 'ftl'\"",
    "ClientStringTests.test_unknownType":
        "endpointkit names the side and suggests a known type: \"unknown client "
        "endpoint type 'ftl'; did you mean 'tls'?\" where Twisted says "
        "\"Unknown endpoint type: 'ftl'\"",
    "ServerStringTests.test_sslChainFileMustContainCert":
        "endpointkit puts \"ssl: cannot build this endpoint: \" before Twisted's "
        "own message, so that it names the type whose build failed",
}
"""
The test methods whose expected message differs, with the reason; each is
overridden below with a test of endpointkit's message.
"""


class ParserTests(_WithEndpointkit, twistedTests.ParserTests):
    def parse(self, description: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
        parsed = endpointkit.parseDescription(description, "server")
        return twistedEndpoints._parseServer(  # type: ignore[attr-defined]
            parsed.description(), factory, *args, **kwargs)


class ServerStringTests(_WithEndpointkit, twistedTests.ServerStringTests):
    def test_unknownType(self) -> None:
        error = self.assertRaises(endpointkit.DescriptionError, endpointkit.serverFromString,
                                  None, "ftl:andromeda/carcosa/hali/2387")
        self.assertIsInstance(error, ValueError)
        from endpointkit._compat import HAS_TLS_SERVER_PARSER

        if HAS_TLS_SERVER_PARSER:
            self.assertEqual(str(error),
                             "unknown server endpoint type 'ftl'; did you mean 'tls'?")
        else:
            # No tls: server before Twisted 26.4: nothing close enough to suggest.
            self.assertTrue(str(error).startswith(
                "unknown server endpoint type 'ftl'; known types: "), str(error))

    def test_sslChainFileMustContainCert(self) -> None:
        empty = FilePath(self.mktemp())
        empty.create().close()
        description = self.SSL_CHAIN_TEMPLATE % (
            twistedTests.escapedPEMPathName, endpointkit.quoteArgument(empty.path))
        error = self.assertRaises(ValueError, endpointkit.serverFromString,
                                  object(), description)
        self.assertIsInstance(error, endpointkit.DescriptionError)
        self.assertEqual(
            str(error),
            "ssl: cannot build this endpoint: Specified chain file "
            f"'{empty.path}' doesn't contain any valid certificates in PEM format.")


class ClientStringTests(_WithEndpointkit, twistedTests.ClientStringTests):
    def test_unknownType(self) -> None:
        error = self.assertRaises(endpointkit.DescriptionError, endpointkit.clientFromString,
                                  None, "ftl:andromeda/carcosa/hali/2387")
        self.assertIsInstance(error, ValueError)
        self.assertEqual(str(error), "unknown client endpoint type 'ftl'; did you mean 'tls'?")


class SSLClientStringTests(_WithEndpointkit, twistedTests.SSLClientStringTests):
    pass


class WrapClientTLSParserTests(_WithEndpointkit, twistedTests.WrapClientTLSParserTests):
    pass


class StandardIOEndpointPluginTests(_WithEndpointkit,
                                    twistedTests.StandardIOEndpointPluginTests):
    pass


class TCP6ServerEndpointPluginTests(_WithEndpointkit,
                                    twistedTests.TCP6ServerEndpointPluginTests):
    pass


class UnparseEndpointTests(_WithEndpointkit, haproxyTests.UnparseEndpointTests):
    pass


class HAProxyServerParserTests(_WithEndpointkit, haproxyTests.HAProxyServerParserTests):
    pass


_COMPATIBILITY = (
    ParserTests, ServerStringTests, ClientStringTests, SSLClientStringTests,
    WrapClientTLSParserTests, StandardIOEndpointPluginTests,
    TCP6ServerEndpointPluginTests, UnparseEndpointTests, HAProxyServerParserTests,
)


class CompatibilityListTests(SynchronousTestCase):
    """
    The list of known differences is the whole story: exactly the methods it
    names are overridden, each overrides a test Twisted has, and every other
    Twisted test method runs as Twisted wrote it.
    """

    def test_onlyKnownDifferencesOverridden(self) -> None:
        overridden = set()
        for case in _COMPATIBILITY:
            twistedClass = case.__mro__[2]
            for name in vars(case):
                if name.startswith("test_"):
                    self.assertTrue(hasattr(twistedClass, name), (case.__name__, name))
                    overridden.add(f"{case.__name__}.{name}")
        self.assertEqual(overridden, set(KNOWN_DIFFERENCES))

    def test_twistedTestsRun(self) -> None:
        """
        Each subclass runs Twisted's test methods (none of them is lost to a
        rename in a newer Twisted without this module noticing).
        """
        for case in _COMPATIBILITY:
            names = [name for name in dir(case) if name.startswith("test_")]
            self.assertGreaterEqual(len(names), 3, case.__name__)

    def test_twistedMessageIsTheOneReplaced(self) -> None:
        """
        Where the message differs, Twisted's own parser still gives the
        message its test expects, so the override replaces exactly that.
        """
        error = self.assertRaises(ValueError, twistedEndpoints.serverFromString,
                                  None, "ftl:andromeda")
        self.assertEqual(str(error), "Unknown endpoint type: 'ftl'")
