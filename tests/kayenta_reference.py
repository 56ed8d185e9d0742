"""A small reference model of Kayenta's judge, for the differential test.

Written for the tests from Kayenta's published semantics (NetflixACAJudge,
MannWhitneyClassifier, MannWhitney with its Brent solver, EffectSizes, the IQR
detector, WeightedSumScorer, ThresholdScoreClassifier): plain Python lists and
loops, no numpy, nothing shared with :mod:`canaryd.core.judge`, so that the two can
disagree. Where Kayenta is random (Gaussian noise when both series are constant)
the model is too, from a seeded generator.

Inputs must not hold infinities or ``-0.0``: canaryd treats those differently on
purpose (``docs/judge.md``, "Agreement with Kayenta").
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from statistics import NormalDist


class AllTiedError(Exception):
    """Kayenta's IllegalArgumentException: every observation is tied."""


@dataclass(frozen=True)
class Settings:
    """A metric's canary settings, as Kayenta's analysis configuration holds them."""

    direction: str = "either"
    nan_strategy: str = "remove"
    outliers: bool = False
    outlier_factor: float = 3.0
    measure: str = "meanRatio"
    allowed: tuple[float, float] | None = None  # (decrease, increase)
    critical_effect: tuple[float, float] | None = None
    critical: bool = False
    must_have_data: bool = False
    tolerance: float = 0.25
    confidence: float = 0.98
    groups: tuple[str, ...] = ("default",)


# --- Commons Math statistics ---------------------------------------------------------------


def commons_mean(values: Sequence[float]) -> float:
    """StatUtils.mean: sum / n, plus the mean of the residuals, summing left to right."""
    total = 0.0
    for v in values:
        total += v
    first = total / len(values)
    correction = 0.0
    for v in values:
        correction += v - first
    return first + correction / len(values)


def r7_percentile(values: Sequence[float], p: float) -> float:
    """Percentile with EstimationType.R_7, as Commons Math computes it."""
    data = sorted(values)
    length = len(data)
    if length == 1:
        return data[0]
    q = p / 100.0
    pos = float(length) if q == 1.0 else q * (length - 1) + 1
    if pos < 1:
        return data[0]
    if pos >= length:
        return data[length - 1]
    floor = math.floor(pos)
    lower, upper = data[int(floor) - 1], data[int(floor)]
    return lower + (pos - floor) * (upper - lower)


