"""``canaryd status`` and its views: the table, JSON, weights, metrics, gates, pending routes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import structlog
from cli_helpers import Cli, rollout_at_10
from cli_helpers import cli as cli
from daemons import api_url, running_daemon
from service_helpers import backends, canary, service_config
from support import eventually

from canaryd.cli.views import metric_line, render_detail, render_events, render_history
from canaryd.client import progress_line, render_table, weight_bar

pytestmark = pytest.mark.anyio


async def test_status_table(cli: Cli) -> None:
    """``canaryd status`` prints one aligned line per canary with bar, failures and last check."""
    await rollout_at_10(cli)
    code, out, err = await cli("status")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "CANARY    PHASE            REVISION       CANARY WEIGHT               FAILED  "
        "WHY / LAST CHECK",
        "prod/web  Progressing      v2             [##..................]  10% 0/3     pass",
        "prod/api  Initialized      -              [....................]   0% 0/3     -",
    ]


async def test_status_json(cli: Cli) -> None:
    """``status --json`` prints the API's JSON: all canaries, or one with checks and events."""
    await rollout_at_10(cli)
    code, out, _ = await cli("status", "--json")
    data = json.loads(out)
    assert code == 0
    assert [(c["name"], c["phase"]) for c in data["canaries"]] == [
        ("web", "Progressing"),
        ("api", "Initialized"),
    ]
    code, out, _ = await cli("status", "prod/web", "--json")
    one = json.loads(out)
    assert (code, one["revision"], one["canaryWeight"]) == (0, "v2", 10)
    assert one["checks"][0]["outcome"] == "pass"
    assert one["events"][-1]["event"] == "rollout.started"


@pytest.mark.parametrize(
    ("weight", "bar"),
    [
        (0, "[....................]   0%"),
        (25, "[#####...............]  25%"),
        (100, "[" + "#" * 20 + "] 100%"),
    ],
    ids=["none", "quarter", "all"],
)
def test_weight_bar(weight: int, bar: str) -> None:
    """The weight bar has 20 cells and a right-aligned percentage."""
    assert weight_bar(weight) == bar


def test_status_table_shows_the_failing_metric() -> None:
    """A failed last check shows its outcome and what failed (metric, value, bound)."""
    row = {
        "namespace": "prod",
        "name": "web",
        "phase": "Progressing",
        "revision": "v2",
        "canaryWeight": 20,
        "failedChecks": 1,
        "threshold": 5,
        "lastCheck": {"time": 1.0, "outcome": "fail", "reason": "success 97.2 < min 99"},
    }
    assert render_table([row]).splitlines()[1].endswith("1/5     fail: success 97.2 < min 99")


async def test_status_says_why_a_rollout_ended(cli: Cli) -> None:
    """After an abort, the human status says it was rolled back and why, not just "pass"."""
    await rollout_at_10(cli)
    assert (await cli("abort", "prod/web"))[0] == 0
    code, out, _ = await cli("status")
    web_line = next(line for line in out.splitlines() if line.startswith("prod/web"))
    assert code == 0 and web_line.endswith("rolled back: aborted by operator")
    code, out, _ = await cli("status", "prod/web")
    assert code == 0 and "rolled back: aborted by operator" in out.splitlines()[1]
    assert "finished 20" in out


def _row(**kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "namespace": "prod",
        "name": "api",
        "phase": "Progressing",
        "revision": "v2",
        "canaryWeight": 30,
        "failedChecks": 0,
        "threshold": 3,
        "gate": None,
        "reason": None,
    }
    row.update(kw)
    return row


def test_a_closed_gate_is_named_as_the_gate_flag_with_its_command() -> None:
    """A waiting gate is named as ``--gate`` names it, with the command that opens it."""
    line = render_table([_row(phase="WaitingPromotion", gate="confirm-promotion")])
    assert line.splitlines()[1].endswith(
        "waiting for gate promotion (open: canaryd approve prod/api --gate promotion)"
    )


def test_a_pending_rollback_is_not_called_rolled_back() -> None:
    """A Failed canary whose rollback route is not confirmed yet is not shown as rolled back."""
    line = render_table([_row(phase="Failed", routePending=True, reason="router lb: refused")])
    assert "rolled back" not in line and "rollback not applied yet" in line


def test_wait_lines_carry_the_time_and_rounded_values() -> None:
    """``rollout --wait`` lines start with the time and cut long decimals to 4 digits."""
    line = progress_line(
        _row(failedChecks=1, reason="success 97.123456789 < min 99"), now=1_700_000_000.0
    )
    assert re.match(r"\d\d:\d\d:\d\d  prod/api Progressing", line)
    assert line.endswith("last failure: success 97.12 < min 99")


