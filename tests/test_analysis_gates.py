"""Analysis core: rollout webhooks and gates, their timeouts and approvals."""

from __future__ import annotations

from dataclasses import replace

import pytest
from analysis_helpers import bad, canary, names, ok, routes, run, started

from canaryd.config import OnNoData, WebhookType
from canaryd.core import analysis as core
from canaryd.core.analysis import (
    CanaryState,
    Emit,
    HookResult,
    MetricValue,
    Observation,
    Phase,
    Route,
)
from canaryd.errors import CommandError

# --------------------------------------------------------------------------- webhooks and gates


def test_rollback_webhook_2xx_rolls_back_at_once() -> None:
    """A rollback webhook answering 2xx aborts the rollout in that tick, whatever the metrics."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    obs = replace(ok(), rollback=(HookResult("manual", True),))
    d = core.decide(spec, state, obs, 2.0)
    assert d.state.phase is Phase.FAILED
    assert d.state.reason == "rollback webhook manual answered OK"
    assert d.state.failed_checks == 0


def test_pre_rollout_failure_counts_and_is_retried() -> None:
    """A failing pre-rollout webhook is a failed check; it runs again until it passes."""
    spec = canary(webhooks=[{"name": "db", "type": "pre-rollout", "url": "http://h/"}])
    state = started(spec)
    assert core.needs(spec, state).pre_rollout
    d = core.decide(
        spec, state, Observation(pre_rollout=(HookResult("db", False, "HTTP 503"),)), 1.0
    )
    assert d.state.failed_checks == 1 and d.state.canary_weight == 0
    assert names(d) == ["pre_rollout.failed"]
    assert core.needs(spec, d.state).pre_rollout
    d = core.decide(spec, d.state, Observation(pre_rollout=(HookResult("db", True),)), 2.0)
    assert d.state.pre_rollout_done and d.state.canary_weight == 10
    assert not core.needs(spec, d.state).pre_rollout


def test_confirm_rollout_gate_waits_then_progresses() -> None:
    """A closed confirm-rollout gate keeps the rollout Waiting without counting failures."""
    spec = canary(webhooks=[{"name": "go", "type": "confirm-rollout", "url": "http://h/"}])
    state = started(spec)
    assert core.needs(spec, state).gate is WebhookType.CONFIRM_ROLLOUT
    ds = run(spec, state, Observation(gate_open=False), 5)
    assert all(d.state.phase is Phase.WAITING and d.state.failed_checks == 0 for d in ds)
    d = core.decide(spec, ds[-1].state, Observation(gate_open=True), 9.0)
    assert d.state.phase is Phase.PROGRESSING


@pytest.mark.parametrize(
    ("gate_open", "phase", "events"),
    [
        (True, Phase.PROGRESSING, ["gate.approved"]),
        (False, Phase.WAITING, ["rollout.waiting"]),
    ],
    ids=["open-never-waits", "closed-waits"],
)
def test_confirm_rollout_enters_waiting_only_when_the_gate_is_closed(
    gate_open: bool, phase: Phase, events: list[str]
) -> None:
    """A gated rollout starts unconfirmed, not Waiting; its first tick asks the gate and only a
    closed gate makes it Waiting (as in Flagger)."""
    spec = canary(webhooks=[{"name": "go", "type": "confirm-rollout", "url": "http://h/"}])
    start = core.start_rollout(spec, CanaryState(), "v2", {}, "r1", 0.0)
    assert start.state.phase is not Phase.WAITING and names(start) == ["rollout.started"]
    need = core.needs(spec, start.state)
    assert (need.gate, need.checks) == (WebhookType.CONFIRM_ROLLOUT, False)
    d = core.decide(spec, start.state, Observation(gate_open=gate_open), 1.0)
    assert (d.state.phase, names(d), d.state.canary_weight) == (phase, events, 0)


@pytest.mark.parametrize(
    ("phase", "polled"),
    [
        (Phase.PROGRESSING, True),
        (Phase.WAITING, True),
        (Phase.WAITING_PROMOTION, True),
        (Phase.PROMOTING, False),
        (Phase.FINALISING, False),
    ],
    ids=lambda v: str(v),
)
def test_rollback_hooks_are_not_polled_once_promotion_has_begun(phase: Phase, polled: bool) -> None:
    """Rollback webhooks are asked while Progressing/Waiting/WaitingPromotion, never while
    Promoting or Finalising, where a stray 2xx cannot roll the promotion back."""
    spec = canary(webhooks=[{"name": "stop", "type": "rollback", "url": "http://h/"}])
    state = replace(started(spec), phase=phase, canary_weight=50, primary_weight=50)
    assert core.needs(spec, state).rollback_hooks is polled
    d = core.decide(spec, state, Observation(rollback=(HookResult("stop", True),)), 1.0)
    assert (d.state.phase is Phase.FAILED) is polled


@pytest.mark.parametrize(
    ("gate", "muted"),
    [
        ("confirm-rollout", True),
        ("confirm-rollout", False),
        ("confirm-traffic-increase", True),
        ("confirm-promotion", True),
        ("confirm-promotion", False),
    ],
    ids=lambda v: str(v),
)
def test_waiting_event_of_a_muted_gate_says_so(gate: str, muted: bool) -> None:
    """The waiting event carries muteAlert exactly when the gate's closing webhook is muted."""
    spec = canary(maxWeight=20, webhooks=[{"name": "g", "type": gate, "url": "http://h/"}])
    state = started(spec)
    if gate != "confirm-rollout":
        state = core.decide(spec, state, Observation(), 1.0).state  # weight 10
    if gate == "confirm-promotion":
        state = core.decide(spec, state, ok(), 2.0).state  # weight 20 = maxWeight
    d = core.decide(spec, state, replace(ok(), gate_open=False, gate_muted=muted), 3.0)
    waiting = [e.event for e in d.effects if isinstance(e, Emit) and "waiting" in e.event.name]
    assert len(waiting) == 1
    assert waiting[0].fields.get("muteAlert", False) is muted


