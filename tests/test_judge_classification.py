"""The judge's classification: each rule's verdict, its reasons and the metric settings.

Expected values come from outside the implementation: the issue's reference value,
hand computation (shown in comments), published examples, and scipy as an oracle
(``scipy.stats.mannwhitneyu`` p-values inverted by brute force over every shift).
"""

from __future__ import annotations

import math

import pytest
from judge_oracles import BASE, arrays

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
from canaryd.core.judgestats import shift_interval
from canaryd.core.scoring import Classification, ScoreClassification

# --- classification -------------------------------------------------------------------

LOW_PRIMARY = [1.0, 2.0, 3.0, 4.0]
HIGH_CANARY = [10.0, 20.0, 30.0, 40.0]


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
    x, y = arrays("normal-shifted")
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
