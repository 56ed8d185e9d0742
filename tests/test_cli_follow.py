"""`canaryd rollout --wait` follows a rollout through daemon restarts and replacements."""

from __future__ import annotations

import re
from typing import Any

import pytest

from canaryd.cli.remote import follow
from canaryd.errors import ClientError

pytestmark = pytest.mark.anyio


class ScriptedClient:
    """Answers GETs from a script: a dict is a canary state, an exception is raised."""

    def __init__(self, script: list[dict[str, Any] | Exception]) -> None:
        """Keep the script; the last entry repeats."""
        self.script = script

    async def get(self, key: str) -> dict[str, Any]:
        """The next scripted answer."""
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item


def state(phase: str, rollout: str = "r1", **kw: Any) -> dict[str, Any]:
    """A canary state as the API returns it."""
    base = {
        "namespace": "prod",
        "name": "web",
        "phase": phase,
        "revision": "v2",
        "rolloutId": rollout,
        "canaryWeight": 20,
        "failedChecks": 0,
        "threshold": 5,
        "iterations": 0,
        "iteration": 0,
        "gate": None,
        "reason": None,
    }
    base.update(kw)
    return base


DOWN = ClientError("cannot reach canaryd at http://127.0.0.1:9879/api/v1/canaries: refused")


@pytest.mark.slow
async def test_wait_rides_out_a_daemon_restart(capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable daemon for a moment (a restart) does not fail the pipeline."""
    client = ScriptedClient([state("Progressing"), DOWN, DOWN, state("Succeeded")])
    assert await follow(client, "prod/web", 30, "r1") == 0
    err = capsys.readouterr().err
    assert err.count("lost contact with canaryd") == 1


@pytest.mark.slow
async def test_wait_fails_when_the_rollout_is_replaced(capsys: pytest.CaptureFixture[str]) -> None:
    """A different rollout taking over the canary ends the wait with exit 1, saying so."""
    client = ScriptedClient([state("Progressing"), state("Progressing", rollout="r2")])
    assert await follow(client, "prod/web", 30, "r1") == 1
    assert "was replaced by rollout r2" in capsys.readouterr().out


async def test_wait_reports_an_error_answer_at_once() -> None:
    """An error answer (not an outage) is not retried."""
    client = ScriptedClient([ClientError("no canary prod/web (HTTP 404)")])
    with pytest.raises(ClientError, match="HTTP 404"):
        await follow(client, "prod/web", 30, "r1")


async def test_wait_lines_start_with_the_time(capsys: pytest.CaptureFixture[str]) -> None:
    """Every progress line and the final line start with HH:MM:SS."""
    client = ScriptedClient([state("Progressing"), state("Succeeded")])
    assert await follow(client, "prod/web", 30, "r1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(re.match(r"\d\d:\d\d:\d\d  prod/web", line) for line in lines)


PENDING: dict[str, Any] = {"routePending": True, "reason": "sr 90 < min 99", "failedChecks": 5}


@pytest.mark.slow
async def test_wait_says_rolled_back_only_once_the_router_applied_the_rollback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A rollback the router has not confirmed keeps the wait going, shown as not applied yet;
    "rolled back" and exit 1 come once it is applied."""
    applied = state("Failed", canaryWeight=0, reason="sr 90 < min 99", failedChecks=5)
    client = ScriptedClient([state("Failed", **PENDING), state("Failed", **PENDING), applied])
    assert await follow(client, "prod/web", 30, "r1") == 1
    lines = capsys.readouterr().out.splitlines()
    assert "rollback not applied yet" in lines[0] and "rolled back" not in lines[0]
    assert re.fullmatch(r"\d\d:\d\d:\d\d  prod/web: rolled back: sr 90 < min 99", lines[-1])
    assert sum("rolled back" in line for line in lines) == 1


@pytest.mark.slow
async def test_wait_times_out_with_its_own_code_while_the_rollback_is_not_applied(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A rollback still refused by the router when --timeout runs out exits 4, never claiming
    it was rolled back."""
    client = ScriptedClient([state("Failed", **PENDING)])
    assert await follow(client, "prod/web", 1.5, "r1") == 4
    out, err = capsys.readouterr()
    assert "rolled back" not in out
    assert "rollback decided (sr 90 < min 99) but not applied yet" in err
