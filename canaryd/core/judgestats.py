"""Kayenta's statistics for the judge: cleaning, Mann-Whitney, effect sizes (docs/judge.md).

The arithmetic is Kayenta's, step for step (:mod:`canaryd.core.judge` says why): the
normal approximation of the rank-sum statistic with tie and continuity corrections,
inverted with Brent's method at an absolute tolerance of 1e-4; two-pass means; R-7
percentiles. Pure functions on numpy arrays, no I/O, no randomness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from canaryd.core.judgemodel import (
    EffectSize,
    NanStrategy,
    Outliers,
    OutlierStrategy,
    ShiftEstimate,
)

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
    Hodges-Lehmann estimate). When rounding in ``max x - min y`` (or ``min x - max y``)
    breaks the tie that puts the score's zero at that end, the score has one sign on the
    whole bracket and the estimate is wherever Kayenta's unchecked solver stops
    (``docs/judge.md``, step 6).

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
