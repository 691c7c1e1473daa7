"""
What a description that does not parse was probably meant to say, part of
the description layer (it imports nothing above L{endpointkit._kinds}).

The mistakes that leave extra positional values, keywords given twice or
unknown keywords are almost all colons that were not escaped: a nested
description after C{endpoint=} (C{timeout:5:endpoint=tcp:host:80}), an IPv6
literal without brackets (C{tcp6:8080:interface=::1}), a C{host:port} where
a description belongs (C{endpoint=proxy:1080}), a secret with a colon in it.
L{suggest} joins the values that such a colon split apart again, in every
way that fits, and keeps the first that parses: the error then says what
was probably meant and shows the corrected description, which parses.

Twisted's tokenizer hands plugins their positional and keyword values
apart (the order of keywords is kept, not where the positional values were
among them), so for a description parsed by Twisted's C{clientFromString}
or C{serverFromString} the positional values are tried at each place among
the keywords.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

from endpointkit._kinds import Nested

if TYPE_CHECKING:
    from endpointkit._schema import EndpointType

Pair = tuple["str | None", str]

ATTEMPTS = 80
"""
How many candidate descriptions one suggestion may parse, nested ones
included: a bound on the work an error costs.
"""

_budget: ContextVar[list[int] | None] = ContextVar("endpointkit-hint-budget", default=None)

_HOST_PORT = re.compile(r"[^:\s]+:[0-9]{1,5}")


def _looksIPv6(text: str) -> bool:
    address = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return False
    return True


def _text(pair: Pair) -> str:
    key, value = pair
    return value if key is None else f"{key}={value}"


def _orderings(args: Sequence[str], kwargs: Sequence[tuple[str, str]],
               ordered: Sequence[Pair] | None) -> Iterator[list[Pair]]:
    """
    The orders the arguments may have been written in: the known one, or,
    without it, each split of the positional values into those before the
    keywords and those after one of them, most values before first (the
    values that fill the positional arguments come first, as a rule).
    """
    if ordered is not None:
        yield list(ordered)
        return
    positional: list[Pair] = [(None, value) for value in args]
    keywords: list[Pair] = [(key, value) for key, value in kwargs]
    yield positional + keywords
    for split in range(len(positional) - 1, -1, -1):
        for after in range(len(keywords), 0, -1):
            yield (positional[:split] + keywords[:after] + positional[split:]
                   + keywords[after:])


def _candidates(etype: EndpointType, pairs: list[Pair]) -> Iterator[tuple[str, list[Pair]]]:
    """
    The pairs with the values after one value joined back into it (longest
    first), each with what the mistake was.
    """
    for i, (key, value) in enumerate(pairs):
        arg = etype.byName.get(key) if key is not None else None
        if key is not None and arg is None:
            continue
        nested = arg is not None and isinstance(arg.kind, Nested)
        for k in range(len(pairs) - i - 1, 0, -1):
            following = pairs[i + 1 : i + 1 + k]
            if not nested and any(fk is not None for fk, _ in following):
                continue
            merged = ":".join([value] + [_text(pair) for pair in following])
            before, after = pairs[:i], pairs[i + 1 + k :]
            if nested:
                yield (f"the description given to {key!r} looks cut at its colons: "
                       "escape them inside it as \\: (endpointkit.buildDescription "
                       "does that), as in"), [*before, (key, merged), *after]
                if _HOST_PORT.fullmatch(merged):
                    yield (f"{key!r} takes a description, which starts with its type, "
                           "and its colons escaped, as in"), \
                        [*before, (key, "tcp:" + merged), *after]
            elif _looksIPv6(merged):
                yield ("an IPv6 address looks cut at its colons: write it in brackets "
                       "([::1]) or escape them as \\:, as in"), [*before, (key, merged), *after]
            elif key is not None:
                yield (f"the value of {key!r} looks cut at its colons: escape them "
                       "as \\:, as in"), [*before, (key, merged), *after]


def suggest(etype: EndpointType, args: Sequence[str], kwargs: Sequence[tuple[str, str]],
            ordered: Sequence[Pair] | None,
            attempt: Callable[[list[Pair]], str | None]) -> tuple[str, str] | None:
    """
    What the arguments of a description of C{etype} that do not parse were
    probably meant to be: an explanation, and the corrected description
    that C{attempt} (which parses candidate pairs, giving the description
    to show or L{None}) accepted.  L{None} when nothing that fits parses, or
    when the work allowed for one error (L{ATTEMPTS}) is spent.
    """
    budget = _budget.get()
    token = None
    if budget is None:
        budget = [ATTEMPTS]
        token = _budget.set(budget)
    try:
        seen: set[tuple[Pair, ...]] = set()
        for pairs in _orderings(args, kwargs, ordered):
            for explanation, candidate in _candidates(etype, pairs):
                key = tuple(candidate)
                if key in seen:
                    continue
                seen.add(key)
                if budget[0] <= 0:
                    return None
                budget[0] -= 1
                corrected = attempt(candidate)
                if corrected is not None:
                    return explanation, corrected
        return None
    finally:
        if token is not None:
            _budget.reset(token)


def canSuggest() -> bool:
    """
    Whether a suggestion may still be looked for (the work allowed for the
    error being explained is not spent).
    """
    budget = _budget.get()
    return budget is None or budget[0] > 0

