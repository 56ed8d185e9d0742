"""Flagger's scheduler tests, ported as tables: phases, weights per tick, iterations, gates, hooks.

Each case drives the pure core tick by tick, the way Flagger's tests call
``advanceCanary`` (``pkg/controller/scheduler_*_test.go``), and states after every
tick the phase, the canary weight and, where Flagger's test checks them, the
iteration, the failed checks and the routes sent. A rollout starts where Flagger's
tests "detect changes" (Initialized -> Progressing). Where canaryd deliberately
differs (docs/flagger.md, "Deliberate differences") the row says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from canaryd.config import CanaryConfig, WebhookType
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
)

PASS = Observation(metrics=(MetricValue("request-success-rate", 99.9, 99, None),))
FAIL = Observation(metrics=(MetricValue("request-success-rate", 42.0, 99, None),))
PRE_FAIL = replace(PASS, pre_rollout=(HookResult("db-migrate", False, "HTTP 500"),))
ROLLBACK_HOOK = replace(PASS, rollback=(HookResult("stop", True),))


def closed(kind: WebhookType) -> Observation:
    """A passing check whose gate ``kind`` is closed."""
    return replace(PASS, gate_open=False, closed_gate=kind)


Command = Callable[[CanaryConfig, CanaryState, float], Decision]


@dataclass(frozen=True)
class Tick:
    """One call of the scheduler (or one operator command) and what must hold after it."""

    phase: Phase
    weight: int
    obs: Observation = PASS
    iteration: int | None = None
    failed: int | None = None
    routes: tuple[tuple[str, int, int], ...] | None = None
    """The routes sent in this tick as (action, primary, canary); None: not checked."""
    reload: dict[str, Any] | None = None
    """Analysis keys changed (a config reload) before this tick."""
    command: Command | None = None
    """An operator command instead of a tick."""
    events: tuple[str, ...] = ()
    """Event names this tick must emit (besides others)."""


def spec_of(analysis: dict[str, Any]) -> CanaryConfig:
    """Flagger's test canary (threshold 10, stepWeight 10, maxWeight 50) changed by ``analysis``."""
    base: dict[str, Any] = {"interval": "1m", "threshold": 10, "stepWeight": 10, "maxWeight": 50}
    base.update(analysis)
    base = {k: v for k, v in base.items() if v is not None}
    return CanaryConfig.model_validate(
        {"name": "podinfo", "namespace": "default", "router": "mesh", "analysis": base}
    )


def restart(revision: str) -> Command:
    """The operator (CI) starting ``revision`` while another is under way."""
    return lambda spec, state, now: core.start_rollout(spec, state, revision, {}, "r2", now)


BLUE_GREEN = {"stepWeight": None, "maxWeight": None}
P, F, W, WP = Phase.PROGRESSING, Phase.FAILED, Phase.WAITING, Phase.WAITING_PROMOTION
PR, FI, OK = Phase.PROMOTING, Phase.FINALISING, Phase.SUCCEEDED
INCREASE, PROMOTION = WebhookType.CONFIRM_TRAFFIC_INCREASE, WebhookType.CONFIRM_PROMOTION

