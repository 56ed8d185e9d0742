"""YAML read with the position of every key and list item (docs/design.md, "Configuration").

PyYAML's node API gives each key and list item a ``FILE:LINE:COLUMN``; this
module turns the nodes of one file into plain data plus a map from key path
to position (:class:`Doc`), refusing what PyYAML would silently accept or
what could exhaust memory: duplicate keys in one mapping, unknown tags,
recursive aliases, alias bombs (more than ``MAX_NODES`` values), nesting
deeper than ``MAX_DEPTH``, files over ``MAX_FILE_BYTES`` and text that is not
UTF-8. Merge keys (``<<: *anchor``) work as in YAML 1.1.

:class:`Report` collects the problems found while loading, each located
through the position map of the merged configuration, and
:func:`format_path` shows a key path the way problems name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from canaryd.config.flaggermap import KeyPath
from canaryd.errors import Problem

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_NODES = 500_000
MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Loc:
    """Where a value was written: file, 1-based line and column, and its path in that file."""

    file: str
    line: int
    column: int
    path: KeyPath

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass
class Doc:
    """One YAML document with the position of every key and list item."""

    file: str
    data: Any
    locs: dict[KeyPath, Loc]
    main: bool
    includes: list[str] = field(default_factory=list)
    bad: set[KeyPath] = field(default_factory=set)

    def locate(self, path: KeyPath) -> Loc:
        """The position of ``path``, or of its nearest written ancestor."""
        found = _nearest(self.locs, path)
        return Loc(self.file, 1, 1, ()) if found is None else found[0]


@dataclass
class Report:
    """Problems found so far, and where each key path of the merged configuration was written.

    Attributes:
        main_file: the main configuration file (the position of last resort).
        problems: every problem recorded, in the order found.
        locs: the position of each merged key path that was written somewhere.
        suppress: merged key paths whose values are unusable, so that model
            errors at or below them are moot.
    """

    main_file: str
    problems: list[Problem] = field(default_factory=list)
    locs: dict[KeyPath, Loc] = field(default_factory=dict)
    suppress: set[KeyPath] = field(default_factory=set)

    def at(self, loc: Loc, path: KeyPath, message: str) -> None:
        """Record a problem at a known position; ``path`` is shown as the key path."""
        self.problems.append(Problem(loc.file, loc.line, loc.column, format_path(path), message))

    def in_doc(self, doc: Doc, path: KeyPath, message: str) -> None:
        """Record a problem at ``path`` inside one document."""
        self.at(doc.locate(path), path, message)

    def locate(self, gpath: KeyPath) -> tuple[Loc, KeyPath]:
        """The position of a merged key path and the path to show for it."""
        found = _nearest(self.locs, gpath)
        if found is None:
            return Loc(self.main_file, 1, 1, ()), gpath
        loc, end = found
        return loc, loc.path + gpath[end:]

    def problem(self, gpath: KeyPath, message: str) -> None:
        """Record a problem at a merged key path."""
        loc, shown = self.locate(gpath)
        self.at(loc, shown, message)

    def where(self, gpath: KeyPath) -> str:
        """``FILE:LINE:COLUMN`` of a merged key path."""
        return str(self.locate(gpath)[0])


def _nearest(locs: dict[KeyPath, Loc], path: KeyPath) -> tuple[Loc, int] | None:
    """The position of ``path`` or of its nearest ancestor in ``locs``, and its length."""
    for end in range(len(path), -1, -1):
        loc = locs.get(path[:end])
        if loc is not None:
            return loc, end
    return None


def format_path(path: KeyPath) -> str:
    """``("canaries", 0, "analysis")`` -> ``canaries[0].analysis`` (``<root>`` when empty)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def got(value: Any) -> str:
    """A short description of a value for "(got ...)"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        text = str(value)
        return text if len(text) <= 24 else f"a number of {len(text)} digits"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bytes):
        return "binary data"
    return f"a {type(value).__name__}"


# --------------------------------------------------------------------------- reading


class _TooLargeError(Exception):
    """The document expands to more than MAX_NODES values (alias bombs)."""


class _Reader:
    """Turns composed YAML nodes into plain data, recording positions and problems."""

    def __init__(self, file: str, report: Report) -> None:
        self.file = file
        self.report = report
        self.locs: dict[KeyPath, Loc] = {}
        self._constructor = yaml.constructor.SafeConstructor()
        self._nodes = 0
        self._active: set[int] = set()
        self.bad: set[KeyPath] = set()

    def document(self, node: yaml.Node, main: bool) -> Doc:
        """Convert one document; its top level must be a mapping (or empty)."""
        self.locs = {(): self._loc(node, ())}
        self.bad = set()
        data = self._value(node, (), 0)
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            self._problem(node, (), f"the top level must be a mapping of keys (got {got(data)})")
            data = {}
        return Doc(self.file, data, self.locs, main, bad=self.bad)

    def _loc(self, node: yaml.Node, path: KeyPath) -> Loc:
        mark = node.start_mark
        return Loc(self.file, mark.line + 1, mark.column + 1, path)

    def _problem(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        """Record a problem; the value at ``path`` is unusable, so model errors there are moot."""
        self.report.at(self._loc(node, path), path, message)
        self.bad.add(path)

    def _value(self, node: yaml.Node, path: KeyPath, depth: int) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _TooLargeError
        if depth > MAX_DEPTH:
            self._problem(node, path, f"nested more than {MAX_DEPTH} levels deep")
            return None
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            self._problem(node, path, "an alias refers to a value that contains it")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode) and node.tag == "tag:yaml.org,2002:seq":
                return self._sequence(node, path, depth)
            if isinstance(node, yaml.MappingNode) and node.tag == "tag:yaml.org,2002:map":
                return self._mapping(node, path, depth)
            self._problem(node, path, f"unsupported tag {node.tag}")
            return None
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            self._problem(node, path, f"unsupported tag {node.tag}")
        except (ValueError, TypeError, OverflowError, yaml.YAMLError):
            self._problem(node, path, f"invalid value {node.value!r} for tag {node.tag}")
        return None

    def _sequence(self, node: yaml.SequenceNode, path: KeyPath, depth: int) -> list[Any]:
        out = []
        for i, item in enumerate(node.value):
            self.locs[(*path, i)] = self._loc(item, (*path, i))
            out.append(self._value(item, (*path, i), depth + 1))
        return out

    def _mapping(self, node: yaml.MappingNode, path: KeyPath, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._merge_key(value_node, path, depth, out)
        first: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem(key_node, path, "a key must be a string, not a mapping or a list")
                continue
            key = str(key_node.value)
            here = (*path, key)
            if key in first:
                line = first[key].start_mark.line + 1
                self._problem(
                    key_node, here, f"duplicate key {key!r} (first on line {line}); remove one"
                )
            first[key] = key_node
            self.locs[here] = self._loc(key_node, here)
            out[key] = self._value(value_node, here, depth + 1)
        return out

    def _merge_key(self, node: yaml.Node, path: KeyPath, depth: int, out: dict[str, Any]) -> None:
        """``<<: *a`` or ``<<: [*a, *b]``: earlier sources win, explicit keys win over all."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                self._problem(node, path, "a merge key (<<) needs a mapping or a list of mappings")
                return
            out.update(self._value(source, path, depth) or {})


