"""Load, merge and validate the configuration file (DESIGN section 3).

:func:`load_config` reads the main YAML file and its ``include:`` globs, maps
Flagger manifests (:mod:`canaryd.flagger`), overlays ``CANARYD_*`` environment
variables, checks cross references, and validates everything with the models
of :mod:`canaryd.config`. It reports *every* problem at once, each located as
``FILE:LINE:COLUMN: key.path: message``, and never lets a traceback through.

Decisions worth knowing:

- YAML is read with PyYAML's node API so each key and list item has a position;
  the key path shown is the path *inside the file that holds it* (an included
  file's first canary is ``canaries[0]``; a Flagger ``Canary``'s threshold is
  ``spec.analysis.threshold``). Problems about a whole file use the key paths
  ``<file>`` (cannot read), ``<yaml>`` (syntax) and ``<root>`` (top level).
- An empty file (or one holding only comments) is a valid configuration with
  every default and no canaries. A top level that is not a mapping is a problem.
- Duplicate keys in one mapping are problems (PyYAML would silently keep the
  last). Merge keys (``<<: *anchor``) work as in YAML 1.1.
- ``include`` takes a list of globs (or one glob), relative to the including
  file; a file reached twice without a cycle is read once. Scalar settings
  (``listen``, ``api``, ...) may appear in the main file only.
- Relative ``*_file`` paths are resolved against the file that names them.
- Environment values (``CANARYD_PROVIDERS__PROM__ADDRESS``) override the file;
  their problems are located at ``<env>:0:0``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeGuard, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import EnvSettingsSource, PydanticBaseSettingsSource, SettingsError
from pydantic_settings.sources.utils import parse_env_vars

from canaryd import flagger
from canaryd.config import Settings, read_secret
from canaryd.errors import ConfigError, Problem
from canaryd.flagger import KeyPath, did_you_mean, is_manifest, unknown_key
from canaryd.templates import BUILTIN_METRICS

ENV_FILE = "<env>"
"""The ``file`` of problems caused by environment variables."""

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_NODES = 500_000
MAX_DEPTH = 64
_SECTIONS = {
    "providers": "provider",
    "routers": "router",
    "notifiers": "notifier",
    "templates": "template",
}
_NOT_SECRETS = frozenset({"headers", "match", "metadata", "templateVariables", "variables"})


@dataclass(frozen=True)
class Loaded:
    """A valid configuration and what was learnt while loading it.

    Attributes:
        settings: the validated configuration.
        warnings: things worth telling the operator that are not errors (at most
            one: the Kubernetes-only fields of Flagger manifests that were ignored).
        files: every file read, the main file first.
    """

    settings: Settings
    warnings: list[str]
    files: list[str]


@dataclass(frozen=True, slots=True)
class _Loc:
    """Where a value was written: file, 1-based line and column, and its path in that file."""

    file: str
    line: int
    column: int
    path: KeyPath

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass
class _Doc:
    """One YAML document with the position of every key and list item."""

    file: str
    data: Any
    locs: dict[KeyPath, _Loc]
    main: bool
    includes: list[str] = field(default_factory=list)
    bad: set[KeyPath] = field(default_factory=set)

    def locate(self, path: KeyPath) -> _Loc:
        """The position of ``path``, or of its nearest written ancestor."""
        for end in range(len(path), -1, -1):
            loc = self.locs.get(path[:end])
            if loc is not None:
                return loc
        return _Loc(self.file, 1, 1, ())


@dataclass
class _Pending:
    """A mapped Flagger manifest whose router/provider references are resolved after merging."""

    prefix: KeyPath
    mapped: flagger.Mapped
    doc: _Doc


@dataclass
class _Context:
    """Everything gathered while loading: problems, positions (by merged key path), files."""

    main_file: str
    problems: list[Problem] = field(default_factory=list)
    locs: dict[KeyPath, _Loc] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    ignored: list[tuple[str, str, list[str]]] = field(default_factory=list)
    suppress: set[KeyPath] = field(default_factory=set)
    pending: list[_Pending] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    broken: bool = False

    def at(self, loc: _Loc, path: KeyPath, message: str) -> None:
        """Record a problem at a known position; ``path`` is shown as the key path."""
        self.problems.append(Problem(loc.file, loc.line, loc.column, format_path(path), message))

    def in_doc(self, doc: _Doc, path: KeyPath, message: str) -> None:
        """Record a problem at ``path`` inside one document."""
        self.at(doc.locate(path), path, message)

    def locate(self, gpath: KeyPath) -> tuple[_Loc, KeyPath]:
        """The position of a merged key path and the path to show for it."""
        for end in range(len(gpath), -1, -1):
            loc = self.locs.get(gpath[:end])
            if loc is not None:
                return loc, loc.path + gpath[end:]
        return _Loc(self.main_file, 1, 1, ()), gpath

    def problem(self, gpath: KeyPath, message: str) -> None:
        """Record a problem at a merged key path."""
        loc, shown = self.locate(gpath)
        self.at(loc, shown, message)

    def where(self, gpath: KeyPath) -> str:
        """``FILE:LINE:COLUMN`` of a merged key path."""
        return str(self.locate(gpath)[0])


def format_path(path: KeyPath) -> str:
    """``("canaries", 0, "analysis")`` -> ``canaries[0].analysis`` (``<root>`` when empty)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


