"""
The value kinds of the description layer: how an argument's text becomes a
typed value and back, and what a wrong one is told it should be.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from typing import Any

from endpointkit._grammar import SECRET_MASK, Side, formatSeconds


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
    The kind of an argument: how its text becomes a typed value and back,
    and how it is shown where a description is shown (C{check}, logs,
    reprs, errors).

    @ivar secret: the whole value is a secret, always shown as C{***}.  A
        kind with secrets in only part of its value (credential headers)
        leaves this false and masks that part in L{Kind.formatMasked} and
        L{Kind.maskText}.
    """

    name = "string"
    expected = "a string"
    secret = False

    def convert(self, text: str) -> Any:
        return text

    def format(self, value: Any) -> str:
        return str(value)

    def formatMasked(self, value: Any) -> str:
        """
        The text of a typed value as it is shown: L{Kind.format} with its
        secrets replaced by C{***}.
        """
        return SECRET_MASK if self.secret else self.format(value)

    def maskText(self, text: str) -> str:
        """
        The text a user gave, as an error message may show it: secrets
        replaced by C{***} (the text may be malformed).
        """
        return SECRET_MASK if self.secret else text

    def cutSecret(self, text: str) -> bool:
        """
        Whether the text a user gave for this kind may have been cut short
        at an unescaped colon just before part of a secret (which the
        tokenizer then took for the next positional value): error messages
        then show those following values as C{***}.
        """
        return self.secret


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
        return formatSeconds(value)


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
    The typed value is a L{endpointkit._schema.Parsed}, made by the parser
    that L{endpointkit._schema.parseArguments} is given (this layer does not
    look types up); the endpoint is built with the wrapper.
    """

    name = "description"

    def __init__(self, side: Side) -> None:
        self.side = side
        self.expected = f"a {side} endpoint description"

    def convert(self, text: str) -> Any:
        raise TypeError("a nested description is parsed by parseArguments")

    def format(self, value: Any) -> str:
        return str(value.description())


class Rest(Nested):
    """
    The rest of the description is an inner description (Twisted's
    C{haproxy:} grammar).  Only Twisted's own wrappers use this.
    """

    name = "rest"
