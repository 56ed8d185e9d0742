"""``canaryd check --online``: every query run once, every router asked whether it is there.

The offline check reads the file; this one talks to the systems the file names,
once, with a timeout each (docs/design.md, "Online check"): each canary's
metric queries are rendered as the daemon renders them and run against their
provider, and each router that can check itself cheaply (HAProxy: its backend
and both servers, read with ``show servers state``) does so. Problems are
located ``FILE:LINE:COL`` at the key that names the query or the router.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from canaryd.errors import CanarydError, Problem, RouterError, TemplateError
from canaryd.http import HttpTransport, make_transport
from canaryd.routers import Checkable, Router, build_router
from canaryd.terminal import escape

if TYPE_CHECKING:
    from canaryd.config.loader import Loaded
    from canaryd.config.models import CanaryConfig, MetricSpec, Settings
    from canaryd.providers import MetricsProvider

QUERY_TIMEOUT = 10.0
"""Seconds one query or router check may take, retries included."""

KeyPath = tuple[str | int, ...]


@dataclass
class Findings:
    """What the online check printed and the problems it found."""

    lines: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _located(loaded: Loaded, path: KeyPath, message: str) -> Problem:
    """A problem at ``path`` of the merged configuration (its file position when known)."""
    from canaryd.config.yamlpos import format_path

    report = loaded.report
    if report is None:
        return Problem(
            loaded.files[0] if loaded.files else "<config>", 0, 0, format_path(path), message
        )
    loc, shown = report.locate(path)
    return Problem(loc.file, loc.line, loc.column, format_path(shown), message)


def _query_path(
    settings: Settings, canary: CanaryConfig, metric: MetricSpec, i: int, j: int
) -> KeyPath:
    """The key a metric's query is written at: its ``query``, its template's, or the metric."""
    here: KeyPath = ("canaries", i, "analysis", "metrics", j)
    if metric.query is not None:
        return (*here, "query")
    if metric.templateRef is not None:
        found = settings.template_for(metric.templateRef, canary.namespace)
        return ("templates", found[0], "query") if found else (*here, "templateRef")
    return (*here, "name")


async def _run_query(
    provider: MetricsProvider, query: str, timeout: float
) -> tuple[float | None, str | None]:
    """The value of one query, or the error that stopped it."""
    try:
        with anyio.fail_after(timeout):
            return await provider.query(query, budget=timeout), None
    except TimeoutError:
        return None, f"no answer within {timeout:g}s"
    except CanarydError as exc:
        return None, str(exc)


def _shown(value: float | None) -> str:
    return "no data" if value is None else f"{value:.6g}"


async def check_metrics(
    loaded: Loaded, providers: dict[str, MetricsProvider], out: Findings, timeout: float
) -> None:
    """Run every canary's metric queries once, printing query and value (or "no data").

    A metric whose provider could not be built is skipped (that problem is already
    reported at the provider).
    """
    from canaryd.config.queries import resolve_metric

    settings = loaded.settings
    for i, canary in enumerate(settings.canaries):
        for j, metric in enumerate(canary.analysis.metrics):
            path = _query_path(settings, canary, metric, i, j)
            try:
                resolved = resolve_metric(settings, canary, metric)
            except TemplateError as exc:
                out.problems.append(_located(loaded, path, f"{canary.key}: {exc}"))
                continue
            provider = providers.get(resolved.provider)
            if provider is None:
                continue
            queries = [("", resolved.query)]
            if resolved.primary_query is not None:
                queries = [("canary ", resolved.query), ("primary ", resolved.primary_query)]
            for side, query in queries:
                head = f"{canary.key} metric {metric.name} ({side}query on {resolved.provider})"
                out.lines.append(f"{escape(head)}:\n  {escape(query)}")
                value, error = await _run_query(provider, query, timeout)
                if error is not None:
                    out.lines.append(f"  = error: {escape(error)}")
                    out.problems.append(_located(loaded, path, f"{canary.key}: {error}"))
                else:
                    out.lines.append(f"  = {_shown(value)}")


def build_providers(loaded: Loaded, out: Findings) -> dict[str, MetricsProvider]:
    """Every provider that can be built; the others are problems at their key."""
    from canaryd.providers import build_provider

    built: dict[str, MetricsProvider] = {}
    for name, cfg in loaded.settings.providers.items():
        try:
            built[name] = build_provider(cfg)
        except CanarydError as exc:
            out.problems.append(_located(loaded, ("providers", name), str(exc)))
    return built


async def check_routers(
    loaded: Loaded, session: HttpTransport, out: Findings, timeout: float
) -> None:
    """Ask every router that can check itself cheaply whether it is reachable and set up."""
    for name, cfg in loaded.settings.routers.items():
        try:
            router = build_router(name, cfg, session)
        except CanarydError as exc:
            out.problems.append(_located(loaded, ("routers", name), str(exc)))
            continue
        try:
            found = await _check_router(router, timeout)
        except CanarydError as exc:
            out.problems.append(_located(loaded, ("routers", name), str(exc)))
            continue
        finally:
            with anyio.CancelScope(shield=True):
                await router.aclose()
        out.lines.append(f"router {escape(name)} ({cfg.type}): {escape(found)}")


async def _check_router(router: Router, timeout: float) -> str:
    """What the router's own check found, or "not checked" for a router without one.

    Raises:
        RouterError: the check failed, or took longer than ``timeout``.
    """
    if not isinstance(router, Checkable):
        return "not checked"
    try:
        with anyio.fail_after(timeout):
            return await router.check()
    except TimeoutError as exc:
        raise RouterError(f"no answer within {timeout:g}s") from exc


async def online_check(loaded: Loaded, timeout: float = QUERY_TIMEOUT) -> Findings:
    """Run the queries and router checks of a loaded configuration, one at a time."""
    out = Findings()
    built = build_providers(loaded, out)
    try:
        async with make_transport() as session:
            await check_metrics(loaded, dict(built), out, timeout)
            await check_routers(loaded, session, out, timeout)
    finally:
        with anyio.CancelScope(shield=True):
            for provider in built.values():
                await provider.aclose()
    return out
