"""Load, merge and validate the configuration file (docs/design.md, "Configuration").

:func:`load_config` reads the main YAML file and its ``include:`` globs, maps
Flagger manifests (:mod:`canaryd.config.flagger`), overlays ``CANARYD_*`` environment
variables, checks cross references, and validates everything with the models
of :mod:`canaryd.config`. It reports *every* problem at once, each located as
``FILE:LINE:COLUMN: key.path: message``, and never lets a traceback through.

This module reads the include tree, overlays the environment and resolves
relative paths; the rest is shared out: :mod:`canaryd.config.yamlpos` (YAML with
positions), :mod:`canaryd.config.merge` (merging documents and manifests),
:mod:`canaryd.config.check` (cross references, secrets, messages for humans)
and :mod:`canaryd.config.modeltypes` (the model types along a key path).

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
  their problems are located at ``<env NAME>:0:0``, naming the variable.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic_settings import EnvSettingsSource, SettingsError

from canaryd.config.check import check_references, check_secrets, secret_holders, validate
from canaryd.config.flagger import format_ignored
from canaryd.config.flaggermap import KeyPath, is_manifest
from canaryd.config.flaggerrefs import resolve_flagger
from canaryd.config.lint import check_queries, lint
from canaryd.config.merge import Gathered, merge
from canaryd.config.models import Settings
from canaryd.config.modeltypes import keys_at
from canaryd.config.notes import flagger_differences as differences
from canaryd.config.notes import unverified_tls
from canaryd.config.yamlpos import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    Doc,
    Loc,
    Report,
    format_path,
    got,
    read_file,
)
from canaryd.errors import ConfigError

__all__ = [
    "ENV_FILE",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "Loaded",
    "format_path",
    "load_config",
    "summary",
]

ENV_FILE = "<env>"
"""The ``file`` of problems caused by environment variables (``<env NAME>`` names the variable)."""


def env_file(name: str | None) -> str:
    """The ``file`` of a problem caused by the environment variable ``name``."""
    return f"<env {name}>" if name else ENV_FILE


def _is_env(file: str) -> bool:
    return file == ENV_FILE or file.startswith("<env ")


@dataclass(frozen=True)
class Loaded:
    """A valid configuration and what was learnt while loading it.

    Attributes:
        settings: the validated configuration.
        warnings: things worth telling the operator that are not errors: the
            Kubernetes-only fields of Flagger manifests that were ignored (one line),
            then one line per deliberate difference from Flagger that affects a
            canary (docs/flagger.md), then one per webhook with ``disableTLS``, then
            one per canary whose weight keys Flagger reads differently than they
            look (stepWeights win over maxWeight and set stepWeight's maximum).
        files: every file read, the main file first.
    """

    settings: Settings
    warnings: list[str]
    files: list[str]
    report: Report | None = field(default=None, compare=False, repr=False)
    """Where each key was written, to locate later problems (``check --online``)."""


@dataclass
class _Context(Gathered):
    """Everything gathered while loading: problems, positions (by merged key path), files."""

    files: list[str] = field(default_factory=list)
    broken: bool = False
    """Whether a file could not be read whole (cross references are then not checked)."""


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
    raw = merge(docs, ctx)
    _apply_env(raw, env, ctx)
    resolve_flagger(raw, ctx)
    _resolve_relative_files(raw, ctx, env)
    if not ctx.broken:
        check_references(raw, ctx, ctx.manifest_canaries)
    check_secrets(raw, env, ctx)
    settings = validate(raw, ctx)
    if settings is not None and not ctx.problems:
        check_queries(settings, raw, ctx)
    if ctx.problems or settings is None:
        raise ConfigError(list(dict.fromkeys(ctx.problems)))
    warnings = lint(settings, raw, ctx, ctx.manifest_canaries)
    ignored = format_ignored(ctx.ignored)
    warnings = [*ctx.notes, *warnings, *([ignored] if ignored else [])]
    warnings += [f"differs from Flagger: {d}" for c in settings.canaries for d in differences(c)]
    warnings += [
        f"differs from Flagger: {c.key}: {d}"
        for c in settings.canaries
        for d in c.analysis.weight_differences
    ]
    warnings += [line for c in settings.canaries for line in unverified_tls(c)]
    warnings += [f"{c.key}: {n}" for c in settings.canaries for n in c.analysis.weight_notes]
    return Loaded(settings=settings, warnings=warnings, files=ctx.files, report=ctx)


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


# --------------------------------------------------------------------------- includes


def _read_file(file: str, ctx: _Context, main: bool) -> list[Doc]:
    """Every YAML document of one file (those before a syntax error are kept)."""
    ctx.files.append(file)
    docs, complete = read_file(file, ctx, main)
    if not complete:
        ctx.broken = True
    return docs


def _load_tree(
    file: str, ctx: _Context, stack: tuple[tuple[str, str], ...], seen: set[str], main: bool
) -> list[Doc]:
    """The documents of ``file`` followed by those of its includes, depth first.

    ``stack`` holds ``(real path, shown path)`` of the including files (cycle
    detection); ``seen`` the real paths read so far (each file is read once).
    """
    stack = (*stack, (os.path.realpath(file), file))
    seen.add(stack[-1][0])
    out: list[Doc] = []
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


def _include_matches(doc: Doc, ctx: _Context, main: bool) -> list[str]:
    """Files matched by the document's ``include`` globs (removed from the document)."""
    value = doc.data.pop("include")
    patterns = [value] if isinstance(value, str) else value
    if value is None:
        return []
    if not isinstance(patterns, list):
        ctx.in_doc(doc, ("include",), f"must be a list of file globs (got {got(value)})")
        return []
    base = os.path.dirname(doc.file)
    found: list[str] = []
    for i, pattern in enumerate(patterns):
        here = ("include", i) if isinstance(value, list) else ("include",)
        if not isinstance(pattern, str) or not pattern:
            ctx.in_doc(doc, here, f"must be a file glob (got {got(pattern)})")
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


# --------------------------------------------------------------------------- environment


def _env_source(environ: Mapping[str, str]) -> EnvSettingsSource:
    """pydantic-settings' own parsing of ``CANARYD_*`` variables, from ``environ``.

    Public API only: the source is built with its constructor (it takes prefix, nesting
    and case rules from ``Settings.model_config``), then reads ``environ`` through its
    public ``env_vars`` mapping instead of the process environment (names folded and
    empty values treated as that config says, as the source does for ``os.environ``).
    """
    source = EnvSettingsSource(Settings)
    fold = str if source.case_sensitive else str.lower
    none = source.env_parse_none_str
    source.env_vars = {
        fold(name): None if none is not None and value == none else value
        for name, value in environ.items()
        if not (source.env_ignore_empty and value == "")
    }
    return source


def _env_values(environ: Mapping[str, str], ctx: _Context) -> dict[str, Any]:
    """Settings values from ``CANARYD_*`` variables; undecodable JSON values are problems."""
    ours = {k: v for k, v in environ.items() if k.upper().startswith("CANARYD_")}
    try:
        return _env_source(ours)()
    except SettingsError:
        pass
    values: dict[str, Any] = {}
    for name in sorted(ours):
        try:
            values = _deep_merge(values, _env_source({name: ours[name]})())
        except SettingsError:
            shown = tuple(name[len("CANARYD_") :].lower().split("__"))
            ctx.at(Loc(env_file(name), 0, 0, shown), shown, f"{name} must hold JSON for this key")
    return values


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        both = isinstance(old, dict) and isinstance(value, dict)
        out[key] = _deep_merge(old, value) if both else value  # type: ignore[arg-type]
    return out


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], ctx: _Context) -> None:
    """Overlay environment values on the file's (env wins), positions set to ``<env NAME>``."""
    names = {
        tuple(k[len("CANARYD_") :].lower().split("__")): k
        for k in environ
        if k.upper().startswith("CANARYD_")
    }
    _overlay(raw, _env_values(environ, ctx), (), raw, ctx, names)


