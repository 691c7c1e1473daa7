"""
Tests for the description layer: tokenizing, quoting, kinds, argument
checking, errors and the Python builder.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

import endpointkit
from endpointkit._builtin import builtinTypes
from endpointkit._compat import HAS_TLS_SERVER_PARSER
from endpointkit._grammar import (
    DescriptionError,
    buildDescription,
    quoteArgument,
    rejoinBrackets,
    splitDescription,
    tokenize,
)
from endpointkit._kinds import (
    Bool,
    Choice,
    Host,
    Int,
    Invalid,
    Mode,
    Nested,
    Path,
    Port,
    Seconds,
    Secret,
    String,
)
from endpointkit._lookup import parseDescription
from endpointkit._schema import Arg, EndpointType, Parsed, parseArguments


def _record(reactor: Any, **values: Any) -> dict[str, Any]:
    return values


SAMPLE = EndpointType(
    "sample", "client",
    (
        Arg("host", Host(), help="where", positional=True),
        Arg("port", Port(), help="which port", positional=True),
        Arg("password", Secret(), None, "the secret"),
        Arg("wait", Seconds(), 30.0, "how long"),
        Arg("mode", Mode(), 0o600, "file mode"),
        Arg("fast", Bool(), False, "go fast"),
        Arg("flavour", Choice("plain", "fancy"), "plain", "which flavour"),
        Arg("count", Int(1, 10), 1, "how many"),
        Arg("path", Path(), None, "a file"),
        Arg("label", String(nonEmpty=False), "", "free text"),
        Arg("endpoint", Nested("client"), None, "inner description"),
    ),
    "a type for tests", factory=_record,
)


def parseSample(description: str) -> Parsed:
    prefix, args, kwargs = splitDescription(description)
    assert prefix == "sample"
    return parseArguments(SAMPLE, args, kwargs, parseDescription)


class TokenizeTests(SynchronousTestCase):
    def test_twistedGrammar(self) -> None:
        """
        Positional values, keywords and backslash escapes read as Twisted
        reads them.
        """
        self.assertEqual(
            tokenize(r"tcp:host=a\:b:80:x=y=z"),
            [(None, "tcp"), ("host", "a:b"), (None, "80"), ("x", "y=z")])

    def test_brackets(self) -> None:
        """
        A value that starts with a bracket runs to the closing bracket, so an
        IPv6 literal needs no escapes.
        """
        self.assertEqual(
            tokenize("tcp:[::1]:80:bindAddress=[fe80::1%eth0]"),
            [(None, "tcp"), (None, "[::1]"), (None, "80"), ("bindAddress", "[fe80::1%eth0]")])

    def test_bracketsInNestedDescription(self) -> None:
        """
        A bracket just after an escaped colon starts a bracket group too, so
        a nested description can hold an IPv6 literal without escapes.
        """
        self.assertEqual(
            tokenize(r"tls:h:443:endpoint=tcp\:[::1]\:80"),
            [(None, "tls"), (None, "h"), (None, "443"), ("endpoint", "tcp:[::1]:80")])
        self.assertEqual(
            tokenize(r"timeout:5:endpoint=tls\:h\:443\:endpoint=tcp\\\:[::1]\\\:80"),
            [(None, "timeout"), (None, "5"),
             ("endpoint", r"tls:h:443:endpoint=tcp\:[::1]\:80")])

    def test_unclosedBracket(self) -> None:
        e = self.assertRaises(DescriptionError, tokenize, "tcp:[::1:80")
        self.assertIn("']'", str(e))

    def test_loneBackslash(self) -> None:
        e = self.assertRaises(DescriptionError, tokenize, "tcp:80\\")
        self.assertIn("backslash", str(e))

    @given(st.text(alphabet="ab:=\\x", max_size=30))
    @settings(max_examples=400, deadline=None)
    def test_sameAsTwisted(self, text: str) -> None:
        """
        Without brackets and repeated keywords, our tokenizer splits every
        description exactly as Twisted's does.
        """
        try:
            prefix, args, kwargs = splitDescription("p:" + text)
        except DescriptionError:
            return
        twistedArgs, twistedKwargs = endpoints._parse("p:" + text)  # type: ignore[attr-defined]
        if len({k for k, _ in kwargs}) != len(kwargs):
            return
        self.assertEqual([prefix, *args], twistedArgs)
        self.assertEqual(dict(kwargs), twistedKwargs)

    @given(st.text(max_size=40))
    @settings(max_examples=400, deadline=None)
    def test_quoteRoundTrip(self, text: str) -> None:
        """
        Any text quoted with L{quoteArgument} reads back as itself, as a
        positional value and as a keyword value, with our tokenizer and with
        Twisted's.
        """
        quoted = quoteArgument(text)
        self.assertEqual(tokenize(f"p:{quoted}:k={quoted}"),
                         [(None, "p"), (None, text), ("k", text)])
        self.assertEqual(endpoints._parse(f"p:{quoted}:k={quoted}"),  # type: ignore[attr-defined]
                         (["p", text], {"k": text}))

    def test_rejoinBrackets(self) -> None:
        """
        A bracketed literal that Twisted's tokenizer split at its colons is
        put back together; one in a keyword cannot be and is named.
        """
        args, kwargs = endpoints._parse("x:[::1]:80")  # type: ignore[attr-defined]
        self.assertEqual(rejoinBrackets("x", args[1:], kwargs), (["[::1]", "80"], []))
        args, kwargs = endpoints._parse("x:[2001:db8::1]:80:timeout=5")  # type: ignore[attr-defined]
        self.assertEqual(rejoinBrackets("x", args[1:], kwargs),
                         (["[2001:db8::1]", "80"], [("timeout", "5")]))
        args, kwargs = endpoints._parse("x:80:host=[::1]")  # type: ignore[attr-defined]
        e = self.assertRaises(DescriptionError, rejoinBrackets, "x", args[1:], kwargs)
        self.assertIn("host", str(e))


class KindTests(SynchronousTestCase):
    def bad(self, kind: Any, text: str) -> None:
        self.assertRaises(Invalid, kind.convert, text)

    def test_port(self) -> None:
        self.assertEqual(Port().convert("443"), 443)
        for text in ("0", "65536", "https", "-1", "", "1.5", " 80", "٣"):
            self.bad(Port(), text)
        self.assertEqual(Port(allowZero=True).convert("0"), 0)

    def test_seconds(self) -> None:
        self.assertEqual(Seconds().convert("2.5"), 2.5)
        self.assertEqual(Seconds().convert(".5"), 0.5)
        for text in ("0", "0.0", "-1", "nan", "inf", "1e3", "five", "", "1_0"):
            self.bad(Seconds(), text)
        self.assertEqual(Seconds(allowZero=True).convert("0"), 0.0)

    def test_bool(self) -> None:
        for text in ("1", "yes", "True", "on"):
            self.assertIs(Bool().convert(text), True)
        for text in ("0", "no", "FALSE", "off"):
            self.assertIs(Bool().convert(text), False)
        self.bad(Bool(), "maybe")

    def test_mode(self) -> None:
        self.assertEqual(Mode().convert("660"), 0o660)
        self.assertEqual(Mode().convert("0o600"), 0o600)
        for text in ("9", "rw", "77777", ""):
            self.bad(Mode(), text)

    def test_choice(self) -> None:
        self.assertEqual(Choice("proxy", "local").convert("LOCAL"), "local")
        e = self.assertRaises(Invalid, Choice("proxy", "local").convert, "lcoal")
        self.assertEqual(e.hint, "did you mean 'local'?")

    def test_host(self) -> None:
        for text, value in [("example.com", "example.com"), ("[::1]", "::1"), ("::1", "::1"),
                            ("127.0.0.1", "127.0.0.1"), ("bücher.example", "bücher.example"),
                            ("[fe80::1%eth0]", "fe80::1%eth0"), ("localhost.", "localhost.")]:
            self.assertEqual(Host().convert(text), value)
        for text in ("", "[::1", "[example.com]", "300.1.1.1", "a b", "a..b", "-a.b",
                     "x" * 64 + ".com", ":::1:::", "host/path"):
            self.bad(Host(), text)
        self.assertEqual(Host(allowEmpty=True).convert(""), "")


class ArgumentTests(SynchronousTestCase):
    def test_typedValues(self) -> None:
        parsed = parseSample("sample:[::1]:8080:wait=1.5:fast=yes:mode=640:count=3")
        self.assertEqual(parsed.values["host"], "::1")
        self.assertEqual(parsed.values["port"], 8080)
        self.assertEqual(parsed.values["wait"], 1.5)
        self.assertEqual(parsed.values["fast"], True)
        self.assertEqual(parsed.values["mode"], 0o640)
        self.assertEqual(parsed.values["count"], 3)
        self.assertEqual(parsed.values["flavour"], "plain")
        self.assertEqual(parsed.given, ("host", "port", "wait", "mode", "fast", "count"))

    def test_badValueNamesEverything(self) -> None:
        e = self.assertRaises(DescriptionError, parseSample, "sample:h:https")
        self.assertEqual(str(e), "sample: argument 'port' must be a TCP port number 1-65535, got 'https'")
        self.assertEqual((e.prefix, e.argument, e.value), ("sample", "port", "https"))

    def test_unknownKeyword(self) -> None:
        e = self.assertRaises(DescriptionError, parseSample, "sample:h:80:flavor=fancy")
        self.assertEqual(str(e), "sample: unknown argument 'flavor'; did you mean 'flavour'?")

    def test_unescapedEqualsInNestedDescription(self) -> None:
        """
        A positional nested description whose C{=} was not escaped reads as
        an odd keyword; the error says what happened.
        """
        e = self.assertRaises(DescriptionError, parseDescription,
                              r"multi:tcp\:8080\:interface=0.0.0.0", "server")
        self.assertEqual(
            str(e), "multi: unknown argument 'tcp:8080:interface'; it looks like a description "
            "with an unescaped '='; inside a nested description escape it as \\= "
            "(buildDescription does)")

    def test_unknownKeywordNoGuess(self) -> None:
        e = self.assertRaises(DescriptionError, parseSample, "sample:h:80:zzz=1")
        self.assertIn("it takes host, port, password", str(e))

    def test_missing(self) -> None:
        e = self.assertRaises(DescriptionError, parseSample, "sample:h")
        self.assertEqual(str(e), "sample: missing required argument 'port' (which port)")

    def test_duplicateKeyword(self) -> None:
        e = self.assertRaises(DescriptionError, parseSample, "sample:h:80:wait=1:wait=2")
        self.assertEqual(str(e), "sample: argument 'wait' is given twice")

    def test_duplicatePositionalAndKeyword(self) -> None:
        e = self.assertRaises(DescriptionError, parseSample, "sample:h:80:port=81")
        self.assertIn("argument 'port' is given twice: by position ('80') and as a keyword ('81')",
                      str(e))

    def test_keywordThenPositional(self) -> None:
        """
        As with Twisted's C{tcp:}, a positional value fills the first
        positional argument not given by keyword.
        """
        self.assertEqual(parseSample("sample:host=h:80").values["port"], 80)

    def test_tooManyPositional(self) -> None:
        e = self.assertRaises(DescriptionError, parseSample, "sample:h:80:extra")
        self.assertIn("takes at most 2 positional arguments (host, port), got an extra 'extra'",
                      str(e))

    def test_secretNeverShown(self) -> None:
        """
        A secret's value is in no error message, repr or str.
        """
        parsed = parseSample("sample:h:80:password=hunter2")
        self.assertEqual(parsed.values["password"], "hunter2")
        for text in (repr(parsed), str(parsed)):
            self.assertNotIn("hunter2", text)
            self.assertIn("***", text)
        self.assertIn("hunter2", parsed.description())
        e = self.assertRaises(DescriptionError, parseSample, "sample:h:80:password=")
        self.assertIn("***", str(e))
        self.assertIsNone(e.value)

    def test_nestedErrorsSayWhere(self) -> None:
        e = self.assertRaises(DescriptionError, parseSample,
                              r"sample:h:80:endpoint=tcp\:h\:http")
        self.assertEqual(
            str(e), "sample: argument 'endpoint': tcp: argument 'port' must be a "
            "TCP port number 1-65535, got 'http'")

    def test_build(self) -> None:
        """
        The factory gets typed values and nested descriptions built.
        """
        reactor = MemoryReactorClock()
        built = parseSample(r"sample:h:80:endpoint=tcp\:127.0.0.1\:81").build(reactor)
        self.assertEqual(built["port"], 80)
        self.assertIsInstance(built["endpoint"], endpoints.TCP4ClientEndpoint)


class UnknownTypeTests(SynchronousTestCase):
    def testdidYouMean(self) -> None:
        e = self.assertRaises(DescriptionError, parseDescription, "tpc:h:80", "client")
        self.assertEqual(str(e), "unknown client endpoint type 'tpc'; did you mean 'tcp'?")

    def test_otherSide(self) -> None:
        e = self.assertRaises(DescriptionError, parseDescription, "stdio:", "client")
        self.assertIn("'stdio' is a server type", str(e))

    def test_empty(self) -> None:
        self.assertRaises(DescriptionError, parseDescription, "", "client")
        self.assertRaises(DescriptionError, parseDescription, ":80", "server")
        self.assertRaises(DescriptionError, parseDescription, "port=80", "server")


class BuiltinTests(SynchronousTestCase):
    """
    Twisted's own types get the same clear errors and are still built by
    Twisted.
    """

    def test_clearErrors(self) -> None:
        cases = {
            ("client", "tcp:example.com:80:timout=5"): "tcp: unknown argument 'timout'; did you mean 'timeout'?",
            ("server", "tcp:http"): "tcp: argument 'port' must be a TCP port number 0-65535, got 'http'",
            ("server", "unix:/run/x.sock:mode=999"): "unix: argument 'mode' must be an octal file mode such as 666 or 0o600, got '999'",
            ("server", "systemd:INET"): "systemd: give exactly one of 'index' and 'name'",
            ("server", "systemd:INET5:index=0"): "systemd: argument 'domain' must be one of INET, INET6, UNIX, got 'INET5'; did you mean 'INET'?",
            ("client", "tls:example.com"): "tls: missing required argument 'port'",
            ("server", "haproxy:"): "haproxy: needs the description it wraps",
            ("server", "haproxy:tcp:port=x"): "haproxy: argument 'endpoint': tcp: argument 'port' must be",
        }
        for (side, description), message in cases.items():
            e = self.assertRaises(DescriptionError, parseDescription, description, side)
            self.assertIn(message, str(e), description)

    def test_builtByTwisted(self) -> None:
        reactor = MemoryReactorClock()
        built = parseDescription("tcp:[::1]:8080", "client").build(reactor)
        self.assertIsInstance(built, endpoints.TCP4ClientEndpoint)
        self.assertEqual((built._host, built._port), ("::1", 8080))
        built = parseDescription("tcp6:0:interface=[::1]", "server").build(reactor)
        self.assertIsInstance(built, endpoints.TCP6ServerEndpoint)
        self.assertEqual(built._interface, "::1")

    def test_trailingColonMeansNoArguments(self) -> None:
        """
        C{stdio:}, the form Twisted documents, is accepted (Twisted's own
        parser ignores the empty value its tokenizer gives for the trailing
        colon), through endpointkit's parser and through Twisted's; a real
        value is still refused.
        """
        reactor = MemoryReactorClock()
        for description in ("stdio:", "stdio"):
            parsed = parseDescription(description, "server")
            self.assertEqual((parsed.prefix, parsed.given), ("stdio", ()))
            self.assertEqual(parsed.description(), "stdio")
            self.assertIsInstance(parsed.build(reactor), endpoints.StandardIOEndpoint)
        e = self.assertRaises(DescriptionError, parseDescription, "stdio:x", "server")
        self.assertEqual(str(e), "stdio: takes arguments only as key=value, got 'x'")
        self.assertRaises(DescriptionError, parseDescription, "stdio::", "server")
        noArgs = EndpointType("noargs", "server", (), "nothing", factory=_record)
        self.assertEqual(parseArguments(noArgs, [""], [], parseDescription).given, ())

    def test_buildErrorsAreClear(self) -> None:
        e = self.assertRaises(
            DescriptionError, parseDescription("ssl:443:privateKey=/nonexistent/key.pem",
                                               "server").build, MemoryReactorClock())
        self.assertIn("ssl: cannot build this endpoint: '/nonexistent/key.pem' No such file", str(e))

    def test_everyBuiltinDeclared(self) -> None:
        """
        The declarations cover every type Twisted documents (the C{tls:}
        server from Twisted 26.4).
        """
        tlsServer = [("server", "tls")] if HAS_TLS_SERVER_PARSER else []
        self.assertEqual(
            sorted((t.side, t.prefix) for t in builtinTypes()),
            [("client", "ssl"), ("client", "tcp"), ("client", "tls"), ("client", "unix"),
             ("server", "haproxy"), ("server", "ssl"), ("server", "stdio"),
             ("server", "systemd"), ("server", "tcp"), ("server", "tcp6"),
             *tlsServer, ("server", "unix")])
        self.assertEqual(
            HAS_TLS_SERVER_PARSER,
            "tls" in {getattr(p, "prefix", None) for p in getPlugins(
                IStreamServerEndpointStringParser)})


class BuilderTests(SynchronousTestCase):
    def test_nestedNoHandEscaping(self) -> None:
        inner = buildDescription("tcp", "::1", 80)
        outer = buildDescription("tls", "example.com", 443, endpoint=inner)
        parsed = parseDescription(outer, "client")
        self.assertEqual(parsed.values["endpoint"].values["host"], "::1")
        self.assertEqual(parsed.values["endpoint"].values["port"], 80)

    def test_valuesToText(self) -> None:
        self.assertEqual(buildDescription("x", True, 1.5, 2.0, None, a=None, b=False),
                         "x:1:1.5:2:None:b=0")


class LayeringTests(SynchronousTestCase):
    """
    The description layer sits below everything: its modules import neither
    the lookup nor any endpoint family.
    """

    def test_layerImportsNothingAbove(self) -> None:
        import ast
        import os

        import endpointkit

        layer = {"_grammar": set(), "_kinds": {"_grammar"},
                 "_hints": {"_grammar", "_kinds", "_schema"},
                 "_schema": {"_grammar", "_kinds", "_hints"}}
        folder = os.path.dirname(endpointkit.__file__)
        for module, allowed in layer.items():
            with open(os.path.join(folder, module + ".py")) as f:
                tree = ast.parse(f.read())
            imported = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    imported.add(node.module)
                elif isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
            ours = {name.split(".", 1)[1] for name in imported
                    if name.startswith("endpointkit.")}
            self.assertEqual(ours - allowed, set(), module)
            self.assertNotIn("endpointkit", imported, module)


class HintTests(SynchronousTestCase):
    """
    A nesting mistake (an unescaped nested description, an IPv6 literal
    without brackets, a host:port where a description belongs) gets an
    error that says what was probably meant and shows the corrected
    description, which parses.
    """

    def parseBoth(self, description: str, side: str) -> list[DescriptionError]:
        """
        The errors of endpointkit's parse API and of Twisted's (whose
        tokenizer hands endpointkit's plugins the values without their
        order).
        """
        reactor = MemoryReactorClock()
        ours = endpointkit.clientFromString if side == "client" else endpointkit.serverFromString
        twisted = endpoints.clientFromString if side == "client" else endpoints.serverFromString
        errors = []
        for parse in (ours, twisted):
            errors.append(self.assertRaises(DescriptionError, parse, reactor, description))
        return errors

    def assertCorrected(self, e: DescriptionError, side: Any, corrected: str) -> Parsed:
        self.assertEqual(e.corrected, corrected)
        self.assertTrue(str(e).endswith(" " + corrected), str(e))
        return parseDescription(corrected, side)

    def test_unescapedNestedDescription(self) -> None:
        description = "timeout:5:endpoint=tcp:host:80"
        direct = self.assertRaises(DescriptionError, parseDescription, description, "client")
        for e in [*self.parseBoth(description, "client"), direct]:
            self.assertIn("timeout: takes at most 1 positional argument (seconds), got an "
                          "extra 'host'; the description given to 'endpoint' looks cut at "
                          "its colons: escape them inside it as \\: "
                          "(endpointkit.buildDescription does that)", str(e))
            parsed = self.assertCorrected(e, "client", r"timeout:5:endpoint=tcp\:host\:80")
            self.assertEqual(parsed.values["endpoint"].values["host"], "host")
            # Twisted's parser reads the corrected text too.
            self.assertIsNotNone(endpoints.clientFromString(MemoryReactorClock(), e.corrected))

    def test_unbracketedIPv6(self) -> None:
        e = self.assertRaises(DescriptionError, endpointkit.serverFromString,
                              MemoryReactorClock(), "tcp6:8080:interface=::1")
        self.assertIn("tcp6: argument 'interface' is given twice", str(e))
        self.assertIn("an IPv6 address looks cut at its colons: write it in brackets "
                      "([::1]) or escape them as \\:", str(e))
        parsed = self.assertCorrected(e, "server", "tcp6:8080:interface=[::1]")
        self.assertEqual((parsed.values["port"], parsed.values["interface"]), (8080, "::1"))
        e = self.assertRaises(DescriptionError, parseDescription, "tcp:::1:80", "client")
        self.assertCorrected(e, "client", "tcp:[::1]:80")

    def test_unbracketedIPv6ThroughTwisted(self) -> None:
        """
        Through Twisted's parser (endpointkit's types only: Twisted parses
        its own), the correction escapes rather than brackets, since
        Twisted's tokenizer does not read brackets.
        """
        for e in self.parseBoth(r"socks5:::1:80:endpoint=tcp\:proxy\:1080", "client")[1:]:
            parsed = self.assertCorrected(
                e, "client", r"socks5:\:\:1:80:endpoint=tcp\:proxy\:1080")
            self.assertEqual(parsed.values["host"], "::1")
            endpoints.clientFromString(MemoryReactorClock(), e.corrected)

    def test_hostPortForDescription(self) -> None:
        for e in self.parseBoth("socks5:example.com:80:endpoint=proxy.example:1080", "client"):
            self.assertIn("'endpoint' takes a description, which starts with its type", str(e))
            self.assertCorrected(
                e, "client", r"socks5:example.com:80:endpoint=tcp\:proxy.example\:1080")

    def test_keywordsOfTheNestedDescription(self) -> None:
        """
        The nested description's own keywords, and the outer's after it,
        each go where they parse.
        """
        for e in self.parseBoth("socks5:example.com:80:endpoint=tcp:proxy:1080:user=u",
                                "client"):
            parsed = self.assertCorrected(
                e, "client", r"socks5:example.com:80:endpoint=tcp\:proxy\:1080:user=u")
            self.assertEqual(parsed.values["user"], "u")
        for e in self.parseBoth("limit:max=3:endpoint=tcp:8080:interface=127.0.0.1", "server"):
            self.assertIn("limit: unknown argument 'interface'", str(e))
            parsed = self.assertCorrected(
                e, "server", r"limit:endpoint=tcp\:8080\:interface\=127.0.0.1:max=3")
            self.assertEqual(parsed.values["endpoint"].values["interface"], "127.0.0.1")

    def test_twiceNested(self) -> None:
        """
        Two levels of nesting, none escaped: the inner one is corrected too.
        """
        e = self.assertRaises(DescriptionError, parseDescription,
                              "limit:max=3:endpoint=limit:max=4:endpoint=tcp:8080", "server")
        self.assertIn("limit: argument 'max' is given twice", str(e))
        parsed = self.assertCorrected(
            e, "server", r"limit:endpoint=limit\:endpoint\=tcp\\\:8080\:max\=4:max=3")
        self.assertEqual(parsed.values["endpoint"].values["max"], 4)
        self.assertEqual(parsed.values["endpoint"].values["endpoint"].values["port"], 8080)
        # Escaped once but not twice: the inner error's correction, then
        # the whole description.
        e = self.assertRaises(DescriptionError, parseDescription,
                              r"timeout:5:endpoint=socks5\:h\:1\:endpoint\=tcp:p:1", "client")
        self.assertCorrected(e, "client",
                             r"timeout:5:endpoint=socks5\:h\:1\:endpoint\=tcp\\\:p\\\:1")

    def test_secretsStayMasked(self) -> None:
        description = r"httpconnect:h:1:endpoint=tcp\:p\:1:user=u:password=ab:cd"
        for e in self.parseBoth(description, "client"):
            self.assertIn("the value of 'password' looks cut at its colons", str(e))
            self.assertCorrected(e, "client", r"httpconnect:h:1:endpoint=tcp\:p\:1:user=u:password=***")
            self.assertNotIn("cd", str(e).replace("endpoint", ""))

    def test_noHintWithoutACorrectionThatParses(self) -> None:
        e = self.assertRaises(DescriptionError, parseDescription,
                              "tcp:example.com:80:bindAddress=10.0.0.1:5000", "client")
        self.assertEqual(str(e), "tcp: takes at most 2 positional arguments (host, port), "
                         "got an extra '5000'")
        self.assertIsNone(e.corrected)

    def test_boundedWork(self) -> None:
        """
        A long run of values that cannot be mended costs a bounded number
        of attempts.
        """
        from endpointkit import _hints

        calls = []
        original = _hints._candidates

        def counted(*args: Any) -> Any:
            for candidate in original(*args):
                calls.append(candidate)
                yield candidate

        self.patch(_hints, "_candidates", counted)
        description = "timeout:5:endpoint=" + ":".join(["x"] * 60)
        self.assertRaises(DescriptionError, parseDescription, description, "client")
        self.assertLessEqual(len(calls), _hints.ATTEMPTS + 1)


class WarningTests(SynchronousTestCase):
    """
    L{Parsed.warnings} collects each type's insecure settings, nested ones
    included.
    """

    def test_nestedWarnings(self) -> None:
        def insecure(values: Any) -> list[str]:
            return ["verification is off"] if values["label"] == "off" else []

        inner = EndpointType("inner", "client", (Arg("label", String(), "on", "x"),),
                             "inner type", factory=_record, insecure=insecure)
        outer = EndpointType("outer", "client",
                             (Arg("label", String(), "on", "x"),
                              Arg("endpoint", Nested("client"), None, "inner")),
                             "outer type", factory=_record, insecure=insecure)

        def parse(text: str, side: Any) -> Parsed:
            prefix, args, kwargs = splitDescription(text)
            return parseArguments({"inner": inner, "outer": outer}[prefix], args, kwargs, parse)

        self.assertEqual(parse("outer:endpoint=inner\\:label\\=on", "client").warnings(), [])
        self.assertEqual(
            parse("outer:label=off:endpoint=inner\\:label\\=off", "client").warnings(),
            ["outer: verification is off", "inner: verification is off"])
