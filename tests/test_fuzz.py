"""
Property tests over every declared type: random descriptions only ever raise
L{DescriptionError}, through endpointkit's parse API and through Twisted's;
and build, then text, then parse gives back the same typed values.
"""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.internet import endpoints
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

import endpointkit
from endpointkit._builtin import builtinTypes
from endpointkit._grammar import SIDES, DescriptionError, buildDescription
from endpointkit._kinds import (
    Bool,
    Choice,
    Host,
    Int,
    Invalid,
    Kind,
    Mode,
    Nested,
    Path,
    Port,
    Rest,
    Seconds,
    String,
)
from endpointkit._lookup import ourTypes, parseDescription
from endpointkit._schema import EndpointType, Parsed
from endpointkit.process import CommandLine, Environment
from endpointkit.proxy import Headers
from endpointkit.proxyprotocol import Trust, _AddressPort, _Trusted
from endpointkit.srv import _ProtoLabel, _Servers, _ServiceLabel
from endpointkit.ssh import Fingerprint, Identities
from endpointkit.tlswrap import ALPN_PROTOCOLS, _Pins, _Protocols


def declaredTypes() -> list[EndpointType]:
    return [*builtinTypes(), *(t for side in SIDES for t in ourTypes(side).values())]


def ourPrefixes() -> list[str]:
    return sorted({t.prefix for side in SIDES for t in ourTypes(side).values()})


def argumentNames() -> list[str]:
    return sorted({a.name for t in declaredTypes() for a in t.args})


VALUES = ["0", "1", "80", "65535", "65536", "-1", "1.5", "nan", "inf", "", "yes", "no",
          "[::1]", "::1", "127.0.0.1", "localhost", "example.com", "bücher.example",
          "/tmp/x.sock", "*", "a b", "\x00", "\\", "%", "é", "99999999999999999999999",
          r"tcp\:127.0.0.1\:80", r"tcp\:0", r"unix\:/tmp/x", r"timeout\:1\:endpoint=tcp\\\:h\\\:1",
          r"memory\:x", "INET", "proxy", "local"]


@st.composite
def descriptions(draw: st.DrawFn) -> str:
    """
    Descriptions that are nearly right: known prefixes and argument names
    with values of every kind, and junk.
    """
    prefix = draw(st.one_of(st.sampled_from(ourPrefixes() + [t.prefix for t in builtinTypes()]),
                            st.text(max_size=8)))
    value = st.one_of(st.sampled_from(VALUES), st.text(max_size=12))
    segment = st.one_of(
        value,
        st.builds(lambda k, v: f"{k}={v}",
                  st.one_of(st.sampled_from(argumentNames()), st.text(max_size=6)), value))
    return ":".join([prefix, *draw(st.lists(segment, max_size=6))])


class FuzzTests(SynchronousTestCase):
    @given(descriptions())
    @settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_endpointkitParseOnlyRaisesDescriptionError(self, description: str) -> None:
        reactor = MemoryReactorClock()
        for parse in (endpointkit.clientFromString, endpointkit.serverFromString):
            try:
                parse(reactor, description)
            except DescriptionError:
                pass

    @given(descriptions().filter(lambda d: d.split(":")[0].lower() in ourPrefixes()))
    @settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_twistedParseOfOurTypesOnlyRaisesDescriptionError(self, description: str) -> None:
        reactor = MemoryReactorClock()
        prefix = description.split(":")[0].lower()
        try:
            endpoints._parse(description)  # type: ignore[attr-defined]
        except Exception:
            # Twisted's own tokenizer fails on this text (a trailing
            # backslash, a non-ASCII keyword) before any plugin sees it.
            return
        for side, parse in (("client", endpoints.clientFromString),
                            ("server", endpoints.serverFromString)):
            if prefix not in ourTypes(side):  # type: ignore[arg-type]
                continue
            try:
                parse(reactor, description)
            except DescriptionError:
                pass

    @given(st.text(max_size=40))
    @settings(max_examples=1000, deadline=None)
    def test_junk(self, description: str) -> None:
        reactor = MemoryReactorClock()
        for parse in (endpointkit.clientFromString, endpointkit.serverFromString):
            try:
                parse(reactor, description)
            except DescriptionError:
                pass


NESTED = {
    "client": ["tcp:127.0.0.1:80", "tcp:[::1]:8080:timeout=5", "unix:/tmp/app.sock",
               r"tls:example.com:443:endpoint=tcp\:[::1]\:8443"],
    "server": ["tcp:0:interface=127.0.0.1", "tcp6:8080:interface=[::1]", "unix:/tmp/app.sock:mode=600",
               "haproxy:tcp:8080"],
}
HOSTS = ["example.com", "::1", "127.0.0.1", "fe80::1%eth0", "bücher.example", "a-b.c_d.example."]
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=20)


