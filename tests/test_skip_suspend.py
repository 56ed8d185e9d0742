"""Flagger's ``skipAnalysis`` and ``suspend`` in the pure analysis core (docs/flagger.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from canaryd.config import CanaryConfig, Settings, WebhookType
from canaryd.core import analysis as core
from canaryd.core.analysis import (
    CanaryState,
    Decision,
    Emit,
    HookResult,
    MetricValue,
    Observation,
    Phase,
    Route,
    RunHooks,
)
from canaryd.http import HttpTransport
from canaryd.service.runtime import CanaryRunner
from canaryd.service.services import Services
from canaryd.service.store import StateStore
from canaryd.testing import FakeProvider, FakeRouter


def canary(**keys: Any) -> CanaryConfig:
    """A canary walking 10% steps to 50% with the given canary-level keys."""
    analysis = {"interval": "1s", "threshold": 3, "stepWeight": 10, "maxWeight": 50}
    analysis.update(keys.pop("analysis", {}))
    return CanaryConfig.model_validate(
        {"name": "web", "namespace": "prod", "router": "lb", "analysis": analysis, **keys}
    )


FAILING = Observation(metrics=(MetricValue("request-success-rate", 10.0, 99, None),))


def drive(spec: CanaryConfig, state: CanaryState, ticks: int) -> list[Decision]:
    """Run ``ticks`` ticks, every one observing a failing metric."""
    out = []
    for t in range(ticks):
        decision = core.decide(spec, state, FAILING, float(t + 1))
        out.append(decision)
        state = decision.state
    return out


def events(decisions: list[Decision]) -> list[str]:
    """Every event name of the decisions, without the per-tick line."""
    return [
        e.event.name
        for d in decisions
        for e in d.effects
        if isinstance(e, Emit) and e.event.name != "analysis.tick"
    ]


def start(spec: CanaryConfig) -> CanaryState:
    """The state right after a rollout starts."""
    return core.start_rollout(spec, CanaryState(), "v2", {}, "r1", 0.0).state


def test_skip_analysis_promotes_without_judging_any_metric() -> None:
    """With skipAnalysis a rollout is promoted even though every metric fails, never analysed."""
    spec = canary(skipAnalysis=True)
    decisions = drive(spec, start(spec), 3)
    assert [d.state.phase for d in decisions] == [
        Phase.PROMOTING,
        Phase.FINALISING,
        Phase.SUCCEEDED,
    ]
    assert all(d.state.failed_checks == 0 for d in decisions)
    assert "check.failed" not in events(decisions)
    assert events(decisions)[-1] == "rollout.promoted"
    assert not core.needs(spec, start(spec)).checks


def test_skip_analysis_routes_all_traffic_to_the_primary_and_runs_post_rollout() -> None:
    """A skipped analysis promotes, leaves 100% on the primary and runs post-rollout hooks."""
    spec = canary(skipAnalysis=True)
    decisions = drive(spec, start(spec), 3)
    effects = [e for d in decisions for e in d.effects]
    assert Route("promote", 100, 0) in effects
    assert decisions[-1].state.primary_weight == 100
    assert RunHooks(WebhookType.POST_ROLLOUT) in effects


def test_skip_analysis_still_waits_for_the_confirm_rollout_gate() -> None:
    """As in Flagger, the confirm-rollout gate comes before the skip."""
    spec = canary(
        skipAnalysis=True,
        analysis={"webhooks": [{"name": "go", "type": "confirm-rollout"}]},
    )
    state = start(spec)
    closed = core.decide(spec, state, Observation(gate_open=False), 1.0)
    assert closed.state.phase is Phase.WAITING
    opened = core.decide(spec, closed.state, Observation(gate_open=True), 2.0)
    promoted = core.decide(spec, opened.state, Observation(), 3.0)
    assert promoted.state.phase is Phase.PROMOTING


def test_skip_analysis_honours_a_rollback_webhook() -> None:
    """A rollback webhook that answers OK still rolls a skipped rollout back."""
    spec = canary(skipAnalysis=True)
    hit = Observation(rollback=(HookResult("stop", True),))
    decision = core.decide(spec, start(spec), hit, 1.0)
    assert decision.state.phase is Phase.FAILED


def test_suspend_freezes_a_rollout_until_unset() -> None:
    """A suspended canary does nothing on its ticks; unsuspended, it carries on."""
    suspended = canary(suspend=True)
    state = start(suspended)
    assert not core.needs(suspended, state).anything
    frozen = drive(suspended, state, 5)
    assert all(d.state == state and not d.effects for d in frozen)
    resumed = drive(canary(), state, 1)
    assert resumed[0].state.canary_weight == 10


def test_threshold_unset_or_zero_is_one() -> None:
    """Flagger's GetAnalysisThreshold: no threshold (or 0) rolls back at the first failure."""
    for analysis in ({"threshold": 0}, {}):
        keys: dict[str, Any] = {"interval": "1s", "stepWeight": 10, **analysis}
        spec = CanaryConfig.model_validate({"name": "web", "router": "lb", "analysis": keys})
        assert spec.analysis.threshold == 1
        state = core.decide(spec, start(spec), Observation(), 1.0).state  # first step: 10%
        failed = core.decide(spec, state, FAILING, 2.0)
        assert failed.state.phase is Phase.FAILED


