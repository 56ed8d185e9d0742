"""Checks of the merged raw configuration, and pydantic's errors for humans.

What the models of :mod:`canaryd.config` cannot see is checked on the raw data,
before validation: references between sections (with "did you mean" hints),
built-in metric names, unique canaries, weights, and secrets (files that
exist and are private, variables that are set). :func:`validate` then runs the
models and rewrites each pydantic error as a located :class:`~canaryd.errors.Problem`
with a precise message ("must be an integer (got 'ten')", "unknown router
type 'nginx'; expected one of: ...").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypeGuard

from pydantic import ValidationError
from pydantic_settings import PydanticBaseSettingsSource

from canaryd.config.flaggermap import PROVIDER_ANNOTATION, KeyPath, did_you_mean, unknown_key
from canaryd.config.meshqueries import BUILTIN_METRICS
from canaryd.config.models import Settings, read_secret
from canaryd.config.modeltypes import data_path, keys_at
from canaryd.config.yamlpos import Report, got
from canaryd.errors import SecretError

SECTIONS = {
    "providers": "provider",
    "routers": "router",
    "notifiers": "notifier",
    "templates": "template",
}
"""The sections of named entries -> what one entry is called in messages."""

NOT_SECRETS = frozenset({"headers", "match", "metadata", "templateVariables", "variables"})
"""Free-form mappings: their keys are data, never ``*_file``/``*_env`` settings."""


def section(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """The named entries of one section (``providers``, ...); empty unless a mapping."""
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- secrets


def secret_holders(value: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, dict[str, Any]]]:
    """Every mapping that may hold ``*_file``/``*_env`` keys (not free-form maps)."""
    if isinstance(value, dict):
        yield path, value
        for key, item in value.items():
            if key not in NOT_SECRETS:
                yield from secret_holders(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from secret_holders(item, (*path, i))


def check_secrets(raw: dict[str, Any], environ: Mapping[str, str], ctx: Report) -> None:
    """Secret files must exist and not be readable by others; secret variables must be set."""
    for path, holder in secret_holders(raw):
        for key, value in holder.items():
            if not isinstance(key, str) or not isinstance(value, str) or not value:
                continue
            try:
                if key == "url_file":
                    _check_url_file(value)
                elif key.endswith("_file"):
                    read_secret(value)
                elif key.endswith("_env"):
                    read_secret(None, value, environ=environ)
                    if isinstance(holder.get(key[:-4] + "_file"), str):
                        raise SecretError(f"set {key[:-4]}_file or {key}, not both")
            except SecretError as exc:
                ctx.problem((*path, key), str(exc))


def _check_url_file(path: str) -> None:
    """A URL kept in a secret file needs a scheme too (its text is never shown).

    Raises:
        SecretError: the file cannot be read, is readable by others, or holds no http(s) URL.
    """
    url = read_secret(path)
    if url is not None and not url.get_secret_value().startswith(("http://", "https://")):
        raise SecretError(f"the URL in {path} must start with http:// or https://")


# --------------------------------------------------------------------------- cross references


def check_references(raw: dict[str, Any], ctx: Report, manifests: set[KeyPath]) -> None:
    """References between sections, built-in metric names, unique canaries, weights.

    ``manifests`` holds the merged paths of the canaries mapped from Flagger
    manifests (their hints name the annotation rather than a key).
    """
    defined = {key: section(raw, key) for key in SECTIONS}
    for name, template in defined["templates"].items():
        if isinstance(template, dict):
            _check_ref(ctx, ("templates", name, "provider"), template, "provider", defined)
    canaries = raw.get("canaries")
    first: dict[str, KeyPath] = {}
    for i, canary in enumerate(canaries if isinstance(canaries, list) else []):
        if isinstance(canary, dict):
            here: KeyPath = ("canaries", i)
            _check_unique(canary, here, first, ctx)
            _check_canary(canary, here, defined, here in manifests, ctx)


def _check_ref(
    ctx: Report, here: KeyPath, holder: dict[str, Any], key: str, defined: dict[str, Any]
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
    canary: dict[str, Any], here: KeyPath, first: dict[str, KeyPath], ctx: Report
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
    canary: dict[str, Any], here: KeyPath, defined: dict[str, Any], manifest: bool, ctx: Report
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
    ctx: Report,
) -> None:
    """A metric's source (template, query or built-in) and its provider."""
    _check_ref(ctx, (*here, "provider"), metric, "provider", defined)
    ref = metric.get("templateRef")
    if isinstance(ref, dict):
        name, names = ref.get("name"), {str(k).rpartition("/")[2] for k in defined["templates"]}
        if not isinstance(name, str) or name not in names:
            named = {"template": name}
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
    where = f"annotation {PROVIDER_ANNOTATION}" if manifest else "provider on the canary"
    ctx.problem(here, f"metric {name!r} has no provider ({reason}); set provider on it or {where}")


