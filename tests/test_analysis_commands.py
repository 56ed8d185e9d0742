"""Analysis core: operator commands, new revisions, reloads and the state record."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from analysis_helpers import bad, canary, names, ok, routes, started

from canaryd.core import analysis as core
from canaryd.core.analysis import CanaryState, Emit, Observation, Phase, Route
from canaryd.errors import CommandError

# --------------------------------------------------------------------------- commands


def test_start_rollout_refuses_while_promoting() -> None:
    """A new revision while the primary is being promoted is refused until promotion ends."""
    spec = canary()
    promoting = replace(started(spec), phase=Phase.PROMOTING, canary_weight=50, primary_weight=50)
    with pytest.raises(CommandError, match=r"promoting revision v2 .* once the promotion"):
        core.start_rollout(spec, promoting, "v3", {}, "r2", 1.0)


def test_new_rollout_after_a_finished_one_starts_clean() -> None:
    """After Failed, a new rollout starts with zero failed checks and weight 0."""
    spec = canary()
    failed = core.abort(spec, started(spec), 1.0).state
    new = core.start_rollout(spec, replace(failed, failed_checks=3), "v3", {}, "r2", 2.0).state
    assert (new.phase, new.revision, new.failed_checks, new.canary_weight) == (
        Phase.PROGRESSING,
        "v3",
        0,
        0,
    )


def test_pause_freezes_and_resume_continues() -> None:
    """A paused rollout does nothing on ticks; resume returns to the phase it was in."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    paused = core.pause(spec, state, 2.0).state
    assert core.decide(spec, paused, bad(), 3.0).state == paused
    resumed = core.resume(spec, paused, 4.0).state
    assert resumed.phase is Phase.PROGRESSING and resumed.canary_weight == 10


def test_manual_promote_skips_remaining_steps() -> None:
    """promote goes straight to Promoting from any progressing phase."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.promote(spec, state, 2.0)
    assert d.state.phase is Phase.PROMOTING and routes(d) == [Route("promote", 90, 10)]


@pytest.mark.parametrize(
    "command",
    [core.abort, core.promote, core.pause, core.resume],
    ids=["abort", "promote", "pause", "resume"],
)
def test_commands_without_rollout_are_conflicts(command: Any) -> None:
    """Commands on an idle canary raise CommandError (HTTP 409)."""
    with pytest.raises(CommandError):
        command(canary(), CanaryState(), 1.0)


def test_abort_rolls_back_with_reason() -> None:
    """abort rolls back at once and says it was the operator."""
    spec = canary()
    d = core.abort(spec, started(spec), 1.0)
    assert d.state.phase is Phase.FAILED and d.state.reason == "aborted by operator"
    assert names(d) == ["rollout.rolled_back"]


def test_evolve_is_dataclasses_replace() -> None:
    """``evolve`` gives what ``dataclasses.replace`` gives, for every field; unknown names fail."""
    base = core.CanaryState(
        phase=core.Phase.PROGRESSING,
        revision="r1",
        rollout_id="x",
        metadata={"ticket": "OPS-1"},
        approvals=frozenset({"rollout"}),
        started_at=1.0,
    )
    changes: dict[str, Any] = {
        "phase": core.Phase.FAILED,
        "revision": "r2",
        "canary_weight": 40,
        "failed_checks": 3,
        "approvals": frozenset(),
        "reason": "why",
        "seq": 9,
    }
    for name, value in changes.items():
        assert core.evolve(base, **{name: value}) == replace(base, **{name: value})
    assert core.evolve(base, **changes) == replace(base, **changes)
    assert core.evolve(base) == base and core.evolve(base) is not base
    with pytest.raises(TypeError, match="no field wieght"):
        core.evolve(base, wieght=3)


def test_a_reload_lowering_threshold_under_failed_checks_rolls_back_next_tick() -> None:
    """failedChecks 3 with threshold lowered from 5 to 2 rolls back on the next tick, even a
    passing one."""
    spec = canary(threshold=5, maxWeight=100)
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    for t in range(3):
        state = core.decide(spec, state, bad(), 2.0 + t).state
    assert state.failed_checks == 3 and state.phase is Phase.PROGRESSING
    d = core.decide(canary(threshold=2, maxWeight=100), state, ok(), 9.0)
    assert d.state.phase is Phase.FAILED and routes(d) == [Route("rollback", 100, 0)]
    assert d.state.reason == "failedChecks 3 reached threshold 2"


# --------------------------------------------------------------------------- issue 13: Flagger


def test_a_new_revision_mid_rollout_restarts_the_analysis() -> None:
    """A new revision sends traffic back to the primary, resets the counters and says which
    revision replaced which."""
    spec = canary(threshold=5)
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    state = core.decide(spec, state, ok(), 2.0).state
    state = core.decide(spec, state, bad(), 3.0).state
    assert (state.canary_weight, state.failed_checks) == (20, 1)
    d = core.start_rollout(spec, state, "v3", {"by": "ci"}, "r2", 4.0)
    assert routes(d) == [Route("route", 100, 0)]
    assert (d.state.revision, d.state.rollout_id, d.state.phase) == ("v3", "r2", Phase.PROGRESSING)
    assert (d.state.canary_weight, d.state.failed_checks, d.state.ticks) == (0, 0, 0)
    assert names(d) == ["rollout.restarted", "rollout.started"]
    restarted = next(e.event for e in d.effects if isinstance(e, Emit))
    assert (restarted.revision, restarted.fields["previousRevision"]) == ("v3", "v2")


def test_the_same_revision_again_is_a_no_op() -> None:
    """Starting the revision already under way changes nothing and has no effects."""
    spec = canary()
    state = core.decide(spec, started(spec), Observation(), 1.0).state
    d = core.start_rollout(spec, state, "v2", {}, "r2", 2.0)
    assert d.state == state and d.effects == ()
