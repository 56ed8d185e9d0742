"""Benchmark: time to judge two series of 1,000 points (issue 6: well under 50 ms).

Runs the full judgement (cleaning, Mann-Whitney interval and estimate, effect size,
scoring) on latency-like data and, on the same data in the same run,
``scipy.stats.mannwhitneyu`` alone, and reports both per call and their ratio::

    .venv/bin/python benchmarks/judge_bench.py [--points 1000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from canaryd.core.judge import MetricConfig, MetricPair, judge


def _best_of(func: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``func`` (after one warm-up call)."""
    func()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(points: int, repeat: int, seed: int = 6) -> dict[str, float]:
    """Time one judgement and one scipy Mann-Whitney test on the same two series.

    Returns:
        ``judge_ms``, ``scipy_ms`` (median per call) and ``ratio`` (judge / scipy).
    """
    rng = np.random.default_rng(seed)
    control = rng.lognormal(np.log(120.0), 0.25, points)
    experiment = rng.lognormal(np.log(126.0), 0.25, points)
    pair = MetricPair(MetricConfig("latency"), control.tolist(), experiment.tolist())
    judge_s = _best_of(lambda: judge([pair]), repeat)
    scipy_s = _best_of(lambda: stats.mannwhitneyu(experiment, control), repeat)
    return {"judge_ms": judge_s * 1e3, "scipy_ms": scipy_s * 1e3, "ratio": judge_s / scipy_s}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the timings; exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--points", type=int, default=1000, help="points per series")
    parser.add_argument("--repeat", type=int, default=50, help="timed calls of each")
    args = parser.parse_args(argv)
    result = run(args.points, args.repeat)
    print(
        f"judge two series of {args.points} points: {result['judge_ms']:.2f} ms per judgement; "
        f"scipy.stats.mannwhitneyu alone: {result['scipy_ms']:.3f} ms; "
        f"ratio {result['ratio']:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
