"""Statistical judge: the canary's series against the primary's (Kayenta's NetflixACAJudge).

Per metric, both series are cleaned (missing values removed or replaced by 0,
then optionally IQR outliers removed), and the location shift *canary - primary*
is estimated with the Mann-Whitney (Wilcoxon rank-sum) two-sided confidence
interval. The metric is ``High`` when the interval lies entirely above
``+tolerance x |estimate|`` and the effect size reaches ``allowedIncrease``
(``Low`` symmetrically), otherwise ``Pass``; :func:`canaryd.core.scoring.score` turns
the per-metric verdicts into one score.

The arithmetic is Kayenta's, step for step, so that both give the same verdict on
the same data (``docs/judge.md``, "Agreement with Kayenta"): the normal approximation
of the rank-sum statistic with tie and continuity corrections is inverted with
Brent's method at Kayenta's absolute tolerance of 1e-4, the estimate is the root of
the statistic itself, means are two-pass, percentiles are R-7, and a mean of 0 makes
the mean ratio undefined so that no effect-size threshold applies.

Pure functions, no I/O, no clock, no randomness (Kayenta adds Gaussian noise when
both series are constant; here the shift of two constants is exact). numpy is the
only numerical library, and only this module imports it: the data types live in
:mod:`canaryd.core.judgemodel` (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from canaryd.core.judgemodel import (
    Direction,
    EffectSize,
    Judgement,
    MetricConfig,
    MetricPair,
    MetricResult,
    NanStrategy,
    Outliers,
    OutlierStrategy,
    ShiftEstimate,
)
from canaryd.core.scoring import Classification, Thresholds, score

__all__ = [
    "BRENT_TOLERANCE",
    "LARGEST_VALUE",
    "Direction",
    "EffectSize",
    "Judgement",
    "MetricConfig",
    "MetricPair",
    "MetricResult",
    "NanStrategy",
    "OutlierStrategy",
    "Outliers",
    "ShiftEstimate",
    "TiedObservationsError",
    "brent_root",
    "classify_metric",
    "clean_series",
    "cles",
    "effect_size",
    "judge",
    "mean",
    "mean_ratio",
    "outlier_fences",
    "percentile",
    "shift_interval",
    "wilcoxon_z",
]

FloatArray = NDArray[np.float64]

BRENT_TOLERANCE = 1e-4
"""Absolute tolerance of the root finder (Kayenta's)."""
LARGEST_VALUE = 1e300
"""Values beyond +/- this make a metric ``Error``: their differences and sums would overflow."""
_BRENT_ITERATIONS = 1000
_EPSILON = 2.220446049250313e-16
_SMALLEST = 5e-324  # one ulp of 0: values within it count as 0


class TiedObservationsError(ValueError):
    """Every value of both samples is tied, so the rank statistic has no variance.

    Kayenta records such a metric as ``Error``; :func:`classify_metric` does the same.
    """


# --- Kayenta's elementary statistics ------------------------------------------------------


def mean(values: FloatArray) -> float:
    """Two-pass mean: the running sum / n, corrected by the mean of the residuals.

    This is Kayenta's (Commons Math's) mean, summing in order; numpy's pairwise sum can
    differ in the last bits, enough to flip a ratio near 0.

    Raises:
        ValueError: ``values`` is empty.
    """
    if values.size == 0:
        raise ValueError("the mean of no values is undefined")
    size = float(values.size)
    first = float(np.cumsum(values)[-1]) / size
    correction = float(np.cumsum(values - first)[-1])
    return first + correction / size


def percentile(sorted_values: FloatArray, p: float) -> float:
    """The ``p``-th percentile (0 < p <= 100) of sorted values, R-7 (linear) method.

    Position ``1 + (n - 1) p / 100`` (1-based), interpolated as ``lower + fraction x (upper -
    lower)``, Kayenta's (Commons Math's) formula to the last bit.
    """
    size = sorted_values.size
    quantile = p / 100.0
    position = float(size) if quantile == 1.0 else quantile * (size - 1) + 1
    if position < 1.0:
        return float(sorted_values[0])
    if position >= size:
        return float(sorted_values[-1])
    whole = math.floor(position)
    lower, upper = float(sorted_values[whole - 1]), float(sorted_values[whole])
    return lower + (position - whole) * (upper - lower)


# --- cleaning ---------------------------------------------------------------------------


def outlier_fences(values: FloatArray, factor: float) -> tuple[float, float]:
    """Lower and upper fences ``Q1 - factor x IQR`` and ``Q3 + factor x IQR`` (R-7 percentiles).

    Each fence is pushed out to the 1st / 99th percentile when that lies further out.
    """
    ordered = np.sort(values)
    q1, q3 = percentile(ordered, 25.0), percentile(ordered, 75.0)
    iqr = q3 - q1
    lower, upper = q1 - factor * iqr, q3 + factor * iqr
    return min(percentile(ordered, 1.0), lower), max(percentile(ordered, 99.0), upper)


def clean_series(
    values: Sequence[float], nan_strategy: NanStrategy, outliers: Outliers
) -> FloatArray:
    """Handle missing values (NaN, +/-inf), then remove outliers if configured.

    ``-0.0`` becomes ``0.0`` (``docs/judge.md``: the two are one value here).
    """
    array = np.asarray(values, dtype=np.float64).reshape(-1) + 0.0
    missing = ~np.isfinite(array)
    replaced = np.where(missing, 0.0, array)
    array = array[~missing] if nan_strategy is NanStrategy.REMOVE else replaced
    if outliers.strategy is OutlierStrategy.REMOVE and array.size:
        low, high = outlier_fences(array, outliers.factor)
        array = array[(array >= low) & (array <= high)]
    return array


# --- Mann-Whitney -------------------------------------------------------------------------


def _rank_terms(x_sorted: FloatArray, y_sorted: FloatArray, shift: float) -> tuple[float, float]:
    """Rank sum of ``x - shift`` among ``x - shift`` and ``y`` (ties averaged), and the tie term.

    Both inputs sorted ascending (subtracting a constant keeps ``x`` sorted). The tie term is
    the sum of ``t^3 - t`` over the groups of ``t`` equal values.
    """
    n = x_sorted.size
    values = np.concatenate((x_sorted - shift, y_sorted))
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    counts = np.diff(np.append(starts, ordered.size))
    from_x = np.add.reduceat((order < n).astype(np.int64), starts)
    average_rank = starts + (counts + 1) / 2.0
    return float(np.dot(average_rank, from_x)), float(np.sum(counts**3 - counts))


def _wilcoxon_diff(x_sorted: FloatArray, y_sorted: FloatArray, shift: float, zq: float) -> float:
    """Continuity- and tie-corrected normal score of the rank sum of ``x - shift``, minus ``zq``.

    Raises:
        TiedObservationsError: every value is tied (the score's deviation is 0).
    """
    n, m = float(x_sorted.size), float(y_sorted.size)
    rank_sum, ties = _rank_terms(x_sorted, y_sorted, shift)
    dz = rank_sum - n * (n + 1) / 2 - n * m / 2
    correction = math.copysign(0.5, dz) if dz != 0.0 else 0.0
    sigma = math.sqrt((n * m / 12) * ((n + m + 1) - ties / ((n + m) * (n + m - 1))))
    if sigma == 0.0:
        raise TiedObservationsError("every value of both samples is tied")
    return (dz - correction) / sigma - zq


def wilcoxon_z(experiment: FloatArray, control: FloatArray, shift: float = 0.0) -> float:
    """Normal score of the rank-sum statistic of ``experiment - shift`` against ``control``.

    As R's ``wilcox.test``: average ranks, ``z = (W - n m / 2 - c) / sigma`` with the tie
    correction in sigma and the continuity correction ``c = sign x 0.5``.

    Raises:
        TiedObservationsError: every value is tied.
    """
    return _wilcoxon_diff(np.sort(experiment), np.sort(control), shift, 0.0)


def _brent_step(
    points: tuple[float, float, float],
    values: tuple[float, float, float],
    previous: float,
    tol: float,
) -> float:
    """The next step from ``b``: interpolation when it is safe, bisection otherwise.

    ``points`` are ``(a, b, c)`` (``b`` the best guess, ``c`` across the sign change),
    ``values`` the function there, ``previous`` the last step taken.
    """
    (a, b, c), (fa, fb, fc) = points, values
    step = (c - b) / 2
    if abs(previous) >= tol and abs(fa) > abs(fb):
        cb = c - b
        if a == c:  # secant
            t1 = fb / fa
            p = cb * t1
            q = 1.0 - t1
        else:  # inverse quadratic interpolation
            q = fa / fc
            t1 = fb / fc
            t2 = fb / fa
            p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
            q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
        if p > 0.0:
            q = -q
        else:
            p = -p
        if p < (0.75 * cb * q - abs(tol * q) / 2) and p < abs(previous * q / 2):
            step = p / q
    if abs(step) < tol:
        step = tol if step > 0 else -tol
    return step


def brent_root(
    low: float, high: float, f_low: float, f_high: float, func: Callable[[float], float]
) -> float:
    """A zero of ``func`` on [low, high] by Brent's method, Kayenta's variant.

    Absolute tolerance :data:`BRENT_TOLERANCE` (plus 4 ulps of the root), at most 1,001
    steps; an end whose value is 0 is returned at once. The bracket is not checked: like
    Kayenta, a bracket without a sign change still returns a point of [low, high].
    """
    a, b, c = low, high, low
    fa, fb, fc = f_low, f_high, f_low
    if abs(fa) <= _SMALLEST:
        return a
    if abs(fb) <= _SMALLEST:
        return b
    for _ in range(_BRENT_ITERATIONS + 1):
        previous = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol = 2 * _EPSILON * abs(b) + BRENT_TOLERANCE / 2
        if abs((c - b) / 2) <= tol or abs(fb) <= _SMALLEST:
            return b
        step = _brent_step((a, b, c), (fa, fb, fc), previous, tol)
        a, fa = b, fb
        b += step
        fb = func(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    return b


def _find_root(x_sorted: FloatArray, y_sorted: FloatArray, zq: float) -> float:
    """Where the score minus ``zq`` crosses 0 between the extreme differences.

    An end is returned when the score is already past ``zq`` there (R's and Kayenta's rule).

    Raises:
        TiedObservationsError: every value is tied.
    """
    low = float(x_sorted[0] - y_sorted[-1])
    high = float(x_sorted[-1] - y_sorted[0])
    f_low = _wilcoxon_diff(x_sorted, y_sorted, low, zq)
    f_high = _wilcoxon_diff(x_sorted, y_sorted, high, zq)
    if f_low <= 0:
        return low
    if f_high >= 0:
        return high
    return brent_root(low, high, f_low, f_high, lambda d: _wilcoxon_diff(x_sorted, y_sorted, d, zq))


def shift_interval(
    experiment: Sequence[float] | FloatArray,
    control: Sequence[float] | FloatArray,
    confidence: float,
) -> ShiftEstimate:
    """Two-sided confidence interval and estimate of the shift ``experiment - control``.

    Kayenta's: the interval of R's ``wilcox.test(experiment, control, conf.int=TRUE,
    exact=FALSE, correct=TRUE, conf.level=confidence)`` found by :func:`brent_root` (so each
    end is within about 1e-4 of R's), and as the estimate the root of the score itself
    (within the same tolerance of the two middle pairwise differences, whose mean is the
    Hodges-Lehmann estimate).

    Raises:
        ValueError: a sample is empty or holds a non-finite value, or confidence is not in (0, 1).
        TiedObservationsError: every value of both samples is tied (e.g. one value a side).
    """
    x = np.sort(np.asarray(experiment, dtype=np.float64).reshape(-1))
    y = np.sort(np.asarray(control, dtype=np.float64).reshape(-1))
    if x.size == 0 or y.size == 0:
        raise ValueError("both samples need at least one value")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("samples must hold finite values only")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence:g}")
    z_quantile = NormalDist().inv_cdf((1.0 - confidence) / 2)
    lower = _find_root(x, y, -z_quantile)
    upper = _find_root(x, y, z_quantile)
    low, high = float(x[0] - y[-1]), float(x[-1] - y[0])
    f_low = _wilcoxon_diff(x, y, low, 0.0)
    f_high = _wilcoxon_diff(x, y, high, 0.0)
    estimate = brent_root(low, high, f_low, f_high, lambda d: _wilcoxon_diff(x, y, d, 0.0))
    return ShiftEstimate(lower, upper, estimate)


# --- effect sizes ---------------------------------------------------------------------------


def mean_ratio(control: FloatArray, experiment: FloatArray) -> float | None:
    """Canary mean / primary mean; ``None`` (undefined) when either mean is 0 or a side is empty.

    Kayenta's rule: with a mean of 0 the ratio is undefined, and then no effect-size
    threshold applies (``docs/judge.md``).
    """
    if control.size == 0 or experiment.size == 0:
        return None
    control_mean, experiment_mean = mean(control), mean(experiment)
    if control_mean == 0.0 or experiment_mean == 0.0:
        return None
    return experiment_mean / control_mean


def cles(control: FloatArray, experiment: FloatArray) -> float:
    """Common-language effect size: P(canary value > primary value), ties counting half."""
    m, n = float(experiment.size), float(control.size)
    rank_sum, _ = _rank_terms(np.sort(experiment), np.sort(control), 0.0)
    return (2 * rank_sum - m * (m + 1)) / (2 * n * m)


def effect_size(measure: EffectSize, control: FloatArray, experiment: FloatArray) -> float | None:
    """The effect size compared with the allowed/critical thresholds; ``None`` when undefined.

    Undefined is the mean ratio with a mean of 0: then, as in Kayenta, no threshold applies.
    """
    if measure is EffectSize.CLES:
        return cles(control, experiment)
    return mean_ratio(control, experiment)


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


def _size_text(config: MetricConfig, effect: float | None) -> str:
    """The effect size for a reason text."""
    if effect is None:
        return "mean ratio is undefined (a mean is 0), so no effect-size threshold applies"
    measure = "CLES" if config.effect_size is EffectSize.CLES else "mean ratio"
    return f"{measure} {_num(effect)}"


def _verdict(
    config: MetricConfig, shift: ShiftEstimate, bound: float, effect: float | None
) -> tuple[Classification, str]:
    """High, Low or Pass from the interval, the bounds +/-``bound``, direction and effect size.

    An undefined effect size (``None``) never vetoes a High or Low (Kayenta's rule).
    """
    span = (
        f"the {config.confidence * 100:g}% interval [{_num(shift.low)}, {_num(shift.high)}] "
        f"of the shift canary - primary"
    )
    size = _size_text(config, effect)
    margin = f"{_num(bound)} (tolerance {config.tolerance:g} x |estimate {_num(shift.estimate)}|)"
    if shift.low > bound:
        head = f"canary is higher than primary: {span} lies above +{margin}"
        need = config.threshold(config.allowed_increase)
        if config.direction is Direction.DECREASE:
            return Classification.PASS, f"{head}, but only a decrease fails this metric"
        if effect is None:
            return Classification.HIGH, f"{head}, and the {size}"
        if effect >= need:
            return Classification.HIGH, f"{head}, and the {size} reaches allowedIncrease {need:g}"
        return Classification.PASS, f"{head}, but the {size} is below allowedIncrease {need:g}"
    if shift.high < -bound:
        head = f"canary is lower than primary: {span} lies below -{margin}"
        need = config.threshold(config.allowed_decrease)
        if config.direction is Direction.INCREASE:
            return Classification.PASS, f"{head}, but only an increase fails this metric"
        if effect is None:
            return Classification.LOW, f"{head}, and the {size}"
        if effect <= need:
            return Classification.LOW, f"{head}, and the {size} reaches allowedDecrease {need:g}"
        return Classification.PASS, f"{head}, but the {size} is above allowedDecrease {need:g}"
    return Classification.PASS, f"no significant difference: {span} reaches within +/-{margin}"


def _criticality(
    config: MetricConfig, label: Classification, reason: str, effect: float | None
) -> tuple[str, bool]:
    """Whether a High/Low of a critical metric fails the canary, and why.

    An undefined effect size fails it (Kayenta: no threshold applies).
    """
    if not config.critical or label not in (Classification.HIGH, Classification.LOW):
        return reason, False
    if label is Classification.HIGH:
        key, need = "criticalIncrease", config.threshold(config.critical_increase)
        failed = effect is None or effect >= need
    else:
        key, need = "criticalDecrease", config.threshold(config.critical_decrease)
        failed = effect is None or effect <= need
    if effect is None:
        return f"{reason}; the metric is critical", True
    if failed:
        return f"{reason}; the metric is critical and reaches {key} {need:g}", True
    return f"{reason}; the metric is critical but does not reach {key} {need:g}", False


def _all_tied(config: MetricConfig) -> MetricResult:
    """The verdict when every value is tied: Kayenta's ``Error``, which the score ignores."""
    reason = (
        "every canary and primary value is tied (e.g. one value a side, or one value against "
        "zeros), so the Mann-Whitney interval cannot be computed; the metric is not scored"
    )
    return MetricResult(config.name, Classification.ERROR, False, config.groups, reason)


def _within_factor_two(a: float, b: float) -> bool:
    """Whether ``b / 2 <= a <= 2 b`` (same sign): then ``a - (a - b)`` is exactly ``b``."""
    a, b = abs(a) if a * b > 0 else -1.0, abs(b)
    return b / 2 <= a <= 2 * b


def _constant_shift(control: FloatArray, experiment: FloatArray) -> ShiftEstimate | None:
    """The exact shift when both series are constant, ``None`` when either is not.

    Kayenta adds noise of 1e-5 x the value here, which leaves a 0 as it is and cannot untie
    a single value from itself; it fails (Error) when the ranks stay all tied at the extreme
    shift: one value (or zeros) a side. With one non-zero value a side it fails only when
    its arithmetic lands exactly back on a value, always so within a factor of 2, otherwise
    by chance; canaryd then compares the two values (``docs/judge.md``).

    Raises:
        TiedObservationsError: Kayenta's ranks would stay all tied.
    """
    if not (bool(np.all(control == control[0])) and bool(np.all(experiment == experiment[0]))):
        return None
    canary, primary = float(experiment[0]), float(control[0])
    if (experiment.size == 1 or canary == 0.0) and (control.size == 1 or primary == 0.0):
        single_points = experiment.size == control.size == 1 and canary * primary != 0.0
        if not single_points or _within_factor_two(canary, primary):
            raise TiedObservationsError("every value of both samples is tied")
    return ShiftEstimate(canary - primary, canary - primary, canary - primary)


def _compare(config: MetricConfig, control: FloatArray, experiment: FloatArray) -> MetricResult:
    """Classify two non-empty, not identical series with the Mann-Whitney interval."""
    try:
        shift = _constant_shift(control, experiment) or shift_interval(
            experiment, control, config.confidence
        )
    except TiedObservationsError:
        return _all_tied(config)
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
    if max(float(np.abs(c).max()), float(np.abs(e).max())) > LARGEST_VALUE:
        reason = (
            f"a value is beyond +/-{LARGEST_VALUE:g}, where differences and sums overflow, "
            "so the series cannot be compared; the metric is not scored"
        )
        return MetricResult(config.name, Classification.ERROR, False, config.groups, reason)
    if c.size == e.size and np.array_equal(np.sort(c), np.sort(e)):
        reason = "canary and primary data are identical"
        return MetricResult(
            config.name, Classification.PASS, False, config.groups, reason, ratio=1.0
        )
    if bool(np.all(c == c[0])) and bool(np.all(e == c[0])):
        reason = f"every canary and primary value is {_num(float(c[0]))}"
        return MetricResult(
            config.name, Classification.PASS, False, config.groups, reason, ratio=1.0
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
