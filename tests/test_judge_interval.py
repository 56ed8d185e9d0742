"""The judge's Mann-Whitney interval and estimate, CLES and the mean ratio.

Expected values come from outside the implementation: the issue's reference value,
hand computation (shown in comments), published examples, and scipy as an oracle
(``scipy.stats.mannwhitneyu`` p-values inverted by brute force over every shift).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from judge_oracles import (
    DATASETS,
    arrays,
    brute_force_interval,
    close_to,
    estimate_window,
    score_at_extreme_differences,
)
from scipy import stats

from canaryd.core.judge import MetricConfig, classify_metric
from canaryd.core.judgestats import (
    BRENT_TOLERANCE,
    TiedObservationsError,
    cles,
    mean_ratio,
    shift_interval,
    wilcoxon_z,
)
from canaryd.core.scoring import Classification

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
    x, y = arrays(name)
    result = shift_interval(x, y, confidence)
    exact_low, exact_high = brute_force_interval(x, y, confidence)
    assert close_to(result.low, exact_low)
    assert close_to(result.high, exact_high)


@pytest.mark.parametrize("name", list(DATASETS), ids=list(DATASETS))
def test_estimate_is_at_the_median_of_pairwise_differences(name: str) -> None:
    """The estimate is where the statistic is 0: next to the middle pairwise differences."""
    x, y = arrays(name)
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
    x, y = arrays(name)
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
    x, y = arrays("permeability-h-and-w")
    assert cles(y, x) == pytest.approx(0.7)


@pytest.mark.parametrize("name", list(DATASETS), ids=list(DATASETS))
def test_cles_matches_scipy_u(name: str) -> None:
    """CLES is scipy's U statistic of the canary divided by the number of pairs."""
    x, y = arrays(name)
    assert cles(y, x) == pytest.approx(stats.mannwhitneyu(x, y).statistic / (x.size * y.size))


@pytest.mark.parametrize(
    ("control", "experiment", "expected"),
    [([2.0, 4.0], [6.0, 6.0], 2.0), ([0.0, 0.0], [1.0], None), ([1.0], [0.0, 0.0], None)],
    ids=["ratio", "zero-primary-undefined", "zero-canary-undefined"],
)
def test_mean_ratio(control: list[float], experiment: list[float], expected: float | None) -> None:
    """The mean ratio is canary mean / primary mean, undefined when either mean is 0."""
    assert mean_ratio(np.asarray(control), np.asarray(experiment)) == expected