# --------------------------------------------------------------------------- public API


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Loaded:
    """Load and validate the configuration.

    Args:
        path: the main configuration file.
        environ: the environment holding ``CANARYD_*`` overrides and ``*_env``
            secrets (default: ``os.environ``); nothing else is read from it.

    Returns:
        The settings, warnings and the files read.

    Raises:
        ConfigError: listing every problem found, in file order.
    """
    env = os.environ if environ is None else environ
    ctx = _Context(main_file=str(path))
    docs = _load_tree(str(path), ctx, stack=(), seen=set(), main=True)
    raw = _merge(docs, ctx)
    _apply_env(raw, env, ctx)
    _resolve_flagger(raw, ctx)
    _resolve_relative_files(raw, ctx, env)
    if not ctx.broken:
        _check_references(raw, ctx)
    _check_secrets(raw, env, ctx)
    settings = _validate(raw, ctx)
    if ctx.problems or settings is None:
        raise ConfigError(list(dict.fromkeys(ctx.problems)))
    warning = flagger.format_ignored(ctx.ignored)
    return Loaded(settings=settings, warnings=[warning] if warning else [], files=ctx.files)


def summary(loaded: Loaded) -> str:
    """One line for ``canaryd check``: what was loaded, from how many files."""
    s = loaded.settings
    counts = [
        _plural(len(s.canaries), "canary", "canaries"),
        _plural(len(s.providers), "provider", "providers"),
        _plural(len(s.routers), "router", "routers"),
        _plural(len(s.notifiers), "notifier", "notifiers"),
        _plural(len(s.templates), "template", "templates"),
    ]
    return f"config OK: {', '.join(counts)} ({_plural(len(loaded.files), 'file', 'files')})"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# --------------------------------------------------------------------------- YAML with positions


class _TooLargeError(Exception):
    """The document expands to more than MAX_NODES values (alias bombs)."""


