"""Tests of the statistical judge: Mann-Whitney interval, estimate, cleaning, classification.

Expected values come from outside the implementation: the issue's reference value,
hand computation (shown in comments), published examples, and scipy as an oracle
(``scipy.stats.mannwhitneyu`` p-values inverted by brute force over every shift).
"""

from __future__ import annotations

import json
import math

import kayenta_reference as kayenta
import numpy as np
import pytest
from hypothesis import assume, example, given, reject, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import stats

from canaryd.core.judge import (
    Direction,
    EffectSize,
    MetricConfig,
    MetricPair,
    NanStrategy,
    Outliers,
    OutlierStrategy,
    classify_metric,
    judge,
)
from canaryd.core.judgestats import (
    BRENT_TOLERANCE,
    LARGEST_VALUE,
    TiedObservationsError,
    clean_series,
    cles,
    mean,
    mean_ratio,
    outlier_fences,
    shift_interval,
    wilcoxon_z,
)
from canaryd.core.scoring import Classification, ScoreClassification

Array = NDArray[np.float64]

RNG = np.random.default_rng(20240601)

# Datasets (experiment, control) for the oracle comparisons: continuous, tied, integer,
# zero-heavy, unequal sizes, shifted, overlapping, negative.
DATASETS: dict[str, tuple[list[float], list[float]]] = {
    "normal-shifted": (
        list(RNG.normal(10.5, 1.0, 25)),
        list(RNG.normal(10.0, 1.0, 30)),
    ),
    "lognormal-latency": (
        list(RNG.lognormal(3.2, 0.4, 20)),
        list(RNG.lognormal(3.0, 0.4, 20)),
    ),
    "integer-ties": (
        [3.0, 4, 4, 5, 5, 5, 6, 7, 7, 9, 9, 10],
        [1.0, 2, 2, 3, 4, 4, 4, 5, 6, 6, 8],
    ),
    "zero-heavy-errors": (
        [0.0, 0, 0, 1, 0, 2, 0, 3, 1, 0, 0, 4],
        [0.0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0],
    ),
    "unequal-sizes": ([5.1, 6.3, 7.2, 8.8, 9.4], list(RNG.normal(6.0, 2.0, 37))),
    "negative-values": (
        list(RNG.normal(-3.0, 1.5, 15)),
        list(RNG.normal(-1.0, 1.5, 18)),
    ),
    "permeability-h-and-w": (
        # Hollander & Wolfe's permeability data, the example in R's ?wilcox.test.
        [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46],
        [1.15, 0.88, 0.90, 0.74, 1.21],
    ),
}


def brute_force_interval(x: Array, y: Array, confidence: float) -> tuple[float, float]:
    """Invert scipy's asymptotic, continuity-corrected Mann-Whitney test over every shift.

    The test statistic of ``x - d`` against ``y`` only changes where ``d`` equals a
    pairwise difference, so the shifts the test does not reject (p > alpha) form a run
    of gaps between sorted differences; the interval spans that run.
    """
    diffs = np.unique(np.subtract.outer(x, y).ravel())
    mids = (diffs[:-1] + diffs[1:]) / 2.0
    pvalues = [
        stats.mannwhitneyu(x - d, y, method="asymptotic", use_continuity=True).pvalue for d in mids
    ]
    accepted = np.flatnonzero(np.asarray(pvalues) > 1.0 - confidence)
    return float(diffs[accepted[0]]), float(diffs[accepted[-1] + 1])


def close_to(found: float, exact: float) -> bool:
    """Whether a root found by the Brent solver is within its tolerance of the exact one."""
    eps = float(np.finfo(np.float64).eps)
    return abs(found - exact) <= BRENT_TOLERANCE + 8 * eps * max(abs(found), abs(exact))


def estimate_window(x: Array, y: Array) -> tuple[float, float]:
    """Where the rank statistic is 0: around the middle pairwise difference(s) x_i - y_j.

    The continuity-corrected score is 0 while at most half a pair separates the counts of
    differences above and below the shift: between the two middle differences (an even
    number of pairs), or between the neighbours of the middle one (odd).
    """
    diffs = np.sort(np.subtract.outer(x, y).ravel())
    half = diffs.size // 2
    if diffs.size % 2 == 0:
        return float(diffs[half - 1]), float(diffs[half])
    return float(diffs[max(half - 1, 0)]), float(diffs[min(half + 1, diffs.size - 1)])


