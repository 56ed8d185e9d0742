"""Tests of ``canaryd judge FILE.json``: output document, exit codes, bad-input messages."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from canaryd.cli.judge import judge_main
from canaryd.config import JudgeSpec

REFERENCE_METRIC = {
    "name": "latency",
    "control": [1, 2, 3, 4],
    "experiment": [10, 20, 30, 40],
    "confidence": 0.95,
}
SAME_METRIC = {"name": "errors", "control": [1, 2, 3], "experiment": [3, 2, 1]}


def run(tmp_path: Path, document: Any) -> tuple[int, str, str]:
    """Write ``document`` (JSON, or text as is) to a file and run the judge on it."""
    path = tmp_path / "in.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    out, err = io.StringIO(), io.StringIO()
    code = judge_main(str(path), out, err)
    return code, out.getvalue(), err.getvalue()


def test_reference_metric_fails_with_full_output(tmp_path: Path) -> None:
    """The issue's reference input fails (exit 1) and prints the whole judgement as JSON."""
    code, out, err = run(tmp_path, {"metrics": [REFERENCE_METRIC]})
    assert (code, err) == (1, "")
    document = json.loads(out)
    reason = document["results"][0].pop("reason")
    assert document == {
        "score": 0.0,
        "classification": "Fail",
        "reason": "score 0 is below the marginal threshold 75",
        "groupScores": [{"name": "default", "score": 0.0, "weight": 100.0}],
        "results": [
            {
                "name": "latency",
                "classification": "High",
                "critical": False,
                "interval": [6.0, 39.0],
                "estimate": 22.5,
                "ratio": 10.0,
            }
        ],
    }
    assert reason.startswith("canary is higher than primary")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"metrics": [SAME_METRIC]}, 0),
        ({"metrics": [REFERENCE_METRIC]}, 1),
        (
            {
                "metrics": [
                    {**SAME_METRIC, "groups": ["errors"]},
                    {**REFERENCE_METRIC, "groups": ["latency"]},
                ],
                "groupWeights": {"errors": 80},
            },
            2,
        ),
        ({"metrics": [REFERENCE_METRIC], "thresholds": {"pass": 0, "marginal": 0}}, 0),
        ({"metrics": [{**REFERENCE_METRIC, "critical": True}]}, 1),
    ],
    ids=["pass", "fail", "marginal-80", "pass-with-zero-thresholds", "critical-fail"],
)
def test_exit_code_follows_classification(
    tmp_path: Path, document: dict[str, Any], expected: int
) -> None:
    """The exit code is 0 for Pass, 1 for Fail and 2 for Marginal."""
    code, out, _ = run(tmp_path, document)
    assert code == expected
    assert json.loads(out)["classification"] == {0: "Pass", 1: "Fail", 2: "Marginal"}[expected]


def test_reads_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """The path ``-`` reads the document from standard input."""
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"metrics": [SAME_METRIC]})))
    out, err = io.StringIO(), io.StringIO()
    assert judge_main("-", out, err) == 0
    assert json.loads(out.getvalue())["score"] == 100.0


def test_null_and_nan_values_are_missing_data(tmp_path: Path) -> None:
    """``null`` and ``NaN`` in a series are missing values, and the output has no NaN."""
    text = '{"metrics": [{"name": "m", "control": [null, NaN], "experiment": [1.0, null]}]}'
    code, out, _ = run(tmp_path, text)

    def no_constants(name: str) -> float:
        raise AssertionError(f"non-JSON constant {name} in output")

    document = json.loads(out, parse_constant=no_constants)
    assert document["results"][0]["classification"] == "Nodata"
    assert document["results"][0]["reason"] == "no data for the primary"
    assert (code, document["reason"]) == (
        1,
        "1 of 1 metrics have no data (50% or more fails the canary)",
    )


