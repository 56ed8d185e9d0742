"""``canaryd`` operator commands against a real in-process daemon: phases, gates, errors."""

from __future__ import annotations

import argparse

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cli_helpers import Cli, rollout_at_10
from cli_helpers import cli as cli

from canaryd.cli.parser import build_parser

pytestmark = pytest.mark.anyio

UNAUTHORIZED = (
    "canaryd: missing or wrong bearer token (HTTP 401) (set CANARYD_TOKEN or --token-file)\n"
)


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
    await rollout_at_10(cli)
    assert await cli(*argv) == (0, expected, "")


async def test_gates_are_approved_or_forced_explicitly(cli: Cli) -> None:
    """approve refuses a gate the canary lacks; promote past a closed gate needs --force and
    says which gate it skipped."""
    await rollout_at_10(cli)
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
    await rollout_at_10(cli)
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
