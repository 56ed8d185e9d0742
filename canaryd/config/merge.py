"""Merge the documents of a configuration into one raw configuration.

The main file and its includes hold canaryd documents and Flagger manifests
(mapped by :mod:`canaryd.config.flagger`). :func:`merge` combines them: sections
(``providers``, ``routers``, ...) by name, canaries appended in file order,
scalar settings from the main file only; a name defined twice is a problem.
The position map is re-keyed from each file's key paths to merged ones, so
problems found later still point at the line that wrote the value.

:func:`canaryd.config.flaggerrefs.resolve_flagger` then fills in what manifests
leave implicit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from canaryd.config.check import SECTIONS
from canaryd.config.flagger import map_manifest
from canaryd.config.flaggermap import (
    KeyPath,
    Mapped,
    is_manifest,
    unknown_key,
)
from canaryd.config.models import Settings
from canaryd.config.yamlpos import Doc, Report, format_path, got

DOC = "docs/flagger.md"
"""Where the deliberate differences from Flagger are listed."""


@dataclass
class Pending:
    """A mapped Flagger manifest whose router/provider references are resolved after merging."""

    prefix: KeyPath
    mapped: Mapped
    doc: Doc


@dataclass
class Gathered(Report):
    """A :class:`Report` plus what merging learnt about Flagger manifests.

    Attributes:
        ignored: ``(file, kind/name, fields)`` of the Kubernetes-only fields
            of manifests that were ignored.
        pending: mapped manifests whose implicit references are resolved
            after merging.
        created: providers created for MetricTemplates (not written in the config).
    """

    ignored: list[tuple[str, str, list[str]]] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    created: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    """Located warnings found while merging (manifests kept out of the configuration)."""

    @property
    def manifest_canaries(self) -> set[KeyPath]:
        """The merged paths of the canaries mapped from Flagger ``Canary`` manifests."""
        return {p.prefix for p in self.pending if p.mapped.section == "canaries"}


# --------------------------------------------------------------------------- merging


def merge(docs: list[Doc], ctx: Gathered) -> dict[str, Any]:
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


def _merge_doc(doc: Doc, merged: dict[str, Any], ctx: Gathered) -> None:
    """Merge one canaryd document: sections by name, canaries appended, scalars main-only."""
    moves: dict[KeyPath, KeyPath] = {}
    if doc.includes:
        merged.setdefault("include", []).extend(doc.includes)
    for key, value in doc.data.items():
        if key in SECTIONS:
            _merge_section(doc, key, value, merged, moves, ctx)
        elif key == "canaries":
            _merge_canaries(doc, value, merged, moves, ctx)
        elif not doc.main:
            message = (
                "may only be set in the main configuration file"
                if key in Settings.model_fields
                else unknown_key(key, SECTIONS.keys() | {"canaries", "include"})
            )
            ctx.in_doc(doc, (key,), message)
        elif key in merged:
            ctx.in_doc(doc, (key,), f"already set at {ctx.where((key,))}")
        else:
            merged[key] = value
            moves[(key,)] = (key,)
    _copy_locs(doc, moves, ctx)


def _merge_section(
    doc: Doc,
    key: str,
    value: Any,
    merged: dict[str, Any],
    moves: dict[KeyPath, KeyPath],
    ctx: Gathered,
) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        ctx.in_doc(doc, (key,), f"must be a mapping of names to {key} (got {got(value)})")
        return
    target = merged.setdefault(key, {})
    for name, item in value.items():
        if name in target:
            where = ctx.where((key, name))
            ctx.in_doc(doc, (key, name), f"duplicate {SECTIONS[key]} {name!r} (first at {where})")
            continue
        target[name] = item
        moves[(key, name)] = (key, name)
    moves.setdefault((key,), (key,))


def _merge_canaries(
    doc: Doc, value: Any, merged: dict[str, Any], moves: dict[KeyPath, KeyPath], ctx: Gathered
) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        ctx.in_doc(doc, ("canaries",), f"must be a list of canaries (got {got(value)})")
        return
    for i, item in enumerate(value):
        moves[("canaries", i)] = ("canaries", len(merged["canaries"]))
        merged["canaries"].append(item)
    moves.setdefault(("canaries",), ("canaries",))


def _copy_locs(doc: Doc, moves: dict[KeyPath, KeyPath], ctx: Gathered) -> None:
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


def _merge_manifest(doc: Doc, merged: dict[str, Any], ctx: Gathered) -> None:
    """Map one Flagger manifest and merge the entry it becomes."""
    mapped = map_manifest(doc.data)
    for path, message in mapped.problems:
        ctx.in_doc(doc, path, message)
    if mapped.ignored:
        ctx.ignored.append((doc.file, f"{mapped.kind}/{mapped.name}", mapped.ignored))
    for path, message in mapped.differences:
        shown = format_path(path)
        ctx.notes.append(f"{doc.locate(path)}: {shown}: differs from Flagger: {message} ({DOC})")
    if mapped.section is None or mapped.name is None:
        return
    if mapped.unsupported is not None:
        loc = doc.locate(("spec", "provider", "type"))
        ctx.notes.append(f"{loc}: spec.provider.type: {mapped.unsupported}")
        return
    if mapped.section == "notifiers" and mapped.secret_ref is not None:
        _address_file(mapped, doc, ctx)
    if mapped.section == "canaries":
        prefix: KeyPath = ("canaries", len(merged["canaries"]))
        merged["canaries"].append(mapped.entry)
    else:
        section = merged.setdefault(mapped.section, {})
        if mapped.section == "templates" and _other_namespace(section, mapped):
            mapped.name = f"{mapped.entry['namespace']}/{mapped.name}"
        if mapped.name in section:
            where = ctx.where((mapped.section, mapped.name))
            what = SECTIONS[mapped.section]
            ctx.in_doc(
                doc, ("metadata", "name"), f"duplicate {what} {mapped.name!r} (first at {where})"
            )
            return
        section[mapped.name] = mapped.entry
        prefix = (mapped.section, mapped.name)
    move_locs(doc, prefix, mapped.moves, ctx)
    ctx.suppress.update(prefix + path for path in mapped.suppress)
    ctx.pending.append(Pending(prefix, mapped, doc))


def _other_namespace(templates: dict[str, Any], mapped: Mapped) -> bool:
    """Whether a MetricTemplate's name is taken by a template of another namespace.

    Flagger's templates are namespaced: the second one is keyed ``NAMESPACE/NAME``.
    """
    existing = templates.get(str(mapped.name))
    namespace = mapped.entry.get("namespace")
    return (
        isinstance(existing, dict)
        and isinstance(namespace, str)
        and existing.get("namespace") not in (None, namespace)
    )


def move_locs(
    doc: Doc, prefix: KeyPath, moves: list[tuple[KeyPath, KeyPath]], ctx: Gathered
) -> None:
    """Positions of manifest subtrees for the entry subtrees they became."""
    for dst, src in moves:
        ctx.locs[prefix + dst] = doc.locate(src)
        for path, loc in doc.locs.items():
            if len(path) > len(src) and path[: len(src)] == src:
                ctx.locs[prefix + dst + path[len(src) :]] = loc


SECRET_DIR = "secrets"
"""Where a MetricTemplate's ``secretRef: {name: N}`` is looked for: ``secrets/N/`` beside it."""


def _address_file(mapped: Mapped, doc: Doc, ctx: Gathered) -> None:
    """An AlertProvider's ``secretRef``: its ``address`` key is the file ``secrets/NAME/address``.

    As in Flagger the secret's address wins over ``spec.address``
    (docs/flagger.md, AlertProvider).
    """
    name = str(mapped.secret_ref)
    path = os.path.abspath(os.path.join(os.path.dirname(doc.file), SECRET_DIR, name, "address"))
    if os.path.isfile(path):
        mapped.entry.pop("url", None)
        mapped.entry["url_file"] = path
        mapped.moves.append((("url_file",), ("spec", "secretRef")))
    elif "url" not in mapped.entry:
        ctx.in_doc(
            doc,
            ("spec", "secretRef"),
            f"secretRef {name!r}: put the webhook address in the file {path}, or set "
            "spec.address (docs/flagger.md)",
        )
        mapped.suppress.append(())