def test_traffic_increase_gate_holds_the_weight() -> None:
    """A closed confirm-traffic-increase gate stops the next step but counts no failure."""
    spec = canary(webhooks=[{"name": "ok", "type": "confirm-traffic-increase", "url": "http://h/"}])
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.decide(spec, state, replace(ok(), gate_open=False), 2.0)
    assert d.state.canary_weight == 10 and d.state.failed_checks == 0
    assert d.state.gate == "confirm-traffic-increase"
    assert names(d) == ["gate.waiting"]
    d2 = core.decide(spec, d.state, replace(ok(), gate_open=False), 3.0)
    assert names(d2) == [], "waiting is announced once, not every tick"
    d3 = core.decide(spec, d2.state, ok(), 4.0)
    assert d3.state.canary_weight == 20 and d3.state.gate is None


def test_confirm_promotion_gate_waits_in_waiting_promotion_and_keeps_checking() -> None:
    """At maxWeight a closed promotion gate means WaitingPromotion, where checks still count."""
    spec = canary(maxWeight=10, threshold=2, webhooks=[{"name": "p", "type": "confirm-promotion"}])
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.decide(spec, state, replace(ok(), gate_open=False), 2.0)
    assert d.state.phase is Phase.WAITING_PROMOTION
    d = core.decide(spec, d.state, replace(bad(), gate_open=False), 3.0)
    assert d.state.failed_checks == 1 and d.state.phase is Phase.WAITING_PROMOTION
    d = core.decide(spec, d.state, ok(), 4.0)
    assert d.state.phase is Phase.PROMOTING


