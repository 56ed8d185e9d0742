"""The CLI's views draw any answer: fields missing (a follower, an older daemon) or odd."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from canaryd.cli import main
from canaryd.cli.views import Watch, render_detail
from canaryd.client import progress, render_table

ODD: list[Any] = [None, "", "\x1b[32mgreen", 1e300, -7, 10**400, [], {}, True, "NaN"]
"""Values a field may hold in an answer canaryd did not write (or an older one did)."""

FIELDS = (
    "namespace",
    "name",
    "phase",
    "revision",
    "canaryWeight",
    "failedChecks",
    "threshold",
    "gate",
    "reason",
    "routePending",
    "iterations",
    "iteration",
    "lastCheck",
)


def full() -> dict[str, Any]:
    """A canary as this version's daemon lists it."""
    return {
        "namespace": "prod",
        "name": "web",
        "phase": "Progressing",
        "revision": "v2",
        "canaryWeight": 20,
        "failedChecks": 1,
        "threshold": 5,
        "iterations": 0,
        "lastCheck": {"outcome": "fail", "reason": "success 97 < min 99"},
    }


def views(rows: list[Any]) -> str:
    """Everything the status views draw from ``rows``: table, detail, progress, watch."""
    text = render_table(rows)
    for row in rows:
        text += render_detail(row) + progress(row)
    frame = Watch(tty=False, interval=1.0).frame(rows)
    return text + (frame or "")


@pytest.mark.parametrize("field", FIELDS)
def test_a_canary_lacking_a_field_is_drawn_with_a_dash(field: str) -> None:
    """A listed canary without one of its fields is drawn, the field shown as ``-``."""
    row = full()
    row.pop(field, None)
    text = views([row, full()])
    assert "web" in text or field == "name"
    assert "\x1b" not in text


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", ODD, ids=[repr(v)[:12] for v in ODD])
def test_a_canary_with_an_odd_field_is_drawn_escaped(field: str, value: Any) -> None:
    """Any JSON value in any field is drawn, control characters escaped, never a traceback."""
    text = views([{**full(), field: value}])
    assert "\x1b" not in text
    assert text.count("\n") >= 1


def test_rows_that_are_not_objects_are_left_out() -> None:
    """A listing whose entries are not objects draws the ones that are."""
    text = render_table(["prod/web", 7, None, full()])  # type: ignore[list-item]
    assert text.splitlines()[1].startswith("prod/web")
    assert len(text.splitlines()) == 2


@pytest.fixture
async def answering(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[dict[str, Any]]:
    """A stand-in daemon answering ``GET /api/v1/canaries[/NS/NAME]`` with what the test
    puts in the yielded dict (path -> JSON body); its URL is under ``"url"``."""
    answers: dict[str, Any] = {}
    monkeypatch.setenv("CANARYD_TOKEN", "t0ken")

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(answers.get(request.path, {"error": "not found"}))

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    answers["url"] = str(server.make_url(""))
    try:
        yield answers
    finally:
        await server.close()


async def status(
    answers: dict[str, Any], capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """Run ``canaryd status ARGV`` against the stand-in; return code, stdout, stderr."""
    capsys.readouterr()
    code = await anyio.to_thread.run_sync(main, ["status", *argv, "--url", answers["url"]])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.anyio
async def test_status_of_a_follower_lacking_namespace_and_phase_draws_the_table(
    answering: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """``canaryd status`` against an answer lacking namespace and phase prints the table."""
    answering["/api/v1/canaries"] = {
        "role": "follower",
        "canaries": [{"name": "web", "revision": "v2"}, {"name": "api", "canaryWeight": "x"}],
    }
    code, out, err = await status(answering, capsys)
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert lines[0] == "this replica is the follower; leader: unknown"
    assert [line.split()[0] for line in lines[2:]] == ["-/web", "-/api"]


@pytest.mark.anyio
async def test_status_of_one_canary_lacking_fields_draws_its_detail(
    answering: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """``canaryd status NS/NAME`` against an answer with only a name prints its detail."""
    answering["/api/v1/canaries/prod/web"] = {"name": "web", "checks": "odd"}
    code, out, err = await status(answering, capsys, "prod/web")
    assert (code, err) == (0, ""), err
    assert out.splitlines()[1].startswith("-/web")


@pytest.mark.anyio
async def test_status_of_a_listing_without_canaries_says_so(
    answering: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A listing answer without a ``canaries`` list ends with a one-line error, exit 2."""
    answering["/api/v1/canaries"] = {"role": "follower"}
    code, out, err = await status(answering, capsys)
    assert (code, out) == (2, "")
    assert err == "canaryd: the daemon's answer has no 'canaries' list\n"
