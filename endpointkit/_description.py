"""
The description layer.

Every endpoint type declares its arguments once, as an L{EndpointType} made of
L{Arg}s.  From that one declaration come the typed conversion inside every
parser, the errors, C{endpointkit types}, C{endpointkit check} and the README
table of types.

The grammar is Twisted's (C{prefix:positional:key=value}, backslash escapes),
with two additions that Twisted's own tokenizer cannot express:

  - a value that starts with C{[} runs to the matching C{]}, so bracketed
    IPv6 literals such as C{[::1]} need no escaping;
  - wrappers take their inner description as one escaped argument, named
    C{endpoint} (Twisted's C{tls:} precedent), for client and server alike.
"""

from __future__ import annotations

import decimal
import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

Side = Literal["client", "server"]
SIDES: tuple[Side, Side] = ("client", "server")

SECRET_MASK = "***"


class DescriptionError(ValueError):
    """
    A description cannot be parsed.  The message names the endpoint type, the
    argument, the value (C{***} for secrets) and what was expected.
    """

    def __init__(
        self,
        message: str,
        *,
        prefix: str | None = None,
        argument: str | None = None,
        value: str | None = None,
        expected: str | None = None,
    ) -> None:
        ValueError.__init__(self, message)
        self.message = message
        self.prefix = prefix
        self.argument = argument
        self.value = value
        self.expected = expected

    def __str__(self) -> str:
        return self.message

    def nestedIn(self, prefix: str, argument: str) -> DescriptionError:
        """
        The same error, seen from the wrapper whose argument C{argument} held
        the description that failed.
        """
        return DescriptionError(
            f"{prefix}: argument {argument!r}: {self.message}",
            prefix=self.prefix,
            argument=self.argument,
            value=self.value,
            expected=self.expected,
        )


class Invalid(Exception):
    """
    Raised by L{Kind.convert} for a value of the wrong form; the caller turns
    it into a L{DescriptionError} naming the type and the argument.
    """

    def __init__(self, reason: str | None = None, hint: str | None = None) -> None:
        Exception.__init__(self, reason)
        self.reason = reason
        self.hint = hint


class Kind:
    """
    The kind of an argument: how its text becomes a typed value and back.
    """

    name = "string"
    expected = "a string"
    secret = False

    def convert(self, text: str) -> Any:
        return text

    def format(self, value: Any) -> str:
        return str(value)


class String(Kind):
    def __init__(self, nonEmpty: bool = True) -> None:
        self.nonEmpty = nonEmpty
        self.expected = "a non-empty string" if nonEmpty else "a string"

    def convert(self, text: str) -> str:
        if self.nonEmpty and not text:
            raise Invalid()
        return text


class Secret(String):
    """
    A string that never appears in a message, a repr, a log or C{check}.
    """

    name = "secret"
    secret = True


class Path(Kind):
    name = "path"
    expected = "a file system path"

    def convert(self, text: str) -> str:
        if not text or "\0" in text:
            raise Invalid()
        return text


_DIGITS = re.compile(r"[0-9]+")


