"""A state path in a directory that does not exist is a config error, unless it is the default.

A typo in ``state:`` must not silently start an empty history (every rollout
forgotten) in a new directory (docs/reliability.md, "State path").
"""

from __future__ import annotations

from pathlib import Path

import pytest
from loader_helpers import PRE, load, problems

from canaryd.cli import main

DEFAULT_STATE = "sqlite:///var/lib/canaryd/state.db"
"""As documented in README.md and the systemd unit."""


def test_missing_directory_is_refused_and_not_created(tmp_path: Path) -> None:
    """``state`` in a missing directory names that directory; nothing is created."""
    missing = tmp_path / "nonexistent" / "dir"
    got = problems(tmp_path, PRE + f"state: sqlite://{missing}/state.db\n")
    assert len(got) == 1
    # (the helper strips the tmp directory from messages)
    assert got[0].startswith("c.yaml:3:1: state: directory nonexistent/dir does not exist")
    assert not missing.parent.exists()


def test_missing_directory_from_the_environment_is_refused(tmp_path: Path) -> None:
    """``CANARYD_STATE`` pointing into a missing directory is refused the same way."""
    got = problems(tmp_path, PRE, environ={"CANARYD_STATE": "sqlite:///nonexistent/dir/s.db"})
    assert any("directory /nonexistent/dir does not exist" in p for p in got), got


def test_existing_directory_and_the_default_are_accepted(tmp_path: Path) -> None:
    """An existing directory is fine, and so is the documented default (created on start)."""
    loaded = load(tmp_path, PRE + f"state: sqlite://{tmp_path}/state.db\n")
    assert loaded.settings.state_path == tmp_path / "state.db"
    default = load(tmp_path, PRE + f"state: {DEFAULT_STATE}\n")
    assert default.settings.state == DEFAULT_STATE


def test_check_reports_the_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``canaryd check`` exits 1 naming the missing directory, without a traceback."""
    config = tmp_path / "c.yaml"
    config.write_text(PRE + "state: sqlite:///nonexistent/dir/state.db\n")
    assert main(["check", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert "directory /nonexistent/dir does not exist" in err and "Traceback" not in err