def score_at_extreme_differences(x: Array, y: Array) -> tuple[float, float]:
    """The score at min x - max y and at max x - min y: the bracket Kayenta's root finder gets."""
    return wilcoxon_z(x, y, float(x.min() - y.max())), wilcoxon_z(x, y, float(x.max() - y.min()))


def _arrays(name: str) -> tuple[Array, Array]:
    experiment, control = DATASETS[name]
    return np.asarray(experiment, dtype=np.float64), np.asarray(control, dtype=np.float64)


# --- Mann-Whitney interval and estimate ------------------------------------------------


def test_issue_reference_interval_and_estimate() -> None:
    """Experiment [10,20,30,40] vs control [1,2,3,4] at 95% gives [6.0, 39.0] and 22.5 (issue)."""
    # By hand: the 16 differences are 6-9, 16-19, 26-29, 36-39; their median is (19+26)/2.
    # At d=6 the statistic (tie at 4) is z=7/3.443=2.03 > 1.96, just above 6 it is
    # 6.5/3.464=1.88 < 1.96, so the lower root is the jump at 6 (R's uniroot: 6 to 1e-4).
    result = shift_interval([10.0, 20, 30, 40], [1.0, 2, 3, 4], 0.95)
    assert (result.low, result.high, result.estimate) == (6.0, 39.0, 22.5)


def test_interval_clamps_to_extreme_differences_when_samples_are_tiny() -> None:
    """With two values a side the 95% interval cannot be reached and is [min, max] difference."""
    # By hand: x=[3,4], y=[1,2]; at d=1 ranks give W=3.5, dz=1.5, corrected 1.0, sigma with the
    # tie sqrt(20/12*0.9)=1.225, z=0.816 <= 1.96, so R returns mumin=1 (and mumax=3 above).
    result = shift_interval([3.0, 4.0], [1.0, 2.0], 0.95)
    assert (result.low, result.high, result.estimate) == (1.0, 3.0, 2.0)


@pytest.mark.parametrize("name", list(DATASETS), ids=list(DATASETS))
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.98], ids=["80%", "95%", "98%"])
@pytest.mark.slow
def test_interval_matches_scipy_inversion(name: str, confidence: float) -> None:
    """The interval ends are within 1e-4 of where scipy's test stops rejecting the shift."""
    x, y = _arrays(name)
    result = shift_interval(x, y, confidence)
    exact_low, exact_high = brute_force_interval(x, y, confidence)
    assert close_to(result.low, exact_low)
    assert close_to(result.high, exact_high)


@pytest.mark.parametrize("name", list(DATASETS), ids=list(DATASETS))
def test_estimate_is_at_the_median_of_pairwise_differences(name: str) -> None:
    """The estimate is where the statistic is 0: next to the middle pairwise differences."""
    x, y = _arrays(name)
    low, high = estimate_window(x, y)
    estimate = shift_interval(x, y, 0.95).estimate
    assert low - BRENT_TOLERANCE <= estimate <= high + BRENT_TOLERANCE


def test_estimate_is_kayentas_where_rounding_removes_the_tie_at_an_end() -> None:
    """When x - (max x - min y) rounds off min y the estimate is Kayenta's 8.6667, not 9."""
    # Hypothesis' counterexample. The differences are 8 and 3 x fl(9 - 3.02e-7) = 8.999999698,
    # their median 8.999999698 = max x - min y. But 9 - 8.999999698 = 3.0200000012e-7 > 3.02e-7:
    # the tie that makes the score 0 there is gone, so the score is positive at both ends:
    # at 8 the canary ties with 1.0 (dz = 1.5, corrected 1, sigma = sqrt(1/3 x (6 - 30/20)));
    # at the top it ranks 4th (dz = 1, corrected 0.5, sigma = sqrt(1/3 x (6 - 24/20))).
    # Kayenta's Brent solver, which does not check the bracket, stops at 8.66669.
    # Expected values from Kayenta's own BrentSolver.java and MannWhitney.wilcoxonDiff run on
    # Java 17 with commons-math3 3.6.1; R's uniroot refuses such a bracket.
    x, y = [9.0], [1.0, 3.02e-7, 3.02e-7, 3.02e-7]
    at_low, at_high = score_at_extreme_differences(np.asarray(x), np.asarray(y))
    assert (at_low, at_high) == (1.0 / math.sqrt(1.5), 0.5 / math.sqrt(1.6))
    result = shift_interval(x, y, 0.95)
    assert (result.low, result.high, result.estimate) == (8.0, 8.999999698, 8.666686810379273)