class _Reader:
    """Turns composed YAML nodes into plain data, recording positions and problems."""

    def __init__(self, file: str, ctx: _Context) -> None:
        self.file = file
        self.ctx = ctx
        self.locs: dict[KeyPath, _Loc] = {}
        self._constructor = yaml.constructor.SafeConstructor()
        self._nodes = 0
        self._active: set[int] = set()
        self.bad: set[KeyPath] = set()

    def document(self, node: yaml.Node, main: bool) -> _Doc:
        """Convert one document; its top level must be a mapping (or empty)."""
        self.locs = {(): self._loc(node, ())}
        self.bad = set()
        data = self._value(node, (), 0)
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            self._problem(node, (), f"the top level must be a mapping of keys (got {_got(data)})")
            data = {}
        return _Doc(self.file, data, self.locs, main, bad=self.bad)

    def _loc(self, node: yaml.Node, path: KeyPath) -> _Loc:
        mark = node.start_mark
        return _Loc(self.file, mark.line + 1, mark.column + 1, path)

    def _problem(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        """Record a problem; the value at ``path`` is unusable, so model errors there are moot."""
        self.ctx.at(self._loc(node, path), path, message)
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


def _read_text(file: str, ctx: _Context) -> str | None:
    """The file's text, or ``None`` after recording why it cannot be read."""
    try:
        with open(file, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        ctx.at(_Loc(file, 0, 0, ()), ("<file>",), f"cannot read: {exc.strerror or exc}")
        return None
    if len(data) > MAX_FILE_BYTES:
        ctx.at(_Loc(file, 0, 0, ()), ("<file>",), f"larger than {MAX_FILE_BYTES} bytes")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start]
        ctx.at(_Loc(file, line, column, ()), ("<file>",), f"not UTF-8 text (byte 0x{byte:02x})")
        return None


def _read_file(file: str, ctx: _Context, main: bool) -> list[_Doc]:
    """Every YAML document of one file (those before a syntax error are kept)."""
    ctx.files.append(file)
    text = _read_text(file, ctx)
    if text is None:
        ctx.broken = True
        return []
    reader = _Reader(file, ctx)
    docs: list[_Doc] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            docs.append(reader.document(node, main))
    except yaml.YAMLError as exc:
        ctx.broken = True
        line, column, message = _yaml_error(exc, text)
        ctx.at(_Loc(file, line, column, ()), ("<yaml>",), message)
    except RecursionError:
        ctx.broken = True
        ctx.at(_Loc(file, 0, 0, ()), ("<yaml>",), "nested too deeply")
    except _TooLargeError:
        ctx.broken = True
        ctx.at(_Loc(file, 0, 0, ()), ("<yaml>",), f"expands to more than {MAX_NODES} values")
    return docs


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


# --------------------------------------------------------------------------- includes


def _load_tree(
    file: str, ctx: _Context, stack: tuple[tuple[str, str], ...], seen: set[str], main: bool
) -> list[_Doc]:
    """The documents of ``file`` followed by those of its includes, depth first.

    ``stack`` holds ``(real path, shown path)`` of the including files (cycle
    detection); ``seen`` the real paths read so far (each file is read once).
    """
    stack = (*stack, (os.path.realpath(file), file))
    seen.add(stack[-1][0])
    out: list[_Doc] = []
    for doc in _read_file(file, ctx, main):
        out.append(doc)
        if is_manifest(doc.data) or "include" not in doc.data:
            continue
        for match in _include_matches(doc, ctx, main):
            real = os.path.realpath(match)
            if real in (r for r, _ in stack):
                chain = " -> ".join([*(shown for _, shown in stack), match])
                ctx.in_doc(doc, ("include",), f"include cycle: {chain}")
            elif real not in seen:
                out += _load_tree(match, ctx, stack, seen, main=False)
    return out


def _include_matches(doc: _Doc, ctx: _Context, main: bool) -> list[str]:
    """Files matched by the document's ``include`` globs (removed from the document)."""
    value = doc.data.pop("include")
    patterns = [value] if isinstance(value, str) else value
    if value is None:
        return []
    if not isinstance(patterns, list):
        ctx.in_doc(doc, ("include",), f"must be a list of file globs (got {_got(value)})")
        return []
    base = os.path.dirname(doc.file)
    found: list[str] = []
    for i, pattern in enumerate(patterns):
        here = ("include", i) if isinstance(value, list) else ("include",)
        if not isinstance(pattern, str) or not pattern:
            ctx.in_doc(doc, here, f"must be a file glob (got {_got(pattern)})")
            continue
        if main:
            doc.includes.append(pattern)
        full = pattern if os.path.isabs(pattern) else os.path.join(glob.escape(base), pattern)
        matches = sorted(m for m in glob.glob(full, recursive=True) if os.path.isfile(m))
        if not matches:
            where = "" if os.path.isabs(pattern) else f" (relative to {base or '.'})"
            ctx.in_doc(doc, here, f"no file matches {pattern!r}{where}")
        found += [os.path.normpath(m) for m in matches]
    return found


# --------------------------------------------------------------------------- merging


def _merge(docs: list[_Doc], ctx: _Context) -> dict[str, Any]:
    """Merge every document into one raw configuration, with positions by merged path."""
    merged: dict[str, Any] = {"canaries": []}
    for doc in docs:
        if doc.main and () not in ctx.locs:
            ctx.locs[()] = doc.locate(())
        if is_manifest(doc.data):
            _merge_manifest(doc, merged, ctx)
        else:
            _merge_doc(doc, merged, ctx)
    if not merged["canaries"]:
        del merged["canaries"]
    return merged


def _merge_doc(doc: _Doc, merged: dict[str, Any], ctx: _Context) -> None:
    """Merge one canaryd document: sections by name, canaries appended, scalars main-only."""
    moves: dict[KeyPath, KeyPath] = {}
    if doc.includes:
        merged.setdefault("include", []).extend(doc.includes)
    for key, value in doc.data.items():
        if key in _SECTIONS:
            _merge_section(doc, key, value, merged, moves, ctx)
        elif key == "canaries":
            _merge_canaries(doc, value, merged, moves, ctx)
        elif not doc.main:
            message = (
                "may only be set in the main configuration file"
                if key in Settings.model_fields
                else unknown_key(key, _SECTIONS.keys() | {"canaries", "include"})
            )
            ctx.in_doc(doc, (key,), message)
        elif key in merged:
            ctx.in_doc(doc, (key,), f"already set at {ctx.where((key,))}")
        else:
            merged[key] = value
            moves[(key,)] = (key,)
    _copy_locs(doc, moves, ctx)


def _merge_section(
    doc: _Doc,
    key: str,
    value: Any,
    merged: dict[str, Any],
    moves: dict[KeyPath, KeyPath],
    ctx: _Context,
) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        ctx.in_doc(doc, (key,), f"must be a mapping of names to {key} (got {_got(value)})")
        return
    target = merged.setdefault(key, {})
    for name, item in value.items():
        if name in target:
            where = ctx.where((key, name))
            ctx.in_doc(doc, (key, name), f"duplicate {_SECTIONS[key]} {name!r} (first at {where})")
            continue
        target[name] = item
        moves[(key, name)] = (key, name)
    moves.setdefault((key,), (key,))


def _merge_canaries(
    doc: _Doc, value: Any, merged: dict[str, Any], moves: dict[KeyPath, KeyPath], ctx: _Context
) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        ctx.in_doc(doc, ("canaries",), f"must be a list of canaries (got {_got(value)})")
        return
    for i, item in enumerate(value):
        moves[("canaries", i)] = ("canaries", len(merged["canaries"]))
        merged["canaries"].append(item)
    moves.setdefault(("canaries",), ("canaries",))


def _copy_locs(doc: _Doc, moves: dict[KeyPath, KeyPath], ctx: _Context) -> None:
    """Positions (and unusable values) of accepted document paths, re-keyed by merged path."""
    for path, loc in doc.locs.items():
        target = _globalize(path, moves)
        if target is not None:
            ctx.locs[target] = loc
    for path in doc.bad:
        target = _globalize(path, moves)
        if target is not None:
            ctx.suppress.add(target)


def _globalize(path: KeyPath, moves: dict[KeyPath, KeyPath]) -> KeyPath | None:
    """The merged path of a document path (``moves`` maps top keys and entries)."""
    for end in (2, 1):
        target = moves.get(path[:end]) if len(path) >= end else None
        if target is not None:
            return target + path[end:]
    return None


def _merge_manifest(doc: _Doc, merged: dict[str, Any], ctx: _Context) -> None:
    """Map one Flagger manifest and merge the entry it becomes."""
    mapped = flagger.map_manifest(doc.data)
    for path, message in mapped.problems:
        ctx.in_doc(doc, path, message)
    if mapped.ignored:
        ctx.ignored.append((doc.file, f"{mapped.kind}/{mapped.name}", mapped.ignored))
    if mapped.section is None or mapped.name is None:
        return
    if mapped.section == "canaries":
        prefix: KeyPath = ("canaries", len(merged["canaries"]))
        merged["canaries"].append(mapped.entry)
    else:
        section = merged.setdefault(mapped.section, {})
        if mapped.name in section:
            where = ctx.where((mapped.section, mapped.name))
            what = _SECTIONS[mapped.section]
            ctx.in_doc(
                doc, ("metadata", "name"), f"duplicate {what} {mapped.name!r} (first at {where})"
            )
            return
        section[mapped.name] = mapped.entry
        prefix = (mapped.section, mapped.name)
    _move_locs(doc, prefix, mapped.moves, ctx)
    ctx.suppress.update(prefix + path for path in mapped.suppress)
    ctx.pending.append(_Pending(prefix, mapped, doc))


def _move_locs(
    doc: _Doc, prefix: KeyPath, moves: list[tuple[KeyPath, KeyPath]], ctx: _Context
) -> None:
    """Positions of manifest subtrees for the entry subtrees they became."""
    for dst, src in moves:
        ctx.locs[prefix + dst] = doc.locate(src)
        for path, loc in doc.locs.items():
            if len(path) > len(src) and path[: len(src)] == src:
                ctx.locs[prefix + dst + path[len(src) :]] = loc


# --------------------------------------------------------------------------- environment


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' own parsing of ``CANARYD_*`` variables, from a given environment."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def _env_values(environ: Mapping[str, str], ctx: _Context) -> dict[str, Any]:
    """Settings values from ``CANARYD_*`` variables; undecodable JSON values are problems."""
    ours = {k: v for k, v in environ.items() if k.upper().startswith("CANARYD_")}
    try:
        return _EnvSource(ours)()
    except SettingsError:
        pass
    values: dict[str, Any] = {}
    for name in sorted(ours):
        try:
            values = _deep_merge(values, _EnvSource({name: ours[name]})())
        except SettingsError:
            shown = tuple(name[len("CANARYD_") :].lower().split("__"))
            ctx.at(_Loc(ENV_FILE, 0, 0, shown), shown, f"{name} must hold JSON for this key")
    return values


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        both = isinstance(old, dict) and isinstance(value, dict)
        out[key] = _deep_merge(old, value) if both else value  # type: ignore[arg-type]
    return out


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], ctx: _Context) -> None:
    """Overlay environment values on the file's (env wins), positions set to ``<env>``."""
    _overlay(raw, _env_values(environ, ctx), (), raw, ctx)


