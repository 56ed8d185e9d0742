"""Check evaluation: what one tick observed, and the verdict on it.

The runtime gathers an :class:`Observation` as :class:`Needs` asks (webhook
results, metric values, the two series of each compare metric); :func:`evaluate`
turns it into a :data:`Verdict` for the state machine of :mod:`canaryd.core.analysis`.
Pure like it: no I/O, no clock.

Rules (docs/design.md, "Analysis rules"): webhooks and metrics are judged in config order and
the first failure is the reason; a failure anywhere fails the check, otherwise
the first hold holds it; no data fails a check unless the metric says
``onNoData: pass|hold``; bounds are inclusive. An error marked ``own`` is
canaryd's own trouble (out of file descriptors or memory, its own queue, a tick
it could not finish in time): it holds, never fails (docs/reliability.md,
"canaryd's own trouble").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from canaryd.config.models import JudgeSpec, OnNoData, WebhookType
from canaryd.core.judgemodel import MetricConfig, MetricPair
from canaryd.core.scoring import Thresholds


class Outcome(StrEnum):
    """What one check concluded."""

    PASS = "pass"
    FAIL = "fail"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class MetricValue:
    """One metric's observation in a tick, with its bounds.

    ``value`` None means no data; ``error`` set means the query failed, and
    ``own`` that it failed for canaryd's own trouble, not the provider's.
    ``dry_run``: judged and shown, never failing or holding a check (docs/design.md,
    "Dry-run metrics").
    """

    name: str
    value: float | None
    min: float | None = None
    max: float | None = None
    error: str | None = None
    on_no_data: OnNoData = OnNoData.FAIL
    dry_run: bool = False
    own: bool = False

    @property
    def json_value(self) -> float | str | None:
        """The value as JSON can carry it (NaN/Inf become strings)."""
        v = self.value
        return v if v is None or math.isfinite(v) else str(v)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (NaN/Inf become strings)."""
        out: dict[str, Any] = {
            "name": self.name,
            "value": self.json_value,
            "min": self.min,
            "max": self.max,
        }
        if self.error:
            out["error"] = self.error
        if self.dry_run:
            out["dryRun"] = True
        if self.own:
            out["own"] = True
        return out


@dataclass(frozen=True, slots=True)
class HookResult:
    """One webhook call: ``ok`` is any 2xx; ``detail`` is status and body preview or error.

    ``own``: the call could not be made for canaryd's own trouble (out of file
    descriptors or memory), which says nothing about the receiver or the canary.
    """

    name: str
    ok: bool
    detail: str = ""
    own: bool = False


@dataclass(frozen=True, slots=True)
class CompareSeries:
    """One compare metric's two series (primary = control, canary = experiment)."""

    config: MetricConfig
    control: tuple[float, ...] = ()
    experiment: tuple[float, ...] = ()
    error: str | None = None
    own: bool = False
    """The error is canaryd's own trouble (see :class:`MetricValue`)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything the runtime observed for one tick.

    ``gate_open`` is whether every gate :class:`Needs` asked for is open;
    ``closed_gate`` names the first closed one (when None and a gate is closed,
    the core takes the first asked-for gate that has webhooks).
    """

    rollback: tuple[HookResult, ...] = ()
    gate_open: bool = True
    closed_gate: WebhookType | None = None
    gate_muted: bool = False
    """The gate is closed by a webhook with ``muteAlert``: its waiting alert is not sent."""
    pre_rollout: tuple[HookResult, ...] = ()
    rollout: tuple[HookResult, ...] = ()
    metrics: tuple[MetricValue, ...] = ()
    compare: tuple[CompareSeries, ...] = ()


@dataclass(frozen=True, slots=True)
class Needs:
    """What the runtime must observe before calling :func:`canaryd.core.analysis.decide`.

    ``gates`` are asked in order (Flagger asks confirm-traffic-increase, then
    confirm-promotion, at a canary's last step).
    """

    rollback_hooks: bool = False
    gates: tuple[WebhookType, ...] = ()
    pre_rollout: bool = False
    checks: bool = False
    promotion: bool = False
    """Promoting or Finalising: the tick moves traffic; no webhook is polled (as in Flagger)."""

    @property
    def gate(self) -> WebhookType | None:
        """The first gate to ask, if any."""
        return self.gates[0] if self.gates else None

    @property
    def anything(self) -> bool:
        """Whether a tick has any work at all."""
        return self.rollback_hooks or self.promotion


# --------------------------------------------------------------------------- evaluation


def judge_metric(m: MetricValue) -> tuple[Outcome, str | None]:
    """Judge one metric value against its inclusive bounds.

    Returns:
        The outcome and, unless it passed, the reason in words.
    """
    if m.error is not None:
        if m.own:
            return Outcome.HOLD, f"{m.name}: {OWN_TROUBLE}: {m.error}"
        return Outcome.FAIL, f"{m.name}: {m.error}"
    if m.value is None or math.isnan(m.value):
        if m.on_no_data is OnNoData.PASS:
            return Outcome.PASS, None
        verdict = Outcome.HOLD if m.on_no_data is OnNoData.HOLD else Outcome.FAIL
        return verdict, f"{m.name}: no data"
    if m.min is not None and m.value < m.min:
        return Outcome.FAIL, f"{m.name} {m.value:g} < min {m.min:g}"
    if m.max is not None and m.value > m.max:
        return Outcome.FAIL, f"{m.name} {m.value:g} > max {m.max:g}"
    return Outcome.PASS, None