def test_all_settings_are_accepted(tmp_path: Path) -> None:
    """Every per-metric key of the issue is accepted and applied."""
    metric = {
        **REFERENCE_METRIC,
        "direction": "decrease",
        "nanStrategy": "replace",
        "outliers": {"strategy": "remove", "factor": 1.5},
        "effectSize": "cles",
        "allowedIncrease": 0.6,
        "allowedDecrease": 0.4,
        "criticalIncrease": 0.9,
        "criticalDecrease": 0.1,
        "critical": True,
        "mustHaveData": True,
        "tolerance": 0.1,
        "groups": ["speed"],
    }
    code, out, _ = run(tmp_path, {"metrics": [metric], "thresholds": {"pass": 90, "marginal": 50}})
    result = json.loads(out)["results"][0]
    assert (code, result["classification"]) == (0, "Pass")
    assert result["reason"].endswith("but only a decrease fails this metric")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('{"metrics": [}', "in.json:1:14: invalid JSON: Expecting value"),
        ("[1, 2]", "in.json: the document must be a JSON object with a 'metrics' list"),
        ({"metrics": []}, "in.json: metrics: must not be empty"),
        ({"metric": []}, "in.json: metrics: required key is missing; metric: unknown key"),
        (
            {"metrics": [{**REFERENCE_METRIC, "tolerence": 0.1}]},
            "in.json: metrics[0].tolerence: unknown key",
        ),
        (
            {"metrics": [{**REFERENCE_METRIC, "outliers": {"strategy": "remove", "k": 2}}]},
            "in.json: metrics[0].outliers.k: unknown key",
        ),
        (
            {"metrics": [{"name": "m", "control": [1]}]},
            "in.json: metrics[0].experiment: required key is missing",
        ),
        (
            {"metrics": [{**REFERENCE_METRIC, "control": [1, "2"]}]},
            "in.json: metrics[0].control[1]: Input should be a valid number",
        ),
        (
            {"metrics": [{**REFERENCE_METRIC, "confidence": 1}]},
            "in.json: metrics[0].confidence: Input should be less than 1",
        ),
        (
            {"metrics": [{**REFERENCE_METRIC, "direction": "up"}]},
            "in.json: metrics[0].direction: Input should be 'increase', 'decrease' or 'either'",
        ),
        (
            {"metrics": [{**REFERENCE_METRIC, "groups": []}]},
            "in.json: metrics[0].groups: must not be empty",
        ),
        (
            {"metrics": [REFERENCE_METRIC, REFERENCE_METRIC]},
            "in.json: metric names must be unique, repeated: latency",
        ),
        (
            {"metrics": [REFERENCE_METRIC], "groupWeights": {"default": 50}},
            "in.json: groupWeights weigh every group but add up to 50, not 100",
        ),
        (
            {
                "metrics": [REFERENCE_METRIC, {**SAME_METRIC, "groups": ["x"]}],
                "groupWeights": {"default": 90, "x": 20},
            },
            "in.json: groupWeights add up to 110, more than 100",
        ),
        (
            {"metrics": [REFERENCE_METRIC], "groupWeights": {"absent": 70, "other": 40}},
            "in.json: groupWeights add up to 110, more than 100",
        ),
        (
            {"metrics": [REFERENCE_METRIC], "thresholds": {"pass": 50, "marginal": 60}},
            "in.json: thresholds: marginal (60) must not be above pass (50)",
        ),
        (
            {"metrics": [REFERENCE_METRIC], "thresholds": {"pass": 120}},
            "in.json: thresholds.pass: Input should be less than or equal to 100",
        ),
    ],
    ids=[
        "invalid-json",
        "not-an-object",
        "no-metrics",
        "misspelt-top-key",
        "unknown-metric-key",
        "unknown-nested-key",
        "missing-series",
        "string-value",
        "confidence-1",
        "bad-direction",
        "no-groups",
        "duplicate-names",
        "weights-not-100",
        "weights-over-100",
        "weights-of-absent-groups-over-100",
        "thresholds-order",
        "threshold-over-100",
    ],
)
def test_bad_input_exits_3_with_one_line(tmp_path: Path, document: Any, message: str) -> None:
    """Bad input exits 3 with one clear line on stderr and nothing on stdout."""
    code, out, err = run(tmp_path, document)
    assert (code, out) == (3, "")
    assert err == f"canaryd judge: {tmp_path}/{message}\n"


def test_missing_file_exits_3(tmp_path: Path) -> None:
    """A file that cannot be read exits 3 naming the file and the reason."""
    out, err = io.StringIO(), io.StringIO()
    missing = tmp_path / "nope.json"
    assert judge_main(str(missing), out, err) == 3
    assert err.getvalue() == f"canaryd judge: cannot read {missing}: No such file or directory\n"


def test_binary_file_exits_3(tmp_path: Path) -> None:
    """A file that is not UTF-8 text exits 3 instead of raising."""
    path = tmp_path / "in.json"
    path.write_bytes(b"\xff\xfe\x00{")
    out, err = io.StringIO(), io.StringIO()
    assert judge_main(str(path), out, err) == 3
    assert err.getvalue() == f"canaryd judge: {path}: not UTF-8 text (invalid start byte)\n"


def test_infinite_values_count_as_missing(tmp_path: Path) -> None:
    """``Infinity`` in a series is treated as a missing value, not a number."""
    text = '{"metrics": [{"name": "m", "control": [1, 2, Infinity], "experiment": [2, 1]}]}'
    code, out, _ = run(tmp_path, text)
    assert code == 0
    assert json.loads(out)["results"][0]["reason"] == "canary and primary data are identical"
    assert not math.isnan(json.loads(out)["score"])


def test_daemon_judge_settings_refuse_weights_over_100() -> None:
    """The daemon's ``analysis.judge.groupWeights`` count every weight against 100, as Kayenta."""
    with pytest.raises(ValidationError, match="groupWeights add up to 110, more than 100"):
        JudgeSpec.model_validate({"groupWeights": {"latency": 70, "unused": 40}})
    assert JudgeSpec.model_validate({"groupWeights": {"latency": 70}}).groupWeights == {
        "latency": 70
    }
