"""Scoring of metric classifications into one canary score (Kayenta's weighted-sum scorer).

Every metric result belongs to one or more groups. A group's score is
``100 x pass / (pass + high + low + nodata-fail)``; metrics classified ``Nodata``
or ``Error`` do not count, and a group made only of them has no data (it counts
as 100 in the summary). The summary score is the weighted sum of the group scores,
where groups without a configured weight share equally what the configured weights
(of all groups, present or not) leave of 100, rounded half-up to two decimals.
A failed critical metric, or half or more of the metrics without data, forces the
score to 0 and the canary to Fail (whatever the thresholds: ``docs/judge.md``).
The summary score is then compared with the ``pass`` and ``marginal`` thresholds.

Pure functions, no I/O: :func:`score` is what :func:`canaryd.core.judge.judge` calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Protocol

NODATA_THRESHOLD = 50.0
"""Percent of metrics classified Nodata at or above which the canary fails (Kayenta's value)."""


class Classification(StrEnum):
    """The verdict on one metric, canary (experiment) against primary (control)."""

    PASS = "Pass"
    HIGH = "High"
    LOW = "Low"
    NODATA = "Nodata"
    NODATA_FAIL_METRIC = "NodataFailMetric"
    ERROR = "Error"


class ScoreClassification(StrEnum):
    """The verdict on the whole canary."""

    PASS = "Pass"
    MARGINAL = "Marginal"
    FAIL = "Fail"


class Scorable(Protocol):
    """What the scorer needs from a metric result (see :class:`canaryd.core.judge.MetricResult`)."""

    @property
    def name(self) -> str: ...

    @property
    def classification(self) -> Classification: ...

    @property
    def critical(self) -> bool: ...

    @property
    def groups(self) -> tuple[str, ...]: ...

    @property
    def reason(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Score thresholds: ``score >= passing`` is Pass, ``score >= marginal`` is Marginal.

    Attributes:
        passing: lowest score that passes (0-100).
        marginal: lowest score that is Marginal rather than Fail (0-``passing``).
    """

    passing: float = 95.0
    marginal: float = 75.0

    def __post_init__(self) -> None:
        """Check the thresholds are ordered inside 0-100.

        Raises:
            ValueError: a threshold is outside 0-100 or ``marginal > passing``.
        """
        if not 0.0 <= self.marginal <= self.passing <= 100.0:
            raise ValueError(
                f"thresholds must satisfy 0 <= marginal <= pass <= 100, "
                f"got pass={self.passing:g} marginal={self.marginal:g}"
            )


@dataclass(frozen=True, slots=True)
class GroupScore:
    """The score of one metric group.

    Attributes:
        name: the group's name.
        score: ``100 x pass / counted`` or ``None`` when the group has no counted metric.
        weight: the share (percent) of the summary score this group carries.
    """

    name: str
    score: float | None
    weight: float


@dataclass(frozen=True, slots=True)
class Score:
    """The summary verdict.

    Attributes:
        score: summary score 0-100, rounded to two decimals.
        classification: Pass, Marginal or Fail.
        reason: why, in plain words.
        groups: every group's score, in order of first appearance.
    """

    score: float
    classification: ScoreClassification
    reason: str
    groups: tuple[GroupScore, ...]


_COUNTED = frozenset(
    {
        Classification.PASS,
        Classification.HIGH,
        Classification.LOW,
        Classification.NODATA_FAIL_METRIC,
    }
)


def round_half_up(value: float, digits: int = 2) -> float:
    """Round like Kayenta (``BigDecimal`` half-up on the shortest decimal form), not to even."""
    quantum = Decimal(1).scaleb(-digits)
    return float(Decimal(repr(value)).quantize(quantum, rounding=ROUND_HALF_UP))


def group_weights(names: Sequence[str], configured: Mapping[str, float]) -> dict[str, float]:
    """Give every group its weight; unweighted groups share what the configured weights leave.

    As Kayenta: the configured weights are all subtracted from 100, also those of groups
    that no metric belongs to, and the rest is shared equally by the groups without one.
    Weights that do not reach 100 are not scaled up (the summary cannot reach 100).

    Raises:
        ValueError: a weight is negative, or the configured weights exceed 100 (the groups
            without a weight would weigh less than nothing).
    """
    if any(w < 0 for w in configured.values()):
        raise ValueError("group weights must not be negative")
    total = sum(configured.values())
    if total > 100.0 + 1e-9:
        raise ValueError(f"group weights add up to {total:g}, more than 100")
    free = [n for n in names if n not in configured]
    share = (100.0 - total) / len(free) if free else 0.0
    return {n: configured.get(n, share) for n in names}


def group_scores(
    results: Sequence[Scorable], weights: Mapping[str, float] | None = None
) -> tuple[GroupScore, ...]:
    """Score every group that at least one result belongs to.

    Raises:
        ValueError: see :func:`group_weights`.
    """
    members: dict[str, list[Classification]] = {}
    for result in results:
        for group in result.groups:
            members.setdefault(group, []).append(result.classification)
    shares = group_weights(list(members), weights or {})
    scores: list[GroupScore] = []
    for name, labels in members.items():
        counted = [label for label in labels if label in _COUNTED]
        passed = sum(1 for label in counted if label is Classification.PASS)
        value = (passed / len(counted)) * 100 if counted else None
        scores.append(GroupScore(name=name, score=value, weight=shares[name]))
    return tuple(scores)


def classify_score(value: float, thresholds: Thresholds) -> tuple[ScoreClassification, str]:
    """Map a summary score onto Pass / Marginal / Fail, with the reason."""
    if value >= thresholds.passing:
        return ScoreClassification.PASS, (
            f"score {value:g} is at or above the pass threshold {thresholds.passing:g}"
        )
    if value >= thresholds.marginal:
        return ScoreClassification.MARGINAL, (
            f"score {value:g} is below the pass threshold {thresholds.passing:g} "
            f"but at or above the marginal threshold {thresholds.marginal:g}"
        )
    return ScoreClassification.FAIL, (
        f"score {value:g} is below the marginal threshold {thresholds.marginal:g}"
    )


def _forced_failure(results: Sequence[Scorable]) -> str | None:
    """The reason the canary fails whatever the score, or ``None``."""
    critical = [r for r in results if r.critical and r.classification is not Classification.PASS]
    if critical:
        first = critical[0]
        return f"critical metric {first.name} failed: {first.reason}"
    nodata = sum(1 for r in results if r.classification is Classification.NODATA)
    if nodata / len(results) * 100 >= NODATA_THRESHOLD:
        return (
            f"{nodata} of {len(results)} metrics have no data "
            f"({NODATA_THRESHOLD:g}% or more fails the canary)"
        )
    return None


def score(
    results: Sequence[Scorable],
    weights: Mapping[str, float] | None = None,
    thresholds: Thresholds | None = None,
) -> Score:
    """Combine metric results into the summary score and verdict.

    Args:
        results: one result per metric; each belongs to its ``groups``.
        weights: group name -> percent of the summary score; missing groups share the rest.
        thresholds: pass and marginal thresholds (default 95 and 75).

    Raises:
        ValueError: ``results`` is empty, or the weights are invalid (see :func:`group_weights`).
    """
    if not results:
        raise ValueError("there are no metric results to score")
    limits = thresholds or Thresholds()
    groups = group_scores(results, weights)
    forced = _forced_failure(results)
    if forced is not None:
        return Score(0.0, ScoreClassification.FAIL, forced, groups)
    total = 0.0
    for group in groups:  # Kayenta's arithmetic, to the last bit but for the order of groups
        total += (100.0 if group.score is None else group.score) * (group.weight / 100)
    value = round_half_up(total)
    verdict, reason = classify_score(value, limits)
    return Score(value, verdict, reason, groups)
