"""Differential test: canaryd's judge against a reference model of Kayenta's.

Thousands of seeded random metrics (latencies in seconds, 0/1 error flags, counts,
zeros against values, constants, single points, missing values, outliers) and
scored documents are judged by :mod:`canaryd.core.judge` and by ``kayenta_reference``;
the verdicts must be the same. The generators leave out what canaryd does
differently on purpose (``docs/judge.md``, "Agreement with Kayenta"): infinities,
``-0.0`` and a tolerance of 1 or more on two constant series; a forced failure
under thresholds that would pass a score of 0 is checked to be the documented Fail.
"""

from __future__ import annotations

import math
import random
from typing import Any

import kayenta_reference as kayenta
import pytest

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
from canaryd.core.judgestats import clean_series
from canaryd.core.scoring import ScoreClassification, Thresholds

METRICS = 3000
DOCUMENTS = 400


def _side(rng: random.Random, kind: str, size: int, level: float) -> list[float]:
    """One random series of ``kind`` around ``level``."""
    if kind == "latency-seconds":
        return [rng.lognormvariate(math.log(level), 0.3) for _ in range(size)]
    if kind == "error-flags":
        return [1.0 if rng.random() < level else 0.0 for _ in range(size)]
    if kind == "counts":
        return [float(sum(1 for _ in range(12) if rng.random() < level)) for _ in range(size)]
    if kind == "rounded":
        return [round(rng.gauss(level, 1.0), 1) for _ in range(size)]
    if kind == "constant":
        return [level] * size
    return [rng.gauss(level, 1.0) for _ in range(size)]


def _levels(rng: random.Random, kind: str) -> tuple[float, float]:
    """Primary and canary levels for ``kind``: often equal, sometimes shifted."""
    base = {
        "latency-seconds": rng.choice([0.002, 0.05, 0.3]),
        "error-flags": rng.choice([0.0, 0.05, 0.2, 0.5]),
        "counts": rng.choice([0.0, 0.1, 0.4]),
        "constant": rng.choice([0.0, 1.0, 3.5, 120.0]),
    }.get(kind, rng.choice([0.0, 5.0, 100.0]))
    factor = rng.choice([1.0, 1.0, 1.1, 1.5, 3.0, 0.5])
    shifted = min(base * factor, 1.0) if kind == "error-flags" else base * factor
    if kind == "constant" and rng.random() < 0.3:
        shifted = rng.choice([0.0, 1.0, 2.0])
    return (base, shifted) if rng.random() < 0.5 else (shifted, base)


def _with_gaps(rng: random.Random, values: list[float]) -> list[float]:
    """Some values missing (NaN), sometimes."""
    if rng.random() < 0.8:
        return values
    return [math.nan if rng.random() < 0.2 else v for v in values]


def random_metric(rng: random.Random) -> tuple[list[float], list[float], kayenta.Settings]:
    """A random metric: primary series, canary series and settings."""
    kind = rng.choice(["normal", "latency-seconds", "error-flags", "counts", "rounded", "constant"])
    sizes = [rng.choice([0, 1, 1, 2, 3, 5, 8, 12, 17, 30, 45]) for _ in range(2)]
    primary_level, canary_level = _levels(rng, kind)
    control = _with_gaps(rng, _side(rng, kind, sizes[0], primary_level))
    experiment = _with_gaps(rng, _side(rng, kind, sizes[1], canary_level))
    measure = rng.choice(["meanRatio", "meanRatio", "cles"])
    neutral = 0.5 if measure == "cles" else 1.0

    def pair() -> tuple[float, float] | None:
        if rng.random() < 0.5:
            return None
        return (neutral * rng.uniform(0.5, 1.0), neutral * rng.uniform(1.0, 1.6))

    settings = kayenta.Settings(
        direction=rng.choice(["either", "increase", "decrease"]),
        nan_strategy=rng.choice(["remove", "remove", "replace"]),
        outliers=rng.random() < 0.25,
        outlier_factor=rng.choice([1.5, 3.0]),
        measure=measure,
        allowed=pair(),
        critical_effect=pair(),
        critical=rng.random() < 0.3,
        must_have_data=rng.random() < 0.2,
        tolerance=rng.choice([0.1, 0.25, 0.5]),
        confidence=rng.choice([0.9, 0.95, 0.98, 0.99]),
        groups=tuple(rng.sample(["a", "b", "c"], rng.choice([1, 1, 2]))),
    )
    return control, experiment, settings


