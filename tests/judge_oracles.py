"""Outside oracles for the judge's tests: scipy's inverted Mann-Whitney test, exact estimates.

Expected values come from outside the implementation: the issue's reference value,
hand computation (shown in comments), published examples, and scipy as an oracle
(``scipy.stats.mannwhitneyu`` p-values inverted by brute force over every shift).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import stats

from canaryd.core.judge import MetricConfig
from canaryd.core.judgestats import BRENT_TOLERANCE, wilcoxon_z

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


def arrays(name: str) -> tuple[Array, Array]:
    """Dataset ``name`` as float64 arrays: (experiment, control)."""
    experiment, control = DATASETS[name]
    return np.asarray(experiment, dtype=np.float64), np.asarray(control, dtype=np.float64)


BASE = MetricConfig("m", confidence=0.95)


# --- strategies for the property tests ---------------------------------------------------

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False, width=64)
