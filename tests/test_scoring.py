"""Tests of the weighted-sum scorer: group scores, weights, forced failures, thresholds.

Expected scores are computed by hand in the comments from Kayenta's published rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from canaryd.core.scoring import (
    Classification,
    GroupScore,
    ScoreClassification,
    Thresholds,
    classify_score,
    group_scores,
    group_weights,
    round_half_up,
    score,
)

P, H, L = Classification.PASS, Classification.HIGH, Classification.LOW
N, F = Classification.NODATA, Classification.NODATA_FAIL_METRIC
E = Classification.ERROR


@dataclass(frozen=True)
class Result:
    """A stand-in metric result: the scorer only needs these fields."""

    name: str
    classification: Classification
    groups: tuple[str, ...] = ("g",)
    critical: bool = False
    reason: str = "because"


def results(*labels: Classification, group: str = "g") -> list[Result]:
    """One result per label, all in ``group``."""
    return [Result(f"{group}{i}", label, (group,)) for i, label in enumerate(labels)]


def test_group_score_counts_pass_over_pass_high_low_and_nodata_fail() -> None:
    """A group scores 100 x pass / (pass + high + low + nodata-fail); Nodata does not count."""
    # 2 Pass, 1 High, 1 NodataFailMetric count; the Nodata is left out: 100 * 2 / 4 = 50.
    (group,) = group_scores(results(P, P, H, F, N))
    assert group == GroupScore("g", 50.0, 100.0)


def test_group_of_only_nodata_has_no_score_and_counts_full_in_summary() -> None:
    """A group without counted metrics has no score and adds its full weight to the summary."""
    # Groups a (Pass, Low -> 50) and b (Nodata only): 50 * 0.5 + 100 * 0.5 = 75.
    data = [*results(P, L, group="a"), *results(N, group="b"), *results(P, P, group="c")]
    verdict = score(data, {"a": 50, "b": 50, "c": 0})
    assert [g.score for g in verdict.groups] == [50.0, None, 100.0]
    assert verdict.score == 75.0


def test_unweighted_groups_share_what_is_left_of_100() -> None:
    """Groups without a weight share 100 minus every configured weight, used or not (Kayenta)."""
    # Kayenta subtracts all configured weights (60 + 30), so b and c share 10.
    assert group_weights(["a", "b", "c"], {"a": 60, "unused": 30}) == {
        "a": 60,
        "b": 5.0,
        "c": 5.0,
    }


def test_weight_of_an_absent_group_lowers_the_summary() -> None:
    """A weight configured for a group without metrics is not handed to the other groups."""
    # a: 100 x 0.5; b (unweighted) gets (100 - 50 - 50) / 1 = 0, so all Pass scores 50.
    data = [*results(P, group="a"), *results(P, group="b")]
    verdict = score(data, {"a": 50, "absent": 50})
    assert (verdict.score, verdict.classification) == (50.0, ScoreClassification.FAIL)


def test_weights_not_reaching_100_are_not_scaled() -> None:
    """When every group is weighted and the weights add up to less than 100, so does the score."""
    # 100 x 0.3 + 100 x 0.3 = 60: Kayenta does not normalise the weights.
    data = [*results(P, group="a"), *results(P, group="b")]
    assert score(data, {"a": 30, "b": 30}).score == 60.0


def test_group_score_and_weight_arithmetic_is_kayentas() -> None:
    """Group score is (pass / counted) x 100 and the summary adds score x (weight / 100)."""
    # a: 1 of 3 pass -> (1/3)*100 = 33.33333333333333 (100*1/3 would be ...336).
    (group,) = group_scores(results(P, H, H))
    assert group.score == (1 / 3) * 100
    # a: 1 of 2 pass -> 50 with weight 7.25: 50 * (7.25/100) = 3.6249999999999996 -> 3.62,
    # where 50 * 7.25 / 100 = 3.625 would round to 3.63; b: 0 with the rest.
    data = [*results(P, H, group="a"), *results(H, group="b")]
    assert score(data, {"a": 7.25, "b": 92.75}).score == 3.62


def test_error_results_do_not_count() -> None:
    """Error metrics (every value tied) count neither in a group nor as missing data."""
    # a: Pass + Error -> 100; b: only Error -> no data, 100; 2 Error of 3 is not Nodata.
    data = [*results(P, E, group="a"), *results(E, group="b")]
    verdict = score(data)
    assert [g.score for g in verdict.groups] == [100.0, None]
    assert (verdict.score, verdict.classification) == (100.0, ScoreClassification.PASS)


def test_summary_is_weighted_sum_of_group_scores() -> None:
    """The summary is the sum of each group's score times its weight / 100."""
    # a: 1/2 pass -> 50, weight 60; b: 1/1 -> 100, weight 20; c: 0/1 -> 0, weight 20.
    # 50 * 0.6 + 100 * 0.2 + 0 * 0.2 = 50.
    data = [*results(P, H, group="a"), *results(P, group="b"), *results(L, group="c")]
    assert score(data, {"a": 60}).score == 50.0