def test_estimate_is_the_median_when_the_tie_at_an_end_is_exact() -> None:
    """With differences that round to nothing the same shape gives the median difference."""
    # 9 - 0.5 = 8.5 and 9 - 8.5 = 0.5 exactly: at d = 8.5 the canary value ties with the three
    # 0.5s (average rank 2.5, dz = -0.5, corrected 0), so the score is 0 at that end.
    result = shift_interval([9.0], [1.0, 0.5, 0.5, 0.5], 0.95)
    assert (result.low, result.high, result.estimate) == (8.0, 8.5, 8.5)


@pytest.mark.parametrize("name", list(DATASETS), ids=list(DATASETS))
@pytest.mark.parametrize("shift", [0.0, 0.5, -1.25], ids=["0", "0.5", "-1.25"])
def test_statistic_matches_scipy_pvalue(name: str, shift: float) -> None:
    """The continuity- and tie-corrected normal score gives scipy's asymptotic p-value."""
    x, y = _arrays(name)
    z = wilcoxon_z(x, y, shift)
    expected = stats.mannwhitneyu(x - shift, y, method="asymptotic", use_continuity=True).pvalue
    assert min(1.0, 2.0 * stats.norm.sf(abs(z))) == pytest.approx(expected, rel=1e-9)


def test_constant_samples_have_an_exact_shift() -> None:
    """Two constant samples give the difference itself (where Kayenta adds noise)."""
    result = classify_metric(MetricConfig("m"), [2.0, 2.0], [5.0, 5.0, 5.0])
    assert (result.interval, result.estimate) == ((3.0, 3.0), 3.0)
    assert result.classification is Classification.HIGH


def test_every_value_tied_is_an_error_for_the_interval() -> None:
    """With one value a side every rank ties and the interval raises (Kayenta: Error)."""
    with pytest.raises(TiedObservationsError):
        shift_interval([5.0], [2.0], 0.98)


@pytest.mark.parametrize(
    ("experiment", "control", "confidence", "message"),
    [
        ([], [1.0], 0.95, "at least one value"),
        ([1.0], [math.nan], 0.95, "finite"),
        ([1.0], [2.0], 1.0, "between 0 and 1"),
    ],
    ids=["empty", "nan", "confidence-1"],
)
def test_shift_interval_rejects_bad_arguments(
    experiment: list[float], control: list[float], confidence: float, message: str
) -> None:
    """Empty samples, non-finite values and a confidence outside (0, 1) raise ValueError."""
    with pytest.raises(ValueError, match=message):
        shift_interval(experiment, control, confidence)


# --- effect sizes ---------------------------------------------------------------------


def test_cles_matches_published_statistic() -> None:
    """CLES of the permeability example is W/(n m) = 35/50, R's published W = 35."""
    x, y = _arrays("permeability-h-and-w")
    assert cles(y, x) == pytest.approx(0.7)


@pytest.mark.parametrize("name", list(DATASETS), ids=list(DATASETS))
def test_cles_matches_scipy_u(name: str) -> None:
    """CLES is scipy's U statistic of the canary divided by the number of pairs."""
    x, y = _arrays(name)
    assert cles(y, x) == pytest.approx(stats.mannwhitneyu(x, y).statistic / (x.size * y.size))


@pytest.mark.parametrize(
    ("control", "experiment", "expected"),
    [([2.0, 4.0], [6.0, 6.0], 2.0), ([0.0, 0.0], [1.0], None), ([1.0], [0.0, 0.0], None)],
    ids=["ratio", "zero-primary-undefined", "zero-canary-undefined"],
)
def test_mean_ratio(control: list[float], experiment: list[float], expected: float | None) -> None:
    """The mean ratio is canary mean / primary mean, undefined when either mean is 0."""
    assert mean_ratio(np.asarray(control), np.asarray(experiment)) == expected


