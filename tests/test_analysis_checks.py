"""Analysis core: judging a tick's metrics, no data, holds for canaryd's own trouble, compare."""

from __future__ import annotations

from typing import Any

import pytest
from analysis_helpers import bad, canary, names, ok, run, started

from canaryd.config import CanaryConfig, OnNoData
from canaryd.core import analysis as core
from canaryd.core.analysis import Emit, HookResult, MetricValue, Observation, Outcome, Phase

# --------------------------------------------------------------------------- metric judging


@pytest.mark.parametrize(
    ("metric", "outcome", "reason"),
    [
        (MetricValue("sr", 99.0, 99, None), Outcome.PASS, None),
        (MetricValue("sr", 98.99, 99, None), Outcome.FAIL, "sr 98.99 < min 99"),
        (MetricValue("lat", 500.0, None, 500), Outcome.PASS, None),
        (MetricValue("lat", 512.5, None, 500), Outcome.FAIL, "lat 512.5 > max 500"),
        (MetricValue("sr", None, 99, None), Outcome.FAIL, "sr: no data"),
        (MetricValue("sr", float("nan"), 99, None), Outcome.FAIL, "sr: no data"),
        (MetricValue("sr", None, 99, None, on_no_data=OnNoData.PASS), Outcome.PASS, None),
        (MetricValue("sr", None, 99, None, on_no_data=OnNoData.HOLD), Outcome.HOLD, "sr: no data"),
        (
            MetricValue("sr", None, 99, None, error="prometheus bad_data: parse error"),
            Outcome.FAIL,
            "sr: prometheus bad_data: parse error",
        ),
        (MetricValue("x", float("inf"), None, 10), Outcome.FAIL, "x inf > max 10"),
    ],
    ids=[
        "min-inclusive",
        "under-min",
        "max-inclusive",
        "over-max",
        "no-data-fails",
        "nan-is-no-data",
        "no-data-pass",
        "no-data-hold",
        "provider-error-fails",
        "infinity-over-max",
    ],
)
def test_judge_metric(metric: MetricValue, outcome: Outcome, reason: str | None) -> None:
    """Bounds are inclusive; no data fails unless onNoData says otherwise; errors fail."""
    assert core.judge_metric(metric) == (outcome, reason)


def test_hold_neither_advances_nor_counts() -> None:
    """onNoData: hold keeps the weight and the failed-check counter as they are."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    obs = Observation(metrics=(MetricValue("sr", None, 99, None, on_no_data=OnNoData.HOLD),))
    ds = run(spec, state, obs, 10)
    assert all(d.state.canary_weight == 10 and d.state.failed_checks == 0 for d in ds)
    assert all(d.state.phase is Phase.PROGRESSING for d in ds)
    assert names(ds[0]) == ["check.held"]


def test_canaryds_own_trouble_holds_and_alerts() -> None:
    """A query canaryd could not make (out of fds) holds tick after tick, never counts."""
    spec = canary(threshold=1)
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    emfile = "gave up after 1 attempt: OSError: Too many open files"
    obs = Observation(metrics=(MetricValue("sr", None, 99, None, error=emfile, own=True),))
    ds = run(spec, state, obs, 10)
    assert all(d.state.canary_weight == 10 and d.state.failed_checks == 0 for d in ds)
    assert all(d.state.phase is Phase.PROGRESSING for d in ds)
    assert names(ds[0]) == ["check.held_by_canaryd"]
    assert ds[0].record is not None and ds[0].record.outcome is Outcome.HOLD
    assert ds[0].record.reason == f"sr: canaryd's own trouble, not the canary's: {emfile}"


def test_a_webhook_canaryd_could_not_call_holds() -> None:
    """A rollout webhook not called for want of descriptors holds, unless a metric fails."""
    spec = canary(webhooks=[{"name": "load", "type": "rollout", "url": "http://127.0.0.1:9"}])
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    held = (HookResult("load", False, "ClientConnectorError: Too many open files", own=True),)
    d = core.decide(spec, state, Observation(rollout=held, metrics=ok().metrics), 2.0)
    assert (d.state.failed_checks, d.state.canary_weight, names(d)) == (
        0,
        10,
        ["check.held_by_canaryd"],
    )
    d = core.decide(spec, state, Observation(rollout=held, metrics=bad().metrics), 2.0)
    assert d.state.failed_checks == 1 and names(d) == ["check.failed"]


def test_a_real_failure_beside_canaryds_own_trouble_still_counts() -> None:
    """A metric out of range fails the check even when another one held for canaryd's trouble."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    held = MetricValue("sr", None, 99, None, error="out of fds", own=True)
    obs = Observation(metrics=(held, MetricValue("lat", 900.0, None, 500)))
    d = core.decide(spec, state, obs, 2.0)
    assert (d.state.failed_checks, d.state.reason) == (1, "lat 900 > max 500")


