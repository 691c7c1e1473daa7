"""
The C{endpointkit} command: C{types}, C{check}, C{doctor} and C{relay}, and
C{--version}.

C{check} parses a description and prints what it means; it warns (on
standard error) about every insecure setting, and exits with status 1 for
one only under C{--strict}.  C{check --build} also builds the endpoint,
without listening or connecting, and runs the probe each type declares
(L{endpointkit._schema.EndpointType.probe}), so that a missing certificate,
directory or descriptor is reported with the error it would give at run
time.  Status 2: the description is wrong, or would fail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from endpointkit._grammar import SIDES, DescriptionError, Side
from endpointkit._lookup import parseDescription
from endpointkit._schema import Arg, EndpointType, Parsed, formatValue

PROGRAM = "endpointkit"


def _argKind(arg: Arg) -> str:
    kind = arg.kind.name
    if arg.kind.name == "enum":
        kind += "(" + "|".join(getattr(arg.kind, "choices", ())) + ")"
    if arg.kind.name in ("description", "rest"):
        kind = f"{getattr(arg.kind, 'side', '')} description"
    return kind + ("..." if arg.variadic else "")


def _default(arg: Arg) -> str | None:
    if arg.required or arg.default is None:
        return None
    return formatValue(arg, arg.default, masked=True)


def _argSummary(arg: Arg) -> dict[str, Any]:
    return {
        "name": arg.name,
        "kind": _argKind(arg),
        "required": arg.required,
        "positional": arg.positional or arg.variadic,
        "default": _default(arg),
        "secret": arg.kind.secret,
        "help": arg.help,
    }


def typeSummaries() -> list[dict[str, Any]]:
    """
    Every endpoint type this Python can resolve, as plain data.
    """
    from endpointkit._lookup import allTypes

    summaries = []
    for found in allTypes():
        etype = found.type
        summaries.append({
            "prefix": found.prefix,
            "side": found.side,
            "provider": found.provider,
            "help": etype.help if etype else _pluginHelp(found.plugin),
            "arguments": [_argSummary(a) for a in etype.args] if etype else None,
        })
    return summaries


def _pluginHelp(plugin: Any) -> str:
    doc = (type(plugin).__doc__ or "").strip().splitlines()
    return doc[0].strip() if doc else ""


def _usage(etype: EndpointType) -> str:
    parts = [etype.prefix]
    for arg in etype.args:
        if arg.variadic:
            parts.append(f"{arg.name.upper()}...")
        elif arg.positional and arg.required:
            parts.append(arg.name.upper())
        elif arg.required:
            parts.append(f"{arg.name}=...")
    return ":".join(parts)


def _printTypes(out: TextIO) -> None:
    for item in typeSummaries():
        out.write(f"{item['prefix']}  ({item['side']}, {item['provider']})  {item['help']}\n")
        if item["arguments"] is None:
            out.write("    arguments not declared: the plugin parses them itself\n")
            continue
        for arg in item["arguments"]:
            flags = ["required" if arg["required"] else f"default {arg['default']}"
                     if arg["default"] is not None else "optional"]
            if arg["positional"]:
                flags.append("positional")
            out.write(f"    {arg['name']}: {arg['kind']} [{', '.join(flags)}]  {arg['help']}\n")


def _simpleTable(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "  ".join("=" * w for w in widths)

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return [rule, line(rows[0]), rule, *map(line, rows[1:]), rule]


def readmeTable() -> str:
    """
    The README's tables of endpointkit's types, made from their
    declarations: one line per type, then each type's arguments.
    """
    from endpointkit._lookup import ourTypes

    types = [etype for side in SIDES for _, etype in sorted(ourTypes(side).items())]
    lines = _simpleTable([("type", "side", "form", "what it is")] + [
        (f"``{t.prefix}:``", t.side, f"``{_usage(t)}``", t.help) for t in types])
    for etype in types:
        title = f"``{etype.prefix}:`` ({etype.side})"
        lines += ["", title, "~" * len(title), "", f"``{_usage(etype)}``: {etype.help}.", ""]
        rows = [("argument", "kind", "default", "meaning")]
        for arg in etype.args:
            default = "required" if arg.required else _shownDefault(arg)
            where = " (positional)" if arg.positional or arg.variadic else ""
            rows.append((f"``{arg.name}``{where}", _argKind(arg), default, arg.help))
        lines += _simpleTable(rows)
    return "\n".join(lines) + "\n"


def _shownDefault(arg: Arg) -> str:
    if arg.kind.name == "bool" and not arg.required and arg.default is not None:
        return "yes" if arg.default else "no"
    return _default(arg) or "none"


def _describe(parsed: Parsed, out: TextIO, indent: str = "") -> None:
    etype = parsed.type
    provider = etype.provider if etype else "third-party plugin"
    out.write(f"{parsed.side} {parsed.prefix}  ({provider})\n")
    if etype is None:
        for value in parsed.rawArgs:
            out.write(f"{indent}  {value!r}\n")
        for key, value in parsed.rawKwargs:
            out.write(f"{indent}  {key} = {value!r}\n")
        return
    for arg in etype.args:
        value = parsed.values[arg.name]
        note = "" if arg.name in parsed.given else "  (default)"
        out.write(f"{indent}  {arg.name} = ")
        if isinstance(value, Parsed):
            _describe(value, out, indent + "    ")
        elif isinstance(value, tuple) and value and isinstance(value[0], Parsed):
            out.write(f"{len(value)} descriptions\n")
            for member in value:
                out.write(f"{indent}    - ")
                _describe(member, out, indent + "      ")
        elif arg.kind.secret and value is not None:
            out.write(f"***{note}\n")
        else:
            out.write(f"{value!r}{note}\n")
    if etype.notes is not None:
        for line in etype.notes(parsed.values):
            out.write(f"{indent}  -> {line}\n")


def _buildError(text: str, parsed: Parsed, error: Exception) -> str:
    """
    The one-line error that C{error}, raised while building or probing
    C{parsed}, gives at run time: a L{DescriptionError} as
    C{serverFromString} or C{clientFromString} raises it, a failure to
    listen as L{endpointkit.listen} explains it.
    """
    if isinstance(error, DescriptionError):
        return str(error)
    if parsed.side == "server":
        from endpointkit.lifecycle.diagnosis import explainListenFailure

        shown = str(parsed) if str(parsed) != parsed.description() else text
        unixPath = str(parsed.values["address"]) if parsed.prefix == "unix" else None
        explained = explainListenFailure(error, shown, unixPath)
        if explained is not None:
            return str(explained)
    return f"{parsed.prefix}: cannot build this endpoint: {error}"


def _check(description: str, sides: Sequence[Side], out: TextIO, err: TextIO,
           strict: bool = False, build: bool = False) -> int:
    parsed: list[Parsed] = []
    errors: list[DescriptionError] = []
    for side in sides:
        try:
            parsed.append(parseDescription(description, side))
        except DescriptionError as e:
            errors.append(e)
    if not parsed:
        chosen = next((e for e in errors if not str(e).startswith("unknown ")), errors[0])
        err.write(f"{PROGRAM}: {chosen}\n")
        return 2
    status = 0
    for result in parsed:
        out.write(f"{result}\n  ")
        _describe(result, out, "  ")
        for warning in result.warnings():
            err.write(f"{PROGRAM}: warning: {warning}\n")
            if strict:
                status = max(status, 1)
        if build:
            from twisted.internet import reactor

            try:
                result.probe(reactor)
            except Exception as e:
                err.write(f"{PROGRAM}: {_buildError(description, result, e)}\n")
                status = 2
    return status


def versionText() -> str:
    """
    The versions of endpointkit, Twisted and Python, on one line.
    """
    import platform

    import twisted

    import endpointkit

    return (f"{PROGRAM} {endpointkit.__version__} (Twisted {twisted.__version__}, "
            f"{platform.python_implementation()} {platform.python_version()})")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    """
    Run the command; return its exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    err = err or sys.stderr
    if args and args[0] == "relay":
        from endpointkit._relaycli import main as relayMain

        return relayMain(args[1:])
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="More kinds of Twisted endpoint, and their tools.")
    parser.add_argument("--version", action="store_true",
                        help="print the versions of endpointkit, Twisted and Python")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    types = commands.add_parser("types", help="list every endpoint type this Python can resolve")
    types.add_argument("--json", action="store_true", help="print JSON")
    types.add_argument("--rst", action="store_true", help="print the README table of endpointkit's types")
    check = commands.add_parser("check", help="parse a description without connecting or listening")
    side = check.add_mutually_exclusive_group()
    side.add_argument("--client", action="store_true", help="parse as a client description")
    side.add_argument("--server", action="store_true", help="parse as a server description")
    check.add_argument("--strict", action="store_true",
                       help="exit with status 1 when the description has an insecure setting")
    check.add_argument("--build", action="store_true",
                       help="also build the endpoint, without listening or connecting, so that "
                       "missing files, directories and descriptors are reported")
    check.add_argument("description")
    commands.add_parser("doctor", help="check that Twisted finds endpointkit's plugins")
    commands.add_parser("relay", help="relay connections from a server to a client description "
                        "(endpointkit relay --help)")
    options = parser.parse_args(args)
    if options.version:
        out.write(versionText() + "\n")
        return 0
    if options.command is None:
        parser.error("a command is required (types, check, doctor or relay)")
    if options.command == "types":
        if options.rst:
            out.write(readmeTable())
        elif options.json:
            json.dump(typeSummaries(), out, indent=2)
            out.write("\n")
        else:
            _printTypes(out)
        return 0
    if options.command == "check":
        sides: tuple[Side, ...] = (
            ("client",) if options.client else ("server",) if options.server else SIDES)
        return _check(options.description, sides, out, err, strict=options.strict,
                      build=options.build)
    from endpointkit._doctor import doctor

    return doctor(out)


def run() -> None:
    """
    The console script's entry point.
    """
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        os._exit(0)
