"""Smoke test of benchmarks/judge_bench.py: it runs and reports (no timing assertion)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "judge_bench.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("judge_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark judges small series a few times and prints per-judgement time and ratio."""
    assert _load().main(["--points", "50", "--repeat", "2"]) == 0
    line = capsys.readouterr().out
    assert "ms per judgement" in line
    assert "ratio" in line
