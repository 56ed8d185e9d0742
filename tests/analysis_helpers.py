"""Canary configs, observations and drivers shared by the test_analysis_* modules."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from canaryd.config import CanaryConfig
from canaryd.core import analysis as core
from canaryd.core.analysis import (
    CanaryState,
    Decision,
    Emit,
    MetricValue,
    Observation,
    Phase,
    Route,
)


def canary(**analysis: Any) -> CanaryConfig:
    """A canary config with the given analysis keys (default: 10% steps to 50%, threshold 3)."""
    base: dict[str, Any] = {"interval": "1s", "threshold": 3, "stepWeight": 10, "maxWeight": 50}
    base.update(analysis)
    return CanaryConfig.model_validate(
        {"name": "web", "namespace": "prod", "router": "lb", "analysis": base}
    )


def ok(value: float = 99.9) -> Observation:
    """A passing observation: success rate within bounds."""
    return Observation(metrics=(MetricValue("request-success-rate", value, 99, None),))


def bad(value: float = 90.0) -> Observation:
    """A failing observation: success rate under its minimum."""
    return ok(value)


def started(spec: CanaryConfig) -> CanaryState:
    """State right after ``start_rollout``."""
    return core.start_rollout(spec, CanaryState(), "v2", {}, "r1", 0.0).state


def run(spec: CanaryConfig, state: CanaryState, obs: Observation, ticks: int) -> list[Decision]:
    """Drive ``ticks`` ticks with the same observation."""
    out = []
    for t in range(ticks):
        d = core.decide(spec, state, obs, float(t + 1))
        out.append(d)
        state = d.state
    return out


def names(d: Decision) -> list[str]:
    """Event names of a decision, without the per-tick line."""
    return [
        e.event.name for e in d.effects if isinstance(e, Emit) and e.event.name != "analysis.tick"
    ]


def routes(d: Decision) -> list[Route]:
    """Route effects of a decision."""
    return [e for e in d.effects if isinstance(e, Route)]


# --------------------------------------------------------------------------- promotion under way


def promoting(spec: CanaryConfig) -> CanaryState:
    """A rollout whose promotion was accepted: the primary already runs the new revision."""
    return replace(started(spec), phase=Phase.PROMOTING, canary_weight=50, primary_weight=50)
