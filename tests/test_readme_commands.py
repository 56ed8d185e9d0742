"""Every `canaryd` command the README shows exists, with the flags it shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMAND = re.compile(r"^(?:\$ |sudo (?:[A-Z_]+=\S+ )*)?canaryd ([a-z]+(?:\|[a-z]+)*)\b(.*)$")
FENCE = re.compile(r"^ *```[a-z]*\n(.*?)^ *```", re.S | re.M)


def shown_commands() -> dict[str, set[str]]:
    """Each `canaryd` subcommand in README.md (inline code and command lines) with its flags."""
    text = (ROOT / "README.md").read_text()
    lines = [line.strip() for block in FENCE.findall(text) for line in block.splitlines()]
    segments = re.findall(r"`([^`\n]+)`", FENCE.sub("", text)) + lines
    shown: dict[str, set[str]] = {}
    for segment in segments:
        match = COMMAND.match(segment)
        if match is None:
            continue
        words = match.group(2).split("#")[0]
        for name in match.group(1).split("|"):
            shown.setdefault(name, set()).update(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", words))
    return shown


def help_text(*args: str) -> str:
    """What `canaryd ARGS --help` prints."""
    done = subprocess.run(
        [sys.executable, "-m", "canaryd", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_the_readme_shows_commands() -> None:
    """The extraction finds the README's main commands, so the check below cannot pass empty."""
    assert {"rollout", "status", "check", "demo"} <= shown_commands().keys()


@pytest.mark.slow  # a `canaryd --help` process per command
@pytest.mark.parametrize("command", sorted(shown_commands()))
def test_readme_command_and_flags_exist(command: str) -> None:
    """`canaryd COMMAND --help` names the command and every flag the README gives it."""
    assert re.search(rf"^\s+{command}\s", help_text(), re.M), command
    usage = help_text(command)
    flags = sorted(shown_commands()[command])
    assert [flag for flag in flags if not re.search(rf"(?<![\w-]){flag}\b", usage)] == []
