"""The client commands of ``canaryd`` (``main(argv)``) against a real in-process daemon."""

from __future__ import annotations

import json
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
from canaryd.client import render_table, weight_bar
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
        "CANARY    PHASE            REVISION       CANARY WEIGHT               FAILED  LAST CHECK",
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
    ],
    ids=["status-401", "command-401", "unknown-canary-404", "resume-idle-409", "bad-name"],
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
