"""Statistical judge: the canary's series against the primary's (Kayenta's NetflixACAJudge).

Per metric, both series are cleaned (missing values removed or replaced by 0,
then optionally IQR outliers removed), and the location shift *canary - primary*
is estimated with the Mann-Whitney (Wilcoxon rank-sum) two-sided confidence
interval and the Hodges-Lehmann estimate. The metric is ``High`` when the
interval lies entirely above ``+tolerance x |estimate|`` and the effect size
reaches ``allowedIncrease`` (``Low`` symmetrically), otherwise ``Pass``;
:func:`canaryd.scoring.score` turns the per-metric verdicts into one score.

The interval is the one of R's ``wilcox.test(x=canary, y=primary, conf.int=TRUE,
exact=FALSE, correct=TRUE)``: the normal approximation of the rank-sum statistic
with tie and continuity corrections, inverted by root finding over the shift.
Because that statistic only changes where the shift equals a pairwise difference
``canary_i - primary_j``, each root found is snapped to that difference, which
gives the exact ends R's ``uniroot`` approaches to within its tolerance.

Pure functions, no I/O, no clock, no randomness (Kayenta adds Gaussian noise
when both series are constant; here the shift of two constants is exact).
The analysis loop calls :func:`judge` with one :class:`MetricPair` per metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, stats

from canaryd.scoring import Classification, Score, Thresholds, score

FloatArray = NDArray[np.float64]

_EPS = float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).tiny)


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
        classification: Pass, High, Low, Nodata or NodataFailMetric.
        critical: this result fails the whole canary (a critical metric failed).
        groups: the groups the verdict counts in.
        reason: why, in plain words.
        interval: confidence interval of the shift canary - primary, when computed.
        estimate: Hodges-Lehmann estimate of the shift, when computed.
        ratio: canary mean / primary mean, ``None`` when undefined (no data, primary mean 0).
        effect: the effect size compared with the thresholds, when computed.
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
            "ratio": self.ratio,
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


# --- cleaning ---------------------------------------------------------------------------


def outlier_fences(values: FloatArray, factor: float) -> tuple[float, float]:
    """Lower and upper fences ``Q1 - factor x IQR`` and ``Q3 + factor x IQR`` (R-7 percentiles).

    Each fence is pushed out to the 1st / 99th percentile when that lies further out.
    """
    p01, q1, q3, p99 = np.percentile(values, [1.0, 25.0, 75.0, 99.0], method="linear")
    iqr = q3 - q1
    return float(min(p01, q1 - factor * iqr)), float(max(p99, q3 + factor * iqr))


def clean_series(
    values: Sequence[float], nan_strategy: NanStrategy, outliers: Outliers
) -> FloatArray:
    """Handle missing values (NaN, +/-inf), then remove outliers if configured."""
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    missing = ~np.isfinite(array)
    replaced = np.where(missing, 0.0, array)
    array = array[~missing] if nan_strategy is NanStrategy.REMOVE else replaced
    if outliers.strategy is OutlierStrategy.REMOVE and array.size:
        low, high = outlier_fences(array, outliers.factor)
        array = array[(array >= low) & (array <= high)]
    return array


# --- Mann-Whitney -------------------------------------------------------------------------


def wilcoxon_z(
    experiment: FloatArray, control: FloatArray, shift: float = 0.0, *, correct: bool = True
) -> float:
    """Normal score of the rank-sum statistic of ``experiment - shift`` against ``control``.

    As R's ``wilcox.test``: average ranks, ``z = (W - n m / 2 - c) / sigma`` with the tie
    correction in sigma and, when ``correct``, the continuity correction ``c = sign * 0.5``.
    Returns 0 when every value is tied (sigma is 0).
    """
    n, m = experiment.size, control.size
    ranks = stats.rankdata(np.concatenate((experiment - shift, control)))
    dz = float(ranks[:n].sum()) - n * (n + 1) / 2.0 - n * m / 2.0
    sigma = float(np.sqrt(n * m * (n + m + 1) / 12.0 * stats.tiecorrect(ranks)))
    if sigma == 0.0:
        return 0.0
    correction = 0.5 * float(np.sign(dz)) if correct else 0.0
    return (dz - correction) / sigma


def _differences_between(
    low: float, high: float, experiment: FloatArray, control_sorted: FloatArray
) -> FloatArray:
    """Sorted distinct pairwise differences ``experiment_i - control_j`` inside (low, high).

    Only the pairs near the window are formed (O(n log m) plus the window's size).
    """
    m = control_sorted.size
    first = np.clip(np.searchsorted(control_sorted, experiment - high, side="left") - 1, 0, m)
    last = np.clip(np.searchsorted(control_sorted, experiment - low, side="right") + 1, 0, m)
    lengths = last - first
    rows = np.repeat(np.arange(experiment.size), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    diffs = experiment[rows] - control_sorted[np.repeat(first, lengths) + offsets]
    return np.unique(diffs[(diffs > low) & (diffs < high)])


def _exact_jump(
    func: Callable[[float], float],
    window: tuple[float, float],
    experiment: FloatArray,
    control_sorted: FloatArray,
) -> float:
    """The pairwise difference in ``window`` where the decreasing step ``func`` drops to <= 0.

    ``func`` is constant on each gap between consecutive differences, so a binary search over
    the gaps (each sampled at its midpoint) finds the first gap where it is <= 0; the jump is
    that gap's left edge (the window's right edge when no gap is <= 0).
    """
    low, high = window
    inner = _differences_between(low, high, experiment, control_sorted)
    edges = np.concatenate(([low], inner, [high]))
    above, below = -1, edges.size - 1  # gap i is (edges[i], edges[i + 1])
    while below - above > 1:
        mid = (above + below) // 2
        if func(float(edges[mid] + edges[mid + 1]) / 2.0) > 0.0:
            above = mid
        else:
            below = mid
    return float(edges[below])


def _step_root(
    func: Callable[[float], float],
    low: float,
    high: float,
    experiment: FloatArray,
    control_sorted: FloatArray,
) -> float:
    """Where the decreasing step function ``func`` crosses 0 on [low, high] (R's ``root``).

    Like R, an end is returned when ``func`` is already <= 0 at ``low`` or >= 0 at ``high``.
    Otherwise brentq (R: uniroot) brackets the crossing, and the jump inside the bracket is
    located exactly: it is always one of the pairwise differences.
    """
    if func(low) <= 0.0:
        return low
    if func(high) >= 0.0:
        return high
    xtol = max((high - low) * 1e-7, _TINY)
    root = float(optimize.brentq(func, low, high, xtol=xtol))
    delta = 4.0 * (xtol + 4.0 * _EPS * abs(root))
    for _ in range(16):
        left, right = max(low, root - delta), min(high, root + delta)
        if func(left) > 0.0 and func(right) <= 0.0:
            return _exact_jump(func, (left, right), experiment, control_sorted)
        delta *= 8.0
    return root


def _sign_balance(experiment: FloatArray, control_sorted: FloatArray, shift: float) -> float:
    """``#(e_i - c_j > shift) - #(e_i - c_j < shift)`` over all pairs (twice W - n m / 2)."""
    targets = experiment - shift
    greater = np.searchsorted(control_sorted, targets, side="left").sum()
    not_less = np.searchsorted(control_sorted, targets, side="right")
    less = (control_sorted.size - not_less).sum()
    return float(greater - less)


def hodges_lehmann(experiment: FloatArray, control: FloatArray) -> float:
    """Median of all pairwise differences ``experiment_i - control_j``, in O((n + m) log m) memory.

    The two middle differences are the jumps of the pair-count balance through +/-0.5.
    """
    ys = np.sort(control)
    low, high = float(experiment.min() - ys[-1]), float(experiment.max() - ys[0])
    if low == high:
        return low
    lower = _step_root(lambda d: _sign_balance(experiment, ys, d) - 0.5, low, high, experiment, ys)
    upper = _step_root(lambda d: _sign_balance(experiment, ys, d) + 0.5, low, high, experiment, ys)
    return (lower + upper) / 2.0


def shift_interval(
    experiment: Sequence[float] | FloatArray,
    control: Sequence[float] | FloatArray,
    confidence: float,
) -> ShiftEstimate:
    """Two-sided confidence interval and Hodges-Lehmann estimate of ``experiment - control``.

    Matches R's ``wilcox.test(experiment, control, conf.int=TRUE, exact=FALSE, correct=TRUE,
    conf.level=confidence)`` interval; when both samples are constant the shift is exact.

    Raises:
        ValueError: a sample is empty or holds a non-finite value, or confidence is not in (0, 1).
    """
    x = np.asarray(experiment, dtype=np.float64).reshape(-1)
    y = np.asarray(control, dtype=np.float64).reshape(-1)
    if x.size == 0 or y.size == 0:
        raise ValueError("both samples need at least one value")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("samples must hold finite values only")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence:g}")
    ys = np.sort(y)
    low, high = float(x.min() - ys[-1]), float(x.max() - ys[0])
    if low == high:  # both constant: every value tied, the rank statistic is degenerate
        return ShiftEstimate(low, low, low)
    zq = float(stats.norm.isf((1.0 - confidence) / 2.0))
    lower = _step_root(lambda d: wilcoxon_z(x, y, d) - zq, low, high, x, ys)
    upper = _step_root(lambda d: wilcoxon_z(x, y, d) + zq, low, high, x, ys)
    return ShiftEstimate(lower, upper, hodges_lehmann(x, y))


