"""
The schema of the description layer: every endpoint type declares its
arguments once, as an L{EndpointType} made of L{Arg}s.  From that one
declaration come the typed conversion inside every parser, the errors,
C{endpointkit types}, C{endpointkit check} and the README table of types.

L{parseArguments} checks one type's split arguments and gives a L{Parsed}
description, ready to build.  Nested descriptions are parsed by the function
it is given (L{endpointkit._lookup.parseDescription}), so that nothing here
imports the lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from endpointkit._grammar import (
    SECRET_MASK,
    DescriptionError,
    Side,
    didYouMean,
    quoteArgument,
    unparse,
)
from endpointkit._kinds import Int, Invalid, Kind, Nested, Rest


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
    @ivar insecure: what is insecure about one description of this type
        (verification turned off, a legacy protocol version, trust given to
        anyone): called with the typed values, it gives one short sentence
        per setting; L{Parsed.warnings} collects them, nested ones included,
        for C{endpointkit check} and the log.
    """

    prefix: str
    side: Side
    args: tuple[Arg, ...]
    help: str
    factory: Factory | None = None
    provider: str = "endpointkit"
    validate: Callable[[Mapping[str, Any], frozenset[str]], None] | None = None
    build: Callable[[Any, Parsed], Any] | None = None
    insecure: Callable[[Mapping[str, Any]], Iterable[str]] | None = None
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



ParseNested = Callable[[str, Side], "Parsed"]
"""
How L{parseArguments} parses a nested description for one side.
"""


def _shown(arg: Arg, text: str) -> str:
    return SECRET_MASK if arg.kind.secret else repr(text)


def _convert(etype: EndpointType, arg: Arg, text: str, parseNested: ParseNested) -> Any:
    try:
        if isinstance(arg.kind, Nested):
            if not text:
                raise Invalid()
            return parseNested(text, arg.kind.side)
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
    parseNested: ParseNested,
) -> Parsed:
    """
    Check and convert a type's arguments: positional values fill the
    positional arguments not given by keyword, in declaration order (as
    Twisted's C{tcp:} does).

    @param parseNested: parses a nested description (an argument of kind
        L{Nested}) for its side.
    """
    if etype.args and isinstance(etype.args[0].kind, Rest):
        rest = unparse(args, list(kwargs))
        if not rest:
            _fail(etype, None, "needs the description it wraps after it, "
                  f"like {etype.prefix}:tcp:8080")
        first = etype.args[0]
        return Parsed(etype.side, etype.prefix, etype,
                      {first.name: _convert(etype, first, rest, parseNested)}, (first.name,))
    raw: dict[str, Any] = {}
    for key, value in kwargs:
        found = etype.byName.get(key)
        if found is None:
            names = list(etype.byName)
            guess = didYouMean(key, names)
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
    if not positional and remaining == [""]:
        # "stdio:", the form Twisted documents: its tokenizer reads the
        # trailing colon as one empty value, which Twisted's parser ignores.
        remaining = []
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
                values[arg.name] = tuple(_convert(etype, arg, t, parseNested) for t in raw[arg.name])
            else:
                values[arg.name] = _convert(etype, arg, raw[arg.name], parseNested)
        elif arg.required:
            help = f" ({arg.help})" if arg.help else ""
            _fail(etype, None, f"missing required argument {arg.name!r}{help}")
        else:
            values[arg.name] = arg.default
    given = tuple(arg.name for arg in etype.args if arg.name in raw)
    if etype.validate is not None:
        etype.validate(values, frozenset(given))
    return Parsed(etype.side, etype.prefix, etype, values, given)


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

    def warnings(self) -> list[str]:
        """
        Every insecure setting of this description and of the descriptions
        nested in it, outermost first, each as C{"prefix: sentence"}.
        """
        found: list[str] = []
        if self.type is not None and self.type.insecure is not None:
            found += [f"{self.prefix}: {text}" for text in self.type.insecure(self.values)]
        for value in self.values.values():
            inner = value if isinstance(value, tuple) else (value,)
            for each in inner:
                if isinstance(each, Parsed):
                    found += each.warnings()
        return found

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