@pytest.mark.parametrize(
    ("gate_type", "phase"),
    [("confirm-rollout", Phase.WAITING), ("confirm-promotion", Phase.PROGRESSING)],
    ids=["rollout-gate", "promotion-gate"],
)
def test_gate_timeout_fails_the_rollout(gate_type: str, phase: Phase) -> None:
    """A gate closed for longer than its gateTimeout rolls the rollout back."""
    spec = canary(
        maxWeight=10,
        webhooks=[{"name": "g", "type": gate_type, "url": "http://h/", "gateTimeout": "10s"}],
    )
    state = started(spec)
    if phase is Phase.PROGRESSING:
        state = core.decide(spec, state, Observation(), 0.0).state
    closed = replace(ok(), gate_open=False)
    d = core.decide(spec, state, closed, 1.0)
    assert d.state.phase is not Phase.FAILED
    d = core.decide(spec, d.state, closed, 9.0)
    assert d.state.phase is not Phase.FAILED
    d = core.decide(spec, d.state, closed, 11.5)
    assert d.state.phase is Phase.FAILED
    assert "timed out after 10s" in (d.state.reason or "")
    assert "gate.timed_out" in names(d)


def test_confirm_rollout_gate_times_out_from_the_start_and_is_announced_once() -> None:
    """The confirm-rollout gate's clock starts with the rollout; waiting is announced once."""
    spec = canary(
        webhooks=[
            {"name": "g", "type": "confirm-rollout", "url": "http://h/", "gateTimeout": "10s"}
        ]
    )
    d = core.decide(spec, started(spec), Observation(gate_open=False), 5.0)
    assert names(d) == ["rollout.waiting"] and d.state.gate_since == 0.0
    d = core.decide(spec, d.state, Observation(gate_open=False), 7.0)
    assert names(d) == [] and d.state.phase is Phase.WAITING
    d = core.decide(spec, d.state, Observation(gate_open=False), 10.0)
    assert d.state.phase is Phase.FAILED


def test_time_spent_paused_does_not_count_towards_a_gate_timeout() -> None:
    """Resuming a rollout paused at a closed gate restarts the gate's timeout."""
    spec = canary(
        webhooks=[
            {
                "name": "g",
                "type": "confirm-traffic-increase",
                "url": "http://h/",
                "gateTimeout": "10s",
            }
        ]
    )
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    state = core.decide(spec, state, replace(ok(), gate_open=False), 2.0).state
    paused = core.pause(spec, state, 3.0).state
    resumed = core.resume(spec, paused, 3600.0).state
    d = core.decide(spec, resumed, replace(ok(), gate_open=False), 3601.0)
    assert d.state.phase is Phase.PROGRESSING and d.state.gate == "confirm-traffic-increase"


def test_manual_approval_opens_a_gate_once() -> None:
    """An approval is recorded in state and used up by the step it let through."""
    spec = canary(webhooks=[{"name": "m", "type": "confirm-traffic-increase"}])
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    state = core.approve(spec, state, "traffic-increase", 2.0).state
    assert core.gate_open(
        spec, state, WebhookType.CONFIRM_TRAFFIC_INCREASE, (HookResult("m", False),)
    )
    state = core.decide(spec, state, ok(), 3.0).state
    assert state.canary_weight == 20 and state.approvals == frozenset()


@pytest.mark.parametrize("obs", [bad(), Observation()], ids=["failing", "held-no-data-hold"])
def test_gate_timeout_is_checked_on_ticks_that_do_not_pass(obs: Observation) -> None:
    """A gate closed past its gateTimeout fails the rollout on a failing or held tick too."""
    spec = canary(
        threshold=10,
        webhooks=[
            {
                "name": "g",
                "type": "confirm-traffic-increase",
                "url": "http://h/",
                "gateTimeout": "10s",
            }
        ],
    )
    state = core.decide(spec, started(spec), Observation(), 0.0).state
    state = core.decide(spec, state, replace(ok(), gate_open=False), 1.0).state
    assert state.gate == "confirm-traffic-increase"
    if not obs.metrics:
        obs = Observation(metrics=(MetricValue("sr", None, 99, None, on_no_data=OnNoData.HOLD),))
    d = core.decide(spec, state, replace(obs, gate_open=False), 12.0)
    assert d.state.phase is Phase.FAILED
    assert "gate.timed_out" in names(d)


# --------------------------------------------------------------------------- issue 12: commands


