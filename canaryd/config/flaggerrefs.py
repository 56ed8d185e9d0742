"""Fill in what Flagger manifests leave implicit, once every document is merged.

:func:`resolve_flagger` gives a MetricTemplate its provider (one with the same
address, else a new one; its ``secretRef`` mapped onto secret files), a Canary
its router (the only one defined), and every canary its provider when only one
is defined (docs/flagger.md).
"""

from __future__ import annotations

import os
from typing import Any

from canaryd.config.check import section
from canaryd.config.flaggermap import (
    ROUTER_ANNOTATION,
    SAAS_TYPES,
    SECRET_FILES,
    SECRET_KEYS,
    KeyPath,
)
from canaryd.config.flaggerproviders import find_provider, find_same
from canaryd.config.merge import SECRET_DIR, Gathered, Pending, move_locs
from canaryd.config.models import read_secret
from canaryd.config.yamlpos import Doc
from canaryd.errors import SecretError


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
        move_locs(pending.doc, ("providers", name), moves, ctx)
        if entry.get("type") in SECRET_KEYS and mapped.secret_ref is None:
            ctx.suppress.add(("providers", name))  # the missing secretRef is the problem
    if name is not None:
        mapped.entry["provider"] = name


def _typed(provider: Any, kind: str) -> bool:
    """Whether a raw provider entry is of type ``kind``."""
    return isinstance(provider, dict) and provider.get("type") == kind


FLAGGER_DEFAULT_MESH = "istio"
"""The mesh of a Canary without ``spec.provider`` unless the config sets ``meshProvider``."""


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
