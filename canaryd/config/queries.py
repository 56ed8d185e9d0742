"""Which provider answers each metric, and its query rendered for one canary.

Part of reading the configuration: ``canaryd check`` renders every query the
daemon will run, so a template that names an unknown variable is a problem at
load time, not a failed tick (docs/design.md, "Layers").
"""

from __future__ import annotations

from dataclasses import dataclass

from canaryd.config.meshqueries import builtin_query, builtin_variables
from canaryd.config.models import CanaryConfig, CompareSpec, MetricSpec, Settings
from canaryd.config.templates import render, template_variables
from canaryd.core.judgemodel import MetricConfig
from canaryd.errors import TemplateError


@dataclass(frozen=True, slots=True)
class ResolvedMetric:
    """A metric with its provider and its query rendered for one canary."""

    spec: MetricSpec
    provider: str
    query: str
    primary_query: str | None = None

    @property
    def compare(self) -> CompareSpec | None:
        """The metric's compare settings, if it is judged against the primary."""
        return self.spec.compare


def compare_config(spec: MetricSpec) -> MetricConfig:
    """The statistical judge's settings for a compare metric."""
    assert spec.compare is not None
    return spec.compare.to_config(spec.name)


def _metric_source(
    settings: Settings, canary: CanaryConfig, m: MetricSpec
) -> tuple[str, str | None, str | None]:
    """The metric's query template, the provider it names, and its mesh (built-ins only)."""
    if m.query is not None:
        return m.query, m.provider, None
    if m.templateRef is not None:
        ref = m.templateRef
        found = settings.template_for(ref, canary.namespace)
        if found is None:
            where = ref.namespace or canary.namespace
            raise TemplateError(
                f"metric {m.name}: template {ref.name!r} is not defined in namespace {where!r}"
            )
        tpl = found[1]
        return tpl.query, m.provider or tpl.provider, None
    mesh = canary.meshProvider or settings.meshProvider
    return builtin_query(m.name, mesh), m.provider, mesh


def resolve_metric(settings: Settings, canary: CanaryConfig, m: MetricSpec) -> ResolvedMetric:
    """Pick one metric's provider and render its query (both sides for a compare metric).

    Raises:
        TemplateError: the template names an unknown variable or mesh, or no provider fits.
    """
    text, provider, mesh = _metric_source(settings, canary, m)
    provider = (
        provider
        or canary.provider
        or (next(iter(settings.providers)) if len(settings.providers) == 1 else None)
    )
    if provider is None or provider not in settings.providers:
        raise TemplateError(f"metric {m.name}: no provider (set provider on the canary)")

    def rendered(template: str, target: str) -> str:
        values = template_variables(
            namespace=canary.namespace,
            name=canary.name,
            target=target,
            interval=m.interval,
            variables={**canary.variables, **m.templateVariables},
            service=canary.service_name,
            ingress=canary.ingress_name,
            route=canary.route_name,
            provider_type=settings.providers[str(provider)].type,
        )
        return render(template, builtin_variables(mesh, values) if mesh else values)

    primary = None
    if m.compare is not None:
        primary = rendered(m.compare.primaryQuery or text, canary.primary_target_name)
        text = m.compare.canaryQuery or text
    return ResolvedMetric(m, provider, rendered(text, canary.target_name), primary)


def resolve_metrics(settings: Settings, canary: CanaryConfig) -> list[ResolvedMetric]:
    """Pick each metric's provider and render its query (both sides for compare metrics).

    Raises:
        TemplateError: a template names an unknown variable, or no provider fits.
    """
    return [resolve_metric(settings, canary, m) for m in canary.analysis.metrics]
