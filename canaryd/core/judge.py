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
only numerical library, and only this module and :mod:`canaryd.core.judgestats` (the
statistics) import it: the data types live in :mod:`canaryd.core.judgemodel`
(re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

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
from canaryd.core.judgestats import (
    LARGEST_VALUE,
    FloatArray,
    TiedObservationsError,
    clean_series,
    effect_size,
    mean_ratio,
    shift_interval,
)
from canaryd.core.scoring import Classification, Thresholds, score

__all__ = [
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
    "classify_metric",
    "judge",
]


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