def test_no_data_rolls_back_after_threshold() -> None:
    """A canary with no traffic (no data) is rolled back, as Flagger teaches."""
    spec = canary(threshold=2)
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    ds = run(spec, state, Observation(metrics=(MetricValue("sr", None, 99, None),)), 2)
    assert ds[-1].state.phase is Phase.FAILED
    assert ds[-1].state.reason == "sr: no data"


def test_tick_event_carries_every_metric_value() -> None:
    """analysis.tick lists every metric with its value and bounds."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    obs = Observation(
        metrics=(MetricValue("sr", 99.5, 99, None), MetricValue("lat", 120, None, 500))
    )
    d = core.decide(spec, state, obs, 2.0)
    tick = next(
        e.event for e in d.effects if isinstance(e, Emit) and e.event.name == "analysis.tick"
    )
    assert tick.fields["metrics"] == [
        {"name": "sr", "value": 99.5, "min": 99, "max": None},
        {"name": "lat", "value": 120, "min": None, "max": 500},
    ]
    assert d.record is not None and d.record.outcome is Outcome.PASS


# --------------------------------------------------------------------------- compare (judge)


def compare_canary(**judge: Any) -> CanaryConfig:
    """A canary with one compare metric (latency, increase is bad)."""
    metric = {"name": "latency", "query": "q", "compare": {"direction": "increase"}}
    return canary(metrics=[metric], judge=judge) if judge else canary(metrics=[metric])


def series(spec: CanaryConfig, control: list[float], experiment: list[float]) -> Observation:
    """An observation holding one compare metric's two series."""
    cfg = spec.analysis.metrics[0].compare
    assert cfg is not None
    return Observation(
        compare=(core.CompareSeries(cfg.to_config("latency"), tuple(control), tuple(experiment)),)
    )


PRIMARY = [100.0, 104, 98, 101, 97, 103, 99, 102, 100, 96, 105, 101]


@pytest.mark.parametrize(
    ("experiment", "outcome"),
    [
        ([v * 1.3 for v in PRIMARY], Outcome.FAIL),
        (list(PRIMARY), Outcome.PASS),
        ([v * 0.7 for v in PRIMARY], Outcome.PASS),
    ],
    ids=["30pct-slower-fails", "identical-passes", "faster-passes-when-only-increase-is-bad"],
)
def test_compare_metric_judges_canary_against_primary(
    experiment: list[float], outcome: Outcome
) -> None:
    """A canary clearly slower than the primary fails the check even without fixed bounds."""
    spec = compare_canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.decide(spec, state, series(spec, PRIMARY, experiment), 2.0)
    assert d.record is not None and d.record.outcome is outcome
    assert d.record.judge["results"][0]["name"] == "latency"
    if outcome is Outcome.FAIL:
        assert d.state.reason == "compare: Fail (score 0; latency High)"
        assert d.state.failed_checks == 1


def test_marginal_judgement_holds_by_default() -> None:
    """A Marginal score neither advances nor counts a failure (onMarginal: hold)."""
    spec = canary(
        metrics=[
            {"name": "a", "query": "q", "compare": {"direction": "increase"}},
            {"name": "b", "query": "q", "compare": {"direction": "increase"}},
            {"name": "c", "query": "q", "compare": {"direction": "increase"}},
            {"name": "d", "query": "q", "compare": {"direction": "increase"}},
        ],
        judge={"thresholds": {"pass": 90, "marginal": 70}},
    )
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    slow = tuple(v * 1.3 for v in PRIMARY)
    obs = Observation(
        compare=tuple(
            core.CompareSeries(
                m.compare.to_config(m.name),
                tuple(PRIMARY),
                slow if m.name == "a" else tuple(PRIMARY),
            )
            for m in spec.analysis.metrics
            if m.compare is not None
        )
    )
    d = core.decide(spec, state, obs, 2.0)
    assert d.record is not None and d.record.outcome is Outcome.HOLD
    assert (d.state.canary_weight, d.state.failed_checks) == (10, 0)


def test_compare_query_error_fails_the_check() -> None:
    """A provider error on either side fails the check with the provider's message."""
    spec = compare_canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    cfg = spec.analysis.metrics[0].compare
    assert cfg is not None
    obs = Observation(compare=(core.CompareSeries(cfg.to_config("latency"), error="timeout"),))
    d = core.decide(spec, state, obs, 2.0)
    assert d.state.reason == "latency: timeout"


def test_compare_query_canaryd_could_not_make_holds() -> None:
    """A compare query canaryd itself could not make holds the check instead of failing it."""
    spec = compare_canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    cfg = spec.analysis.metrics[0].compare
    assert cfg is not None
    held = core.CompareSeries(cfg.to_config("latency"), error="no free connection", own=True)
    d = core.decide(spec, state, Observation(compare=(held,)), 2.0)
    assert (d.state.failed_checks, d.state.canary_weight) == (0, 10)
    assert names(d) == ["check.held_by_canaryd"]