def _check_weights(analysis: dict[str, Any], here: KeyPath, ctx: Report) -> None:
    """``maxWeight`` must leave room for the first step (with stepWeights it is ignored,
    as in Flagger; the loader warns about it)."""
    cap = analysis.get("maxWeight")
    if not _is_int(cap) or analysis.get("stepWeights") is not None:
        return
    step = analysis.get("stepWeight")
    if _is_int(step) and cap < step:
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


def validate(raw: dict[str, Any], ctx: Report) -> Settings | None:
    """Validate with the models; every error becomes a located problem."""
    try:
        checked = _FileOnly.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            _report(error, raw, ctx)
        return None
    values = {name: getattr(checked, name) for name in Settings.model_fields}
    return Settings.model_construct(_fields_set=set(checked.model_fields_set), **values)


def _report(error: Any, raw: dict[str, Any], ctx: Report) -> None:
    """One pydantic error as a problem, with a message for humans."""
    path, value, rest = data_path(tuple(error["loc"]), raw)
    kind = error["type"]
    full = (*path, rest) if kind == "missing" and rest is not None else path
    if any(full[: len(s)] == s for s in ctx.suppress):
        return
    if kind == "missing":
        ctx.problem(path, f"missing key {rest!r}")
    elif kind == "extra_forbidden":
        ctx.problem(path, unknown_key(str(path[-1]), keys_at(path[:-1], raw)))
    elif kind in ("union_tag_invalid", "union_tag_not_found") or _is_type_literal(kind, path):
        _report_type(kind, path, error, ctx)
    elif rest == "[key]":
        ctx.problem(path, f"invalid name {path[-1]!r}: {_message(error, None)}")
    else:
        ctx.problem(path, _message(error, value))


def _is_type_literal(kind: str, path: KeyPath) -> bool:
    return kind == "literal_error" and len(path) == 3 and path[0] in SECTIONS and path[2] == "type"


def _report_type(kind: str, path: KeyPath, error: Any, ctx: Report) -> None:
    """Unknown or missing ``type`` of a provider, router or notifier."""
    if kind == "union_tag_not_found":
        ctx.problem(path, "missing key 'type'")
        return
    here = path if path[-1] == "type" else (*path, "type")
    ctx_info = error.get("ctx") or {}
    expected = ctx_info.get("expected_tags") or ctx_info.get("expected") or ""
    options = ", ".join(sorted(_quoted(expected)))
    tag = ctx_info.get("tag", error.get("input"))
    ctx.problem(here, f"unknown {SECTIONS[str(path[0])]} type {tag!r}; expected one of: {options}")


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
        return f"{_TYPE_MESSAGES[kind]} (got {got(value)})"
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        return f"must be {op} {info.get(key)} (got {got(value)})"
    if kind in ("literal_error", "enum"):
        expected = ", ".join(_quoted(str(info.get("expected", ""))))
        return f"must be one of: {expected} (got {got(value)})"
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind not in ("value_error", "assertion_error"):
        message = message[:1].lower() + message[1:]
    if value is None or isinstance(value, dict | list) or got(value) in message.split():
        return message
    if isinstance(value, str) and repr(value) in message:
        return message
    return f"{message} (got {got(value)})"
