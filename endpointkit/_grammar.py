"""
The grammar of descriptions, the lowest part of the description layer.

The grammar is Twisted's (C{prefix:positional:key=value}, backslash escapes),
with two additions that Twisted's own tokenizer cannot express:

  - a value that starts with C{[} runs to the matching C{]}, so bracketed
    IPv6 literals such as C{[::1]} need no escaping;
  - wrappers take their inner description as one escaped argument, named
    C{endpoint} (Twisted's C{tls:} precedent), for client and server alike.

This module tokenizes and quotes text, and builds descriptions from Python
values (L{buildDescription}); it knows nothing of endpoint types.  Above it
sit L{endpointkit._kinds} (value kinds) and L{endpointkit._schema} (the
declarations and the parsed model); L{endpointkit._lookup} finds a type for a
prefix and parses a whole description.
"""

from __future__ import annotations

import decimal
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

Side = Literal["client", "server"]
SIDES: tuple[Side, Side] = ("client", "server")

SECRET_MASK = "***"


class DescriptionError(ValueError):
    """
    A description cannot be parsed.  The message names the endpoint type, the
    argument, the value (C{***} for secrets) and what was expected.

    @ivar corrected: when the message says what was probably meant, the
        corrected description it shows (secrets as C{***}).
    @ivar hintable: the arguments do not fit the type (an extra positional
        value, a keyword given twice or unknown, a bad value), the kind of
        error that an unescaped nested description or IPv6 address gives;
        the schema then looks for what was probably meant.
    """

    corrected: str | None = None
    hintable = False
    nestedArgument: str | None = None
    innerCorrected: str | None = None

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
        error = DescriptionError(
            f"{prefix}: argument {argument!r}: {self.message}",
            prefix=self.prefix,
            argument=self.argument,
            value=self.value,
            expected=self.expected,
        )
        error.nestedArgument = argument
        error.innerCorrected = self.corrected
        return error



def formatSeconds(value: float) -> str:
    """
    A number of seconds as description text: positional notation (the
    grammar has no exponents), exact, without a trailing C{.0}.
    """
    number = float(value)
    if number.is_integer():
        return str(int(number))
    return format(decimal.Decimal(repr(number)), "f")


def formatDuration(seconds: float) -> str:
    """
    A duration as every message of the package shows it: C{"30 s"},
    C{"0.5 s"} (exact, never an exponent).
    """
    return f"{formatSeconds(seconds)} s"


def didYouMean(word: str, candidates: Iterable[str]) -> str | None:
    """
    The candidate closest to C{word} (case first, then spelling), if any is
    close enough to suggest.
    """
    options = list(candidates)
    lowered = {option.lower(): option for option in options}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, options, 1, 0.6)
    return close[0] if close else None


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
    texts = [argumentText(prefix, None, value) for value in args]
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
        text = argumentText(prefix, key, value)
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


def argumentText(prefix: str, key: str | None, value: object) -> str:
    """
    The text of one argument value as a parser receives it (C{bytes} from
    Twisted's C{strports}, C{str} otherwise).
    """
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



def unparse(args: Sequence[str], kwargs: Sequence[tuple[str, str]]) -> str:
    """
    Rebuild the text of already-split arguments.
    """
    return ":".join(
        [quoteArgument(a) for a in args]
        + [f"{quoteArgument(k)}={quoteArgument(v)}" for k, v in kwargs]
    )



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
        return formatSeconds(value)
    description = getattr(value, "description", None)
    if callable(description):
        # A parsed description (endpointkit._schema.Parsed) gives its text.
        return str(description())
    return str(value)

