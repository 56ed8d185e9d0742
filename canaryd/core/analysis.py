"""The pure analysis core: Flagger's canary state machine as plain functions.

Nothing here awaits, reads a clock or touches the network. The runtime asks
:func:`needs` what to observe, gathers an :class:`Observation`, and calls
:func:`decide`, which returns the new :class:`CanaryState` plus the effects to
carry out (route traffic, run post-rollout hooks, emit events). Operator
commands (:func:`start_rollout`, :func:`abort`, ...) are pure in the same way.
This module is the state machine's public face; its parts are :mod:`~canaryd.core.state`
(state and effects), :mod:`~canaryd.core.gates` (what a tick observes),
:mod:`~canaryd.core.tick` (:func:`decide`), :mod:`~canaryd.core.outcomes` (what the
router answered) and :mod:`~canaryd.core.commands` (operator commands); how one tick's
check is judged lives in :mod:`canaryd.core.checks`. Their names are re-exported here.

Rules (docs/flagger.md): the failed-check counter is cumulative for the whole
rollout, grows by at most one per tick, and the rollout is rolled back in the
tick in which it reaches ``threshold`` (or in the next tick, when a reload
lowered ``threshold`` to or under it); a closed gate waits without counting a
failure; no data fails a check unless the metric says ``onNoData: pass|hold``;
a router error holds the check (as in Flagger), it never fails one.
Once promotion has begun nothing rolls it back: the primary already runs the
new revision.
"""

from __future__ import annotations

from canaryd.core.checks import (
    PASSED,
    CompareSeries,
    HookResult,
    MetricValue,
    Needs,
    Observation,
    Outcome,
    Verdict,
    evaluate,
    judge_compare,
    judge_metric,
)
from canaryd.core.commands import (
    abort,
    approve,
    pause,
    promote,
    resume,
    rollback_again,
    skipped_gates,
    start_rollout,
)
from canaryd.core.gates import (
    closed_gate,
    gate_open,
    needs,
    next_weight,
)
from canaryd.core.outcomes import (
    pending_route,
    route_applied,
    route_refused,
    router_failed,
)
from canaryd.core.state import (
    ACTIVE,
    GATES,
    Action,
    CanaryState,
    CheckRecord,
    Decision,
    Effect,
    Emit,
    Phase,
    Route,
    RunHooks,
    evolve,
)
from canaryd.core.tick import (
    decide,
)

__all__ = [
    "ACTIVE",
    "GATES",
    "PASSED",
    "Action",
    "CanaryState",
    "CheckRecord",
    "CompareSeries",
    "Decision",
    "Effect",
    "Emit",
    "HookResult",
    "MetricValue",
    "Needs",
    "Observation",
    "Outcome",
    "Phase",
    "Route",
    "RunHooks",
    "Verdict",
    "abort",
    "approve",
    "closed_gate",
    "decide",
    "evaluate",
    "evolve",
    "gate_open",
    "judge_compare",
    "judge_metric",
    "needs",
    "next_weight",
    "pause",
    "pending_route",
    "promote",
    "resume",
    "rollback_again",
    "route_applied",
    "route_refused",
    "router_failed",
    "skipped_gates",
    "start_rollout",
]
