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
from endpointkit._hints import canSuggest, suggest
from endpointkit._kinds import Host, Int, Invalid, Kind, Nested, Rest


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
    @ivar notes: what C{endpointkit check} tells about one description
        beside its values (for C{srv:}, the record that will be queried):
        called with the typed values, it gives one short line each.
    @ivar probe: what building cannot see and listening or connecting would
        fail on (a missing directory for a socket file, a path too long):
        called with the typed values, without listening or connecting, it
        raises the error the endpoint would fail with at run time.
        L{Parsed.probe} runs it, nested ones included, for C{endpointkit
        check --build}.  Errors that building already raises (a missing
        certificate file, a descriptor that is not a listening socket) need
        no probe.
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
    notes: Callable[[Mapping[str, Any]], Iterable[str]] | None = None
    probe: Callable[[Mapping[str, Any]], None] | None = None
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


def _shown(arg: Arg, text: str, hidden: bool = False) -> str:
    """
    The text a user gave for C{arg}, as a message shows it.
    """
    if hidden or arg.kind.secret:
        return SECRET_MASK
    return repr(arg.kind.maskText(text))


def _convert(etype: EndpointType, arg: Arg, text: str, parseNested: ParseNested,
             hidden: bool = False) -> Any:
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
        shown = None if hidden or arg.kind.secret else arg.kind.maskText(text)
        error = DescriptionError(
            f"{etype.prefix}: argument {arg.name!r} must be {expected}, "
            f"got {_shown(arg, text, hidden)}" + (f"; {e.hint}" if e.hint else ""),
            prefix=etype.prefix,
            argument=arg.name,
            value=shown,
            expected=expected,
        )
        error.hintable = True
        raise error from None


def _fail(etype: EndpointType, argument: str | None, message: str) -> NoReturn:
    error = etype.error(argument, message)
    error.hintable = True
    raise error


Pairs = Sequence[tuple["str | None", str]]
"""
Arguments as C{(key, value)} pairs in the order they were written; C{key}
is L{None} for a positional value.
"""


def _hidden(etype: EndpointType, args: Sequence[str], kwargs: Sequence[tuple[str, str]],
            ordered: Pairs | None) -> tuple[set[int], set[int]]:
    """
    The positional values and the keywords (by index in C{args} and in
    C{kwargs}) that may be the rest of a secret cut at an unescaped colon:
    those right after a secret argument's value (see L{Kind.cutSecret}).
    Without the order (Twisted's tokenizer keeps the order of keywords but
    not where the positional values were among them), every positional
    value is suspect once such an argument is given, and every keyword
    after it.
    """
    def cuts(key: str | None, value: str) -> bool:
        arg = etype.byName.get(key) if key is not None else None
        return arg is not None and arg.kind.cutSecret(value)

    hiddenArgs: set[int] = set()
    hiddenKeys: set[int] = set()
    if ordered is None:
        cutAt = next((i for i, (k, v) in enumerate(kwargs) if cuts(k, v)), None)
        if cutAt is not None:
            hiddenArgs.update(range(len(args)))
            hiddenKeys.update(range(cutAt + 1, len(kwargs)))
        return hiddenArgs, hiddenKeys
    argIndex = keyIndex = 0
    after = False
    for key, value in ordered:
        if key is None:
            if after:
                hiddenArgs.add(argIndex)
            argIndex += 1
        else:
            # An unknown keyword right after the cut is the secret's rest
            # too (a credential with '=' in it); a known one ends the run.
            if after and key not in etype.byName:
                hiddenKeys.add(keyIndex)
            else:
                after = cuts(key, value)
            keyIndex += 1
    return hiddenArgs, hiddenKeys


def parseArguments(
    etype: EndpointType,
    args: Sequence[str],
    kwargs: Iterable[tuple[str, str]],
    parseNested: ParseNested,
    *,
    ordered: Pairs | None = None,
) -> Parsed:
    """
    Check and convert a type's arguments: positional values fill the
    positional arguments not given by keyword, in declaration order (as
    Twisted's C{tcp:} does).

    @param parseNested: parses a nested description (an argument of kind
        L{Nested}) for its side.
    @param ordered: the same arguments in the order they were written, when
        it is known (endpointkit's parser knows it; Twisted's tokenizer gives
        plugins positional and keyword values apart).  Errors then mask
        exactly the values that follow a secret, and say more precisely what
        was probably meant.
    """
    args, kwargs = list(args), list(kwargs)
    try:
        return _parseArguments(etype, args, kwargs, parseNested, ordered)
    except DescriptionError as e:
        better = _explained(e, etype, args, kwargs, parseNested, ordered)
        if better is None:
            raise
        raise better from None


def _explained(error: DescriptionError, etype: EndpointType, args: list[str],
               kwargs: list[tuple[str, str]], parseNested: ParseNested,
               ordered: Pairs | None) -> DescriptionError | None:
    """
    C{error}, saying what was probably meant and showing the corrected
    description (see L{endpointkit._hints}), when something that fits
    parses.
    """
    if not canSuggest():
        return None

    def attempt(pairs: list[tuple[str | None, str]]) -> str | None:
        for _ in range(2):
            a = [value for key, value in pairs if key is None]
            k = [(key, value) for key, value in pairs if key is not None]
            try:
                parsed = _parseArguments(etype, a, k, parseNested, pairs)
            except DescriptionError as e:
                # The nested description has a mistake of its own, which it
                # explained: try again with its correction.
                where, inner = e.nestedArgument, e.innerCorrected
                if where is None or inner is None:
                    return None
                pairs = [(key, inner if key == where else value) for key, value in pairs]
                continue
            return parsed.description(masked=True, brackets=ordered is not None)
        return None

    if error.hintable:
        found = suggest(etype, args, kwargs, ordered, attempt)
        if found is None:
            return None
        explanation, corrected = found
        message = f"{error.message}; {explanation} {corrected}"
    elif error.nestedArgument is not None and error.innerCorrected is not None:
        pairs: list[tuple[str | None, str]] = (
            list(ordered) if ordered is not None
            else [*[(None, a) for a in args], *kwargs])
        whole = attempt(pairs)
        if whole is None:
            return None
        corrected = whole
        message = f"{error.message} (the whole description: {corrected})"
    else:
        return None
    better = DescriptionError(message, prefix=error.prefix, argument=error.argument,
                              value=error.value, expected=error.expected)
    better.corrected = corrected
    return better


