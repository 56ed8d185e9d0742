"""The exec router against real child processes (small shell scripts written by each test)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from traffic import route

from canaryd.config import ExecRouter
from canaryd.errors import RouterError
from canaryd.routers import Action
from canaryd.routers.exec import STDERR_PREVIEW_CHARS, ExecCommand

pytestmark = [pytest.mark.anyio, pytest.mark.integration]  # they start processes


def script(tmp_path: Path, body: str) -> str:
    """An executable ``/bin/sh`` script in ``tmp_path``; returns its path."""
    path = tmp_path / "router.sh"
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(0o755)
    return str(path)


def router(command: list[str], timeout: float = 5.0, **extra: object) -> ExecCommand:
    """An exec router named ``lb`` running ``command``."""
    cfg = ExecRouter.model_validate(
        {"type": "exec", "command": command, "timeout": timeout, **extra}
    )
    return ExecCommand(cfg, name="lb")


@pytest.mark.parametrize(
    ("action", "expected"),
    [("route", "route 80 20"), ("promote", "promote 80 20"), ("rollback", "rollback 100 0")],
    ids=["route", "promote", "rollback"],
)
async def test_action_and_weights_reach_the_command(
    tmp_path: Path, action: Action, expected: str
) -> None:
    """The command gets the action and weights as arguments and in its environment."""
    out = tmp_path / "out"
    cmd = script(
        tmp_path,
        f'echo "$1 $2 $3|$CANARYD_ACTION $CANARYD_PRIMARY_WEIGHT $CANARYD_CANARY_WEIGHT|'
        f'$CANARYD_CANARY|$CANARYD_REVISION|$CANARYD_IDEMPOTENCY_KEY|$REGION" > {out}',
    )

    await router([cmd], env={"REGION": "eu-1"}).apply(route(action))

    assert out.read_text().strip() == f"{expected}|{expected}|prod/web|v2|key-1|eu-1"


async def test_arguments_are_not_given_to_a_shell(tmp_path: Path) -> None:
    """An argument with shell syntax reaches the program verbatim; nothing is interpreted."""
    marker = tmp_path / "pwned"
    out = tmp_path / "out"
    cmd = script(tmp_path, f'printf "%s" "$1" > {out}')

    await router([cmd, f"x; touch {marker}"]).apply(route())

    assert out.read_text() == f"x; touch {marker}"
    assert not marker.exists()


async def test_failure_quotes_escaped_stderr(tmp_path: Path) -> None:
    """A non-zero exit is a RouterError with the status and stderr, control characters escaped."""
    cmd = script(tmp_path, "printf 'Error: \\033[32mapplied\\033[0m 403\\n' >&2; exit 3")

    with pytest.raises(RouterError) as info:
        await router([cmd]).apply(route())

    assert str(info.value) == "exec lb: exit 3: Error: \\x1b[32mapplied\\x1b[0m 403"


async def test_long_stderr_is_shortened_to_its_end(tmp_path: Path) -> None:
    """A megabyte of stderr is read without blocking the child; the error keeps its end."""
    cmd = script(tmp_path, "head -c 1000000 /dev/zero | tr '\\0' a >&2; echo THE-END >&2; exit 1")

    with pytest.raises(RouterError) as info:
        await router([cmd]).apply(route())

    message = str(info.value)
    assert message.startswith("exec lb: exit 1: …")
    assert len(message) < STDERR_PREVIEW_CHARS + 40


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """At the timeout the command and its children are killed and the error says so."""
    pids = tmp_path / "pids"
    cmd = script(tmp_path, f"sleep 60 & echo $! > {pids}; echo $$ >> {pids}; sleep 60")
    started = time.monotonic()

    with pytest.raises(RouterError) as info:
        await router([cmd], timeout=0.5).apply(route())

    assert time.monotonic() - started < 5
    assert str(info.value) == "exec lb: killed after 0.5s (no exit within the timeout)"
    for pid in map(int, pids.read_text().split()):
        assert gone_within(pid, 2.0), f"process {pid} survived the timeout"


def gone_within(pid: int, seconds: float) -> bool:
    """True once ``pid`` no longer runs (SIGKILL delivery is asynchronous); bounded."""
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_tempfail_exit_is_retried(tmp_path: Path) -> None:
    """Exit 75 (EX_TEMPFAIL) is tried again; a later exit 0 means applied."""
    count = tmp_path / "count"
    cmd = script(tmp_path, f"echo x >> {count}; [ $(wc -l < {count}) -ge 2 ] || exit 75")

    await router([cmd]).apply(route())

    assert count.read_text().count("x") == 2


async def test_persistent_tempfail_gives_up_after_three_attempts(tmp_path: Path) -> None:
    """A command that keeps exiting 75 is a RouterError after three attempts."""
    count = tmp_path / "count"
    cmd = script(tmp_path, f"echo x >> {count}; echo busy >&2; exit 75")

    with pytest.raises(RouterError) as info:
        await router([cmd]).apply(route())

    assert str(info.value) == "exec lb: exit 75: busy (after 3 attempts)"
    assert count.read_text().count("x") == 3


async def test_other_failures_are_not_retried(tmp_path: Path) -> None:
    """An exit status outside retry_exit_codes is final: the command runs once."""
    count = tmp_path / "count"
    cmd = script(tmp_path, f"echo x >> {count}; exit 1")

    with pytest.raises(RouterError, match=r"^exec lb: exit 1$"):
        await router([cmd]).apply(route())

    assert count.read_text().count("x") == 1


async def test_missing_program_is_a_router_error(tmp_path: Path) -> None:
    """A program that does not exist gives a RouterError naming it, not a traceback."""
    missing = str(tmp_path / "nope")

    with pytest.raises(RouterError) as info:
        await router([missing]).apply(route())

    assert str(info.value) == f"exec lb: cannot run {missing}: No such file or directory"


def test_signal_death_is_named() -> None:
    """A command killed by a signal is reported by the signal's name."""
    with pytest.raises(RouterError, match=r"^exec lb: killed by SIGTERM$"):
        router(["true"])._check(-15, b"")
    assert os.path.exists("/proc/self")  # Linux: the group-kill test above relies on /proc