# --- effect sizes ---------------------------------------------------------------------------


def mean_ratio(control: FloatArray, experiment: FloatArray) -> float | None:
    """Canary mean / primary mean, ``None`` when the primary's mean is 0 (or a side is empty)."""
    if control.size == 0 or experiment.size == 0:
        return None
    control_mean = float(np.mean(control))
    if control_mean == 0.0:
        return None
    return float(np.mean(experiment)) / control_mean


def cles(control: FloatArray, experiment: FloatArray) -> float:
    """Common-language effect size: P(canary value > primary value), ties counting half."""
    n, m = experiment.size, control.size
    ranks = stats.rankdata(np.concatenate((experiment, control)))
    return (float(ranks[:n].sum()) - n * (n + 1) / 2.0) / (n * m)


def effect_size(measure: EffectSize, control: FloatArray, experiment: FloatArray) -> float:
    """The effect size compared with the allowed/critical thresholds.

    For ``meanRatio`` a primary mean of 0 gives 1.0 (Kayenta: the ratio is undefined, so the
    size does not veto a classification).
    """
    if measure is EffectSize.CLES:
        return cles(control, experiment)
    ratio = mean_ratio(control, experiment)
    return 1.0 if ratio is None else ratio


# --- classification -------------------------------------------------------------------------