class Int(Kind):
    name = "int"

    def __init__(self, minimum: int | None = 0, maximum: int | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum
        if minimum is not None and maximum is not None:
            self.expected = f"a whole number {minimum}-{maximum}"
        elif minimum is not None:
            self.expected = f"a whole number of at least {minimum}"
        else:
            self.expected = "a whole number"

    def convert(self, text: str) -> int:
        body = text[1:] if text.startswith("-") else text
        if not _DIGITS.fullmatch(body) or len(body) > 18:
            raise Invalid()
        value = int(text)
        if self.minimum is not None and value < self.minimum:
            raise Invalid()
        if self.maximum is not None and value > self.maximum:
            raise Invalid()
        return value


class Port(Int):
    name = "port"

    def __init__(self, allowZero: bool = False) -> None:
        Int.__init__(self, 0 if allowZero else 1, 65535)
        self.expected = f"a TCP port number {self.minimum}-65535"


_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


class Seconds(Kind):
    name = "seconds"

    def __init__(self, allowZero: bool = False) -> None:
        self.allowZero = allowZero
        self.expected = (
            "a number of seconds, zero or more"
            if allowZero
            else "a positive number of seconds"
        )

    def convert(self, text: str) -> float:
        if not _NUMBER.fullmatch(text) or len(text) > 32:
            raise Invalid()
        value = float(text)
        if not math.isfinite(value) or (value <= 0 and not self.allowZero):
            raise Invalid()
        return value

    def format(self, value: Any) -> str:
        number = float(value)
        if number.is_integer():
            return str(int(number))
        # Positional notation (the grammar has no exponents), exact.
        return format(decimal.Decimal(repr(number)), "f")


class Bool(Kind):
    name = "bool"
    expected = "yes or no (also true/false, on/off, 1/0)"
    _true = frozenset({"1", "yes", "true", "on", "y"})
    _false = frozenset({"0", "no", "false", "off", "n"})

    def convert(self, text: str) -> bool:
        lowered = text.lower()
        if lowered in self._true:
            return True
        if lowered in self._false:
            return False
        raise Invalid()

    def format(self, value: Any) -> str:
        # Twisted's own parsers read booleans with int(), so 1/0 is the
        # spelling that every parser understands.
        return "1" if value else "0"


class Mode(Kind):
    name = "mode"
    expected = "an octal file mode such as 666 or 0o600"

    def convert(self, text: str) -> int:
        body = text[2:] if text.lower().startswith("0o") else text
        if not re.fullmatch(r"[0-7]{1,4}", body):
            raise Invalid()
        return int(body, 8)

    def format(self, value: Any) -> str:
        return f"{int(value):o}"


class Choice(Kind):
    name = "enum"

    def __init__(self, *choices: str, caseSensitive: bool = False) -> None:
        self.choices = choices
        self.caseSensitive = caseSensitive
        self.expected = "one of " + ", ".join(choices)

    def convert(self, text: str) -> str:
        for choice in self.choices:
            if text == choice or (
                not self.caseSensitive and text.lower() == choice.lower()
            ):
                return choice
        close = difflib.get_close_matches(text, self.choices, 1, 0.6)
        if close:
            raise Invalid(hint=f"did you mean {close[0]!r}?")
        raise Invalid()


_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


class Host(Kind):
    """
    A host name (IDNA allowed), an IPv4 address or an IPv6 address, bracketed
    (C{[::1]}) or escaped (C{\\:\\:1}).  The typed value has no brackets.
    """

    name = "host"

    def __init__(self, allowEmpty: bool = False, what: str = "host") -> None:
        self.allowEmpty = allowEmpty
        self.expected = (
            f"a {what} name or IP address (IPv6 in brackets, like [::1])"
            + (", or empty for all" if allowEmpty else "")
        )

    def convert(self, text: str) -> str:
        if not text:
            if self.allowEmpty:
                return text
            raise Invalid()
        if text.startswith("["):
            if not text.endswith("]"):
                raise Invalid()
            return self._ipv6(text[1:-1])
        if ":" in text:
            return self._ipv6(text)
        if re.fullmatch(r"[0-9.]+", text):
            try:
                ipaddress.IPv4Address(text)
            except ValueError:
                raise Invalid() from None
            return text
        try:
            ascii = text.encode("idna").decode("ascii")
        except UnicodeError:
            raise Invalid() from None
        labels = ascii[:-1].split(".") if ascii.endswith(".") else ascii.split(".")
        if len(ascii) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise Invalid()
        return text

    @staticmethod
    def _ipv6(text: str) -> str:
        address, _, scope = text.partition("%")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise Invalid() from None
        if "%" in text and not re.fullmatch(r"[A-Za-z0-9_.-]+", scope):
            raise Invalid()
        return text


class Nested(Kind):
    """
    A whole endpoint description held by a wrapper, escaped as one argument.
    The typed value is a L{Parsed}; the endpoint is built with the wrapper.
    """

    name = "description"

    def __init__(self, side: Side) -> None:
        self.side = side
        self.expected = f"a {side} endpoint description"

    def convert(self, text: str) -> Parsed:
        if not text:
            raise Invalid()
        return parseDescription(text, self.side)

    def format(self, value: Any) -> str:
        assert isinstance(value, Parsed)
        return value.description()


class Rest(Nested):
    """
    The rest of the description is an inner description (Twisted's
    C{haproxy:} grammar).  Only Twisted's own wrappers use this.
    """

    name = "rest"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Arg:
    """
    One argument of an endpoint type.

    @ivar positional: it may be given by position, in declaration order
        among the positional arguments (it may always be given by keyword).
    @ivar variadic: it takes every remaining positional value, as a tuple.
    """

    name: str
    kind: Kind
    default: Any = REQUIRED
    help: str = ""
    positional: bool = False
    variadic: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


BACKLOG = Arg("backlog", Int(1, 65535), 50, "length of the listen queue", positional=True)
"""
The listen queue argument every listening TCP or UNIX type shares.
"""

Factory = Callable[..., Any]


@dataclass(frozen=True, eq=False)
class EndpointType:
    """
    An endpoint type: its prefix, side, arguments and how to build it.

    @ivar factory: called as C{factory(reactor, **values)} with typed values;
        nested descriptions arrive as built endpoints.
    @ivar validate: checks that involve several arguments; called with the
        typed values and the names given, it raises L{DescriptionError} (see
        L{EndpointType.error}).
    @ivar build: replaces C{factory} for types built from their description
        (Twisted's own, which Twisted builds).
    """

    prefix: str
    side: Side
    args: tuple[Arg, ...]
    help: str
    factory: Factory | None = None
    provider: str = "endpointkit"
    validate: Callable[[Mapping[str, Any], frozenset[str]], None] | None = None
    build: Callable[[Any, Parsed], Any] | None = None
    byName: Mapping[str, Arg] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "byName", {arg.name: arg for arg in self.args})

    def error(
        self, argument: str | None, message: str, value: str | None = None
    ) -> DescriptionError:
        """
        A L{DescriptionError} for this type, for use by C{validate} and by
        factories.
        """
        where = f"argument {argument!r} " if argument else ""
        return DescriptionError(
            f"{self.prefix}: {where}{message}",
            prefix=self.prefix,
            argument=argument,
            value=value,
        )


