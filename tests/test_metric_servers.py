"""The real-server helpers fail (CI) or skip (elsewhere) when their server is not installed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from graphite import start_graphite
from influx import start_influxdb
from victoria import start_victoria

STARTERS: list[Callable[[Path], Any]] = [start_graphite, start_influxdb, start_victoria]


@pytest.mark.parametrize("start", STARTERS, ids=["graphite", "influxdb", "victoria-metrics"])
@pytest.mark.parametrize(
    ("ci", "outcome"),
    [("true", pytest.fail.Exception), ("", pytest.skip.Exception)],
    ids=["ci-fails", "local-skips"],
)
def test_missing_server(
    start: Callable[[Path], Any],
    ci: str,
    outcome: type[BaseException],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the binary on PATH, CI=true fails the test and elsewhere it is skipped."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="apt-get install"):
        start(tmp_path)