CASES: list[tuple[str, dict[str, Any], list[Tick]]] = [
    (
        # TestScheduler_DeploymentAnalysisPhases
        "analysis-phases-step-100-promotion-50",
        {"stepWeight": 100, "maxWeight": None, "stepWeightPromotion": 50},
        [
            Tick(P, 100, routes=(("route", 0, 100),)),
            Tick(PR, 100, routes=(("promote", 0, 100),)),
            Tick(PR, 50, routes=(("route", 50, 50),)),
            Tick(FI, 0, routes=(("route", 100, 0),)),
            Tick(OK, 0, routes=(), events=("rollout.promoted",)),
        ],
    ),
    (
        # TestScheduler_DeploymentBlueGreenAnalysisPhases: no analysis on the first tick (a
        # failing observation does not count), all traffic to the canary after iterations, one
        # more analysis under full traffic, then promotion
        "blue-green-phases",
        {**BLUE_GREEN, "iterations": 1},
        [
            Tick(P, 0, obs=FAIL, iteration=1, failed=0, routes=()),
            Tick(P, 100, iteration=2, routes=(("route", 0, 100),)),
            Tick(PR, 100, routes=(("promote", 0, 100),)),
            Tick(FI, 0, routes=(("route", 100, 0),)),
            Tick(OK, 0),
        ],
    ),
    (
        "blue-green-fails-under-full-traffic",
        {**BLUE_GREEN, "iterations": 2, "threshold": 2},
        [
            Tick(P, 0, iteration=1),
            Tick(P, 0, iteration=2),
            Tick(P, 100, iteration=3, routes=(("route", 0, 100),)),
            Tick(P, 100, obs=FAIL, failed=1),
            Tick(F, 0, obs=FAIL, failed=2, routes=(("rollback", 100, 0),)),
        ],
    ),
    (
        "blue-green-promotion-gate-before-and-after-the-switch",
        {
            **BLUE_GREEN,
            "iterations": 1,
            "webhooks": [{"name": "p", "type": "confirm-promotion", "url": "http://h/"}],
        },
        [
            Tick(P, 0, iteration=1),
            Tick(WP, 0, obs=closed(PROMOTION), iteration=1, routes=()),
            Tick(WP, 100, iteration=2, routes=(("route", 0, 100),)),
            Tick(WP, 100, obs=closed(PROMOTION), routes=()),
            Tick(PR, 100, routes=(("promote", 0, 100),)),
        ],
    ),
    (
        # TestScheduler_DeploymentPromotion (Flagger's test sets 60/40 by hand; here the steps
        # get there), default canary 10% steps to maxWeight 50
        "promotion",
        {},
        [
            *(Tick(P, w, routes=(("route", 100 - w, w),)) for w in (10, 20, 30, 40, 50)),
            Tick(PR, 50, routes=(("promote", 50, 50),)),
            Tick(FI, 0, routes=(("route", 100, 0),)),
            Tick(OK, 0),
        ],
    ),
    (
        # TestScheduler_DeploymentRollback: failedChecks at threshold roll back on the next tick
        "rollback-at-threshold",
        {"threshold": 2},
        [
            Tick(P, 10),
            Tick(P, 10, obs=FAIL, failed=1, routes=()),
            Tick(F, 0, obs=FAIL, failed=2, routes=(("rollback", 100, 0),)),
        ],
    ),
    (
        # a reload putting failedChecks over the threshold: Flagger compares at the start of the
        # tick, so the rollout rolls back even though this tick's check passes
        "threshold-lowered-by-a-reload",
        {"threshold": 5},
        [
            Tick(P, 10),
            Tick(P, 10, obs=FAIL, failed=1),
            Tick(P, 10, obs=FAIL, failed=2),
            Tick(P, 10, obs=FAIL, failed=3),
            Tick(F, 0, reload={"threshold": 2}, routes=(("rollback", 100, 0),)),
        ],
    ),
    (
        # TestScheduler_DeploymentNewRevisionReset: a new revision mid-analysis sends all traffic
        # back to the primary and starts over with the counters reset
        "new-revision-restarts-analysis",
        {},
        [
            Tick(P, 10, routes=(("route", 90, 10),)),
            Tick(P, 10, obs=FAIL, failed=1),
            Tick(
                P,
                0,
                command=restart("v3"),
                failed=0,
                iteration=0,
                routes=(("route", 100, 0),),
                events=("rollout.restarted", "rollout.started"),
            ),
            Tick(P, 10, routes=(("route", 90, 10),)),
        ],
    ),
    (
        # TestScheduler_DeploymentABTesting: matched users on the canary (canaryd hands the
        # match rules to the router), iterations, then promotion
        "ab-testing",
        {
            **BLUE_GREEN,
            "iterations": 2,
            "match": [{"headers": {"x-canary": {"exact": "insider"}}}],
        },
        [
            Tick(P, 0, obs=FAIL, failed=0, iteration=0),
            Tick(P, 0, iteration=1, routes=()),
            Tick(PR, 0, iteration=2, routes=(("promote", 100, 0),)),
            Tick(FI, 0, routes=(("route", 100, 0),)),
            Tick(OK, 0),
        ],
    ),
    (
        # Flagger's maxWeight(): the last of stepWeights is the maximum; maxWeight is ignored
        "stepWeights-win-over-maxWeight",
        {"stepWeight": None, "maxWeight": 50, "stepWeights": [1, 2, 10, 80]},
        [
            *(Tick(P, w) for w in (1, 2, 10, 80)),
            Tick(PR, 80, routes=(("promote", 20, 80),)),
        ],
    ),
    (
        # Flagger's nextStepWeight(): stepWeight sets the step, stepWeights the maximum; canaryd
        # stops the last step at the maximum (70) where Flagger would overshoot to 90
        "stepWeight-with-stepWeights",
        {"stepWeight": 30, "maxWeight": None, "stepWeights": [5, 70]},
        [*(Tick(P, w) for w in (30, 60, 70)), Tick(PR, 70)],
    ),
    (
        # confirm-rollout: Waiting without counting failures until the gate opens
        "confirm-rollout-gate",
        {"webhooks": [{"name": "go", "type": "confirm-rollout", "url": "http://h/"}]},
        [
            Tick(W, 0, obs=replace(FAIL, gate_open=False), failed=0, routes=()),
            Tick(W, 0, obs=replace(PASS, gate_open=False), failed=0),
            Tick(P, 0, events=("gate.approved",)),
            Tick(P, 10, routes=(("route", 90, 10),)),
        ],
    ),
    (
        # confirm-traffic-increase holds every step, including the last one before
        # confirm-promotion is asked (Flagger asks both at maxWeight)
        "traffic-increase-then-promotion-gates",
        {
            "maxWeight": 20,
            "webhooks": [
                {"name": "t", "type": "confirm-traffic-increase", "url": "http://h/"},
                {"name": "p", "type": "confirm-promotion", "url": "http://h/"},
            ],
        },
        [
            Tick(P, 0, obs=closed(INCREASE), routes=(), events=("gate.waiting",)),
            Tick(P, 10),
            Tick(P, 20),
            Tick(P, 20, obs=closed(INCREASE), routes=()),
            Tick(WP, 20, obs=closed(PROMOTION), routes=()),
            Tick(WP, 20, obs=replace(FAIL, gate_open=False), failed=1),
            Tick(PR, 20, routes=(("promote", 80, 20),)),
        ],
    ),
    (
        # pre-rollout hooks run before the first step; a failure counts and is retried
        "pre-rollout-hook",
        {"webhooks": [{"name": "db-migrate", "type": "pre-rollout", "url": "http://h/"}]},
        [
            Tick(P, 0, obs=PRE_FAIL, failed=1, routes=()),
            Tick(P, 10, failed=1, routes=(("route", 90, 10),)),
        ],
    ),
    (
        # rollback hooks roll back in Progressing, but are not consulted once promoting
        "rollback-hook-while-progressing",
        {"webhooks": [{"name": "stop", "type": "rollback", "url": "http://h/"}]},
        [Tick(P, 10), Tick(F, 0, obs=ROLLBACK_HOOK, routes=(("rollback", 100, 0),))],
    ),
    (
        "rollback-hook-ignored-while-promoting",
        {
            "stepWeight": 100,
            "maxWeight": None,
            "webhooks": [{"name": "stop", "type": "rollback", "url": "http://h/"}],
        },
        [Tick(P, 100), Tick(PR, 100), Tick(FI, 0, obs=ROLLBACK_HOOK), Tick(OK, 0)],
    ),
]


