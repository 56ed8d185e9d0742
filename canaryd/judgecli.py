"""``canaryd judge FILE.json``: the statistical judge offline, as a CI gate.

Reads one JSON document (a file, or ``-`` for standard input)::

    {"metrics": [{"name": "latency", "control": [...], "experiment": [...],
                  "direction": "increase", "groups": ["latency"], ...}],
     "groupWeights": {"latency": 60},
     "thresholds": {"pass": 95, "marginal": 75}}

writes the judgement as JSON on standard output, and exits 0 for Pass, 1 for
Fail, 2 for Marginal and 3 for bad input, which is reported as one line on
standard error (``canaryd judge: SOURCE: key.path: message``), never a traceback.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Annotated, Any, TextIO

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator
from pydantic_core import ErrorDetails

from canaryd.judge import (
    Direction,
    EffectSize,
    MetricConfig,
    MetricPair,
    NanStrategy,
    Outliers,
    OutlierStrategy,
    judge,
)
from canaryd.scoring import ScoreClassification, Thresholds

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_MARGINAL = 2
EXIT_BAD_INPUT = 3

_EXIT_CODES = {
    ScoreClassification.PASS: EXIT_PASS,
    ScoreClassification.FAIL: EXIT_FAIL,
    ScoreClassification.MARGINAL: EXIT_MARGINAL,
}

Value = Annotated[float, Strict()] | None
"""A series value: a JSON number, or ``null`` / ``NaN`` for a missing one."""
Threshold = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class _Model(BaseModel):
    """Unknown keys are errors; numbers are JSON numbers, not strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OutliersSettings(_Model):
    """``outliers``: whether to drop values outside the IQR fences."""

    strategy: OutlierStrategy = OutlierStrategy.KEEP
    factor: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 3.0


class MetricSettings(_Model):
    """How one metric is judged; the keys of a ``metrics`` entry besides name and series.

    Reusable for compare metrics in the daemon's configuration.
    """

    direction: Direction = Direction.EITHER
    nanStrategy: NanStrategy = NanStrategy.REMOVE
    outliers: OutliersSettings = OutliersSettings()
    effectSize: EffectSize = EffectSize.MEAN_RATIO
    allowedIncrease: Threshold | None = None
    allowedDecrease: Threshold | None = None
    criticalIncrease: Threshold | None = None
    criticalDecrease: Threshold | None = None
    critical: bool = False
    mustHaveData: bool = False
    tolerance: Threshold = 0.25
    confidence: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.98
    groups: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] = ["default"]

    def to_config(self, name: str) -> MetricConfig:
        """The judge's config for metric ``name``."""
        return MetricConfig(
            name=name,
            direction=self.direction,
            nan_strategy=self.nanStrategy,
            outliers=Outliers(self.outliers.strategy, self.outliers.factor),
            effect_size=self.effectSize,
            allowed_increase=self.allowedIncrease,
            allowed_decrease=self.allowedDecrease,
            critical_increase=self.criticalIncrease,
            critical_decrease=self.criticalDecrease,
            critical=self.critical,
            must_have_data=self.mustHaveData,
            tolerance=self.tolerance,
            confidence=self.confidence,
            groups=tuple(dict.fromkeys(self.groups)),
        )


class MetricInput(MetricSettings):
    """One ``metrics`` entry: name, both series, and the settings."""

    name: Annotated[str, Field(min_length=1)]
    control: list[Value]
    experiment: list[Value]

    def to_pair(self) -> MetricPair:
        """The judge's input for this metric (``null`` becomes NaN)."""
        return MetricPair(
            config=self.to_config(self.name),
            control=[math.nan if v is None else v for v in self.control],
            experiment=[math.nan if v is None else v for v in self.experiment],
        )


class ThresholdsInput(_Model):
    """``thresholds``: the scores at or above which the canary passes or is marginal."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    passing: Annotated[float, Field(alias="pass", ge=0.0, le=100.0)] = 95.0
    marginal: Annotated[float, Field(ge=0.0, le=100.0)] = 75.0

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdsInput:
        if self.marginal > self.passing:
            raise ValueError(
                f"marginal ({self.marginal:g}) must not be above pass ({self.passing:g})"
            )
        return self


class JudgeInput(_Model):
    """The whole ``canaryd judge`` input document."""

    metrics: Annotated[list[MetricInput], Field(min_length=1)]
    groupWeights: dict[str, Annotated[float, Field(ge=0.0, le=100.0)]] = {}
    thresholds: ThresholdsInput = ThresholdsInput()

    @model_validator(mode="after")
    def _consistent(self) -> JudgeInput:
        names = [m.name for m in self.metrics]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"metric names must be unique, repeated: {', '.join(duplicates)}")
        groups = {g for m in self.metrics for g in m.groups}
        weighted = sum(w for g, w in self.groupWeights.items() if g in groups)
        if weighted > 100.0:
            raise ValueError(f"groupWeights add up to {weighted:g}, more than 100")
        if groups <= self.groupWeights.keys() and not math.isclose(weighted, 100.0):
            raise ValueError(f"groupWeights weigh every group but add up to {weighted:g}, not 100")
        return self


class BadInputError(Exception):
    """The input cannot be judged; the message is the one line shown to the user."""


def _location(loc: Sequence[int | str]) -> str:
    """``("metrics", 0, "tolerance")`` -> ``metrics[0].tolerance``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: ErrorDetails) -> str:
    """One validation error as ``key.path: message``."""
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "too_short" and error.get("ctx", {}).get("min_length") == 1:
        message = "must not be empty"
    else:
        message = error["msg"].removeprefix("Value error, ")
    where = _location(error["loc"])
    return f"{where}: {message}" if where else message


def parse_input(text: str, source: str) -> JudgeInput:
    """Parse and validate a judge input document.

    Raises:
        BadInputError: the text is not JSON, or not a valid judge input.
    """
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(document, dict):
        raise BadInputError(f"{source}: the document must be a JSON object with a 'metrics' list")
    try:
        return JudgeInput.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors(include_url=False))
        raise BadInputError(f"{source}: {problems}") from exc


def _read(path: str) -> tuple[str, str]:
    """The document's text and its name for messages.

    Raises:
        BadInputError: the file cannot be read or is not UTF-8.
    """
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read(), path
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def judge_document(request: JudgeInput) -> tuple[dict[str, Any], ScoreClassification]:
    """Judge a validated input: the output document and the verdict."""
    thresholds = Thresholds(request.thresholds.passing, request.thresholds.marginal)
    judgement = judge([m.to_pair() for m in request.metrics], request.groupWeights, thresholds)
    return judgement.to_json(), judgement.score.classification


def judge_main(path: str, stdout: TextIO, stderr: TextIO) -> int:
    """Run ``canaryd judge PATH`` (``-`` reads standard input).

    Args:
        path: the input file, or ``-``.
        stdout: where the JSON judgement goes.
        stderr: where the one-line error goes on bad input.

    Returns:
        0 Pass, 1 Fail, 2 Marginal, 3 bad input.
    """
    try:
        text, source = _read(path)
        output, verdict = judge_document(parse_input(text, source))
    except BadInputError as exc:
        print(f"canaryd judge: {exc}", file=stderr)
        return EXIT_BAD_INPUT
    stdout.write(json.dumps(output, indent=2, allow_nan=False) + "\n")
    return _EXIT_CODES[verdict]