# --- cleaning ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [(NanStrategy.REMOVE, [1.0, 3.0]), (NanStrategy.REPLACE, [1.0, 0.0, 3.0, 0.0, 0.0])],
    ids=["remove", "replace"],
)
def test_missing_values_are_removed_or_replaced(
    strategy: NanStrategy, expected: list[float]
) -> None:
    """NaN and infinite values are dropped (remove) or become 0 (replace)."""
    values = [1.0, math.nan, 3.0, math.inf, -math.inf]
    assert clean_series(values, strategy, Outliers()).tolist() == expected


def test_outlier_fences_use_r7_percentiles() -> None:
    """IQR fences use R-7 quartiles and widen to the 1st/99th percentile when further out."""
    # By hand (R-7, h=(n-1)p): sorted [1..10,30,40], n=12. Q1 at h=2.75 -> 3.75,
    # Q3 at h=8.25 -> 9.25, IQR 5.5; IQR fences -12.75 and 25.75. P1 at h=0.11 -> 1.11,
    # P99 at h=10.89 -> 30 + 0.89*10 = 38.9, which is further out than 25.75.
    values = np.asarray([*range(1, 11), 30, 40], dtype=np.float64)
    low, high = outlier_fences(values, 3.0)
    assert low == pytest.approx(-12.75)
    assert high == pytest.approx(38.9)


def _commons_fences(values: list[float], factor: float) -> tuple[float, float]:
    """Kayenta's fences from the reference model's R-7 percentiles."""
    q1, q3 = kayenta.r7_percentile(values, 25), kayenta.r7_percentile(values, 75)
    low = min(kayenta.r7_percentile(values, 1), q1 - factor * (q3 - q1))
    return low, max(kayenta.r7_percentile(values, 99), q3 + factor * (q3 - q1))


def test_outlier_fences_match_kayenta_to_the_last_bit() -> None:
    """The fences are Kayenta's to the bit, where numpy's linear percentile differs by ulps."""
    rng = np.random.default_rng(77)
    numpy_differs = 0
    for _ in range(300):
        values = list(rng.uniform(0.0, 1.0, int(rng.integers(2, 40))))
        expected = _commons_fences(values, 3.0)
        assert outlier_fences(np.asarray(values), 3.0) == expected
        numpy_p1 = float(np.percentile(values, 1.0, method="linear"))
        numpy_differs += numpy_p1 != kayenta.r7_percentile(values, 1)
    assert numpy_differs > 0  # so this test tells the two apart


def test_mean_is_kayentas_two_pass_mean() -> None:
    """The mean sums in order and corrects by the residuals, as Kayenta; numpy's differs."""
    # Cancelling 1e16s: Kayenta's arithmetic gives -0.01953125, numpy's pairwise sum +0.25,
    # so the ratio to a primary mean of 1 would change sign.
    values = [-1e16, -1.0, 0.5, 1e16, 1e16, -1e16, 3.0, 0.5, -1.0, -1.0, 1e16, 1.0, -1.0, -1.0]
    values += [-1e16, 1.0]
    array = np.asarray(values)
    assert mean(array) == kayenta.commons_mean(values) == -0.01953125
    assert float(np.mean(array)) > 0
    ratio = mean_ratio(np.asarray([1.0]), array)
    assert ratio is not None and ratio < 0


def test_negative_zero_is_zero() -> None:
    """-0.0 is the value 0 (Kayenta's ranking would order it below 0.0; docs/judge.md)."""
    cleaned = clean_series([-0.0, 0.0], NanStrategy.REMOVE, Outliers())
    assert [math.copysign(1.0, v) for v in cleaned] == [1.0, 1.0]
    result = classify_metric(BASE, [0.0, 0.0, 0.0], [-0.0, 0.0, -0.0])
    assert result.reason == "canary and primary data are identical"


def test_outliers_removed_only_when_asked() -> None:
    """With strategy remove the value beyond the fences goes; with keep everything stays."""
    values = [*map(float, range(1, 11)), 30.0, 40.0]
    removed = clean_series(values, NanStrategy.REMOVE, Outliers(OutlierStrategy.REMOVE))
    kept = clean_series(values, NanStrategy.REMOVE, Outliers(OutlierStrategy.KEEP))
    assert removed.tolist() == values[:-1]
    assert kept.tolist() == values