def to_config(name: str, s: kayenta.Settings) -> MetricConfig:
    """The canaryd config of the reference settings."""
    allowed = s.allowed or (None, None)
    critical = s.critical_effect or (None, None)
    return MetricConfig(
        name=name,
        direction=Direction(s.direction),
        nan_strategy=NanStrategy(s.nan_strategy),
        outliers=Outliers(
            OutlierStrategy.REMOVE if s.outliers else OutlierStrategy.KEEP, s.outlier_factor
        ),
        effect_size=EffectSize(s.measure),
        allowed_decrease=allowed[0],
        allowed_increase=allowed[1],
        critical_decrease=critical[0],
        critical_increase=critical[1],
        critical=s.critical,
        must_have_data=s.must_have_data,
        tolerance=s.tolerance,
        confidence=s.confidence,
        groups=s.groups,
    )


def by_chance_in_kayenta(
    control: list[float], experiment: list[float], s: kayenta.Settings
) -> bool:
    """One non-zero value a side, more than a factor of 2 apart: Kayenta's noise decides.

    Kayenta records Error there when its arithmetic happens to land back on a value,
    and otherwise the verdict canaryd always gives (``docs/judge.md``).
    """
    config = to_config("m", s)
    c = clean_series(control, config.nan_strategy, config.outliers)
    e = clean_series(experiment, config.nan_strategy, config.outliers)
    if not (c.size == e.size == 1 and c[0] * e[0] != 0.0):
        return False
    low, high = sorted((abs(float(c[0])), abs(float(e[0]))))
    return c[0] * e[0] < 0 or high > 2 * low


@pytest.mark.slow
def test_metric_verdicts_agree_with_kayenta() -> None:
    """Every random metric gets Kayenta's classification and critical flag from canaryd."""
    rng = random.Random(1313)
    disagreements: list[dict[str, Any]] = []
    kinds: dict[str, int] = {}
    by_chance = 0
    for i in range(METRICS):
        control, experiment, settings = random_metric(rng)
        expected = kayenta.classify(control, experiment, settings, seed=i)
        result = classify_metric(to_config("m", settings), control, experiment)
        kinds[expected[0]] = kinds.get(expected[0], 0) + 1
        found = (str(result.classification), result.critical)
        if expected[0] == "Error" and by_chance_in_kayenta(control, experiment, settings):
            by_chance += 1
            continue
        if found != expected:
            disagreements.append(
                {
                    "control": control,
                    "experiment": experiment,
                    "settings": settings,
                    "kayenta": expected,
                    "canaryd": (str(result.classification), result.critical, result.reason),
                }
            )
    assert disagreements == []
    assert by_chance < METRICS // 50  # the one class where Kayenta is random stays rare
    # The sample reaches every verdict, so agreement is not agreement on Pass alone.
    assert {"Pass", "High", "Low", "Nodata", "NodataFailMetric", "Error"} <= kinds.keys()


def random_document(
    rng: random.Random,
) -> tuple[list[tuple[list[float], list[float], kayenta.Settings]], dict[str, float], Thresholds]:
    """A random document: 1-5 metrics, group weights (some for absent groups), thresholds."""
    metrics = [random_metric(rng) for _ in range(rng.randint(1, 5))]
    weights: dict[str, float] = {}
    for group in rng.sample(["a", "b", "c", "absent"], rng.randint(0, 3)):
        weights[group] = float(rng.choice([10, 20, 25, 30, 7.25]))
    passing = rng.choice([95.0, 90.0, 75.0, 50.0])
    marginal = rng.choice([75.0, 50.0, 25.0, 0.0])
    return metrics, weights, Thresholds(passing, min(marginal, passing))


@pytest.mark.slow
def test_scored_documents_agree_with_kayenta() -> None:
    """Random documents get Kayenta's summary score and verdict, but for documented Fails."""
    rng = random.Random(1919)
    documented = 0
    verdicts: set[str] = set()
    for d in range(DOCUMENTS):
        metrics, weights, thresholds = random_document(rng)
        if any(by_chance_in_kayenta(c, e, s) for c, e, s in metrics):
            continue  # Kayenta's verdict on that metric is random
        pairs = [MetricPair(to_config(f"m{i}", s), c, e) for i, (c, e, s) in enumerate(metrics)]
        labels = [
            (*kayenta.classify(c, e, s, seed=d * 10 + i), s.groups)
            for i, (c, e, s) in enumerate(metrics)
        ]
        expected = kayenta.score(labels, weights, thresholds.passing, thresholds.marginal)
        judgement = judge(pairs, weights, thresholds)
        found = (judgement.score.score, str(judgement.score.classification))
        verdicts.add(found[1])
        if found != expected:
            # The one deliberate difference: a forced failure is Fail whatever the thresholds.
            reason = judgement.score.reason
            forced = reason.startswith("critical metric") or "have no data" in reason
            assert forced and found == (0.0, "Fail"), (metrics, weights, expected, found)
            assert expected[0] == 0.0 and expected[1] != "Fail"
            documented += 1
    assert verdicts == {"Pass", "Marginal", "Fail"}
    assert documented > 0  # the documented difference was exercised, and only it differed
    assert ScoreClassification.FAIL.value in verdicts