# Tokenizing and quoting.

_QUOTED = re.compile(r"([\\:=\[])")


def quoteArgument(text: str) -> str:
    """
    Quote one argument so that Twisted's tokenizer and ours both read it back
    as C{text}: backslash, colon, equals sign and opening bracket are
    escaped.
    """
    return _QUOTED.sub(r"\\\1", text)


def tokenize(description: str) -> list[tuple[str | None, str]]:
    """
    Split a description into C{(key, value)} pairs in order; C{key} is
    L{None} for a positional value.

    A C{[} at the start of a value, or just after an escaped C{:} or C{=}
    (the start of a value of a nested description), opens a bracket group
    that runs to the next C{]}: colons and equals signs inside it do not
    split.  Backslash escapes work everywhere.
    """
    pairs: list[tuple[str | None, str]] = []
    key: str | None = None
    current: list[str] = []
    atValueStart = True
    inBrackets = False
    i = 0
    n = len(description)
    while i < n:
        c = description[i]
        if c == "\\":
            if i + 1 >= n:
                raise DescriptionError(
                    f"{description!r} ends with a lone backslash; "
                    "a backslash escapes the character after it"
                )
            escaped = description[i + 1]
            current.append(escaped)
            i += 2
            atValueStart = escaped in ":="
            continue
        if c == "[" and atValueStart and not inBrackets:
            if description.find("]", i) < 0:
                raise DescriptionError(
                    f"{description!r} opens '[' without a closing ']'; "
                    "write IPv6 literals as [::1] or escape the bracket as \\["
                )
            inBrackets = True
        elif c == "]":
            inBrackets = False
        if inBrackets or c not in ":=" or (c == "=" and key is not None):
            current.append(c)
            atValueStart = False
        elif c == ":":
            pairs.append((key, "".join(current)))
            key, current, atValueStart = None, [], True
        else:
            key, current, atValueStart = "".join(current), [], True
        i += 1
    pairs.append((key, "".join(current)))
    return pairs


