"""Safe YAML loading that keeps the position of every node.

Owns: reading a file (size cap, strict UTF-8), composing YAML with PyYAML's safe loader,
refusing duplicate keys (YAML says they are an error; PyYAML silently keeps the last),
refusing alias bombs before expanding them, and turning node graphs into plain Python data
with a map from every data path to its line and column.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from billing_reconciler.desired.diagnostics import Diagnostic, Severity, make

MAX_FILE_BYTES: Final[int] = 2 * 1024 * 1024
# Upper bound on the nodes a document may expand to once aliases are followed. A real catalog
# is a few thousand nodes; a "billion laughs" document is billions.
MAX_EXPANDED_NODES: Final[int] = 1_000_000

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One YAML document: its plain data and where each part of it was written."""

    path: str
    data: Any
    values: Mapping[Loc, Position] = field(repr=False)
    keys: Mapping[Loc, Position] = field(repr=False)

    def position(self, loc: Loc, *, key: bool = False) -> Position:
        """Position of the node at `loc` (or of its key), else of its nearest known parent."""
        if key and loc in self.keys:
            return self.keys[loc]
        for end in range(len(loc), -1, -1):
            found = self.values.get(loc[:end])
            if found is not None:
                return found
        return Position(1, 1)

    def diagnostic(
        self, loc: Loc, message: str, *, key: bool = False, severity: Severity = "error"
    ) -> Diagnostic:
        """A diagnostic pointing at the node at `loc`."""
        where = self.position(loc, key=key)
        return make(severity, self.path, line=where.line, column=where.column, message=message)


class _RefusedInput(Exception):
    """Input we decline to turn into data (duplicate key, alias bomb, ...), with a position."""

    def __init__(self, node: Node, message: str) -> None:
        super().__init__(message)
        self.mark = node.start_mark
        self.message = message


def load_yaml_file(file: Path, display: str) -> tuple[list[SourceDocument], list[Diagnostic]]:
    """Every document of `file`, or the diagnostics explaining why it cannot be read."""
    try:
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            mib = size / (1024 * 1024)
            return [], [
                make(
                    "error",
                    display,
                    message=f"file is {mib:.1f} MiB, larger than the "
                    f"{MAX_FILE_BYTES // (1024 * 1024)} MiB limit for a desired-state file",
                )
            ]
        raw = file.read_bytes()
    except OSError as exc:
        return [], [make("error", display, message=f"cannot read file: {exc.strerror}")]
    text, problem = _decode(raw, display)
    if problem is not None:
        return [], [problem]
    return parse_yaml_text(text, display)


def parse_yaml_text(text: str, display: str) -> tuple[list[SourceDocument], list[Diagnostic]]:
    """Every document of `text`; one diagnostic (with position) if it cannot be parsed."""
    documents: list[SourceDocument] = []
    try:
        for node in _compose_all(text):
            documents.append(_to_document(node, display))
    except yaml.MarkedYAMLError as exc:
        return [], [_syntax_diagnostic(exc, display)]
    except _RefusedInput as exc:
        line, column = exc.mark.line + 1, exc.mark.column + 1
        return [], [make("error", display, line=line, column=column, message=exc.message)]
    except RecursionError:
        return [], [make("error", display, message="YAML nesting is too deep to load")]
    return documents, []


def _decode(raw: bytes, display: str) -> tuple[str, Diagnostic | None]:
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        message = f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8"
        return "", make("error", display, line=line, column=column, message=message)


def _compose_all(text: str) -> Iterator[Node]:
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield node
    finally:
        loader.dispose()


def _syntax_diagnostic(exc: yaml.MarkedYAMLError, display: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    if exc.context_mark is not None and "<stream end>" in (exc.problem or ""):
        # An unclosed bracket or quote is only noticed at the end of the file; the place
        # where it was opened is what the user has to fix.
        mark = exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or "invalid YAML"
    if "'\\t'" in problem:
        message = "tab character: YAML indentation must use spaces, not tabs"
    else:
        context = f" ({exc.context})" if exc.context else ""
        message = f"YAML syntax error: {problem}{context}"
    return make("error", display, line=line, column=column, message=message)


def _to_document(root: Node, display: str) -> SourceDocument:
    _refuse_alias_bombs(root)
    builder = _Builder()
    data = builder.build(root, ())
    return SourceDocument(display, data, builder.values, builder.keys)


def _refuse_alias_bombs(root: Node) -> None:
    """Count the nodes `root` expands to, visiting each distinct node once (no expansion)."""
    sizes: dict[int, int] = {}

    def size(node: Node, ancestors: frozenset[int]) -> int:
        ident = id(node)
        if ident in ancestors:
            raise _RefusedInput(node, "recursive YAML alias (a node contains itself)")
        if ident in sizes:
            return sizes[ident]
        inner = ancestors | {ident}
        total = 1 + sum(size(child, inner) for child in _children(node))
        if total > MAX_EXPANDED_NODES:
            raise _RefusedInput(
                node,
                f"document expands to more than {MAX_EXPANDED_NODES:,} nodes through YAML "
                "aliases (an alias bomb); refusing to load it",
            )
        sizes[ident] = total
        return total

    size(root, frozenset())


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value


class _Builder:
    """Turns a node graph into plain data, recording positions of values and keys."""

    def __init__(self) -> None:
        self.values: dict[Loc, Position] = {}
        self.keys: dict[Loc, Position] = {}
        self._constructor = yaml.SafeLoader("")

    def build(self, node: Node, loc: Loc) -> Any:
        self.values[loc] = _position(node)
        if isinstance(node, MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*loc, index)) for index, item in enumerate(node.value)]
        return self._constructor.construct_object(node, deep=True)

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _key_text(key_node)
            child = (*loc, key)
            if key in result:
                first = self.keys[child]
                raise _RefusedInput(
                    key_node,
                    f"duplicate key '{key}' (first written at line {first.line}); "
                    "YAML keys must be unique",
                )
            self.keys[child] = _position(key_node)
            result[key] = self.build(value_node, child)
        return result


def _key_text(node: Node) -> str:
    if not isinstance(node, ScalarNode):
        raise _RefusedInput(node, "mapping keys must be plain text, not lists or mappings")
    if node.tag == "tag:yaml.org,2002:merge":
        raise _RefusedInput(node, "YAML merge keys (<<) are not supported; write the keys out")
    # The key's source text, not its YAML 1.1 reading: `on:` stays "on" instead of True.
    return str(node.value)


def _position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)