def check(row: int, tick: Tick, d: Decision) -> None:
    """Assert what ``tick`` expects of decision ``d``."""
    where = f"tick {row + 1}"
    assert (d.state.phase, d.state.canary_weight) == (tick.phase, tick.weight), where
    assert d.state.primary_weight == 100 - d.state.canary_weight, where
    if tick.iteration is not None:
        assert d.state.iteration == tick.iteration, where
    if tick.failed is not None:
        assert d.state.failed_checks == tick.failed, where
    if tick.routes is not None:
        sent = [
            (e.action, e.primary_weight, e.canary_weight) for e in d.effects if isinstance(e, Route)
        ]
        assert sent == list(tick.routes), where
    emitted = [e.event.name for e in d.effects if isinstance(e, Emit)]
    assert [n for n in tick.events if n not in emitted] == [], where


@pytest.mark.parametrize(("analysis", "ticks"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_flagger_scheduler_expectations(analysis: dict[str, Any], ticks: list[Tick]) -> None:
    """Tick by tick, canaryd's core reaches the phases, weights, iterations and routes Flagger's
    scheduler reaches for the same analysis block."""
    spec = spec_of(analysis)
    state = core.start_rollout(spec, CanaryState(), "v2", {}, "r1", 0.0).state
    for row, tick in enumerate(ticks):
        now = 60.0 * (row + 1)
        if tick.reload is not None:
            spec = spec_of({**analysis, **tick.reload})
        if tick.command is not None:
            d = tick.command(spec, state, now)
        else:
            d = core.decide(spec, state, tick.obs, now)
        check(row, tick, d)
        state = d.state