def splitDescription(description: str) -> tuple[str, list[str], list[tuple[str, str]]]:
    """
    Split a description into its prefix, positional values and keyword pairs.
    """
    pairs = tokenize(description)
    key, prefix = pairs[0]
    if key is not None or not prefix:
        raise DescriptionError(
            f"{description!r} does not start with an endpoint type "
            "(a description looks like tcp:8080 or tcp:example.com:80)"
        )
    args = [value for key, value in pairs[1:] if key is None]
    kwargs = [(key, value) for key, value in pairs[1:] if key is not None]
    return prefix, args, kwargs


def rejoinBrackets(
    prefix: str, args: Sequence[object], kwargs: Mapping[str, object]
) -> tuple[list[str], list[tuple[str, str]]]:
    """
    Undo Twisted's tokenizer splitting a bracketed IPv6 literal at its colons
    (twisted#8035): C{['[', '', '1]']} becomes C{['[::1]']}.  Twisted hands
    plugins keyword values without their order, so a bracket there cannot be
    mended and is named as an error instead.
    """
    texts = [_text(prefix, None, value) for value in args]
    joined: list[str] = []
    i = 0
    while i < len(texts):
        text = texts[i]
        if text.rfind("[") > text.rfind("]"):
            end = i
            while end + 1 < len(texts) and "]" not in texts[end]:
                end += 1
            if "]" in texts[end]:
                text = ":".join(texts[i : end + 1])
                i = end
        joined.append(text)
        i += 1
    pairs = []
    for key, value in kwargs.items():
        text = _text(prefix, key, value)
        if text.rfind("[") > text.rfind("]"):
            raise DescriptionError(
                f"{prefix}: argument {key!r}: Twisted's parser splits a bracketed "
                "address at its colons; escape them ([\\:\\:1]) or parse with "
                "endpointkit.clientFromString/serverFromString",
                prefix=prefix,
                argument=key,
            )
        pairs.append((key, text))
    return joined, pairs


def _text(prefix: str, key: str | None, value: object) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise DescriptionError(
                f"{prefix}: argument {key or '(positional)'!r} is not UTF-8",
                prefix=prefix,
                argument=key,
            ) from None
    return str(value)


# Parsing arguments against a type.


def _didYouMean(word: str, candidates: Iterable[str]) -> str | None:
    options = list(candidates)
    lowered = {option.lower(): option for option in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, options, 1, 0.6)
    return close[0] if close else None


def _shown(arg: Arg, text: str) -> str:
    return SECRET_MASK if arg.kind.secret else repr(text)


def _convert(etype: EndpointType, arg: Arg, text: str) -> Any:
    try:
        return arg.kind.convert(text)
    except DescriptionError as e:
        raise e.nestedIn(etype.prefix, arg.name) from None
    except Invalid as e:
        expected = e.reason or arg.kind.expected
        raise DescriptionError(
            f"{etype.prefix}: argument {arg.name!r} must be {expected}, "
            f"got {_shown(arg, text)}" + (f"; {e.hint}" if e.hint else ""),
            prefix=etype.prefix,
            argument=arg.name,
            value=None if arg.kind.secret else text,
            expected=expected,
        ) from None


def _fail(etype: EndpointType, argument: str | None, message: str) -> NoReturn:
    raise etype.error(argument, message)