# --------------------------------------------------------------------------- through the runtime


def _runtime_settings(tmp_path: Path, **canary_keys: Any) -> Settings:
    """One canary on provider ``prom`` and router ``lb``, with the given canary-level keys."""
    return Settings.model_validate(
        {
            "state": f"sqlite://{tmp_path}/state.db",
            "providers": {"prom": {"type": "prometheus"}},
            "routers": {"lb": {"type": "webhook", "url": "http://127.0.0.1:9/"}},
            "canaries": [
                {
                    "name": "web",
                    "namespace": "prod",
                    "router": "lb",
                    "analysis": {
                        "interval": "1s",
                        "threshold": 2,
                        "stepWeight": 25,
                        "metrics": [{"name": "sr", "query": "q", "thresholdRange": {"min": 99}}],
                    },
                    **canary_keys,
                }
            ],
        }
    )


def _Provider() -> FakeProvider:  # noqa: N802 - the name the tests below use
    """A provider whose every answer, 1.0, is far below the metric's minimum."""
    return FakeProvider([1.0])


_Router = FakeRouter


def _runner(
    cfg: Settings, store: StateStore, session: HttpTransport
) -> tuple[CanaryRunner, FakeProvider, FakeRouter]:
    provider, router = _Provider(), _Router()
    services = Services(
        cfg, session, {"prom": provider}, {"lb": router}, store, clock=lambda: 1000.0
    )
    return CanaryRunner(cfg.canaries[0], CanaryState(), services), provider, router


@pytest.mark.anyio
async def test_runtime_skip_analysis_promotes_without_a_single_query(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Through the runtime, skipAnalysis promotes with the router and never queries a metric."""
    runner, provider, router = _runner(
        _runtime_settings(tmp_path, skipAnalysis=True), store, session
    )
    await runner.start_rollout("v2", {})
    for _ in range(3):
        await runner.tick()
    assert runner.state.phase is Phase.SUCCEEDED
    assert provider.queries == []
    assert [(r.action, r.primary_weight) for r in router.requests] == [
        ("promote", 100),
        ("route", 100),
    ]
    assert (await store.load_states())["prod/web"].phase is Phase.SUCCEEDED


@pytest.mark.anyio
async def test_runtime_suspend_neither_queries_nor_routes(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Through the runtime, a suspended canary's ticks query nothing and move no traffic."""
    runner, provider, router = _runner(_runtime_settings(tmp_path, suspend=True), store, session)
    await runner.start_rollout("v2", {})
    for _ in range(3):
        await runner.tick()
    assert (runner.state.phase, runner.state.canary_weight) == (Phase.PROGRESSING, 0)
    assert (provider.queries, router.requests) == ([], [])