@pytest.mark.parametrize(
    ("metric", "shown"),
    [
        ({"name": "ok", "value": 99.91234, "min": 99, "max": None}, "ok 99.91 (min 99): ok"),
        (
            {"name": "lat", "value": 612.0, "min": None, "max": 500},
            "lat 612 (max 500): out of range",
        ),
        ({"name": "e", "value": None, "min": 1, "max": 2}, "e no data (min 1 max 2): no data"),
        (
            {"name": "d", "value": 1.5, "min": 2, "max": None, "dryRun": True},
            "d 1.5 (min 2): out of range  (dry run)",
        ),
    ],
    ids=["pass", "out-of-range", "no-data", "dry-run"],
)
def test_metric_line_shows_value_against_condition(metric: dict[str, object], shown: str) -> None:
    """Each metric of a check shows its value against its condition, ``no data``, or dry run."""
    assert metric_line(metric) == shown


async def test_status_shows_a_dry_run_metric_that_did_not_stop_the_rollout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry-run metric out of range is shown as such in ``status NS/NAME`` while the rollout
    advances past it."""
    monkeypatch.delenv("CANARYD_TOKEN", raising=False)
    spec = canary(interval="1s")
    shadow = {"name": "shadow", "query": "up", "thresholdRange": {"min": 1000}, "dryRun": True}
    spec["analysis"]["metrics"].append(shadow)
    async with backends() as (prom, router):
        cfg = service_config(tmp_path, prom, router, [spec])
        with structlog.testing.capture_logs():
            async with running_daemon(cfg) as daemon:
                cli = Cli(daemon, api_url(cfg), tmp_path / "api-token", capsys)
                assert (await cli("rollout", "prod/web", "--revision", "v2"))[0] == 0
                runner = daemon.runner("prod/web")
                assert runner is not None
                await eventually(lambda: runner.state.canary_weight >= 20, what="a passed check")
                code, out, _ = await cli("status", "prod/web")
    assert code == 0 and runner.state.failed_checks == 0
    assert "  shadow 99.9 (min 1000): out of range  (dry run)" in out.splitlines()


@pytest.mark.parametrize(
    "weird",
    [None, True, "x\x1b[31m", 10**400, float("nan"), [], {"a": 1}, -1e308, "inf"],
    ids=["null", "bool", "escape", "huge", "nan", "list", "object", "tiny", "inf-text"],
)
def test_views_survive_any_value_from_the_daemon(weird: object) -> None:
    """History, events, detail and metric lines print odd values escaped, never a traceback."""
    fields = ("startedAt", "endedAt", "time", "checkCount", "reason", "revision", "id")
    rollout = dict.fromkeys(fields, weird) | {"outcome": weird, "failedCheckCount": weird}
    text = render_history([rollout])
    text += render_events([{"event": weird, "time": weird, "reason": weird, "value": weird}])
    text += metric_line({"name": weird, "value": weird, "min": weird, "max": weird})
    text += render_detail(_row(startedAt=weird, checks=[{"time": weird, "metrics": [{}]}]))
    assert "\x1b" not in text


def test_an_event_names_its_gate_as_the_gate_flag() -> None:
    """A gate event says ``gate=promotion``, the name ``canaryd approve --gate`` takes."""
    line = render_events([{"event": "gate.waiting", "time": 1.0, "gate": "confirm-promotion"}])
    assert line.endswith(" gate=promotion")


@pytest.mark.parametrize(
    ("phase", "shown"),
    [("Failed", "Failed (pending)"), ("Promoting", "Promoting (pending)")],
)
def test_status_table_marks_a_route_the_router_has_not_confirmed(phase: str, shown: str) -> None:
    """A rollback or promote whose route is pending shows as pending, columns still aligned."""
    rows = [
        {
            "namespace": "prod",
            "name": name,
            "phase": p,
            "revision": "v2",
            "canaryWeight": 20,
            "failedChecks": 0,
            "threshold": 5,
            "routePending": p != "Progressing",
        }
        for name, p in (("web", phase), ("api", "Progressing"))
    ]
    lines = render_table(rows).splitlines()
    assert lines[1][len("prod/web  ") :].startswith(f"{shown} v2")
    assert len({line.index("v2") for line in lines[1:]} | {lines[0].index("REVISION")}) == 1