def parseArguments(
    etype: EndpointType,
    args: Sequence[str],
    kwargs: Iterable[tuple[str, str]],
) -> Parsed:
    """
    Check and convert a type's arguments: positional values fill the
    positional arguments not given by keyword, in declaration order (as
    Twisted's C{tcp:} does).
    """
    if etype.args and isinstance(etype.args[0].kind, Rest):
        rest = unparse(args, list(kwargs))
        if not rest:
            _fail(etype, None, "needs the description it wraps after it, "
                  f"like {etype.prefix}:tcp:8080")
        first = etype.args[0]
        return Parsed(etype.side, etype.prefix, etype,
                      {first.name: _convert(etype, first, rest)}, (first.name,))
    raw: dict[str, Any] = {}
    for key, value in kwargs:
        found = etype.byName.get(key)
        if found is None:
            names = list(etype.byName)
            guess = _didYouMean(key, names)
            if ":" in key:
                hint = ("it looks like a description with an unescaped '='; inside a "
                        "nested description escape it as \\= (buildDescription does)")
            elif guess:
                hint = f"did you mean {guess!r}?"
            else:
                hint = "it takes " + ", ".join(names) if names else "it takes no arguments"
            _fail(etype, None, f"unknown argument {key!r}; {hint}")
        if found.variadic:
            _fail(etype, key, "is given by position, not as a keyword")
        if key in raw:
            _fail(etype, key, "is given twice")
        raw[key] = value
    positional = [arg for arg in etype.args if arg.positional or arg.variadic]
    skipped = [arg for arg in positional if arg.name in raw]
    slots = [arg for arg in positional if arg.name not in raw]
    remaining = list(args)
    for arg in slots:
        if not remaining:
            break
        if arg.variadic:
            raw[arg.name] = tuple(remaining)
            remaining = []
        else:
            raw[arg.name] = remaining.pop(0)
    if remaining:
        if skipped:
            arg = skipped[0]
            _fail(etype, arg.name,
                  f"is given twice: by position ({_shown(arg, remaining[0])}) "
                  f"and as a keyword ({_shown(arg, raw[arg.name])})")
        if not positional:
            _fail(etype, None,
                  f"takes arguments only as key=value, got {remaining[0]!r}")
        _fail(etype, None,
              f"takes at most {len(positional)} positional argument"
              f"{'s' if len(positional) != 1 else ''} "
              f"({', '.join(arg.name for arg in positional)}), "
              f"got an extra {remaining[0]!r}")
    values: dict[str, Any] = {}
    for arg in etype.args:
        if arg.name in raw:
            if arg.variadic:
                values[arg.name] = tuple(_convert(etype, arg, t) for t in raw[arg.name])
            else:
                values[arg.name] = _convert(etype, arg, raw[arg.name])
        elif arg.required:
            help = f" ({arg.help})" if arg.help else ""
            _fail(etype, None, f"missing required argument {arg.name!r}{help}")
        else:
            values[arg.name] = arg.default
    given = tuple(arg.name for arg in etype.args if arg.name in raw)
    if etype.validate is not None:
        etype.validate(values, frozenset(given))
    return Parsed(etype.side, etype.prefix, etype, values, given)


def unparse(args: Sequence[str], kwargs: Sequence[tuple[str, str]]) -> str:
    """
    Rebuild the text of already-split arguments.
    """
    return ":".join(
        [quoteArgument(a) for a in args]
        + [f"{quoteArgument(k)}={quoteArgument(v)}" for k, v in kwargs]
    )


