"""Command line (docs/design.md, "Command line"): the daemon, config check, and the API client.

The arguments are in :mod:`canaryd.cli.parser`; the client commands, which talk
to a running daemon, in :mod:`canaryd.cli.remote`. No input produces a
traceback: errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import anyio

from canaryd.cli.output import say as _say
from canaryd.cli.parser import build_parser
from canaryd.cli.remote import client_command
from canaryd.errors import ClientError, ConfigError
from canaryd.terminal import escape


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``canaryd`` command."""
    args = build_parser().parse_args(argv)
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit as an ignored exception
    except ClientError as exc:
        _say(f"canaryd: {escape(str(exc))}", err=True)
        return 2
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends: not an error there
        return 0 if getattr(args, "watch", False) else 130
    except BrokenPipeError:  # `canaryd status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_EXIT
    return code


SIGPIPE_EXIT = 141
"""Exit code when stdout's reader went away (as a shell reports a process killed by SIGPIPE)."""


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "check":
        return check(Path(args.config), online=args.online)
    if args.command == "run":
        return run(Path(args.config))
    if args.command == "judge":
        from canaryd.cli.judge import judge_main

        return judge_main(args.file, sys.stdout, sys.stderr)
    if args.command == "state":
        return state_copy(args.src, args.dst)
    if args.command == "demo":
        from canaryd.demo import main as demo_main

        return demo_main(args.scenario, args.report, router=args.router)
    return anyio.run(client_command, args)


def check(path: Path, *, online: bool = False) -> int:
    """``canaryd check``: print every problem, or a one-line summary; 1 when there are problems.

    With ``online``, every query is also run once and every router asked
    (:mod:`canaryd.cli.online`).
    """
    from canaryd.config.loader import load_config, summary
    from canaryd.service.daemon import check_queries

    try:
        loaded = load_config(path)
        check_queries(loaded.settings)
    except ConfigError as exc:
        return _problems(exc.problems)
    for warning in loaded.warnings:
        _say(f"warning: {escape(str(warning))}", err=True)
    if online:
        from canaryd.cli.online import online_check

        found = anyio.run(online_check, loaded)
        for line in found.lines:
            _say(line)
        if found.problems:
            return _problems(found.problems)
    _say(summary(loaded))
    return 0


def _problems(problems: list[Any]) -> int:
    for problem in problems:
        _say(escape(str(problem)), err=True)
    _say(f"{len(problems)} problem(s) found", err=True)
    return 1


def _store_url(text: str) -> str:
    """A store argument as a URL (a bare path is a SQLite file)."""
    if text.startswith(("sqlite://", "postgresql://", "postgres://")):
        return text
    return f"sqlite://{Path(text).absolute()}"


def state_copy(src: str, dst: str) -> int:
    """``canaryd state copy SRC DST``: every row of SRC into the empty store DST."""
    from canaryd.errors import StoreError
    from canaryd.redact import redact_dsn
    from canaryd.service.statecopy import copy_state

    try:
        counts = copy_state(_store_url(src), _store_url(dst))
    except StoreError as exc:
        _say(f"canaryd: {escape(str(exc))}", err=True)
        return 1
    rows = ", ".join(f"{n} {table}" for table, n in counts.items())
    _say(f"copied {rows} into {escape(redact_dsn(_store_url(dst)))}")
    return 0


def run(path: Path) -> int:
    """``canaryd run``: the daemon in the foreground."""
    from canaryd import logs
    from canaryd.service.daemon import run_daemon

    logs.configure(os.environ.get("CANARYD_LOG_FORMAT", "auto"))
    return anyio.run(run_daemon, path, backend_options=loop_options())


def loop_options() -> dict[str, bool]:
    """anyio backend options: uvloop when installed (a dependency wherever it is built)."""
    return {"use_uvloop": True} if importlib.util.find_spec("uvloop") else {}


if __name__ == "__main__":
    raise SystemExit(main())