def _overlay(
    target: dict[str, Any], values: dict[str, Any], path: KeyPath, raw: Any, ctx: _Context
) -> None:
    for env_key, value in values.items():
        key = _match_key(target, env_key, path, raw)
        here = (*path, key)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _overlay(target[key], value, here, raw, ctx)
            continue
        target[key] = value
        for old in [p for p in ctx.locs if p[: len(here)] == here]:
            del ctx.locs[old]
        ctx.locs[here] = _Loc(ENV_FILE, 0, 0, here)


def _match_key(target: dict[str, Any], key: str, path: KeyPath, raw: Any) -> str:
    """The key an environment name means: environment names are case-insensitive."""
    for candidate in (*target, *_keys_of(_type_at(path, raw))):
        if isinstance(candidate, str) and candidate.lower() == key.lower():
            return candidate
    return key


# --------------------------------------------------------------------------- Flagger references


def _resolve_flagger(raw: dict[str, Any], ctx: _Context) -> None:
    """Give mapped manifests the providers and routers they leave implicit."""
    for pending in ctx.pending:
        if pending.mapped.section == "templates":
            _resolve_template(raw, pending, ctx)
    for pending in ctx.pending:
        if pending.mapped.section == "canaries":
            _resolve_canary(raw, pending, ctx)
    _default_provider(raw, ctx)


