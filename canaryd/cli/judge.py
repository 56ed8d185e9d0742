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
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from canaryd.core.judge import judge
from canaryd.core.judgeinput import (
    JudgeInput,
    MetricInput,
    MetricSettings,
    OutliersSettings,
    ThresholdsInput,
)
from canaryd.core.scoring import ScoreClassification, Thresholds
from canaryd.errors import BadInputError as BadInputError

__all__ = [
    "BadInputError",
    "JudgeInput",
    "MetricInput",
    "MetricSettings",
    "OutliersSettings",
    "ThresholdsInput",
    "judge_document",
    "judge_main",
    "parse_input",
]

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_MARGINAL = 2
EXIT_BAD_INPUT = 3

_EXIT_CODES = {
    ScoreClassification.PASS: EXIT_PASS,
    ScoreClassification.FAIL: EXIT_FAIL,
    ScoreClassification.MARGINAL: EXIT_MARGINAL,
}


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