def _num(value: float) -> str:
    """A number for a reason text: 6 significant digits, no trailing zeros."""
    return f"{value:.6g}"


def _no_data(config: MetricConfig, control_size: int, experiment_size: int) -> MetricResult:
    """The verdict when a side has no value left after cleaning (Kayenta's table)."""
    empty = [
        side for side, size in (("primary", control_size), ("canary", experiment_size)) if not size
    ]
    where = f"no data for the {' and the '.join(empty)}"
    if config.nan_strategy is NanStrategy.REPLACE:
        reason = f"{where}; nanStrategy replace counts missing data as zeros, so the metric passes"
        return MetricResult(config.name, Classification.PASS, False, config.groups, reason)
    if config.must_have_data and not config.critical:
        reason = f"{where}, and the metric must have data"
        return MetricResult(
            config.name, Classification.NODATA_FAIL_METRIC, False, config.groups, reason
        )
    if config.critical:
        reason = f"{where}, and the metric is critical"
        return MetricResult(config.name, Classification.NODATA, True, config.groups, reason)
    return MetricResult(config.name, Classification.NODATA, False, config.groups, where)


def _verdict(
    config: MetricConfig, shift: ShiftEstimate, bound: float, effect: float
) -> tuple[Classification, str]:
    """High, Low or Pass from the interval, the bounds +/-``bound``, direction and effect size."""
    span = (
        f"the {config.confidence * 100:g}% interval [{_num(shift.low)}, {_num(shift.high)}] "
        f"of the shift canary - primary"
    )
    size = f"{'CLES' if config.effect_size is EffectSize.CLES else 'mean ratio'} {_num(effect)}"
    margin = f"{_num(bound)} (tolerance {config.tolerance:g} x |estimate {_num(shift.estimate)}|)"
    if shift.low > bound:
        head = f"canary is higher than primary: {span} lies above +{margin}"
        need = config.threshold(config.allowed_increase)
        if config.direction is Direction.DECREASE:
            return Classification.PASS, f"{head}, but only a decrease fails this metric"
        if effect >= need:
            return Classification.HIGH, f"{head}, and the {size} reaches allowedIncrease {need:g}"
        return Classification.PASS, f"{head}, but the {size} is below allowedIncrease {need:g}"
    if shift.high < -bound:
        head = f"canary is lower than primary: {span} lies below -{margin}"
        need = config.threshold(config.allowed_decrease)
        if config.direction is Direction.INCREASE:
            return Classification.PASS, f"{head}, but only an increase fails this metric"
        if effect <= need:
            return Classification.LOW, f"{head}, and the {size} reaches allowedDecrease {need:g}"
        return Classification.PASS, f"{head}, but the {size} is above allowedDecrease {need:g}"
    return Classification.PASS, f"no significant difference: {span} reaches within +/-{margin}"