def _section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _resolve_template(raw: dict[str, Any], pending: _Pending, ctx: _Context) -> None:
    """A MetricTemplate's provider: one with the same address, else a new one."""
    mapped, here = pending.mapped, (*pending.prefix, "provider")
    if _section(raw, "templates").get(str(mapped.name)) is not mapped.entry:
        return
    providers = raw.setdefault("providers", {})
    if not isinstance(providers, dict):
        return
    if mapped.prometheus_address is None or mapped.provider_entry is None:
        name = _only(providers, "provider", "spec.provider.address", here, ctx)
    else:
        name = flagger.find_provider(providers, mapped.prometheus_address)
    if name is None and mapped.provider_entry is not None:
        name = f"{mapped.name}-provider"
        if name in providers:
            ctx.problem(here, f"provider {name!r} exists with another address; rename one")
            return
        providers[name] = mapped.provider_entry
        ctx.created.add(name)
        _move_locs(pending.doc, ("providers", name), [((), ("spec", "provider"))], ctx)
    if name is not None:
        mapped.entry["provider"] = name


def _only(
    defined: dict[str, Any], what: str, hint: str, here: KeyPath, ctx: _Context
) -> str | None:
    """The only ``what`` defined, or ``None`` after a problem asking to choose with ``hint``."""
    if len(defined) == 1:
        return str(next(iter(defined)))
    count = f"{len(defined)} {what}s are defined ({', '.join(sorted(defined))})"
    reason = f"no {what}s are defined" if not defined else count
    ctx.problem(here, f"cannot choose a {what}: {reason}; set {hint}")
    ctx.suppress.add(here)
    return None


def _candidate_providers(raw: dict[str, Any], ctx: _Context) -> list[str]:
    """Providers a canary may default to: those written in the config, else the created ones."""
    providers = [str(name) for name in _section(raw, "providers")]
    written = [name for name in providers if name not in ctx.created]
    return written or providers


def _default_provider(raw: dict[str, Any], ctx: _Context) -> None:
    """Canaries without a provider get the only provider, so nothing is left to guess later."""
    candidates = _candidate_providers(raw, ctx)
    canaries = raw.get("canaries")
    if len(candidates) != 1 or not isinstance(canaries, list):
        return
    for canary in canaries:
        if isinstance(canary, dict) and "provider" not in canary:
            canary["provider"] = candidates[0]