def _read_text(file: str, report: Report) -> str | None:
    """The file's text, or ``None`` after recording why it cannot be read."""
    try:
        with open(file, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        report.at(Loc(file, 0, 0, ()), ("<file>",), f"cannot read: {exc.strerror or exc}")
        return None
    if len(data) > MAX_FILE_BYTES:
        report.at(Loc(file, 0, 0, ()), ("<file>",), f"larger than {MAX_FILE_BYTES} bytes")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start]
        report.at(Loc(file, line, column, ()), ("<file>",), f"not UTF-8 text (byte 0x{byte:02x})")
        return None


def read_file(file: str, report: Report, main: bool) -> tuple[list[Doc], bool]:
    """Every YAML document of one file (those before a syntax error are kept).

    Problems are recorded in ``report``; ``main`` marks the main configuration file.

    Returns:
        The documents, and whether the whole file could be read.
    """
    text = _read_text(file, report)
    if text is None:
        return [], False
    reader = _Reader(file, report)
    docs: list[Doc] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            docs.append(reader.document(node, main))
    except yaml.YAMLError as exc:
        line, column, message = _yaml_error(exc, text)
        report.at(Loc(file, line, column, ()), ("<yaml>",), message)
    except RecursionError:
        report.at(Loc(file, 0, 0, ()), ("<yaml>",), "nested too deeply")
    except _TooLargeError:
        report.at(Loc(file, 0, 0, ()), ("<yaml>",), f"expands to more than {MAX_NODES} values")
    else:
        return docs, True
    return docs, False


def _yaml_error(exc: yaml.YAMLError, text: str) -> tuple[int, int, str]:
    """Line, column and a readable message for a PyYAML error."""
    if isinstance(exc, yaml.reader.ReaderError):
        pos = exc.position
        line = text.count("\n", 0, pos) + 1
        column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        return line, column, f"not a text file: character #x{exc.character:04x} is not allowed"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if "'\\t'" in problem:
            problem = "a tab character cannot indent YAML; use spaces"
        elif exc.context:
            problem = f"{problem} ({exc.context})"
        if mark is None:
            return 0, 0, problem
        return mark.line + 1, mark.column + 1, problem
    return 0, 0, str(exc)