def test_approving_a_gate_the_canary_does_not_have_is_refused() -> None:
    """approve --gate rollout on a canary without a confirm-rollout webhook is a conflict."""
    spec = canary(webhooks=[{"name": "p", "type": "confirm-promotion"}])
    with pytest.raises(CommandError, match=r"has no rollout gate.*its gates: promotion"):
        core.approve(spec, started(spec), "rollout", 1.0)
    assert core.approve(spec, started(spec), "promotion", 1.0).state.approvals == {"promotion"}


def test_promote_refuses_to_skip_a_closed_promotion_gate_without_force() -> None:
    """promote past a confirm-promotion gate needs approval or force; force is said in the
    event."""
    spec = canary(webhooks=[{"name": "p", "type": "confirm-promotion"}])
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    with pytest.raises(CommandError, match=r"would skip its gate.*promotion.*--force"):
        core.promote(spec, state, 2.0)
    d = core.promote(spec, state, 2.0, force=True)
    event = next(e.event for e in d.effects if isinstance(e, Emit))
    assert (event.name, event.fields["forced"], event.fields["skippedGates"]) == (
        "rollout.promoting",
        True,
        ["promotion"],
    )
    approved = core.approve(spec, state, "promotion", 2.0).state
    assert core.promote(spec, approved, 3.0).state.phase is Phase.PROMOTING


def test_succeeded_rollout_keeps_no_approval() -> None:
    """An approval the rollout never used ends with it (Succeeded keeps none)."""
    spec = canary(maxWeight=10, webhooks=[{"name": "r", "type": "confirm-rollout"}])
    state = replace(started(spec), gate=None, gate_since=None, approvals=frozenset({"rollout"}))
    ds = run(spec, state, ok(), 4)
    assert ds[-1].state.phase is Phase.SUCCEEDED and ds[-1].state.approvals == frozenset()


def test_the_last_step_asks_traffic_increase_then_promotion() -> None:
    """At maxWeight a closed confirm-traffic-increase gate holds before confirm-promotion is
    asked (Flagger asks both, in that order)."""
    spec = canary(
        maxWeight=20,
        webhooks=[
            {"name": "t", "type": "confirm-traffic-increase", "url": "http://h/"},
            {"name": "p", "type": "confirm-promotion", "url": "http://h/"},
        ],
    )
    state = run(spec, started(spec), ok(), 2)[-1].state
    assert state.canary_weight == 20
    need = core.needs(spec, state)
    assert need.gates == (WebhookType.CONFIRM_TRAFFIC_INCREASE, WebhookType.CONFIRM_PROMOTION)
    closed = WebhookType.CONFIRM_TRAFFIC_INCREASE
    d = core.decide(spec, state, replace(ok(), gate_open=False, closed_gate=closed), 3.0)
    assert (d.state.phase, d.state.gate) == (Phase.PROGRESSING, "confirm-traffic-increase")
    closed = WebhookType.CONFIRM_PROMOTION
    d = core.decide(spec, d.state, replace(ok(), gate_open=False, closed_gate=closed), 4.0)
    assert (d.state.phase, d.state.gate) == (Phase.WAITING_PROMOTION, "confirm-promotion")
    assert core.needs(spec, d.state).gates == (WebhookType.CONFIRM_PROMOTION,)


def test_a_restart_asks_the_confirm_rollout_gate_again() -> None:
    """The new revision of a restart waits for confirm-rollout like any new rollout."""
    spec = canary(webhooks=[{"name": "go", "type": "confirm-rollout", "url": "http://h/"}])
    state = core.decide(spec, started(spec), Observation(gate_open=True), 1.0).state
    state = core.decide(spec, state, Observation(), 2.0).state
    assert (state.phase, state.canary_weight) == (Phase.PROGRESSING, 10)
    d = core.start_rollout(spec, state, "v3", {}, "r2", 3.0)
    assert (d.state.phase, d.state.gate) == (Phase.PROGRESSING, "confirm-rollout")
    assert core.needs(spec, d.state).gates == (WebhookType.CONFIRM_ROLLOUT,)
    assert routes(d) == [Route("route", 100, 0)]
    waiting = core.decide(spec, d.state, Observation(gate_open=False), 4.0).state
    assert (waiting.phase, waiting.canary_weight) == (Phase.WAITING, 0)
