"""The client commands of ``canaryd`` (``main(argv)``) against a real in-process daemon."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from daemons import api_url, running_daemon
from service_helpers import backends, canary, service_config
from support import eventually

from canaryd.cli import main
from canaryd.cli.parser import build_parser
from canaryd.cli.views import (
    metric_line,
    render_detail,
    render_events,
    render_history,
    rollouts_from_events,
)
from canaryd.client import progress_line, render_table, weight_bar
from canaryd.service.daemon import Daemon

pytestmark = pytest.mark.anyio

UNAUTHORIZED = (
    "canaryd: missing or wrong bearer token (HTTP 401) (set CANARYD_TOKEN or --token-file)\n"
)


@dataclass
class Cli:
    """Runs ``canaryd`` commands against one daemon and captures what they print."""

    daemon: Daemon
    url: str
    token_file: Path
    capsys: pytest.CaptureFixture[str]

    async def __call__(self, *argv: str, token: bool = True) -> tuple[int, str, str]:
        """Run one command in a worker thread (it runs its own event loop)."""
        args = [*argv, "--url", self.url]
        if token:
            args += ["--token-file", str(self.token_file)]
        self.capsys.readouterr()
        code = await anyio.to_thread.run_sync(main, args)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
async def cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cli]:
    """A daemon with prod/web and prod/api (interval 1h: only commands wake a tick)."""
    monkeypatch.delenv("CANARYD_TOKEN", raising=False)
    monkeypatch.delenv("CANARYD_TOKEN_FILE", raising=False)
    async with backends() as (prom, router):
        cfg = service_config(
            tmp_path,
            prom,
            router,
            [canary(interval="1h"), canary("api", interval="1h", manual_promotion=True)],
        )
        with structlog.testing.capture_logs():  # the daemon's log lines stay off stdout
            async with running_daemon(cfg) as daemon:
                yield Cli(daemon, api_url(cfg), tmp_path / "api-token", capsys)


async def _rollout_at_10(cli: Cli) -> None:
    code, out, err = await cli("rollout", "prod/web", "--revision", "v2")
    assert (code, out, err) == (0, "prod/web: rollout of v2 started (Progressing)\n", "")
    runner = cli.daemon.runner("prod/web")
    assert runner is not None
    await eventually(lambda: runner.state.canary_weight == 10, what="first step")


async def test_status_table(cli: Cli) -> None:
    """``canaryd status`` prints one aligned line per canary with bar, failures and last check."""
    await _rollout_at_10(cli)
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
    await _rollout_at_10(cli)
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
    ("argv", "expected"),
    [
        (("pause", "prod/web"), "prod/web: Paused (revision v2)\n"),
        (("promote", "prod/web"), "prod/web: Promoting (revision v2)\n"),
        (("abort", "prod/web"), "prod/web: Failed (revision v2)\n"),
    ],
    ids=["pause", "promote", "abort"],
)
async def test_commands_print_the_new_phase(cli: Cli, argv: tuple[str, ...], expected: str) -> None:
    """Each operator command prints the canary's phase after it and exits 0."""
    await _rollout_at_10(cli)
    assert await cli(*argv) == (0, expected, "")


async def test_gates_are_approved_or_forced_explicitly(cli: Cli) -> None:
    """approve refuses a gate the canary lacks; promote past a closed gate needs --force and
    says which gate it skipped."""
    await _rollout_at_10(cli)
    code, _, err = await cli("approve", "prod/web", "--gate", "promotion")
    assert code == 2 and "prod/web has no promotion gate" in err
    assert (await cli("rollout", "prod/api", "--revision", "v2"))[0] == 0
    code, _, err = await cli("promote", "prod/api")
    assert code == 2 and "--force" in err
    assert await cli("promote", "prod/api", "--force") == (
        0,
        "prod/api: Promoting (revision v2)\nprod/api: forced past gate(s) promotion\n",
        "",
    )


async def test_pause_then_resume(cli: Cli) -> None:
    """``resume`` returns a paused rollout to the phase it was paused in."""
    await _rollout_at_10(cli)
    assert (await cli("pause", "prod/web"))[0] == 0
    assert await cli("resume", "prod/web") == (0, "prod/web: Progressing (revision v2)\n", "")


