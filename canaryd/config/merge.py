"""Merge the documents of a configuration into one raw configuration.

The main file and its includes hold canaryd documents and Flagger manifests
(mapped by :mod:`canaryd.config.flagger`). :func:`merge` combines them: sections
(``providers``, ``routers``, ...) by name, canaries appended in file order,
scalar settings from the main file only; a name defined twice is a problem.
The position map is re-keyed from each file's key paths to merged ones, so
problems found later still point at the line that wrote the value.

:func:`resolve_flagger` then fills in what manifests leave implicit: a
MetricTemplate's provider (one with the same address, else a new one), a
Canary's router (the only one defined), and the provider of every canary
when only one is defined.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from canaryd.config.check import SECTIONS, section
from canaryd.config.flagger import map_manifest
from canaryd.config.flaggermap import (
    ROUTER_ANNOTATION,
    SAAS_TYPES,
    SECRET_FILES,
    SECRET_KEYS,
    KeyPath,
    Mapped,
    is_manifest,
    unknown_key,
)
from canaryd.config.flaggerproviders import find_provider, find_same
from canaryd.config.models import Settings, read_secret
from canaryd.config.yamlpos import Doc, Report, format_path, got
from canaryd.errors import SecretError

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
    _move_locs(doc, prefix, mapped.moves, ctx)
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


def _move_locs(
    doc: Doc, prefix: KeyPath, moves: list[tuple[KeyPath, KeyPath]], ctx: Gathered
) -> None:
    """Positions of manifest subtrees for the entry subtrees they became."""
    for dst, src in moves:
        ctx.locs[prefix + dst] = doc.locate(src)
        for path, loc in doc.locs.items():
            if len(path) > len(src) and path[: len(src)] == src:
                ctx.locs[prefix + dst + path[len(src) :]] = loc


# --------------------------------------------------------------------------- Flagger references


def resolve_flagger(raw: dict[str, Any], ctx: Gathered) -> None:
    """Give mapped manifests the providers and routers they leave implicit."""
    for pending in ctx.pending:
        if pending.mapped.section == "templates":
            _resolve_template(raw, pending, ctx)
    for pending in ctx.pending:
        if pending.mapped.section == "canaries":
            _resolve_canary(raw, pending, ctx)
    _default_provider(raw, ctx)


def _resolve_template(raw: dict[str, Any], pending: Pending, ctx: Gathered) -> None:
    """A MetricTemplate's provider: one with the same address, else a new one."""
    mapped, here = pending.mapped, (*pending.prefix, "provider")
    if section(raw, "templates").get(str(mapped.name)) is not mapped.entry:
        return
    providers = raw.setdefault("providers", {})
    if not isinstance(providers, dict):
        return
    kind = mapped.provider_type
    if mapped.secret_ref is not None and mapped.provider_entry is not None:
        _secret_files(mapped.provider_entry, mapped.secret_ref, pending.doc, ctx)
    own = mapped.provider_entry is not None and (
        "headers" in mapped.provider_entry or mapped.secret_ref is not None
    )
    if mapped.provider_entry is not None and kind in SAAS_TYPES:  # docs/providers.md
        name = find_same(providers, mapped.provider_entry)
    elif mapped.prometheus_address is None or mapped.provider_entry is None:
        same = {k: p for k, p in providers.items() if kind == "prometheus" or _typed(p, kind)}
        what = "provider" if kind == "prometheus" else f"{kind} provider"
        name = _only(same, what, "spec.provider.address", here, ctx)
    else:
        name = None if own else find_provider(providers, mapped.prometheus_address, kind)
    if name is None and mapped.provider_entry is not None:
        name = f"{str(mapped.name).replace('/', '-')}-provider"
        if name in providers:
            ctx.problem(here, f"provider {name!r} exists with another address; rename one")
            return
        providers[name] = mapped.provider_entry
        ctx.created.add(name)
        moves: list[tuple[KeyPath, KeyPath]] = [((), ("spec", "provider"))]
        entry = mapped.provider_entry  # secretRef's files are reported at secretRef
        moves += [((k,), ("spec", "provider", "secretRef")) for k in SECRET_FILES if k in entry]
        _move_locs(pending.doc, ("providers", name), moves, ctx)
        if entry.get("type") in SECRET_KEYS and mapped.secret_ref is None:
            ctx.suppress.add(("providers", name))  # the missing secretRef is the problem
    if name is not None:
        mapped.entry["provider"] = name