def valuesFor(kind: Kind) -> st.SearchStrategy[Any] | None:
    """
    Typed values of a kind, or None for a kind this test does not know.
    """
    if isinstance(kind, Rest | Nested):
        return st.sampled_from(NESTED[kind.side]).map(lambda d: parseDescription(d, kind.side))
    if isinstance(kind, Port | Int):
        top = kind.maximum if kind.maximum is not None else (kind.minimum or 0) + 10**6
        return st.integers(kind.minimum if kind.minimum is not None else -(10**6), top)
    if isinstance(kind, Seconds):
        return st.floats(0.001, 10**6, allow_nan=False)
    if isinstance(kind, Bool):
        return st.booleans()
    if isinstance(kind, Mode):
        return st.integers(0, 0o7777)
    if isinstance(kind, Choice):
        return st.sampled_from(kind.choices)
    if isinstance(kind, Host):
        return st.sampled_from([h for h in [*HOSTS, ""] if _accepts(kind, h)])
    if isinstance(kind, Headers):
        name = st.from_regex(r"X-[A-Za-z0-9-]{1,10}", fullmatch=True)
        value = st.text(st.characters(whitelist_categories=("L", "N", "P", "Zs"),
                                      blacklist_characters="|"), max_size=15).map(str.strip)
        return st.lists(st.tuples(name, value), min_size=1, max_size=3).map(tuple)
    if isinstance(kind, Identities):
        return st.lists(TEXT.filter(lambda t: "|" not in t), min_size=1, max_size=3).map(tuple)
    if isinstance(kind, Fingerprint):
        return st.binary(min_size=32, max_size=32).map(
            lambda b: "SHA256:" + base64.b64encode(b).decode().rstrip("="))
    if isinstance(kind, CommandLine):
        return st.lists(TEXT, min_size=1, max_size=4).map(tuple)
    if isinstance(kind, Environment):
        names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
        return st.dictionaries(names, st.text(st.characters(
            blacklist_categories=("Cs",), blacklist_characters="\x00|"), max_size=10),
            min_size=1, max_size=3)
    if isinstance(kind, _Protocols):
        return st.lists(st.sampled_from(ALPN_PROTOCOLS), min_size=1, max_size=3,
                        unique=True).map(tuple)
    if isinstance(kind, _Pins):
        pin = st.binary(min_size=32, max_size=32).map(
            lambda digest: "sha256/" + base64.b64encode(digest).decode())
        return st.lists(pin, min_size=1, max_size=3).map(tuple)
    if isinstance(kind, _Trusted):
        networks = st.lists(st.ip_addresses().map(ipaddress.ip_network), min_size=1, max_size=3)
        return st.one_of(st.just(Trust(everyone=True)), st.builds(
            lambda found, unix: Trust(tuple(found), unix), networks, st.booleans()))
    if isinstance(kind, _AddressPort):
        return st.one_of(
            st.builds(IPv4Address, st.just("TCP"), st.ip_addresses(v=4).map(str),
                      st.integers(0, 65535)),
            st.builds(IPv6Address, st.just("TCP"), st.ip_addresses(v=6).map(str),
                      st.integers(0, 65535)))
    if isinstance(kind, Path | String):
        return TEXT if getattr(kind, "nonEmpty", True) else st.text(max_size=20)
    if isinstance(kind, _ServiceLabel):
        return st.one_of(LABEL, st.tuples(LABEL, LABEL).map(lambda p: f"_{p[0]}._{p[1]}"))
    if isinstance(kind, _ProtoLabel):
        return LABEL
    if isinstance(kind, _Servers):
        server = st.tuples(st.sampled_from(["127.0.0.1", "::1", "10.0.0.53"]),
                           st.integers(1, 65535))
        return st.lists(server, min_size=1, max_size=3).map(tuple)
    return None


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


NATIVE = (Port, Int, Seconds, Bool, Choice, Host, Path, String, Nested)


def _accepts(kind: Kind, text: str) -> bool:
    try:
        kind.convert(text)
    except Invalid:
        return False
    return True


@st.composite
def typedDescriptions(draw: st.DrawFn) -> tuple[EndpointType, dict[str, Any]]:
    etype = draw(st.sampled_from(declaredTypes()))
    values: dict[str, Any] = {}
    for arg in etype.args:
        strategy = valuesFor(arg.kind)
        if strategy is None:
            assume(not arg.required)
            continue
        if arg.variadic:
            values[arg.name] = tuple(draw(st.lists(strategy, min_size=1, max_size=3)))
        elif arg.required or draw(st.booleans()):
            values[arg.name] = draw(strategy)
    return etype, values


class RoundTripTests(SynchronousTestCase):
    def test_everyKindKnown(self) -> None:
        """
        Every argument of every declared type has a value strategy here, so
        the round trip covers them all.
        """
        unknown = [(t.prefix, a.name, type(a.kind).__name__) for t in declaredTypes()
                   for a in t.args if valuesFor(a.kind) is None]
        self.assertEqual(unknown, [])

    @given(typedDescriptions())
    @settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_buildTextParse(self, case: tuple[EndpointType, dict[str, Any]]) -> None:
        """
        C{buildDescription} from typed values, then parse: the same values.
        """
        etype, values = case
        if etype.validate is not None:
            full = {a.name: values.get(a.name, a.default) for a in etype.args}
            try:
                etype.validate(full, frozenset(values))
            except DescriptionError:
                assume(False)
        # The builder takes Python's own values (numbers, booleans, strings,
        # parsed descriptions); a value of any other kind (a mode, headers)
        # is given as the text a user would write.
        expected = dict(values)
        values = {name: value if isinstance(etype.byName[name].kind, NATIVE)
                  else etype.byName[name].kind.format(value)
                  for name, value in values.items()}
        variadic = [a for a in etype.args if a.variadic]
        positional = list(values.pop(variadic[0].name)) if variadic else []
        if etype.args and isinstance(etype.args[0].kind, Rest):
            text = f"{etype.prefix}:{values['endpoint'].description()}"
        else:
            text = buildDescription(etype.prefix, *positional, **values)
        parsed = parseDescription(text, etype.side)
        for name, value in expected.items():
            self.assertEqual(parsed.values[name], value, (text, name))
        self.assertEqual(set(parsed.given), set(expected))
        again = parseDescription(parsed.description(), etype.side)
        self.assertEqual(again, parsed)
        self.assertIsInstance(again, Parsed)
