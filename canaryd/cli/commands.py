"""Command line (docs/design.md, "Command line"): the daemon, config check, and the API client.

Client commands find the daemon through ``--url`` / ``CANARYD_URL`` and the
token through ``--token-file`` / ``CANARYD_TOKEN``. No input produces a
traceback: errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from canaryd import __version__
from canaryd.errors import ClientError, ConfigError
from canaryd.terminal import escape, escape_lines

DEFAULT_CONFIG = "/etc/canaryd/canaryd.yaml"
DEFAULT_URL = "http://127.0.0.1:9879"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="canaryd", description="Canary analysis daemon.")
    p.add_argument("--version", action="version", version=f"canaryd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("run", "run the daemon in the foreground"),
        ("check", "validate the configuration"),
    ):
        c = sub.add_parser(name, help=text)
        c.add_argument("-c", "--config", default=os.environ.get("CANARYD_CONFIG", DEFAULT_CONFIG))
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--url", default=os.environ.get("CANARYD_URL", DEFAULT_URL))
    client.add_argument("--token-file", default=os.environ.get("CANARYD_TOKEN_FILE"))
    client.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="timeout of each API request",
    )
    s = sub.add_parser("status", parents=[client], help="what the daemon is doing")
    s.add_argument("canary", nargs="?", metavar="NS/NAME")
    s.add_argument("--json", action="store_true")
    r = sub.add_parser("rollout", parents=[client], help="start a rollout")
    r.add_argument("canary", metavar="NS/NAME")
    r.add_argument("--revision", required=True)
    r.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--wait", action="store_true", help="follow it; exit 0 promoted, 1 rolled back")
    r.add_argument(
        "--timeout",
        type=_duration,
        default=3600.0,
        metavar="D",
        help="with --wait: give up after D (exit 3; 4 if a rollback is decided but the router "
        "has not applied it yet), e.g. 30m",
    )
    for verb in ("promote", "abort", "pause", "resume"):
        v = sub.add_parser(verb, parents=[client], help=f"{verb} a rollout")
        v.add_argument("canary", metavar="NS/NAME")
        if verb == "promote":
            v.add_argument(
                "--force", action="store_true", help="also skip gates that are not approved"
            )
    a = sub.add_parser("approve", parents=[client], help="open a gate by hand")
    a.add_argument("canary", metavar="NS/NAME")
    a.add_argument("--gate", required=True, choices=["rollout", "traffic-increase", "promotion"])
    j = sub.add_parser("judge", help="offline statistical comparison (JSON in, JSON out)")
    j.add_argument("file", help="input JSON file, or - for stdin")
    d = sub.add_parser("demo", help="watch canaries get promoted and rolled back for real")
    d.add_argument("--scenario", choices=["healthy", "errors", "slow", "no-traffic"])
    d.add_argument("--report", metavar="FILE.html")
    d.add_argument(
        "--router",
        choices=["haproxy", "nginx", "envoy", "traefik", "caddy"],
        default="haproxy",
        help="the real proxy the traffic goes through (default haproxy)",
    )
    return p


def _duration(text: str) -> float:
    from canaryd.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``canaryd`` command."""
    args = _parser().parse_args(argv)
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit as an ignored exception
    except ClientError as exc:
        _say(f"canaryd: {escape(str(exc))}", err=True)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `canaryd status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_EXIT
    return code


SIGPIPE_EXIT = 141
"""Exit code when stdout's reader went away (as a shell reports a process killed by SIGPIPE)."""


def _say(text: str, *, err: bool = False, flush: bool = False) -> None:
    """Print a human-readable line: control characters escaped (docs/reliability.md)."""
    print(escape_lines(text), file=sys.stderr if err else sys.stdout, flush=flush)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "check":
        return check(Path(args.config))
    if args.command == "run":
        return run(Path(args.config))
    if args.command == "judge":
        from canaryd.cli.judge import judge_main

        return judge_main(args.file, sys.stdout, sys.stderr)
    if args.command == "demo":
        from canaryd.demo import main as demo_main

        return demo_main(args.scenario, args.report, router=args.router)
    return anyio.run(_client_command, args)


def check(path: Path) -> int:
    """``canaryd check``: print every problem, or a one-line summary."""
    from canaryd.config.loader import load_config, summary
    from canaryd.service.daemon import check_queries

    try:
        loaded = load_config(path)
        check_queries(loaded.settings)
    except ConfigError as exc:
        for problem in exc.problems:
            _say(escape(str(problem)), err=True)
        _say(f"{len(exc.problems)} problem(s) found", err=True)
        return 1
    for warning in loaded.warnings:
        _say(f"warning: {escape(str(warning))}", err=True)
    _say(summary(loaded))
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


# --------------------------------------------------------------------------- client


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClientError(f"cannot read token file {args.token_file}: {exc.strerror}") from exc
    return os.environ.get("CANARYD_TOKEN")


def _split(canary: str) -> str:
    ns, sep, name = canary.partition("/")
    if not sep:
        ns, name = "default", canary
    if not ns or not name or "/" in name:
        raise ClientError(f"expected NAMESPACE/NAME, got {canary!r}")
    return f"{ns}/{name}"


async def _client_command(args: argparse.Namespace) -> int:
    from canaryd.client import Client

    async with Client(args.url, _token(args), args.request_timeout) as client:
        if args.command == "status":
            return await _status(client, args)
        key = _split(args.canary)
        if args.command == "rollout":
            meta = dict(_kv(m) for m in args.metadata)
            state = await client.post(
                f"{key}/rollouts", {"revision": args.revision, "metadata": meta}
            )
            _say(f"{key}: rollout of {args.revision} started ({escape(str(state['phase']))})")
            if args.wait:
                return await _follow(client, key, args.timeout, state.get("rolloutId"))
            return 0
        path = (
            f"{key}/gates/{args.gate}/approve"
            if args.command == "approve"
            else (f"{key}/{args.command}")
        )
        body = {"force": True} if getattr(args, "force", False) else {}
        state = await client.post(path, body)
        phase, revision = escape(str(state["phase"])), escape(str(state["revision"]))
        _say(f"{key}: {phase} (revision {revision})")
        skipped = state.get("skippedGates")
        if isinstance(skipped, list) and skipped:
            _say(f"{key}: forced past gate(s) {escape(', '.join(map(str, skipped)))}")
        return 0


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ClientError(f"--metadata takes KEY=VALUE, got {text!r}")
    return key, value


async def _status(client: Any, args: argparse.Namespace) -> int:
    from canaryd.client import render_table

    if args.canary:
        data = await client.get(_split(args.canary))
        rows = [data]
    else:
        rows = (await client.get(""))["canaries"]
        data = {"canaries": rows}
    _say(json.dumps(data, indent=2) if args.json else render_table(rows))  # JSON escapes too
    return 0


FOLLOW_OUTAGE_SECONDS = 120.0
"""How long ``rollout --wait`` keeps trying while the daemon is unreachable (a restart)."""


async def _poll(client: Any, key: str, lost: list[float]) -> dict[str, Any] | None:
    """One status poll; None while the daemon is briefly unreachable.

    Raises:
        ClientError: unreachable for longer than FOLLOW_OUTAGE_SECONDS, or an error answer.
    """
    try:
        state: dict[str, Any] = await client.get(key)
    except ClientError as exc:
        if "cannot reach canaryd" not in str(exc):
            raise
        if not lost:
            lost.append(time.monotonic())
            _say(f"{key}: lost contact with canaryd; retrying ({escape(str(exc))})", err=True)
        if time.monotonic() - lost[0] > FOLLOW_OUTAGE_SECONDS:
            raise
        return None
    lost.clear()
    return state


async def _follow(client: Any, key: str, wait_for: float, rollout_id: str | None) -> int:
    """Print progress until the rollout ends; 0 promoted, 1 rolled back or replaced, 3 timeout,
    4 timeout while a rollback is decided but not applied by the router yet.

    A rollback the router has not confirmed (``routePending``) is not "rolled back": the wait
    goes on until it is (docs/reliability.md). A daemon restart during the wait is ridden out
    (the rollout resumes after it).
    """
    from canaryd.client import progress_line

    deadline, last = time.monotonic() + wait_for, ""
    lost: list[float] = []
    pending: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        state = await _poll(client, key, lost)
        if state is None:
            await anyio.sleep(1.0)
            continue
        if rollout_id and state.get("rolloutId") != rollout_id:
            rollout, revision = (
                escape(str(state.get("rolloutId"))),
                escape(str(state.get("revision"))),
            )
            _say(f"{key}: this rollout was replaced by rollout {rollout} of revision {revision}")
            return 1
        line = progress_line(state)
        if line != last:
            _say(line, flush=True)
            last = line
        pending = state if state["phase"] == "Failed" and state.get("routePending") else None
        if state["phase"] == "Succeeded":
            _say(f"{key}: promoted revision {escape(str(state['revision']))}")
            return 0
        if state["phase"] == "Failed" and pending is None:
            _say(f"{key}: rolled back: {escape(str(state['reason']))}")
            return 1
        await anyio.sleep(1.0)
    if pending is not None:
        _say(
            f"{key}: rollback decided ({escape(str(pending['reason']))}) but not applied yet "
            f"after {wait_for:g}s: the router refuses it; canaryd retries it every tick",
            err=True,
        )
        return 4
    _say(f"{key}: still {last} after {wait_for:g}s; giving up waiting", err=True)
    return 3


if __name__ == "__main__":
    raise SystemExit(main())
