"""The judge on random samples, property-based: no exception, the estimate inside the interval.

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
from judge_oracles import (
    brute_force_interval,
    close_to,
    estimate_window,
    score_at_extreme_differences,
    values,
)
from scipy import stats

from canaryd.core.judge import MetricConfig, MetricPair, classify_metric, judge
from canaryd.core.judgestats import (
    BRENT_TOLERANCE,
    LARGEST_VALUE,
    TiedObservationsError,
    shift_interval,
)
from canaryd.core.scoring import Classification

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