# --- classification -------------------------------------------------------------------

LOW_PRIMARY = [1.0, 2.0, 3.0, 4.0]
HIGH_CANARY = [10.0, 20.0, 30.0, 40.0]
BASE = MetricConfig("m", confidence=0.95)

CASES: list[tuple[str, MetricConfig, list[float], list[float], Classification, bool, str]] = [
    ("empty-primary", BASE, [], [1.0], Classification.NODATA, False, "no data for the primary"),
    ("empty-canary", BASE, [1.0], [], Classification.NODATA, False, "no data for the canary"),
    (
        "all-nan-removed",
        BASE,
        [math.nan],
        [math.nan],
        Classification.NODATA,
        False,
        "no data for the primary and the canary",
    ),
    (
        "must-have-data",
        MetricConfig("m", must_have_data=True),
        [1.0],
        [],
        Classification.NODATA_FAIL_METRIC,
        False,
        "must have data",
    ),
    (
        "must-have-data-critical",
        MetricConfig("m", must_have_data=True, critical=True),
        [1.0],
        [],
        Classification.NODATA,
        True,
        "is critical",
    ),
    (
        "replace-empty-passes",
        MetricConfig("m", nan_strategy=NanStrategy.REPLACE),
        [],
        [1.0],
        Classification.PASS,
        False,
        "counts missing data as zeros",
    ),
    (
        "replace-nan-with-zero-then-compare",
        MetricConfig("m", nan_strategy=NanStrategy.REPLACE, confidence=0.95),
        [math.nan] * 4,
        HIGH_CANARY,
        Classification.HIGH,
        False,
        "canary is higher",
    ),
    ("identical", BASE, [3.0, 1.0, 2.0], [1.0, 2.0, 3.0], Classification.PASS, False, "identical"),
    ("one-value", BASE, [7.0, 7.0], [7.0], Classification.PASS, False, "every canary and"),
    ("higher", BASE, LOW_PRIMARY, HIGH_CANARY, Classification.HIGH, False, "allowedIncrease 1"),
    ("lower", BASE, HIGH_CANARY, LOW_PRIMARY, Classification.LOW, False, "allowedDecrease 1"),
    (
        "higher-but-direction-decrease",
        MetricConfig("m", direction=Direction.DECREASE, confidence=0.95),
        LOW_PRIMARY,
        HIGH_CANARY,
        Classification.PASS,
        False,
        "only a decrease fails",
    ),
    (
        "lower-but-direction-increase",
        MetricConfig("m", direction=Direction.INCREASE, confidence=0.95),
        HIGH_CANARY,
        LOW_PRIMARY,
        Classification.PASS,
        False,
        "only an increase fails",
    ),
    (
        "effect-below-allowed-increase",
        MetricConfig("m", allowed_increase=11.0, confidence=0.95),
        LOW_PRIMARY,
        HIGH_CANARY,
        Classification.PASS,
        False,
        "mean ratio 10 is below allowedIncrease 11",
    ),
    (
        "effect-above-allowed-decrease",
        MetricConfig("m", allowed_decrease=0.05, confidence=0.95),
        HIGH_CANARY,
        LOW_PRIMARY,
        Classification.PASS,
        False,
        "mean ratio 0.1 is above allowedDecrease 0.05",
    ),
    (
        "tolerance-swallows-shift",
        MetricConfig("m", tolerance=0.3, confidence=0.95),
        LOW_PRIMARY,
        HIGH_CANARY,
        Classification.PASS,
        False,
        "no significant difference",
    ),
    (
        "critical-high",
        MetricConfig("m", critical=True, critical_increase=5.0, confidence=0.95),
        LOW_PRIMARY,
        HIGH_CANARY,
        Classification.HIGH,
        True,
        "reaches criticalIncrease 5",
    ),
    (
        "critical-high-below-critical-increase",
        MetricConfig("m", critical=True, critical_increase=20.0, confidence=0.95),
        LOW_PRIMARY,
        HIGH_CANARY,
        Classification.HIGH,
        False,
        "does not reach criticalIncrease 20",
    ),
    (
        "critical-low",
        MetricConfig("m", critical=True, confidence=0.95),
        HIGH_CANARY,
        LOW_PRIMARY,
        Classification.LOW,
        True,
        "reaches criticalDecrease 1",
    ),
    (
        "errors-appear-on-zero-primary",
        MetricConfig("m", confidence=0.95),
        [0.0] * 6,
        [2.0, 3.0, 1.0, 4.0, 2.0, 5.0],
        Classification.HIGH,
        False,
        "mean ratio is undefined (a mean is 0), so no effect-size threshold applies",
    ),
    (
        "canary-drops-to-zero",
        MetricConfig("m", confidence=0.95),
        [2.0, 3.0, 1.0, 4.0, 2.0, 5.0],
        [0.0] * 6,
        Classification.LOW,
        False,
        "mean ratio is undefined (a mean is 0), so no effect-size threshold applies",
    ),
    (
        "cles-high",
        MetricConfig("m", effect_size=EffectSize.CLES, confidence=0.95),
        LOW_PRIMARY,
        HIGH_CANARY,
        Classification.HIGH,
        False,
        "CLES 1 reaches allowedIncrease 0.5",
    ),
    (
        "cles-veto",
        MetricConfig("m", effect_size=EffectSize.CLES, allowed_decrease=0.0, confidence=0.5),
        [5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
        [1.0, 2.0, 3.0, 4.0, 5.5, 6.5],
        Classification.PASS,
        False,
        "above allowedDecrease 0",
    ),
    (
        "outlier-removed-makes-identical",
        MetricConfig("m", outliers=Outliers(OutlierStrategy.REMOVE)),
        [*map(float, range(1, 11))],
        [*map(float, range(1, 11)), 1000.0],
        Classification.PASS,
        False,
        "identical",
    ),
    (
        "outlier-kept-compared",
        MetricConfig("m"),
        [*map(float, range(1, 11))],
        [*map(float, range(1, 11)), 1000.0],
        Classification.PASS,
        False,
        "no significant difference",
    ),
]


@pytest.mark.parametrize(
    ("config", "control", "experiment", "expected", "critical", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_classification_rules(
    config: MetricConfig,
    control: list[float],
    experiment: list[float],
    expected: Classification,
    critical: bool,
    reason: str,
) -> None:
    """Each rule of the judge gives its classification, critical flag and a plain reason."""
    result = classify_metric(config, control, experiment)
    assert (result.classification, result.critical) == (expected, critical)
    assert reason in result.reason


def test_compared_result_carries_interval_estimate_and_ratio() -> None:
    """A compared metric reports the interval, the estimate and the mean ratio."""
    result = classify_metric(BASE, LOW_PRIMARY, HIGH_CANARY)
    assert result.to_json() == {
        "name": "m",
        "classification": "High",
        "critical": False,
        "interval": [6.0, 39.0],
        "estimate": 22.5,
        "ratio": 10.0,
        "reason": result.reason,
    }


def test_confidence_narrows_interval() -> None:
    """A lower confidence level gives a narrower interval around the same estimate."""
    x, y = _arrays("normal-shifted")
    wide, narrow = shift_interval(x, y, 0.98), shift_interval(x, y, 0.8)
    assert wide.low <= narrow.low <= narrow.estimate <= narrow.high <= wide.high
    assert wide.estimate == narrow.estimate


def test_judge_scores_all_metrics() -> None:
    """judge() classifies each pair in order and scores the verdicts together."""
    pairs = [
        MetricPair(MetricConfig("latency", confidence=0.95), LOW_PRIMARY, HIGH_CANARY),
        MetricPair(MetricConfig("errors"), [1.0, 2.0], [1.0, 2.0]),
    ]
    judgement = judge(pairs)
    assert [r.classification for r in judgement.results] == [
        Classification.HIGH,
        Classification.PASS,
    ]
    assert (judgement.score.score, judgement.score.classification) == (
        50.0,
        ScoreClassification.FAIL,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confidence": 0.0}, "confidence"),
        ({"tolerance": -0.1}, "tolerance"),
        ({"outliers": Outliers(factor=0.0)}, "factor"),
        ({"groups": ()}, "group"),
    ],
    ids=["confidence", "tolerance", "factor", "groups"],
)
def test_metric_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    """Out-of-range settings are refused when the config is built."""
    with pytest.raises(ValueError, match=message):
        MetricConfig("m", **kwargs)  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False, width=64)
series = st.lists(st.one_of(values, st.just(math.nan)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(control=series, experiment=series, confidence=st.floats(0.5, 0.999))
@pytest.mark.slow
def test_random_series_never_raise_and_interval_holds_estimate(
    control: list[float], experiment: list[float], confidence: float
) -> None:
    """Any series is classified without an exception, lo <= estimate <= hi (to 1e-4)."""
    result = classify_metric(MetricConfig("m", confidence=confidence), control, experiment)
    assert result.reason
    if result.interval is not None:
        assert result.estimate is not None
        slack = 2 * BRENT_TOLERANCE + 1e-9 * abs(result.estimate)
        assert result.interval[0] - slack <= result.estimate <= result.interval[1] + slack


@example(x=[9.0], y=[1.0, 3.02e-7, 3.02e-7, 3.02e-7])  # the tie at max x - min y rounds off
@settings(max_examples=100, deadline=None)
@given(
    x=st.lists(values, min_size=1, max_size=30),
    y=st.lists(values, min_size=1, max_size=30),
)
def test_estimate_is_at_the_median_for_random_samples(x: list[float], y: list[float]) -> None:
    """The estimate is within 1e-4 of the middle differences when the score brackets a zero."""
    # Otherwise (docs/judge.md, step 6) the middle difference is the extreme one on the side
    # where the score has the wrong sign, and the estimate is Kayenta's unbracketed answer.
    xs, ys = np.asarray(x), np.asarray(y)
    assume(np.unique(np.concatenate((xs, ys))).size > 1 and xs.size + ys.size > 2)
    low, high = estimate_window(xs, ys)
    try:
        estimate = shift_interval(xs, ys, 0.95).estimate
    except TiedObservationsError:  # constant samples: classify_metric handles those
        reject()
    at_low, at_high = score_at_extreme_differences(xs, ys)
    if at_low * at_high <= 0.0:
        slack = BRENT_TOLERANCE + 1e-15 * max(abs(low), abs(high))
        assert low - slack <= estimate <= high + slack
    else:
        extreme = float(xs.max() - ys.min()) if at_low > 0 else float(xs.min() - ys.max())
        assert (high if at_low > 0 else low) == extreme
        assert estimate == kayenta.mann_whitney(x, y, 0.95)[2]


any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=150, deadline=None)
@given(control=st.lists(any_float, max_size=12), experiment=st.lists(any_float, max_size=12))
@pytest.mark.slow
def test_any_finite_or_huge_values_give_a_json_verdict(
    control: list[float], experiment: list[float]
) -> None:
    """Values up to the float limits give a verdict that is valid JSON (no NaN, no overflow)."""
    judgement = judge([MetricPair(MetricConfig("m"), control, experiment)])
    json.dumps(judgement.to_json(), allow_nan=False)
    (result,) = judgement.results
    too_large = [v for v in control + experiment if math.isfinite(v) and abs(v) > LARGEST_VALUE]
    if too_large and result.classification is not Classification.NODATA:
        assert result.classification in (Classification.ERROR, Classification.PASS)


small_ints = st.lists(st.integers(0, 8).map(float), min_size=3, max_size=12)


@settings(max_examples=60, deadline=None)
@given(x=small_ints, y=small_ints, confidence=st.sampled_from([0.5, 0.8, 0.95, 0.98]))
@pytest.mark.slow
def test_interval_matches_scipy_inversion_for_random_tied_samples(
    x: list[float], y: list[float], confidence: float
) -> None:
    """On random heavily tied samples the interval is within 1e-4 of scipy's inverted test."""
    xs, ys = np.asarray(x), np.asarray(y)
    diffs = np.unique(np.subtract.outer(xs, ys))
    assume(diffs.size > 1)
    mids = (diffs[:-1] + diffs[1:]) / 2.0
    pvalues = [
        stats.mannwhitneyu(xs - d, ys, method="asymptotic", use_continuity=True).pvalue
        for d in mids
    ]
    assume(max(pvalues) > 1.0 - confidence)  # some shift is not rejected
    result = shift_interval(xs, ys, confidence)
    exact_low, exact_high = brute_force_interval(xs, ys, confidence)
    assert close_to(result.low, exact_low)
    assert close_to(result.high, exact_high)