def natural_ranks(values: Sequence[float]) -> list[float]:
    """NaturalRanking with ties averaged (no NaN here)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        average = (start + 1 + end + 1) / 2.0
        for k in range(start, end + 1):
            ranks[order[k]] = average
        start = end + 1
    return ranks


# --- Mann-Whitney ------------------------------------------------------------------------


def wilcoxon_diff(mu: float, quantile: float, x: Sequence[float], y: Sequence[float]) -> float:
    """MannWhitney.wilcoxonDiff."""
    n, m = float(len(x)), float(len(y))
    ranks = natural_ranks([v - mu for v in x] + list(y))
    counts: dict[float, int] = {}
    for r in ranks:
        counts[r] = counts.get(r, 0) + 1
    dz = sum(ranks[: len(x)]) - n * (n + 1) / 2 - n * m / 2
    correction = (0.0 if dz == 0 else math.copysign(1.0, dz)) * 0.5
    ties = sum(float(c) ** 3 - c for c in counts.values())
    sigma = math.sqrt((n * m / 12) * ((n + m + 1) - ties / ((n + m) * (n + m - 1))))
    if sigma == 0:
        raise AllTiedError
    return (dz - correction) / sigma - quantile


def _is_zero(v: float) -> bool:
    """Precision.equals(v, 0) with one ulp."""
    return abs(v) <= 5e-324


def brent(ax: float, bx: float, fa: float, fb: float, f: Callable[[float], float]) -> float:
    """BrentSolver.solve: zeroin with absolute tolerance 1e-4, 1,001 iterations at most."""
    tolerance, eps = 1e-4, 2.220446049250313e-16
    a, b, c, fc = ax, bx, ax, fa
    if _is_zero(fa):
        return a
    if _is_zero(fb):
        return b
    iteration = 1001
    while iteration > 0:
        iteration -= 1
        prev_step = b - a
        if abs(fc) < abs(fb):
            a = b
            b = c
            c = a
            fa = fb
            fb = fc
            fc = fa
        tol_act = 2 * eps * abs(b) + tolerance / 2
        new_step = (c - b) / 2
        if abs(new_step) <= tol_act or _is_zero(fb):
            return b
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:
                t1 = fb / fa
                p = cb * t1
                q = 1.0 - t1
            else:
                q = fa / fc
                t1 = fb / fc
                t2 = fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0.0:
                q = -q
            else:
                p = -p
            if p < (0.75 * cb * q - abs(tol_act * q) / 2) and p < abs(prev_step * q / 2):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0 else -tol_act
        a = b
        fa = fb
        b += new_step
        fb = f(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c = a
            fc = fa
    return b


def mann_whitney(
    x: Sequence[float], y: Sequence[float], confidence: float
) -> tuple[float, float, float]:
    """MannWhitney.mannWhitneyUTest: (lower, upper, estimate)."""
    alpha = 1.0 - confidence
    mu_min, mu_max = min(x) - max(y), max(x) - min(y)

    def find_root(zq: float) -> float:
        f_lower = wilcoxon_diff(mu_min, zq, x, y)
        f_upper = wilcoxon_diff(mu_max, zq, x, y)
        if f_lower <= 0:
            return mu_min
        if f_upper >= 0:
            return mu_max
        return brent(mu_min, mu_max, f_lower, f_upper, lambda v: wilcoxon_diff(v, zq, x, y))

    z_quant = NormalDist().inv_cdf(alpha / 2)
    lower, upper = find_root(-z_quant), find_root(z_quant)
    f_lower = wilcoxon_diff(mu_min, 0, x, y)
    f_upper = wilcoxon_diff(mu_max, 0, x, y)
    estimate = brent(mu_min, mu_max, f_lower, f_upper, lambda v: wilcoxon_diff(v, 0, x, y))
    return lower, upper, estimate


# --- effect sizes and the classifier -------------------------------------------------------


def mean_ratio(control: Sequence[float], experiment: Sequence[float]) -> float:
    """EffectSizes.meanRatio: NaN when either mean is 0."""
    c, e = commons_mean(control), commons_mean(experiment)
    return math.nan if c == 0.0 or e == 0.0 else e / c


def cles(control: Sequence[float], experiment: Sequence[float]) -> float:
    """EffectSizes.cles."""
    m, n = len(experiment), len(control)
    r1 = sum(natural_ranks(list(experiment) + list(control))[:m])
    return (2 * r1 - m * (m + 1)) / (2 * n * m)


def _noisy(values: list[float], rng: random.Random) -> list[float]:
    scale = values[0] * 1e-5
    return [v + rng.gauss(0.0, 1.0) * scale for v in values]


def _compare(
    control: list[float], experiment: list[float], s: Settings, rng: random.Random
) -> tuple[str, float]:
    """MannWhitneyClassifier.compare: (label, effect size)."""
    if len(set(experiment)) == 1 and len(set(control)) == 1:
        experiment, control = _noisy(experiment, rng), _noisy(control, rng)
    lower, upper, estimate = mann_whitney(experiment, control, s.confidence)
    measure = cles if s.measure == "cles" else mean_ratio
    effect = measure(control, experiment)
    neutral = 0.5 if s.measure == "cles" else 1.0
    allowed_low, allowed_high = s.allowed or (neutral, neutral)
    bound = s.tolerance * abs(estimate)
    high = (
        s.direction in ("increase", "either")
        and lower > bound
        and (math.isnan(effect) or effect >= allowed_high)
    )
    low = (
        s.direction in ("decrease", "either")
        and upper < -bound
        and (math.isnan(effect) or effect <= allowed_low)
    )
    return ("High" if high else "Low" if low else "Pass"), effect


def _clean(values: Sequence[float], s: Settings) -> list[float]:
    """NaN handling, then the IQR detector with reduced sensitivity."""
    data = [v for v in values if not math.isnan(v)]
    if s.nan_strategy == "replace":
        data = [0.0 if math.isnan(v) else v for v in values]
    if not s.outliers or not data:
        return data
    p25, p75 = r7_percentile(data, 25), r7_percentile(data, 75)
    iqr = p75 - p25
    lower = min(r7_percentile(data, 1), p25 - s.outlier_factor * iqr)
    upper = max(r7_percentile(data, 99), p75 + s.outlier_factor * iqr)
    return [v for v in data if not (v > upper or v < lower)]


def _classify(
    control: list[float], experiment: list[float], s: Settings, rng: random.Random
) -> tuple[str, bool]:
    if not experiment or not control:
        if s.nan_strategy == "remove":
            if s.must_have_data and not s.critical:
                return "NodataFailMetric", False
            return "Nodata", s.critical
        return "Pass", False
    if sorted(experiment) == sorted(control):
        return "Pass", False
    if len(set(experiment + control)) == 1:
        return "Pass", False
    label, effect = _compare(control, experiment, s, rng)
    neutral = 0.5 if s.measure == "cles" else 1.0
    critical_low, critical_high = s.critical_effect or (neutral, neutral)
    nan = math.isnan(effect)
    if s.critical and label == "High" and (nan or effect >= critical_high):
        return "High", True
    if s.critical and label == "Low" and (nan or effect <= critical_low):
        return "Low", True
    return label, False


def classify(
    control: Sequence[float], experiment: Sequence[float], s: Settings, seed: int = 0
) -> tuple[str, bool]:
    """NetflixACAJudge.classifyMetric: (classification, critical); Error when all tied."""
    rng = random.Random(seed)
    try:
        return _classify(_clean(control, s), _clean(experiment, s), s, rng)
    except AllTiedError:
        return "Error", False


# --- scoring ---------------------------------------------------------------------------------


def score(
    results: Sequence[tuple[str, bool, tuple[str, ...]]],
    weights: Mapping[str, float],
    passing: float,
    marginal: float,
) -> tuple[float, str]:
    """WeightedSumScorer then ThresholdScoreClassifier: (summary score, classification)."""
    groups: dict[str, list[str]] = {}
    for label, _, names in results:
        for name in names:
            groups.setdefault(name, []).append(label)
    critical_failure = any(critical and label != "Pass" for label, critical, _ in results)
    nodata = sum(1 for label, _, _ in results if label == "Nodata")
    if critical_failure or nodata / len(results) * 100 >= 50:
        summary = 0.0
    else:
        free = [g for g in groups if g not in weights]
        share = (100 - sum(weights.values())) / len(free) if free else 0.0
        summary = 0.0
        for name, labels in groups.items():
            counted = [v for v in labels if v in ("Pass", "High", "Low", "NodataFailMetric")]
            value = (labels.count("Pass") / len(counted)) * 100 if counted else 100.0
            summary += value * (weights.get(name, share) / 100)
        summary = float(Decimal(repr(summary)).quantize(Decimal("0.01"), ROUND_HALF_UP))
    if summary >= passing:
        return summary, "Pass"
    return summary, "Marginal" if summary >= marginal else "Fail"
