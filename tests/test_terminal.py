"""Control characters from outside never reach a terminal raw; a closed pipe is no traceback.

A Prometheus whose error text draws a green "promoted" line over the real
verdict makes the canary roll back; ``rollout --wait``, ``status`` and the demo
view show that text with its control characters escaped (docs/reliability.md,
"Terminal output").
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import pytest
import structlog
from daemons import TOKEN, api_url, running_daemon
from receiver import Receiver
from service_helpers import canary, service_config

from canaryd.cli.commands import SIGPIPE_EXIT, main
from canaryd.demo.view import TerminalView
from canaryd.terminal import escape, escape_lines

pytestmark = pytest.mark.anyio

FORGERY = "\x1b[1A\x1b[2K\r\x1b[32mprod/web: promoted revision v2\x1b[0m\u202e\x85\x07"
"""Moves up, clears the line and prints a green verdict (plus a bidi override, NEL and BEL)."""

RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]")
"""Any control character but the line feed between lines."""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("two\nlines\r", "two\\nlines\\r"),
        ("tab\there", "tab\\there"),
        ("nul\x00 bel\x07 del\x7f", "nul\\x00 bel\\x07 del\\x7f"),
        ("c1 \x85\x9b", "c1 \\x85\\x9b"),
        ("bidi \u202e sep \u2028", "bidi \\u202e sep \\u2028"),
        ("ünïcödé ✓", "ünïcödé ✓"),
    ],
    ids=[
        "plain",
        "esc",
        "newline-cr",
        "tab",
        "c0-del",
        "c1",
        "bidi-separator",
        "printable-unicode",
    ],
)
def test_escape_makes_controls_visible(text: str, expected: str) -> None:
    """C0 and C1 controls, DEL, ESC and bidi overrides become visible escapes; the rest stays."""
    assert escape(text) == expected
    assert escape(escape(text)) == expected


def test_escape_lines_keeps_only_the_line_breaks() -> None:
    """Multi-line output keeps its own line breaks and escapes everything else."""
    assert escape_lines("a\x1b\nb\r") == "a\\x1b\nb\\r"


@dataclass
class Cli:
    """Runs ``canaryd`` client commands against a daemon; returns what they printed."""

    url: str
    token_file: Path
    capsys: pytest.CaptureFixture[str]

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        """Run one command in a worker thread (it runs its own event loop)."""
        self.capsys.readouterr()
        args = [*argv, "--url", self.url, "--token-file", str(self.token_file)]
        code = await anyio.to_thread.run_sync(main, args)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
async def hostile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cli]:
    """A daemon whose Prometheus answers every query with an error text full of escapes."""
    monkeypatch.delenv("CANARYD_TOKEN", raising=False)
    body = json.dumps({"status": "error", "errorType": "execution", "error": FORGERY}).encode()
    async with (
        Receiver(body=body, content_type="application/json") as prom,
        Receiver() as router,
    ):
        cfg = service_config(tmp_path, prom, router, [canary(threshold=2)])
        with structlog.testing.capture_logs():
            async with running_daemon(cfg):
                yield Cli(api_url(cfg), tmp_path / "api-token", capsys)


def assert_escaped(text: str) -> None:
    """``text`` holds the forgery's escaped form and no raw control character."""
    assert RAW.search(text) is None, repr(text)
    assert "\\x1b[32mprod/web: promoted revision v2\\x1b[0m" in text


@pytest.mark.slow
async def test_rollout_wait_prints_the_failure_reason_escaped(hostile: Cli) -> None:
    """``rollout --wait`` shows the rollback with Prometheus's text escaped, exit 1."""
    code, out, err = await hostile("rollout", "prod/web", "--revision", "v2", "--wait")
    assert code == 1, (out, err)
    assert re.match(r"\d\d:\d\d:\d\d  prod/web: rolled back: ", out.splitlines()[-1])
    assert_escaped(out)


@pytest.mark.slow
async def test_status_table_prints_the_last_check_escaped(hostile: Cli) -> None:
    """``canaryd status`` (table and one canary) shows the failed check's reason escaped."""
    code, out, err = await hostile("rollout", "prod/web", "--revision", "v2", "--wait")
    assert code == 1, (out, err)
    for argv in (("status",), ("status", "prod/web")):
        code, out, err = await hostile(*argv)
        assert code == 0, err
        assert RAW.search(out) is None, repr(out)
        assert "\\x1b" in out


def test_demo_view_escapes_event_reasons() -> None:
    """The demo's event lines show a rollback reason escaped, on one line."""
    out = io.StringIO()
    view = TerminalView(out, live=False)
    view.event(3.0, {"event": "rollout.rolled_back", "reason": FORGERY + "\nfake"}, [])
    assert out.getvalue().count("\n") == 1
    assert_escaped(out.getvalue())


def test_error_answer_is_printed_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A client error quoting the daemon's (or a proxy's) text prints it escaped on stderr."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    code = main(["status", "--url", "http://127.0.0.1:1/\x1b[2J", "--token-file", str(token)])
    _, err = capsys.readouterr()
    assert code == 2
    assert "\\x1b[2J" in err and "\x1b" not in err


@pytest.mark.slow
async def test_status_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """``canaryd status --json | head`` (the reader gone): no traceback, exit 141 like SIGPIPE."""
    async with Receiver(body=b"{}") as prom, Receiver() as router:
        cfg = service_config(tmp_path, prom, router, [canary(interval="1h")])
        with structlog.testing.capture_logs():
            async with running_daemon(cfg):
                read_end, write_end = os.pipe()
                os.close(read_end)  # whatever is written now fails with EPIPE
                try:
                    argv = ["status", "--json", "--url", api_url(cfg)]
                    done = await anyio.to_thread.run_sync(
                        lambda: subprocess.run(
                            [sys.executable, "-m", "canaryd", *argv],
                            stdout=write_end,
                            stderr=subprocess.PIPE,
                            env={**os.environ, "CANARYD_TOKEN": TOKEN},
                            timeout=30,
                            check=False,
                        )
                    )
                finally:
                    os.close(write_end)
    assert done.stderr.decode() == ""
    assert done.returncode == SIGPIPE_EXIT
