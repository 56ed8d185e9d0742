"""The statistical judge's settings and results: plain data, no numerical libraries.

Split from :mod:`canaryd.core.judge` so that the configuration, the CLI and the analysis
core can name these types without importing numpy (see ``docs/judge.md``, start-up
cost); :mod:`canaryd.core.judge` re-exports every name here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from canaryd.core.scoring import Classification, Score


class Direction(StrEnum):
    """Which change of the canary fails the metric."""

    INCREASE = "increase"
    DECREASE = "decrease"
    EITHER = "either"


class NanStrategy(StrEnum):
    """What to do with missing (NaN or infinite) values."""

    REMOVE = "remove"
    REPLACE = "replace"


class OutlierStrategy(StrEnum):
    """Whether to drop IQR outliers before comparing."""

    KEEP = "keep"
    REMOVE = "remove"


class EffectSize(StrEnum):
    """How the size of a difference is measured."""

    MEAN_RATIO = "meanRatio"
    CLES = "cles"


_NEUTRAL_EFFECT = {EffectSize.MEAN_RATIO: 1.0, EffectSize.CLES: 0.5}


@dataclass(frozen=True, slots=True)
class Outliers:
    """Outlier removal: values outside ``[Q1 - factor x IQR, Q3 + factor x IQR]`` are dropped.

    The fences are widened to the 1st and 99th percentiles when those lie further
    out (Kayenta's ``reduceSensitivity``). Percentiles use the R-7 (linear) method.
    """

    strategy: OutlierStrategy = OutlierStrategy.KEEP
    factor: float = 3.0


@dataclass(frozen=True, slots=True)
class MetricConfig:
    """How one metric is judged.

    Attributes:
        name: the metric's name (shown in results).
        direction: which change fails: ``increase``, ``decrease`` or ``either``.
        nan_strategy: ``remove`` missing values, or ``replace`` them with 0.
        outliers: outlier removal settings.
        effect_size: ``meanRatio`` (canary mean / primary mean) or ``cles`` (probability
            that a canary value exceeds a primary value, ties counting half).
        allowed_increase: effect size a High needs (default 1.0 for meanRatio, 0.5 for cles).
        allowed_decrease: effect size a Low needs at most (same defaults).
        critical_increase: effect size at which a High of a critical metric fails the canary.
        critical_decrease: effect size at which a Low of a critical metric fails the canary.
        critical: a failure of this metric fails the whole canary.
        must_have_data: missing data fails the metric (NodataFailMetric) instead of Nodata.
        tolerance: fraction of the estimate the interval must clear (bounds +/- tolerance x |est|).
        confidence: confidence level of the interval, strictly between 0 and 1.
        groups: the groups this metric's verdict counts in.
    """

    name: str
    direction: Direction = Direction.EITHER
    nan_strategy: NanStrategy = NanStrategy.REMOVE
    outliers: Outliers = Outliers()
    effect_size: EffectSize = EffectSize.MEAN_RATIO
    allowed_increase: float | None = None
    allowed_decrease: float | None = None
    critical_increase: float | None = None
    critical_decrease: float | None = None
    critical: bool = False
    must_have_data: bool = False
    tolerance: float = 0.25
    confidence: float = 0.98
    groups: tuple[str, ...] = ("default",)

    def __post_init__(self) -> None:
        """Check the numeric settings.

        Raises:
            ValueError: confidence outside (0, 1), negative tolerance, factor <= 0, no group.
        """
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be between 0 and 1, got {self.confidence:g}")
        if not self.tolerance >= 0.0:
            raise ValueError(f"tolerance must not be negative, got {self.tolerance:g}")
        if not self.outliers.factor > 0.0:
            raise ValueError(f"outlier factor must be positive, got {self.outliers.factor:g}")
        if not self.groups:
            raise ValueError("a metric must belong to at least one group")

    def threshold(self, value: float | None) -> float:
        """Resolve an effect-size threshold, ``None`` meaning "no effect" for the measure."""
        return _NEUTRAL_EFFECT[self.effect_size] if value is None else value


@dataclass(frozen=True, slots=True)
class MetricPair:
    """One metric's series: what :func:`judge` takes, one per metric.

    Attributes:
        config: how to judge it.
        control: the primary's (baseline's) values; NaN or infinity marks a missing value.
        experiment: the canary's values.
    """

    config: MetricConfig
    control: Sequence[float]
    experiment: Sequence[float]


@dataclass(frozen=True, slots=True)
class ShiftEstimate:
    """Confidence interval and estimate of the location shift experiment - control."""

    low: float
    high: float
    estimate: float


@dataclass(frozen=True, slots=True)
class MetricResult:
    """The verdict on one metric.

    Attributes:
        name: the metric's name.
        classification: Pass, High, Low, Nodata, NodataFailMetric or Error (every value
            tied, so the rank test cannot be computed: not counted in the score).
        critical: this result fails the whole canary (a critical metric failed).
        groups: the groups the verdict counts in.
        reason: why, in plain words.
        interval: confidence interval of the shift canary - primary, when computed.
        estimate: estimate of the shift (where the rank statistic crosses 0), when computed.
        ratio: canary mean / primary mean (1 for identical series, as Kayenta), ``None`` when
            undefined (no data, a mean of 0); in JSON also ``null`` when it overflows.
        effect: the effect size compared with the thresholds, ``None`` when undefined.
    """

    name: str
    classification: Classification
    critical: bool
    groups: tuple[str, ...]
    reason: str
    interval: tuple[float, float] | None = None
    estimate: float | None = None
    ratio: float | None = None
    effect: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The result as in ``canaryd judge`` output (and events): JSON-safe, no NaN."""
        return {
            "name": self.name,
            "classification": str(self.classification),
            "critical": self.critical,
            "interval": list(self.interval) if self.interval is not None else None,
            "estimate": self.estimate,
            "ratio": self.ratio if self.ratio is not None and math.isfinite(self.ratio) else None,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Judgement:
    """Every metric's verdict and the summary score."""

    results: tuple[MetricResult, ...]
    score: Score

    def to_json(self) -> dict[str, Any]:
        """The judgement as in ``canaryd judge`` output: JSON-safe, no NaN."""
        return {
            "score": self.score.score,
            "classification": str(self.score.classification),
            "reason": self.score.reason,
            "groupScores": [
                {"name": g.name, "score": g.score, "weight": g.weight} for g in self.score.groups
            ],
            "results": [r.to_json() for r in self.results],
        }