def _resolve_canary(raw: dict[str, Any], pending: _Pending, ctx: _Context) -> None:
    """A Canary's router: the annotation, else the only one defined."""
    mapped, prefix = pending.mapped, pending.prefix
    canaries = raw.get("canaries")
    index = prefix[1]
    if not isinstance(canaries, list) or not isinstance(index, int) or index >= len(canaries):
        return
    if canaries[index] is not mapped.entry:
        return
    if mapped.needs_router:
        hint = f"annotation {flagger.ROUTER_ANNOTATION}"
        router = _only(_section(raw, "routers"), "router", hint, (*prefix, "router"), ctx)
        if router is not None:
            mapped.entry["router"] = router


# --------------------------------------------------------------------------- secrets and paths


def _secret_holders(value: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    """Every mapping that may hold ``*_file``/``*_env`` keys (not free-form maps)."""
    if isinstance(value, dict):
        yield path, value
        for key, item in value.items():
            if key not in _NOT_SECRETS:
                yield from _secret_holders(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _secret_holders(item, (*path, i))


def _resolve_relative_files(raw: dict[str, Any], ctx: _Context, environ: Mapping[str, str]) -> None:
    """Relative ``*_file`` paths written in a file are relative to that file's directory.

    ``${CREDENTIALS_DIRECTORY}`` (systemd's ``LoadCredential=`` directory) is
    expanded first, when set in ``environ``.
    """
    for path, holder in _secret_holders(raw):
        for key, value in holder.items():
            if not (isinstance(key, str) and key.endswith("_file") and isinstance(value, str)):
                continue
            value = _expand_credentials(value, environ)
            holder[key] = value
            loc = ctx.locs.get((*path, key))
            if value and not os.path.isabs(value) and loc is not None and loc.file != ENV_FILE:
                holder[key] = os.path.normpath(os.path.join(os.path.dirname(loc.file), value))


def _expand_credentials(value: str, environ: Mapping[str, str]) -> str:
    """``${CREDENTIALS_DIRECTORY}/x`` -> ``/run/credentials/canaryd.service/x`` (when set)."""
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return value
    return value.replace("${CREDENTIALS_DIRECTORY}", directory)


def _check_secrets(raw: dict[str, Any], environ: Mapping[str, str], ctx: _Context) -> None:
    """Secret files must exist and not be readable by others; secret variables must be set."""
    for path, holder in _secret_holders(raw):
        for key, value in holder.items():
            if not isinstance(key, str) or not isinstance(value, str) or not value:
                continue
            try:
                if key.endswith("_file"):
                    read_secret(value)
                elif key.endswith("_env"):
                    read_secret(None, value, environ=environ)
                    if isinstance(holder.get(key[:-4] + "_file"), str):
                        raise ValueError(f"set {key[:-4]}_file or {key}, not both")
            except ValueError as exc:
                ctx.problem((*path, key), str(exc))


# --------------------------------------------------------------------------- cross references


def _check_references(raw: dict[str, Any], ctx: _Context) -> None:
    """References between sections, built-in metric names, unique canaries, weights."""
    defined = {key: _section(raw, key) for key in _SECTIONS}
    for name, template in defined["templates"].items():
        if isinstance(template, dict):
            _check_ref(ctx, ("templates", name, "provider"), template, "provider", defined)
    canaries = raw.get("canaries")
    first: dict[str, KeyPath] = {}
    flagger_canaries = {p.prefix for p in ctx.pending if p.mapped.section == "canaries"}
    for i, canary in enumerate(canaries if isinstance(canaries, list) else []):
        if isinstance(canary, dict):
            here: KeyPath = ("canaries", i)
            _check_unique(canary, here, first, ctx)
            _check_canary(canary, here, defined, here in flagger_canaries, ctx)


def _check_ref(
    ctx: _Context, here: KeyPath, holder: dict[str, Any], key: str, defined: dict[str, Any]
) -> None:
    """``holder[key]`` (if a string) must name an entry of the section ``key + 's'``."""
    name = holder.get(key)
    section = defined[f"{key}s"]
    if not isinstance(name, str) or name in section or here in ctx.suppress:
        return
    hint = did_you_mean(name, section)
    if not hint:
        listed = ", ".join(sorted(map(str, section)))
        hint = f"; defined {key}s: {listed}" if section else f"; no {key}s are defined"
    ctx.problem(here, f"unknown {key} {name!r}{hint}")


def _check_unique(
    canary: dict[str, Any], here: KeyPath, first: dict[str, KeyPath], ctx: _Context
) -> None:
    name, namespace = canary.get("name"), canary.get("namespace", "default")
    if not isinstance(name, str) or not isinstance(namespace, str):
        return
    key = f"{namespace}/{name}"
    if key in first:
        ctx.problem(here, f"duplicate canary {key!r} (first at {ctx.where(first[key])})")
    else:
        first[key] = here


def _check_canary(
    canary: dict[str, Any], here: KeyPath, defined: dict[str, Any], manifest: bool, ctx: _Context
) -> None:
    _check_ref(ctx, (*here, "router"), canary, "router", defined)
    _check_ref(ctx, (*here, "provider"), canary, "provider", defined)
    alerts = canary.get("alerts")
    for i, alert in enumerate(alerts if isinstance(alerts, list) else []):
        if isinstance(alert, dict):
            _check_ref(ctx, (*here, "alerts", i, "notifier"), alert, "notifier", defined)
    analysis = canary.get("analysis")
    if not isinstance(analysis, dict):
        return
    _check_weights(analysis, (*here, "analysis"), ctx)
    metrics = analysis.get("metrics")
    for i, metric in enumerate(metrics if isinstance(metrics, list) else []):
        if isinstance(metric, dict):
            mhere = (*here, "analysis", "metrics", i)
            _check_metric(metric, mhere, canary, defined, manifest, ctx)


def _check_metric(
    metric: dict[str, Any],
    here: KeyPath,
    canary: dict[str, Any],
    defined: dict[str, Any],
    manifest: bool,
    ctx: _Context,
) -> None:
    """A metric's source (template, query or built-in) and its provider."""
    _check_ref(ctx, (*here, "provider"), metric, "provider", defined)
    ref = metric.get("templateRef")
    if isinstance(ref, dict):
        named = {"template": ref.get("name")}
        _check_ref(ctx, (*here, "templateRef", "name"), named, "template", defined)
        return
    name = metric.get("name")
    if "query" not in metric and isinstance(name, str) and name not in BUILTIN_METRICS:
        builtins = ", ".join(BUILTIN_METRICS)
        message = f"unknown metric {name!r}: not built in ({builtins}); set templateRef or query"
        ctx.problem((*here, "name"), message)
        return
    if "provider" in metric or "provider" in canary:
        return
    count = len(defined["providers"])
    reason = "no providers are defined" if not count else f"{count} providers are defined"
    where = f"annotation {flagger.PROVIDER_ANNOTATION}" if manifest else "provider on the canary"
    ctx.problem(here, f"metric {name!r} has no provider ({reason}); set provider on it or {where}")


def _check_weights(analysis: dict[str, Any], here: KeyPath, ctx: _Context) -> None:
    """``maxWeight`` must leave room for the first step."""
    cap = analysis.get("maxWeight")
    if not _is_int(cap):
        return
    steps, step = analysis.get("stepWeights"), analysis.get("stepWeight")
    if isinstance(steps, list) and steps and _is_int(steps[0]) and cap < steps[0]:
        ctx.problem(
            (*here, "maxWeight"),
            f"maxWeight ({cap}) is below the first of stepWeights ({steps[0]})",
        )
    elif _is_int(step) and cap < step:
        ctx.problem((*here, "maxWeight"), f"maxWeight ({cap}) is below stepWeight ({step})")


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- model validation


class _FileOnly(Settings):
    """Settings validated from the merged data alone (the environment is already overlaid)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[Any],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values passed in."""
        return (init_settings,)


def _validate(raw: dict[str, Any], ctx: _Context) -> Settings | None:
    """Validate with the models; every error becomes a located problem."""
    try:
        checked = _FileOnly.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            _report(error, raw, ctx)
        return None
    values = {name: getattr(checked, name) for name in Settings.model_fields}
    return Settings.model_construct(_fields_set=set(checked.model_fields_set), **values)


def _data_path(loc: tuple[str | int, ...], raw: Any) -> tuple[KeyPath, Any, str | int | None]:
    """The part of a pydantic ``loc`` that exists in the data, the value there, and the rest.

    Discriminated unions insert their tag into ``loc``; such parts are skipped.
    The last part, when absent from the data, is returned (a missing key).
    """
    path: KeyPath = ()
    node, rest = raw, None
    for i, part in enumerate(loc):
        if not _has_child(node, part):
            rest = part if i == len(loc) - 1 else None
            continue
        node = node[part]
        path = (*path, part)
    return path, node, rest


def _report(error: Any, raw: dict[str, Any], ctx: _Context) -> None:
    """One pydantic error as a problem, with a message for humans."""
    path, value, rest = _data_path(tuple(error["loc"]), raw)
    kind = error["type"]
    full = (*path, rest) if kind == "missing" and rest is not None else path
    if any(full[: len(s)] == s for s in ctx.suppress):
        return
    if kind == "missing":
        ctx.problem(path, f"missing key {rest!r}")
    elif kind == "extra_forbidden":
        ctx.problem(path, unknown_key(str(path[-1]), _keys_of(_type_at(path[:-1], raw))))
    elif kind in ("union_tag_invalid", "union_tag_not_found") or _is_type_literal(kind, path):
        _report_type(kind, path, error, ctx)
    elif rest == "[key]":
        ctx.problem(path, f"invalid name {path[-1]!r}: {_message(error, None)}")
    else:
        ctx.problem(path, _message(error, value))


def _is_type_literal(kind: str, path: KeyPath) -> bool:
    return kind == "literal_error" and len(path) == 3 and path[0] in _SECTIONS and path[2] == "type"


def _report_type(kind: str, path: KeyPath, error: Any, ctx: _Context) -> None:
    """Unknown or missing ``type`` of a provider, router or notifier."""
    if kind == "union_tag_not_found":
        ctx.problem(path, "missing key 'type'")
        return
    here = path if path[-1] == "type" else (*path, "type")
    ctx_info = error.get("ctx") or {}
    expected = ctx_info.get("expected_tags") or ctx_info.get("expected") or ""
    options = ", ".join(sorted(_quoted(expected)))
    tag = ctx_info.get("tag", error.get("input"))
    ctx.problem(here, f"unknown {_SECTIONS[str(path[0])]} type {tag!r}; expected one of: {options}")


def _quoted(text: str) -> list[str]:
    """``"'a', 'b' or 'c'"`` -> ``["a", "b", "c"]``."""
    return text.split("'")[1::2]


_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
}
_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def _message(error: Any, value: Any) -> str:
    """A precise, readable message for one pydantic error."""
    kind, info = error["type"], error.get("ctx") or {}
    if kind in _TYPE_MESSAGES:
        return f"{_TYPE_MESSAGES[kind]} (got {_got(value)})"
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return f"must be {op} {info.get(key)} (got {_got(value)})"
    if kind in ("literal_error", "enum"):
        expected = ", ".join(_quoted(str(info.get("expected", ""))))
        return f"must be one of: {expected} (got {_got(value)})"
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind not in ("value_error", "assertion_error"):
        message = message[:1].lower() + message[1:]
    if value is None or isinstance(value, dict | list) or _got(value) in message.split():
        return message
    if isinstance(value, str) and repr(value) in message:
        return message
    return f"{message} (got {_got(value)})"


def _got(value: Any) -> str:
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


# --------------------------------------------------------------------------- model types


def _keys_of(tp: Any) -> list[str]:
    """The keys a model accepts (aliases where set); none when ``tp`` is not a model."""
    if not _is_model(tp):
        return []
    return [info.alias or name for name, info in tp.model_fields.items()]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _type_at(path: KeyPath, raw: Any) -> Any:
    """The model type at ``path`` (``Settings`` at the root), following the data through unions."""
    tp: Any = Settings
    node = raw
    for part in path:
        tp = _unwrap(tp, node)
        if _is_model(tp) and isinstance(part, str):
            names = {info.alias or name: info for name, info in tp.model_fields.items()}
            info = tp.model_fields.get(part) or names.get(part)
            if info is None:
                return None
            tp = info.annotation
        elif get_origin(tp) is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
        node = _child(node, part)
    return _unwrap(tp, node)


def _has_child(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _child(node: Any, part: str | int) -> Any:
    return node[part] if _has_child(node, part) else None


def _unwrap(tp: Any, node: Any) -> Any:
    """Strip ``Annotated`` and ``Optional``; pick a union member by the data's ``type``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, UnionType):
            members = [m for m in get_args(tp) if m is not type(None)]
            tag = node.get("type") if isinstance(node, dict) else None
            chosen = [m for m in members if len(members) == 1 or _has_tag(m, tag)]
            if not chosen:
                return None
            tp = chosen[0]
        else:
            return tp


def _has_tag(tp: Any, tag: Any) -> bool:
    if not _is_model(tp) or "type" not in tp.model_fields:
        return False
    annotation = tp.model_fields["type"].annotation
    return get_origin(annotation) is Literal and tag in get_args(annotation)