def _criticality(
    config: MetricConfig, label: Classification, reason: str, effect: float
) -> tuple[str, bool]:
    """Whether a High/Low of a critical metric is big enough to fail the canary, and why."""
    if not config.critical or label not in (Classification.HIGH, Classification.LOW):
        return reason, False
    if label is Classification.HIGH:
        key, need = "criticalIncrease", config.threshold(config.critical_increase)
        failed = effect >= need
    else:
        key, need = "criticalDecrease", config.threshold(config.critical_decrease)
        failed = effect <= need
    if failed:
        return f"{reason}; the metric is critical and reaches {key} {need:g}", True
    return f"{reason}; the metric is critical but does not reach {key} {need:g}", False


def _compare(config: MetricConfig, control: FloatArray, experiment: FloatArray) -> MetricResult:
    """Classify two non-empty, not identical series with the Mann-Whitney interval."""
    shift = shift_interval(experiment, control, config.confidence)
    effect = effect_size(config.effect_size, control, experiment)
    label, reason = _verdict(config, shift, config.tolerance * abs(shift.estimate), effect)
    reason, critical = _criticality(config, label, reason, effect)
    return MetricResult(
        name=config.name,
        classification=label,
        critical=critical,
        groups=config.groups,
        reason=reason,
        interval=(shift.low, shift.high),
        estimate=shift.estimate,
        ratio=mean_ratio(control, experiment),
        effect=effect,
    )


def classify_metric(
    config: MetricConfig, control: Sequence[float], experiment: Sequence[float]
) -> MetricResult:
    """Classify one metric: the canary's series (experiment) against the primary's (control).

    Args:
        config: how to judge the metric.
        control: the primary's values; NaN or infinity marks a missing value.
        experiment: the canary's values.

    Returns:
        The verdict, with interval, estimate and ratio when the series were compared.
    """
    c = clean_series(control, config.nan_strategy, config.outliers)
    e = clean_series(experiment, config.nan_strategy, config.outliers)
    if c.size == 0 or e.size == 0:
        return _no_data(config, c.size, e.size)
    if np.array_equal(np.sort(c), np.sort(e)):
        reason = "canary and primary data are identical"
        ratio = mean_ratio(c, e)
        return MetricResult(
            config.name, Classification.PASS, False, config.groups, reason, ratio=ratio
        )
    if bool(np.all(c == c[0])) and bool(np.all(e == c[0])):
        reason = f"every canary and primary value is {_num(float(c[0]))}"
        ratio = mean_ratio(c, e)
        return MetricResult(
            config.name, Classification.PASS, False, config.groups, reason, ratio=ratio
        )
    return _compare(config, c, e)


def judge(
    pairs: Sequence[MetricPair],
    group_weights: Mapping[str, float] | None = None,
    thresholds: Thresholds | None = None,
) -> Judgement:
    """Judge a canary: classify every metric, then score the classifications.

    Args:
        pairs: one entry per metric, with its config and both series.
        group_weights: group name -> percent of the score; unweighted groups share the rest.
        thresholds: pass and marginal thresholds (default 95 and 75).

    Returns:
        Every metric's result (in the order given) and the summary score.

    Raises:
        ValueError: ``pairs`` is empty, or the group weights are invalid.
    """
    results = tuple(classify_metric(p.config, p.control, p.experiment) for p in pairs)
    return Judgement(results, score(results, group_weights, thresholds))
