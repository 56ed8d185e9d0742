"""The scale benchmark, small: the harness runs end to end and its numbers are sane."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small run: 50 canaries, interval 0.5 s, 3 s on schedule, one short saturation round."""
    out = tmp_path_factory.mktemp("bench") / "scale.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "scale.py"),
        *("--canaries", "50", "--interval", "0.5", "--duration", "3"),
        *("--rounds", "1", "--saturation", "1.5", "--fail-share", "0.1"),
        *("--json", str(out)),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ratio" in done.stdout
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


@pytest.mark.slow
def test_checks_run_close_to_schedule(result: dict[str, Any]) -> None:
    """Healthy canaries are checked without errors, at no more than the scheduled rate."""
    r = result["result"]
    assert r["check_errors"] == 0
    assert 0 < r["checks_per_s"] <= r["scheduled_per_s"] * 1.2
    assert r["ticks"] > 0
    assert 0 <= r["late_p50_ms"] <= r["late_p99_ms"] <= r["late_max_ms"]
    assert 0 <= r["on_time_share"] <= 1


@pytest.mark.slow
def test_failing_canaries_produce_measured_rollbacks(result: dict[str, Any]) -> None:
    """Rollbacks reach the receiver and their decision latency is positive and bounded."""
    r = result["result"]
    assert r["decisions"] >= 5
    assert 0 < r["decision_p50_ms"] <= r["decision_p99_ms"] < 5000


@pytest.mark.slow
def test_ceiling_and_resources_are_measured(result: dict[str, Any]) -> None:
    """The bare client and saturated canaryd both answer queries; CPU and RSS are finite."""
    r = result["result"]
    assert r["ceiling_qps"] > 0 and r["canaryd_qps"] > 0
    assert 0 < r["ceiling_ratio"] < 5
    assert r["cpu_s_per_1000_checks"] > 0
    assert math.isfinite(r["rss_per_canary_kib"])
    assert r["prometheus_queries"] >= r["checks"] * 2
    assert result["machine"]["nproc"] >= 1
