"""Configuration loader: cross-references, semantic rules, all problems at once, the summary."""

from __future__ import annotations

from pathlib import Path

import pytest
from loader_helpers import PRE, canary, load, problems

from canaryd.config.loader import summary

# --------------------------------------------------------------------------- cross references

REF_CASES = [
    (
        "router",
        canary().replace("router: lb", "router: lbb"),
        "c.yaml:5:5: canaries[0].router: unknown router 'lbb'; did you mean 'lb'?",
    ),
    (
        "provider",
        canary(provider="thanos"),
        "c.yaml:6:5: canaries[0].provider: unknown provider 'thanos'; defined providers: prom",
    ),
    (
        "template",
        canary(
            "stepWeight: 10\nmetrics:\n"
            "  - {name: e, templateRef: {name: err}, thresholdRange: {max: 1}}"
        ),
        "c.yaml:9:35: canaries[0].analysis.metrics[0].templateRef.name: unknown template 'err'; "
        "no templates are defined",
    ),
    (
        "notifier",
        canary(alerts="[{name: a, notifier: slack}]"),
        "c.yaml:6:24: canaries[0].alerts[0].notifier: unknown notifier 'slack'; "
        "no notifiers are defined",
    ),
    (
        "metric-provider",
        canary(
            "stepWeight: 10\nmetrics:\n"
            "  - {name: request-duration, provider: p2, thresholdRange: {max: 1}}"
        ),
        "c.yaml:9:36: canaries[0].analysis.metrics[0].provider: unknown provider 'p2'; "
        "defined providers: prom",
    ),
    (
        "template-provider",
        PRE + "templates: {t: {provider: thanos, query: up}}\n",
        "c.yaml:3:17: templates.t.provider: unknown provider 'thanos'; defined providers: prom",
    ),
    (
        "builtin",
        canary("stepWeight: 10\nmetrics:\n  - {name: latency, thresholdRange: {max: 1}}"),
        "c.yaml:9:12: canaries[0].analysis.metrics[0].name: unknown metric 'latency': not built in "
        "(request-success-rate, request-duration); set templateRef or query",
    ),
    (
        "no-provider",
        canary(
            "stepWeight: 10\nmetrics:\n  - {name: request-duration, thresholdRange: {max: 1}}"
        ).replace(
            "providers: {prom: {type: prometheus}}",
            "providers: {a: {type: prometheus}, b: {type: prometheus}}",
        ),
        "c.yaml:9:11: canaries[0].analysis.metrics[0]: metric 'request-duration' has no provider "
        "(2 providers are defined); set provider on it or provider on the canary",
    ),
    (
        "duplicate-canary",
        canary() + "  - {name: web, router: lb, analysis: {iterations: 1}}\n",
        "c.yaml:8:5: canaries[1]: duplicate canary 'default/web' (first at c.yaml:4:5)",
    ),
    (
        "max-below-step",
        canary("stepWeight: 10\nmaxWeight: 5"),
        "c.yaml:8:7: canaries[0].analysis.maxWeight: maxWeight (5) is below stepWeight (10)",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in REF_CASES], ids=[c[0] for c in REF_CASES]
)
def test_reference_rule(tmp_path: Path, text: str, expected: str) -> None:
    """Each cross-reference or semantic rule is reported at the referring key."""
    assert problems(tmp_path, text) == [expected]


def test_same_name_in_other_namespace_is_fine(tmp_path: Path) -> None:
    """Canaries are unique by namespace/name, so one name may appear in two namespaces."""
    text = canary() + "  - {name: web, namespace: prod, router: lb, analysis: {iterations: 1}}\n"
    assert [c.key for c in load(tmp_path, text).settings.canaries] == ["default/web", "prod/web"]


def test_metric_provider_from_template_or_single_provider(tmp_path: Path) -> None:
    """A metric needs no provider of its own when its template or the only provider gives one."""
    text = (
        canary(
            "stepWeight: 10\nmetrics:\n"
            "  - {name: request-duration, thresholdRange: {max: 1}}\n"
            "  - {name: e, templateRef: {name: t}, thresholdRange: {max: 1}}"
        )
        + "templates: {t: {provider: prom, query: up}}\n"
    )
    assert len(load(tmp_path, text).settings.canaries[0].analysis.metrics) == 2


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    """Type errors, unknown keys and broken references come out together, in file order."""
    text = canary("threshold: -1\nstepWeigt: 10\niterations: 2", provider="nope") + (
        "notifiers: {n: {type: slack}}\nlisten: nowhere\n"
    )
    assert problems(tmp_path, text) == [
        "c.yaml:6:5: canaries[0].provider: unknown provider 'nope'; defined providers: prom",
        "c.yaml:8:7: canaries[0].analysis.threshold: must be >= 0 (got -1)",
        "c.yaml:9:7: canaries[0].analysis.stepWeigt: unknown key 'stepWeigt'; "
        "did you mean 'stepWeight'?",
        "c.yaml:11:13: notifiers.n: set exactly one of url or url_file",
        "c.yaml:12:1: listen: must be HOST:PORT, e.g. 127.0.0.1:9879 (got 'nowhere')",
    ]


# --------------------------------------------------------------------------- summary


def test_summary_singular(tmp_path: Path) -> None:
    """The summary line uses singular nouns for one of a kind."""
    text = canary() + "notifiers: {n: {type: slack, url: http://x}}\n"
    text += "templates: {t: {provider: prom, query: up}}\n"
    assert summary(load(tmp_path, text)) == (
        "config OK: 1 canary, 1 provider, 1 router, 1 notifier, 1 template (1 file)"
    )
