"""Checks that need the validated configuration, and warnings for the operator.

:func:`check_queries` renders every metric query as the daemon will and
locates each failure at the key that causes it (the metric's ``query``, the
template's ``query``, or the ``meshProvider`` that picked a built-in query).
:func:`lint` finds what is valid but probably not meant: durations without a
unit, ``iterations`` next to weights, a configuration without canaries,
Flagger's deprecated metric ``threshold``, and the deliberate differences from
Flagger that affect a pasted manifest (docs/flagger.md, "Deliberate differences").
"""

from __future__ import annotations

from typing import Any

from canaryd.config.check import NOT_SECRETS
from canaryd.config.flaggermap import KeyPath
from canaryd.config.models import CanaryConfig, MetricSpec, Settings
from canaryd.config.queries import resolve_metric
from canaryd.config.yamlpos import Report, format_path
from canaryd.errors import TemplateError

DURATION_KEYS = frozenset(
    {
        "gateTimeout",
        "initialBackoff",
        "interval",
        "lookback",
        "maxAge",
        "maxBackoff",
        "pollInterval",
        "step",
        "timeout",
    }
)
"""Keys holding durations: a bare number there is read as seconds, with a warning."""

FLAGGER_MIN_INTERVAL = 10.0
"""Flagger raises an analysis interval below this to this (``GetAnalysisInterval``)."""


def check_queries(settings: Settings, raw: dict[str, Any], ctx: Report) -> None:
    """Render every metric query; each failure is a problem at the key that causes it."""
    for i, canary in enumerate(settings.canaries):
        for j, metric in enumerate(canary.analysis.metrics):
            try:
                resolved = resolve_metric(settings, canary, metric)
            except TemplateError as exc:
                here = _query_key(settings, raw, canary, metric, (i, j))
                ctx.problem(here, f"{canary.key}: {exc}")
                continue
            if metric.compare is not None and settings.providers[resolved.provider].type == "web":
                ctx.problem(
                    ("canaries", i, "analysis", "metrics", j, "compare"),
                    f"{canary.key}: compare: needs range queries, which the web provider "
                    f"{resolved.provider!r} has none of (docs/providers.md)",
                )


def _query_key(
    settings: Settings,
    raw: dict[str, Any],
    canary: CanaryConfig,
    metric: MetricSpec,
    index: tuple[int, int],
) -> KeyPath:
    """The key a metric's query comes from."""
    i, j = index
    here: KeyPath = ("canaries", i, "analysis", "metrics", j)
    if metric.query is not None:
        return (*here, "query")
    ref = metric.templateRef
    if ref is not None:
        found = settings.template_for(ref, canary.namespace)
        return ("templates", found[0], "query") if found else (*here, "templateRef")
    raw_canary = raw["canaries"][i] if isinstance(raw.get("canaries"), list) else {}
    if isinstance(raw_canary, dict) and "meshProvider" in raw_canary:
        return ("canaries", i, "meshProvider")
    return ("meshProvider",) if "meshProvider" in raw else (*here, "name")


def lint(
    settings: Settings, raw: dict[str, Any], ctx: Report, manifests: set[KeyPath]
) -> list[str]:
    """Warnings, each located as ``FILE:LINE:COLUMN: key.path: message``."""
    found: list[tuple[KeyPath, str]] = list(_bare_durations(raw, ()))
    if not settings.canaries:
        found.append(((), "defines no canary: nothing will be analysed"))
    canaries = raw.get("canaries")
    for i, canary in enumerate(canaries if isinstance(canaries, list) else []):
        if isinstance(canary, dict):
            found += _canary_warnings(canary, ("canaries", i), ("canaries", i) in manifests)
    out = []
    for path, message in found:
        loc, shown = ctx.locate(path)
        out.append(f"{loc}: {format_path(shown)}: {message}")
    return out


def _bare_durations(value: Any, path: KeyPath) -> list[tuple[KeyPath, str]]:
    """Durations written as plain numbers (``interval: 10``): read as seconds, but ambiguous."""
    out: list[tuple[KeyPath, str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in NOT_SECRETS:
                continue
            number = isinstance(item, int | float) and not isinstance(item, bool)
            if key in DURATION_KEYS and (number or _numeric(item)):
                out.append(
                    ((*path, key), f"{item} has no unit: read as {item}s; write e.g. {item}s")
                )
            else:
                out += _bare_durations(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _bare_durations(item, (*path, i))
    return out


def _numeric(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _canary_warnings(
    canary: dict[str, Any], here: KeyPath, manifest: bool
) -> list[tuple[KeyPath, str]]:
    analysis = canary.get("analysis")
    if not isinstance(analysis, dict):
        return []
    out: list[tuple[KeyPath, str]] = []
    a_here = (*here, "analysis")
    iterations = analysis.get("iterations")
    weights = [k for k in ("stepWeight", "stepWeights", "maxWeight") if k in analysis]
    if isinstance(iterations, int) and iterations > 0 and weights:
        out.append(
            (
                (*a_here, "iterations"),
                f"iterations makes this a blue/green (or A/B) rollout: {', '.join(weights)} "
                "ignored, as in Flagger",
            )
        )
    metrics = analysis.get("metrics")
    for j, metric in enumerate(metrics if isinstance(metrics, list) else []):
        if isinstance(metric, dict) and "threshold" in metric:
            out.append(((*a_here, "metrics", j, "threshold"), _threshold_note(metric)))
    if manifest:
        out += _flagger_differences(analysis, a_here)
    return out


def _threshold_note(metric: dict[str, Any]) -> str:
    if "thresholdRange" in metric:
        return "threshold is deprecated and ignored next to thresholdRange, as in Flagger"
    bound = "min" if metric.get("name") == "request-success-rate" else "max"
    return f"threshold is deprecated (Flagger); read as thresholdRange.{bound}"


def _flagger_differences(analysis: dict[str, Any], here: KeyPath) -> list[tuple[KeyPath, str]]:
    """One line per deliberate difference from Flagger that this pasted manifest meets."""
    out: list[tuple[KeyPath, str]] = []
    interval = analysis.get("interval")
    seconds = _seconds(interval)
    if seconds is not None and seconds < FLAGGER_MIN_INTERVAL:
        out.append(
            (
                (*here, "interval"),
                f"differs from Flagger: Flagger runs an interval below 10s every 10s; "
                f"canaryd every {seconds:g}s (docs/flagger.md)",
            )
        )
    return out


def _seconds(value: Any) -> float | None:
    from canaryd.durations import parse_duration

    try:
        return parse_duration(value)
    except (ValueError, TypeError):
        return None