@dataclass(frozen=True, repr=False)
class Parsed:
    """
    A checked description: its type and typed values, ready to build.  Its
    C{repr} and C{str} show secrets as C{***}; L{Parsed.description} gives
    the real text.

    @ivar plugin: for a third-party type with no declared arguments, the
        plugin that builds it from C{rawArgs} and C{rawKwargs}.
    """

    side: Side
    prefix: str
    type: EndpointType | None
    values: Mapping[str, Any]
    given: tuple[str, ...]
    rawArgs: tuple[str, ...] = ()
    rawKwargs: tuple[tuple[str, str], ...] = ()
    plugin: Any = field(default=None, compare=False)

    def build(self, reactor: Any) -> Any:
        """
        Build the endpoint, with C{reactor}.
        """
        etype = self.type
        if etype is None:
            return _buildPlugin(self, reactor)
        if etype.build is not None:
            return etype.build(reactor, self)
        assert etype.factory is not None, etype.prefix
        built = {name: _built(value, reactor) for name, value in self.values.items()}
        return etype.factory(reactor, **built)

    def description(self, masked: bool = False) -> str:
        """
        The canonical text of this description: positional arguments first,
        the rest as keywords, every value quoted.
        """
        if self.type is None:
            return ":".join([self.prefix, unparse(self.rawArgs, self.rawKwargs)]
                            if self.rawArgs or self.rawKwargs else [self.prefix])
        parts = [self.prefix]
        inOrder = True
        for arg in self.type.args:
            if arg.name not in self.given or not arg.required:
                if arg.positional:
                    inOrder = False
                if arg.name not in self.given:
                    continue
            value = self.values[arg.name]
            if isinstance(arg.kind, Rest):
                parts.append(value.description(masked))
            elif arg.variadic:
                parts.extend(quoteArgument(formatValue(arg, v, masked)) for v in value)
            elif arg.positional and arg.required and inOrder:
                parts.append(quoteArgument(formatValue(arg, value, masked)))
            else:
                parts.append(f"{arg.name}={quoteArgument(formatValue(arg, value, masked))}")
        return ":".join(parts)

    def __str__(self) -> str:
        return self.description(masked=True)

    def __repr__(self) -> str:
        return f"<Parsed {self.side} {self.description(masked=True)!r}>"


def formatValue(arg: Arg, value: Any, masked: bool = False) -> str:
    """
    The text of one typed value, C{***} for a secret when C{masked}.
    """
    if masked and arg.kind.secret and value is not None:
        return SECRET_MASK
    if isinstance(value, Parsed):
        return value.description(masked)
    return arg.kind.format(value)


def _built(value: Any, reactor: Any) -> Any:
    if isinstance(value, Parsed):
        return value.build(reactor)
    if isinstance(value, tuple) and value and isinstance(value[0], Parsed):
        return tuple(v.build(reactor) for v in value)
    return value


def _buildPlugin(parsed: Parsed, reactor: Any) -> Any:
    plugin = parsed.plugin
    try:
        if parsed.side == "server":
            return plugin.parseStreamServer(reactor, *parsed.rawArgs, **dict(parsed.rawKwargs))
        if hasattr(plugin, "parseStreamClient"):
            return plugin.parseStreamClient(reactor, *parsed.rawArgs, **dict(parsed.rawKwargs))
        return plugin.parseStreamClient(*parsed.rawArgs, **dict(parsed.rawKwargs))
    except DescriptionError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OSError) as e:
        raise DescriptionError(
            f"{parsed.prefix}: the plugin that provides this type rejected "
            f"its arguments: {e}",
            prefix=parsed.prefix,
        ) from e


def buildDescription(prefix: str, *args: object, **kwargs: object) -> str:
    """
    Build a description from Python values, quoting each one, so that nobody
    escapes colons by hand::

        buildDescription("timeout", 5,
                         endpoint=buildDescription("tcp", "::1", 80))
        # 'timeout:5:endpoint=tcp\\:\\\\\\:\\\\\\:1\\:80'

    C{None} keyword values are left out; booleans become 1/0.
    """
    parts = [prefix]
    parts += [quoteArgument(_pyText(value)) for value in args]
    parts += [
        f"{key}={quoteArgument(_pyText(value))}"
        for key, value in kwargs.items()
        if value is not None
    ]
    return ":".join(parts)


def _pyText(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return Seconds().format(value)
    if isinstance(value, Parsed):
        return value.description()
    return str(value)


def parseDescription(description: str | bytes, side: Side) -> Parsed:
    """
    Check a whole description for one side, without building anything.
    """
    from endpointkit._lookup import findParser

    if isinstance(description, bytes):
        description = _text("description", None, description)
    if not isinstance(description, str):
        raise DescriptionError(
            f"a description must be a string, got {type(description).__name__}"
        )
    prefix, args, kwargs = splitDescription(description)
    found = findParser(side, prefix)
    if isinstance(found, EndpointType):
        return parseArguments(found, args, kwargs)
    return Parsed(side, prefix.lower(), None, {}, (), tuple(args), tuple(kwargs),
                  plugin=found)
