"""dryRun metrics: judged, recorded and shown, but never failing or holding a check."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from canaryd.config.models import CanaryConfig, MetricSpec, OnNoData
from canaryd.core import analysis as core
from canaryd.core.analysis import CanaryState, Emit, MetricValue, Observation, Outcome
from canaryd.core.checks import Needs, evaluate

CHECKS = Needs(checks=True)


def test_a_dry_run_metric_out_of_range_does_not_fail_the_check() -> None:
    """A dry-run metric below its minimum leaves the check passing."""
    obs = Observation(metrics=(MetricValue("shadow", 1.0, 99, None, dry_run=True),))
    assert evaluate(CHECKS, obs)[0] is Outcome.PASS


def test_a_dry_run_metric_without_data_does_not_hold_or_fail() -> None:
    """No data from a dry-run metric neither holds (onNoData hold) nor fails (onNoData fail)."""
    for on_no_data in (OnNoData.HOLD, OnNoData.FAIL):
        shadow = MetricValue("shadow", None, 1, None, on_no_data=on_no_data, dry_run=True)
        assert evaluate(CHECKS, Observation(metrics=(shadow,)))[0] is Outcome.PASS


def test_a_real_metric_still_fails_next_to_a_dry_run_one() -> None:
    """The first failure is the real metric's, not the dry-run metric's listed before it."""
    obs = Observation(
        metrics=(
            MetricValue("shadow", 1.0, 99, None, dry_run=True),
            MetricValue("success", 90.0, 99, None),
        )
    )
    outcome, reason, _ = evaluate(CHECKS, obs)
    assert (outcome, reason) == (Outcome.FAIL, "success 90 < min 99")


def _spec(**metric: Any) -> CanaryConfig:
    shadow = {"name": "shadow", "query": "up", "thresholdRange": {"min": 99}, **metric}
    analysis = {"interval": "1s", "threshold": 1, "stepWeight": 10, "maxWeight": 50}
    return CanaryConfig.model_validate(
        {"name": "web", "namespace": "prod", "router": "lb", "analysis": analysis}
        | {"analysis": {**analysis, "metrics": [shadow]}}
    )


def test_the_tick_event_and_record_show_what_the_dry_run_metric_would_have_done() -> None:
    """The analysis.tick event names the dry-run verdict and the record marks the metric;
    the rollout advances."""
    spec = _spec(dryRun=True)
    state = core.start_rollout(spec, CanaryState(), "v2", {}, "r1", 0.0).state
    state = core.decide(spec, state, Observation(), 1.0).state  # first step: no analysis
    obs = Observation(metrics=(MetricValue("shadow", 42.0, 99, None, dry_run=True),))
    d = core.decide(spec, state, obs, 2.0)
    tick = next(e.event for e in d.effects if isinstance(e, Emit))
    assert tick.name == "analysis.tick"
    assert tick.fields["dryRun"] == ["shadow 42 < min 99 (dry run, would fail)"]
    assert tick.fields["metrics"][0]["dryRun"] is True
    assert (d.state.canary_weight, d.state.failed_checks) == (20, 0)


def test_dry_run_is_off_by_default_and_refused_on_compare_metrics() -> None:
    """dryRun defaults to false; a compare metric cannot be dry-run."""
    assert _spec().analysis.metrics[0].dryRun is False
    with pytest.raises(ValidationError, match="dryRun applies to thresholdRange metrics"):
        MetricSpec.model_validate(
            {"name": "c", "query": "up", "compare": {"primaryQuery": "up"}, "dryRun": True}
        )