def _typed(provider: Any, kind: str) -> bool:
    """Whether a raw provider entry is of type ``kind``."""
    return isinstance(provider, dict) and provider.get("type") == kind


FLAGGER_DEFAULT_MESH = "istio"
"""The mesh of a Canary without ``spec.provider`` unless the config sets ``meshProvider``."""

SECRET_DIR = "secrets"
"""Where a MetricTemplate's ``secretRef: {name: N}`` is looked for: ``secrets/N/`` beside it."""


def _secret_files(provider: dict[str, Any], name: str, doc: Doc, ctx: Gathered) -> None:
    """Map Flagger's ``secretRef`` onto secret files (docs/flagger.md, MetricTemplate).

    The Kubernetes Secret's keys become files of ``secrets/NAME/`` next to the
    manifest: ``token`` (bearer token), or ``username`` and ``password``; for
    InfluxDB, ``token`` and ``org``, as Flagger reads them (docs/providers.md).
    """
    directory = os.path.abspath(os.path.join(os.path.dirname(doc.file), SECRET_DIR, name))
    keys = SECRET_KEYS.get(str(provider.get("type")))
    if keys is not None:  # datadog, newrelic, dynatrace: Flagger's key names (docs/providers.md)
        provider.update({setting: os.path.join(directory, key) for setting, key in keys.items()})
        return
    token, user = os.path.join(directory, "token"), os.path.join(directory, "username")
    org = os.path.join(directory, "org")
    if os.path.isfile(token) and provider.get("type") == "influxdb":
        provider["token_file"] = token
        if os.path.isfile(org):
            provider["org_file"] = org
        else:
            message = f"secretRef {name!r}: put the InfluxDB organization in the file {org}"
            ctx.in_doc(doc, ("spec", "provider", "secretRef"), message)
    elif os.path.isfile(token):
        provider["bearer_token_file"] = token
    elif os.path.isfile(user):
        try:
            username = read_secret(user)
        except SecretError as exc:
            ctx.in_doc(doc, ("spec", "provider", "secretRef"), str(exc))
            return
        provider["username"] = username.get_secret_value() if username else ""
        provider["password_file"] = os.path.join(directory, "password")
    else:
        ctx.in_doc(
            doc,
            ("spec", "provider", "secretRef"),
            f"secretRef {name!r}: put the secret's keys in files: {token}, or {user} and "
            f"{os.path.join(directory, 'password')} (docs/flagger.md)",
        )


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


def _only(
    defined: dict[str, Any], what: str, hint: str, here: KeyPath, ctx: Gathered
) -> str | None:
    """The only ``what`` defined, or ``None`` after a problem asking to choose with ``hint``."""
    if len(defined) == 1:
        return str(next(iter(defined)))
    count = f"{len(defined)} {what}s are defined ({', '.join(sorted(defined))})"
    reason = f"no {what}s are defined" if not defined else count
    ctx.problem(here, f"cannot choose a {what}: {reason}; set {hint}")
    ctx.suppress.add(here)
    return None


def _candidate_providers(raw: dict[str, Any], ctx: Gathered) -> list[str]:
    """Providers a canary may default to: those written in the config, else the created ones."""
    providers = [str(name) for name in section(raw, "providers")]
    written = [name for name in providers if name not in ctx.created]
    return written or providers


def _default_provider(raw: dict[str, Any], ctx: Gathered) -> None:
    """Canaries without a provider get the only provider, so nothing is left to guess later."""
    candidates = _candidate_providers(raw, ctx)
    canaries = raw.get("canaries")
    if len(candidates) != 1 or not isinstance(canaries, list):
        return
    for canary in canaries:
        if isinstance(canary, dict) and "provider" not in canary:
            canary["provider"] = candidates[0]


def _resolve_canary(raw: dict[str, Any], pending: Pending, ctx: Gathered) -> None:
    """A Canary's router: the annotation, else the only one defined."""
    mapped, prefix = pending.mapped, pending.prefix
    canaries = raw.get("canaries")
    index = prefix[1]
    if not isinstance(canaries, list) or not isinstance(index, int) or index >= len(canaries):
        return
    if canaries[index] is not mapped.entry:
        return
    if "meshProvider" not in mapped.entry and "meshProvider" not in raw:
        mapped.entry["meshProvider"] = FLAGGER_DEFAULT_MESH
    if mapped.needs_router:
        hint = f"annotation {ROUTER_ANNOTATION}"
        router = _only(section(raw, "routers"), "router", hint, (*prefix, "router"), ctx)
        if router is not None:
            mapped.entry["router"] = router