def test_metric_in_two_groups_counts_in_both() -> None:
    """A metric listed in several groups counts in each of them."""
    data = [Result("x", H, ("a", "b")), Result("y", P, ("a",))]
    assert [(g.name, g.score) for g in group_scores(data)] == [("a", 50.0), ("b", 0.0)]


def test_summary_is_rounded_half_up_to_two_decimals() -> None:
    """The summary score is rounded to two decimals, halves away from zero like Kayenta."""
    # One group of 3 with 2 Pass: 66.666... -> 66.67.
    assert score(results(P, P, H)).score == 66.67


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.125, 0.13), (2.675, 2.68), (66.665, 66.67), (99.994, 99.99), (12.0, 12.0)],
    ids=["0.125", "2.675", "66.665", "99.994", "integer"],
)
def test_round_half_up(value: float, expected: float) -> None:
    """Rounding works on the shortest decimal form, so 2.675 becomes 2.68 (not 2.67)."""
    assert round_half_up(value) == expected


def test_failed_critical_metric_forces_zero() -> None:
    """A failed critical metric makes the score 0 and the canary Fail, naming the metric."""
    data = [*results(P, P, P), Result("latency", H, critical=True, reason="too slow")]
    verdict = score(data)
    assert (verdict.score, verdict.classification) == (0.0, ScoreClassification.FAIL)
    assert verdict.reason == "critical metric latency failed: too slow"


def test_half_of_metrics_without_data_forces_zero() -> None:
    """Half or more of the metrics classified Nodata make the score 0."""
    verdict = score(results(P, N))
    assert (verdict.score, verdict.classification) == (0.0, ScoreClassification.FAIL)
    assert verdict.reason == "1 of 2 metrics have no data (50% or more fails the canary)"


def test_less_than_half_without_data_is_scored() -> None:
    """Below half of the metrics without data the score is computed normally."""
    # 1 of 3 Nodata (33%): the group counts 2 Pass of 2 -> 100.
    assert score(results(P, P, N)).score == 100.0


def test_nodata_fail_metric_does_not_count_as_missing_data() -> None:
    """NodataFailMetric fails its own group but is not counted toward the 50% rule."""
    # 1 Pass, 1 NodataFailMetric: 100 * 1 / 2 = 50, no forced zero.
    assert score(results(P, F)).score == 50.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (100.0, ScoreClassification.PASS),
        (95.0, ScoreClassification.PASS),
        (94.99, ScoreClassification.MARGINAL),
        (75.0, ScoreClassification.MARGINAL),
        (74.99, ScoreClassification.FAIL),
        (0.0, ScoreClassification.FAIL),
    ],
    ids=["100", "at-pass", "below-pass", "at-marginal", "below-marginal", "0"],
)
def test_thresholds_classify_score(value: float, expected: ScoreClassification) -> None:
    """Scores at or above pass are Pass, at or above marginal Marginal, else Fail."""
    verdict, reason = classify_score(value, Thresholds(95.0, 75.0))
    assert verdict == expected
    assert reason.startswith(f"score {value:g} is")


def test_forced_failure_stays_fail_with_zero_thresholds() -> None:
    """A critical failure is Fail even when the thresholds would call 0 a pass (deliberate)."""
    data = [Result("x", L, critical=True)]
    assert score(data, thresholds=Thresholds(0.0, 0.0)).classification == ScoreClassification.FAIL


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"a": -1.0}, "must not be negative"),
        ({"a": 70.0, "b": 40.0}, "add up to 110, more than 100"),
        ({"a": 70.0, "absent": 40.0}, "add up to 110, more than 100"),
    ],
    ids=["negative", "over-100", "over-100-with-absent-group"],
)
def test_group_weights_rejects_bad_weights(weights: dict[str, float], message: str) -> None:
    """Negative weights, or configured weights (present groups or not) above 100, are refused."""
    with pytest.raises(ValueError, match=message):
        group_weights(["a", "b"], weights)


@pytest.mark.parametrize(
    ("passing", "marginal"), [(70.0, 80.0), (101.0, 50.0), (50.0, -1.0)], ids=["order", "101", "-1"]
)
def test_thresholds_must_be_ordered_within_0_100(passing: float, marginal: float) -> None:
    """Thresholds outside 0-100, or marginal above pass, are refused."""
    with pytest.raises(ValueError, match="0 <= marginal <= pass <= 100"):
        Thresholds(passing, marginal)


def test_no_results_cannot_be_scored() -> None:
    """Scoring an empty list of results is an error, not a score."""
    with pytest.raises(ValueError, match="no metric results"):
        score([])