OWN_TROUBLE = "canaryd's own trouble, not the canary's"
"""Said in the reason of a check held because canaryd itself failed."""

Verdict = tuple[Outcome, str | None, dict[str, Any]]
"""Outcome, reason, and event fields describing what failed or held."""

PASSED: Verdict = (Outcome.PASS, None, {})


def _failed_hook(results: tuple[HookResult, ...], what: str, **extra: Any) -> Verdict | None:
    """The first failed webhook's verdict: Fail, or Hold if only canaryd's trouble failed one."""
    hook = next((h for h in results if not h.ok and not h.own), None)
    hook = hook or next((h for h in results if not h.ok), None)
    if hook is None:
        return None
    fields = {"webhook": hook.name, "error": hook.detail, **extra}
    if hook.own:
        return (
            Outcome.HOLD,
            f"{what} {hook.name}: {OWN_TROUBLE}: {hook.detail}",
            {**fields, "own": True},
        )
    return Outcome.FAIL, f"{what} {hook.name}: {hook.detail}", fields


def _metric_verdict(m: MetricValue) -> Verdict:
    outcome, reason = judge_metric(m)
    fields = {"metric": m.name, "value": m.json_value, "min": m.min, "max": m.max}
    if m.error:
        fields["error"] = m.error
    if m.own and m.error is not None:
        fields["own"] = True
    return outcome, reason, fields


def judge_compare(spec: JudgeSpec, series: tuple[CompareSeries, ...]) -> tuple[Verdict, Any]:
    """Judge the compare metrics of one tick together (Mann-Whitney, Kayenta scoring).

    Returns:
        The verdict (Fail fails the check; Marginal follows ``onMarginal``) and
        the judgement as JSON for the tick event and the API (None on a query error).
    """
    broken = next((c for c in series if c.error is not None and not c.own), None)
    broken = broken or next((c for c in series if c.error is not None), None)
    if broken is not None:
        fields: dict[str, Any] = {"metric": broken.config.name, "error": broken.error}
        if broken.own:
            reason = f"{broken.config.name}: {OWN_TROUBLE}: {broken.error}"
            return (Outcome.HOLD, reason, {**fields, "own": True}), None
        return (Outcome.FAIL, f"{broken.config.name}: {broken.error}", fields), None
    from canaryd.core.judge import judge  # numpy on first use only (docs/judge.md, start-up cost)

    thresholds = Thresholds(spec.thresholds.passing, spec.thresholds.marginal)
    pairs = [MetricPair(c.config, c.control, c.experiment) for c in series]
    judgement = judge(pairs, spec.groupWeights or None, thresholds)
    verdict = judgement.score.classification.value
    body = judgement.to_json()
    worst = [r for r in judgement.results if r.classification.value != "Pass"]
    reason = f"compare: {verdict} (score {judgement.score.score:g}"
    reason += (
        f"; {', '.join(f'{r.name} {r.classification.value}' for r in worst)})" if worst else ")"
    )
    if verdict == "Pass":
        return PASSED, body
    outcome = Outcome.FAIL if verdict == "Fail" else Outcome(spec.onMarginal.value)
    return (outcome, None if outcome is Outcome.PASS else reason, {"judge": body}), body


def dry_run_findings(metrics: tuple[MetricValue, ...]) -> list[str]:
    """What the dry-run metrics would have failed or held, in words (for the tick event)."""
    found = []
    for m in metrics:
        outcome, reason = judge_metric(m) if m.dry_run else (Outcome.PASS, None)
        if outcome is not Outcome.PASS and reason is not None:
            found.append(f"{reason} (dry run, would {outcome.value})")
    return found


def evaluate(need: Needs, obs: Observation, judged: Verdict | None = None) -> Verdict:
    """Evaluate one tick's check; the first failure (in config order) is the reason.

    A failure anywhere fails the check; otherwise the first hold holds it.
    Dry-run metrics are left out: they never fail or hold a check.
    ``judged`` is the verdict of the compare metrics, if any.
    """
    if need.pre_rollout:
        failed = _failed_hook(obs.pre_rollout, "pre-rollout webhook", stage="pre-rollout")
        if failed is not None:
            return failed
    if not need.checks:
        return PASSED
    hooks = _failed_hook(obs.rollout, "webhook")
    if hooks is not None and hooks[0] is Outcome.FAIL:
        return hooks
    verdicts = [] if hooks is None else [hooks]  # held: a metric may still fail the check
    verdicts += [_metric_verdict(m) for m in obs.metrics if not m.dry_run]
    if judged is not None:
        verdicts.append(judged)
    for outcome in (Outcome.FAIL, Outcome.HOLD):
        first = next((v for v in verdicts if v[0] is outcome), None)
        if first is not None:
            return first
    return PASSED
