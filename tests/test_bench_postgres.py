"""The scale benchmark on PostgreSQL: ``--state postgresql-temp`` runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.integration
def test_scale_benchmark_runs_on_a_temporary_postgresql(tmp_path: Path) -> None:
    """A short run on a cluster started for it checks its canaries on schedule without errors."""
    out = tmp_path / "scale.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "scale.py"),
        *("--state", "postgresql-temp", "--canaries", "20", "--interval", "0.5"),
        *("--duration", "2", "--rounds", "1", "--saturation", "1", "--fail-share", "0.1"),
        *("--json", str(out)),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=110, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["options"]["state"] == "postgresql-temp"
    r = doc["result"]
    assert r["check_errors"] == 0
    assert 0 < r["checks_per_s"] <= r["scheduled_per_s"] * 1.2
    assert r["decisions"] >= 1
