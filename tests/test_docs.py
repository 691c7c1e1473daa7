"""
The documentation cannot rot: every description shown in README.rst and
docs/ parses for its side, every Python example runs, the tables of types
are the ones the declarations make, and every page is in the table of
contents.
"""

from __future__ import annotations

import doctest
import glob
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from twisted.trial.unittest import TestCase

from endpointkit import DescriptionError, parseDescription
from endpointkit.cli import readmeTable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")

_DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. code-block:: *(?P<language>\S+) *$")
_OPTION = re.compile(r"^ +:(?P<name>[a-z-]+):(?P<value>.*)$")

# A code block's class says what its lines are: one description per line,
# for a side.
_SIDES = {"client-descriptions": "client", "server-descriptions": "server"}


@dataclass
class Block:
    """
    One code block of a page: where it starts, its language, options and
    text (dedented).
    """

    path: str
    line: int
    language: str
    options: dict[str, str]
    text: str

    @property
    def where(self) -> str:
        return f"{os.path.relpath(self.path, REPO)}:{self.line}"


def pages() -> list[str]:
    """
    README.rst and every page under docs/.
    """
    return [os.path.join(REPO, "README.rst"),
            *sorted(glob.glob(os.path.join(DOCS, "**", "*.rst"), recursive=True))]


def codeBlocks(path: str) -> list[Block]:
    """
    The C{code-block} directives of one reStructuredText page.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if match is None:
            i += 1
            continue
        start = i + 1
        indent = len(match.group("indent"))
        options = {}
        i += 1
        while i < len(lines) and (option := _OPTION.match(lines[i])):
            options[option.group("name")] = option.group("value").strip()
            i += 1
        body = []
        while i < len(lines) and (not lines[i].strip() or
                                  len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        text = "\n".join(body).strip("\n")
        margin = min((len(line) - len(line.lstrip()) for line in text.split("\n")
                      if line.strip()), default=0)
        text = "\n".join(line[margin:] for line in text.split("\n"))
        blocks.append(Block(path, start, match.group("language"), options, text))
    return blocks


def allBlocks() -> list[Block]:
    return [block for page in pages() for block in codeBlocks(page)]


class DescriptionExampleTests(TestCase):
    """
    Every description in a block marked C{client-descriptions} or
    C{server-descriptions} parses for that side.
    """

    def test_everyDescriptionParses(self) -> None:
        checked = 0
        for block in allBlocks():
            sides = [_SIDES[c] for c in block.options.get("class", "").split() if c in _SIDES]
            for side in sides:
                for offset, line in enumerate(block.text.split("\n")):
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    try:
                        parseDescription(line, side)  # type: ignore[arg-type]
                    except DescriptionError as e:
                        self.fail(f"{block.where}+{offset}: {side} description {line!r}: {e}")
                    checked += 1
        self.assertGreater(checked, 20)

    def test_relayExamplesParse(self) -> None:
        """
        In a block marked C{relay-examples}, each C{endpointkit relay LISTEN
        CONNECT} line names a server and a client description that parse.
        """
        import shlex

        checked = 0
        for block in allBlocks():
            if "relay-examples" not in block.options.get("class", "").split():
                continue
            for line in block.text.split("\n"):
                words = shlex.split(line, comments=True)
                if not words:
                    continue
                if words[:2] == ["endpointkit", "relay"]:
                    positional = [w for w in words[2:] if not w.startswith("--")]
                    listen, connect = positional[0], positional[1]
                elif words[0] == "twistd":
                    listen = words[words.index("--listen") + 1]
                    connect = words[words.index("--connect") + 1]
                else:
                    self.fail(f"{block.where}: not a relay command: {line!r}")
                parseDescription(listen, "server")
                parseDescription(connect, "client")
                checked += 1
        self.assertGreater(checked, 5)


class PythonExampleTests(TestCase):
    """
    Every Python example runs: one with C{>>>} prompts as a doctest, any
    other as a script of its own.
    """

    def test_doctests(self) -> None:
        parser = doctest.DocTestParser()
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        ran = 0
        namespaces: dict[str, dict[str, object]] = {}
        for block in allBlocks():
            if block.language != "python" or ">>>" not in block.text:
                continue
            # The examples of one page share a namespace, as a doctest file's do.
            namespace = namespaces.setdefault(block.path, {})
            test = parser.get_doctest(block.text, namespace, block.where, block.path,
                                      block.line)
            result = runner.run(test, out=lambda text: None, clear_globs=False)
            namespace.update(test.globs)
            self.assertEqual(result.failed, 0, f"{block.where}: a doctest example failed "
                             f"(run python -m doctest on the block to see it)")
            ran += result.attempted
        self.assertGreater(ran, 3)

    def test_scripts(self) -> None:
        ran = 0
        for block in allBlocks():
            if block.language != "python" or ">>>" in block.text:
                continue
            with tempfile.TemporaryDirectory(dir="/tmp") as folder:
                result = subprocess.run(
                    [sys.executable, "-c", block.text], cwd=folder, capture_output=True,
                    text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO})
            self.assertEqual(result.returncode, 0,
                             f"{block.where}: the example exited {result.returncode}:\n"
                             f"{result.stderr[-2000:]}")
            ran += 1
        self.assertGreater(ran, 3)


class GeneratedTableTests(TestCase):
    """
    The tables of types in README.rst and docs/types.rst are the ones the
    declarations make (C{endpointkit types --rst}).
    """

    def assertTableCurrent(self, path: str) -> None:
        with open(path, encoding="utf-8") as f:
            page = f.read()
        start = page.index(".. types-table-start\n") + len(".. types-table-start\n")
        end = page.index(".. types-table-end")
        self.assertEqual(page[start:end].strip("\n"), readmeTable().strip("\n"),
                         f"{path} is stale: paste `endpointkit types --rst` between its markers")

    def test_readme(self) -> None:
        self.assertTableCurrent(os.path.join(REPO, "README.rst"))

    def test_docs(self) -> None:
        self.assertTableCurrent(os.path.join(DOCS, "types.rst"))


class TableOfContentsTests(TestCase):
    """
    Every page under docs/ is reachable from the index.
    """

    def test_everyPageListed(self) -> None:
        with open(os.path.join(DOCS, "index.rst"), encoding="utf-8") as f:
            index = f.read()
        listed = set(re.findall(r"^   (\S+)$", index, re.M))
        for page in glob.glob(os.path.join(DOCS, "**", "*.rst"), recursive=True):
            name = os.path.relpath(page, DOCS)[:-len(".rst")]
            if name != "index":
                self.assertIn(name, listed, f"docs/{name}.rst is not in index.rst's toctree")
