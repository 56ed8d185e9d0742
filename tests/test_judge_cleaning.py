"""The judge's cleaning: missing values, outlier fences and means as Kayenta computes them.

Expected values come from outside the implementation: the issue's reference value,
hand computation (shown in comments), published examples, and scipy as an oracle
(``scipy.stats.mannwhitneyu`` p-values inverted by brute force over every shift).
"""

from __future__ import annotations

import math

import kayenta_reference as kayenta
import numpy as np
import pytest
from judge_oracles import BASE

from canaryd.core.judge import NanStrategy, Outliers, OutlierStrategy, classify_metric
from canaryd.core.judgestats import clean_series, mean, mean_ratio, outlier_fences

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