@pytest.mark.parametrize(
    ("argv", "token", "err"),
    [
        (("status",), False, UNAUTHORIZED),
        (("pause", "prod/web"), False, UNAUTHORIZED),
        (("status", "prod/nope"), True, "canaryd: no canary prod/nope (HTTP 404)\n"),
        (
            ("resume", "prod/web"),
            True,
            "canaryd: prod/web is not paused (phase Initialized) (HTTP 409)\n",
        ),
        (("pause", "a/b/c"), True, "canaryd: expected NAMESPACE/NAME, got 'a/b/c'\n"),
        (
            ("status", "--watch", "--json"),
            True,
            "canaryd: --watch draws a table; for JSON use --json without --watch\n",
        ),
    ],
    ids=[
        "status-401",
        "command-401",
        "unknown-canary-404",
        "resume-idle-409",
        "bad-name",
        "watch-json",
    ],
)
async def test_client_errors_exit_2(cli: Cli, argv: tuple[str, ...], token: bool, err: str) -> None:
    """Errors are one line on stderr and exit code 2, never a traceback."""
    assert await cli(*argv, token=token) == (2, "", err)


async def test_unreachable_daemon_exits_2(cli: Cli) -> None:
    """A daemon that does not answer is a one-line error with a hint."""
    cli.url = "http://127.0.0.1:9"
    code, out, err = await cli("status")
    assert (code, out) == (2, "")
    assert err.startswith("canaryd: cannot reach canaryd at http://127.0.0.1:9/api/v1/canaries")
    assert err.rstrip().endswith("(is it running? set --url or CANARYD_URL)")


async def test_a_non_canaryd_answer_exits_2(cli: Cli) -> None:
    """A 2xx answer that is not canaryd's JSON (a proxy page) is a one-line error, no traceback."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>sign in</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    async with TestServer(app) as server:
        cli.url = str(server.make_url(""))
        code, out, err = await cli("abort", "prod/web")
    assert (code, out) == (2, "")
    assert "did not answer like canaryd" in err and "Traceback" not in err


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
    await _rollout_at_10(cli)
    assert (await cli("abort", "prod/web"))[0] == 0
    code, out, _ = await cli("status")
    web_line = next(line for line in out.splitlines() if line.startswith("prod/web"))
    assert code == 0 and web_line.endswith("rolled back: aborted by operator")
    code, out, _ = await cli("status", "prod/web")
    assert code == 0 and "rolled back: aborted by operator" in out.splitlines()[1]
    assert "finished 20" in out


async def test_events_are_listed_with_times_oldest_first(cli: Cli) -> None:
    """``canaryd events`` prints one line per event with its local time, the reason included."""
    await _rollout_at_10(cli)
    assert (await cli("abort", "prod/web"))[0] == 0
    code, out, err = await cli("events", "prod/web")
    lines = out.splitlines()
    assert (code, err) == (0, "")
    assert lines[0].split()[2] == "rollout.started"
    assert lines[-1].split()[2] == "rollout.rolled_back"
    assert "reason=aborted by operator" in lines[-1]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ", line) for line in lines)
    assert "analysis.tick" not in out
    code, out, _ = await cli("events", "prod/web", "--ticks")
    assert code == 0 and "analysis.tick" in out


async def test_history_lists_past_rollouts_with_outcome_and_reason(cli: Cli) -> None:
    """``canaryd history`` shows each past rollout: revision, outcome, duration, checks, reason."""
    await _rollout_at_10(cli)
    assert (await cli("abort", "prod/web"))[0] == 0
    code, out, err = await cli("history", "prod/web")
    assert (code, err) == (0, "")
    head, row = out.splitlines()[:2]
    assert head.split()[:6] == ["ID", "STARTED", "REVISION", "OUTCOME", "DURATION", "FAILED/CHECKS"]
    assert row.split()[3:5] == ["v2", "rolled_back"]
    assert "aborted by operator" in row


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


def test_history_from_events_when_the_daemon_has_no_history_api() -> None:
    """Without the history API, rollouts are pieced together from events: a rollout replaced
    before it ended is superseded; an ended one has its outcome, reason and checks."""
    events = [
        {"event": "rollout.rolled_back", "time": 5.0, "reason": "success 90 < min 99"},
        {"event": "check.failed", "time": 4.0},
        {"event": "analysis.tick", "time": 4.0},
        {"event": "rollout.started", "time": 3.0, "revision": "v3"},
        {"event": "analysis.tick", "time": 2.0},
        {"event": "rollout.started", "time": 1.0, "revision": "v2"},
    ]
    assert [
        (r["revision"], r["outcome"], r["reason"], r["checkCount"], r["failedCheckCount"])
        for r in rollouts_from_events(events)
    ] == [("v3", "rolled_back", "success 90 < min 99", 1, 1), ("v2", "superseded", None, 1, 0)]


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


def _options() -> list[tuple[str, argparse.Action]]:
    """Every (command, option) of the ``canaryd`` parser."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [(name, action) for name, p in sub.choices.items() for action in p._actions]