def _parseArguments(
    etype: EndpointType,
    args: list[str],
    kwargs: list[tuple[str, str]],
    parseNested: ParseNested,
    ordered: Pairs | None,
) -> Parsed:
    if etype.args and isinstance(etype.args[0].kind, Rest):
        rest = unparse(args, kwargs)
        if not rest:
            _fail(etype, None, "needs the description it wraps after it, "
                  f"like {etype.prefix}:tcp:8080")
        first = etype.args[0]
        return Parsed(etype.side, etype.prefix, etype,
                      {first.name: _convert(etype, first, rest, parseNested)}, (first.name,))
    hidden, hiddenKeys = _hidden(etype, args, kwargs, ordered)
    raw: dict[str, Any] = {}
    for keyIndex, (key, value) in enumerate(kwargs):
        found = etype.byName.get(key)
        if found is None:
            names = list(etype.byName)
            guess = didYouMean(key, names)
            if keyIndex in hiddenKeys:
                _fail(etype, None, f"unknown argument {SECRET_MASK} (after a secret: "
                      "was a colon in it left unescaped?)")
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
    remaining = list(enumerate(args))
    if not positional and args == [""]:
        # "stdio:", the form Twisted documents: its tokenizer reads the
        # trailing colon as one empty value, which Twisted's parser ignores.
        remaining = []
    fromPosition: dict[str, Any] = {}
    for arg in slots:
        if not remaining:
            break
        if arg.variadic:
            raw[arg.name] = tuple(text for _, text in remaining)
            fromPosition[arg.name] = tuple(i in hidden for i, _ in remaining)
            remaining = []
        else:
            index, raw[arg.name] = remaining.pop(0)
            fromPosition[arg.name] = index in hidden
    if remaining:
        index, extra = remaining[0]
        extraShown = SECRET_MASK if index in hidden else repr(extra)
        if skipped:
            arg = skipped[0]
            _fail(etype, arg.name,
                  f"is given twice: by position "
                  f"({_shown(arg, extra, index in hidden)}) "
                  f"and as a keyword ({_shown(arg, raw[arg.name])})")
        if not positional:
            _fail(etype, None,
                  f"takes arguments only as key=value, got {extraShown}")
        _fail(etype, None,
              f"takes at most {len(positional)} positional argument"
              f"{'s' if len(positional) != 1 else ''} "
              f"({', '.join(arg.name for arg in positional)}), "
              f"got an extra {extraShown}")
    values: dict[str, Any] = {}
    for arg in etype.args:
        if arg.name in raw:
            if arg.variadic:
                values[arg.name] = tuple(
                    _convert(etype, arg, t, parseNested, hide)
                    for t, hide in zip(raw[arg.name], fromPosition[arg.name], strict=True))
            else:
                values[arg.name] = _convert(etype, arg, raw[arg.name], parseNested,
                                            fromPosition.get(arg.name, False))
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

    def probe(self, reactor: Any) -> Any:
        """
        Build the endpoint and run the probe of every type in this
        description, outermost first, without listening or connecting.

        @return: the built endpoint.
        @raise Exception: what building or a probe raises: the error the
            endpoint would fail with at run time.
        """
        endpoint = self.build(reactor)
        self._probe()
        return endpoint

    def _probe(self) -> None:
        if self.type is not None and self.type.probe is not None:
            self.type.probe(self.values)
        for value in self.values.values():
            for each in value if isinstance(value, tuple) else (value,):
                if isinstance(each, Parsed):
                    each._probe()

    def description(self, masked: bool = False, brackets: bool = False) -> str:
        """
        The canonical text of this description: positional arguments first,
        the rest as keywords, every value quoted.

        @param masked: secrets as C{***}.
        @param brackets: IPv6 addresses in brackets rather than escaped
            (endpointkit's parsers read both; Twisted's tokenizer reads only
            escapes).
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
            else:
                text = formatValue(arg, value, masked)
                if brackets and isinstance(arg.kind, Host) and ":" in text:
                    text = f"[{text}]"
                else:
                    text = quoteArgument(text)
                if arg.positional and arg.required and inOrder:
                    parts.append(text)
                else:
                    parts.append(f"{arg.name}={text}")
        return ":".join(parts)

    def __str__(self) -> str:
        return self.description(masked=True)

    def __repr__(self) -> str:
        return f"<Parsed {self.side} {self.description(masked=True)!r}>"


def formatValue(arg: Arg, value: Any, masked: bool = False) -> str:
    """
    The text of one typed value, C{***} for a secret when C{masked}.
    """
    if isinstance(value, Parsed):
        return value.description(masked)
    if masked and value is not None:
        return arg.kind.formatMasked(value)
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