def _overlay(
    target: dict[str, Any],
    values: dict[str, Any],
    path: KeyPath,
    raw: Any,
    ctx: _Context,
    names: dict[tuple[str, ...], str],
) -> None:
    for env_key, value in values.items():
        key = _match_key(target, env_key, path, raw)
        here = (*path, key)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _overlay(target[key], value, here, raw, ctx, names)
            continue
        target[key] = value
        for old in [p for p in ctx.locs if p[: len(here)] == here]:
            del ctx.locs[old]
        ctx.locs[here] = Loc(env_file(_variable(here, names)), 0, 0, here)


def _variable(here: KeyPath, names: dict[tuple[str, ...], str]) -> str | None:
    """The environment variable that set the value at ``here`` (or one of its ancestors)."""
    lowered = tuple(str(part).lower() for part in here)
    for end in range(len(lowered), 0, -1):
        if lowered[:end] in names:
            return names[lowered[:end]]
    return None


def _match_key(target: dict[str, Any], key: str, path: KeyPath, raw: Any) -> str:
    """The key an environment name means: environment names are case-insensitive."""
    for candidate in (*target, *keys_at(path, raw)):
        if isinstance(candidate, str) and candidate.lower() == key.lower():
            return candidate
    return key


# --------------------------------------------------------------------------- relative paths


def _resolve_relative_files(raw: dict[str, Any], ctx: _Context, environ: Mapping[str, str]) -> None:
    """Relative ``*_file`` paths written in a file are relative to that file's directory.

    ``${CREDENTIALS_DIRECTORY}`` (systemd's ``LoadCredential=`` directory) is
    expanded first, when set in ``environ``.
    """
    for path, holder in secret_holders(raw):
        for key, value in holder.items():
            if not (isinstance(key, str) and key.endswith("_file") and isinstance(value, str)):
                continue
            value = _expand_credentials(value, environ)
            holder[key] = value
            loc = ctx.locs.get((*path, key))
            if value and not os.path.isabs(value) and loc is not None and not _is_env(loc.file):
                holder[key] = os.path.normpath(os.path.join(os.path.dirname(loc.file), value))


def _expand_credentials(value: str, environ: Mapping[str, str]) -> str:
    """``${CREDENTIALS_DIRECTORY}/x`` -> ``/run/credentials/canaryd.service/x`` (when set)."""
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return value
    return value.replace("${CREDENTIALS_DIRECTORY}", directory)