def test_every_optional_argument_names_its_default() -> None:
    """The help of every argument a user may leave out says what happens then."""
    silent = [
        f"{name} {action.dest}"
        for name, action in _options()
        if not action.required
        and not isinstance(action, argparse._HelpAction)
        and "default" not in (action.help or "")
    ]
    assert silent == []


@pytest.mark.parametrize(
    ("dest", "variable"),
    [("url", "CANARYD_URL"), ("token_file", "CANARYD_TOKEN_FILE"), ("config", "CANARYD_CONFIG")],
)
def test_options_name_their_environment_variable(dest: str, variable: str) -> None:
    """``--url``, ``--token-file`` and ``-c`` name the environment variable that sets them."""
    helps = [action.help or "" for _, action in _options() if action.dest == dest]
    assert helps and all(variable in text for text in helps)


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


ROLLOUT_EVENTS = [
    {"event": "rollout.started", "time": 1_700_000_000.0, "revision": "v3", "phase": "Progressing"},
    {"event": "rollout.promoted", "time": 1_700_000_090.0, "revision": "v3", "phase": "Succeeded"},
]


async def _answering(cli: Cli, routes: dict[str, web.Response]) -> TestServer:
    """A stand-in daemon answering ``routes`` (path -> response), 404 elsewhere."""

    async def answer(request: web.Request) -> web.Response:
        return routes.get(request.path, web.json_response({"error": "not found"}, status=404))

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", answer)
    server = TestServer(app)
    await server.start_server()
    cli.url = str(server.make_url(""))
    return server


async def test_events_of_one_rollout_come_from_the_history_api(cli: Cli) -> None:
    """``events --rollout ID`` reads that rollout (``GET .../rollouts/ID``) and lists its events."""
    path = "/api/v1/canaries/prod/web/rollouts/3f2a9c01"
    server = await _answering(cli, {path: web.json_response({"events": ROLLOUT_EVENTS})})
    try:
        code, out, err = await cli("events", "prod/web", "--rollout", "3f2a9c01")
    finally:
        await server.close()
    assert (code, err) == (0, "")
    assert [line.split()[2] for line in out.splitlines()] == ["rollout.started", "rollout.promoted"]


async def test_history_from_a_daemon_without_the_history_api(cli: Cli) -> None:
    """A daemon that answers 405 to ``GET .../rollouts`` gets its history from its events."""
    base = "/api/v1/canaries/prod/web"
    routes = {
        base + "/rollouts": web.json_response({"error": "method not allowed"}, status=405),
        base: web.json_response({"events": ROLLOUT_EVENTS}),
    }
    server = await _answering(cli, routes)
    try:
        code, out, err = await cli("history", "prod/web")
    finally:
        await server.close()
    assert (code, err) == (0, "")
    assert out.splitlines()[1].split()[3:6] == ["v3", "promoted", "1m30s"]


async def test_events_of_a_past_rollout_from_the_daemon(cli: Cli) -> None:
    """``events --rollout ID`` lists the events of that rollout only, as the daemon kept them."""
    await _rollout_at_10(cli)
    first = json.loads((await cli("status", "prod/web", "--json"))[1])["rolloutId"]
    assert (await cli("abort", "prod/web"))[0] == 0
    assert (await cli("rollout", "prod/web", "--revision", "v3"))[0] == 0
    code, out, err = await cli("events", "prod/web", "--rollout", first)
    assert (code, err) == (0, "")
    assert {line.split()[3] for line in out.splitlines()} == {"v2"}
    assert out.splitlines()[-1].split()[2] == "rollout.rolled_back"
    code, out, err = await cli("history", "prod/web")
    assert [row.split()[0] for row in out.splitlines()[1:]][1] == first
    assert await cli("events", "prod/web", "--rollout", "nope") == (
        2,
        "",
        "canaryd: no rollout nope of prod/web (HTTP 404)\n",
    )
