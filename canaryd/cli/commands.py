"""Command line (docs/design.md, "Command line"): the daemon, config check, and the API client.

Client commands find the daemon through ``--url`` / ``CANARYD_URL`` and the
token through ``--token-file`` / ``CANARYD_TOKEN``. No input produces a
traceback: errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from canaryd import __version__
from canaryd.cli.output import say as _say
from canaryd.cli.views import canary_key
from canaryd.errors import ClientError, ConfigError
from canaryd.terminal import escape

DEFAULT_CONFIG = "/etc/canaryd/canaryd.yaml"
DEFAULT_URL = "http://127.0.0.1:9879"


CANARY_HELP = "the canary, NAMESPACE/NAME; a NAME alone is in namespace 'default'"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="canaryd", description="Canary analysis daemon.")
    p.add_argument("--version", action="version", version=f"canaryd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _daemon_parsers(sub)
    client = _client_options()
    _status_parser(sub, client)
    _rollout_parser(sub, client)
    _operator_parsers(sub, client)
    _history_parsers(sub, client)
    _offline_parsers(sub)
    return p


def _daemon_parsers(sub: Any) -> None:
    """``run`` and ``check``: commands that read the configuration file."""
    for name, text in (
        ("run", "run the daemon in the foreground"),
        ("check", "validate the configuration"),
    ):
        c = sub.add_parser(name, help=text)
        c.add_argument(
            "-c",
            "--config",
            default=os.environ.get("CANARYD_CONFIG", DEFAULT_CONFIG),
            metavar="FILE",
            help=f"configuration file (default {DEFAULT_CONFIG}; environment CANARYD_CONFIG)",
        )
    sub.choices["check"].add_argument(
        "--online",
        action="store_true",
        help="also run every query once against its provider and ask each router whether"
        " its servers exist (default: offline, the file only)",
    )


def _operator_parsers(sub: Any, client: argparse.ArgumentParser) -> None:
    """The commands that change a rollout: promote, abort, pause, resume, approve."""
    for verb in ("promote", "abort", "pause", "resume"):
        v = sub.add_parser(verb, parents=[client], help=f"{verb} a rollout")
        v.add_argument("canary", metavar="NS/NAME", help=CANARY_HELP)
        if verb == "promote":
            v.add_argument(
                "--force",
                action="store_true",
                help="also skip gates that are not approved (default: refuse)",
            )
    a = sub.add_parser("approve", parents=[client], help="open a gate by hand")
    a.add_argument("canary", metavar="NS/NAME", help=CANARY_HELP)
    a.add_argument(
        "--gate",
        required=True,
        choices=["rollout", "traffic-increase", "promotion"],
        help="the gate: confirm-rollout, confirm-traffic-increase or confirm-promotion"
        " (no default; `canaryd status` names the one a rollout waits for)",
    )


def _offline_parsers(sub: Any) -> None:
    """``judge`` and ``demo``: commands that need no daemon."""
    st = sub.add_parser("state", help="the state store (docs/ha.md)")
    actions = st.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    cp = actions.add_parser("copy", help="copy all state into an empty store (canaryd stopped)")
    cp.add_argument("src", metavar="SRC", help="sqlite:///PATH, a path, or postgresql://…")
    cp.add_argument("dst", metavar="DST", help="sqlite:///PATH, a path, or postgresql://…")
    j = sub.add_parser("judge", help="offline statistical comparison (JSON in, JSON out)")
    j.add_argument("file", help="input JSON file, or - for stdin")
    d = sub.add_parser("demo", help="watch canaries get promoted and rolled back for real")
    d.add_argument(
        "--scenario",
        choices=["healthy", "errors", "slow", "no-traffic"],
        help="run only this scenario (default: all four)",
    )
    d.add_argument(
        "--report", metavar="FILE.html", help="also write an HTML report there (default: none)"
    )
    d.add_argument(
        "--router",
        choices=["haproxy", "nginx", "envoy", "traefik", "caddy"],
        default="haproxy",
        help="the real proxy the traffic goes through (default haproxy)",
    )


def _client_options() -> argparse.ArgumentParser:
    """The options every client command shares (how to reach the daemon)."""
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--url",
        default=os.environ.get("CANARYD_URL", DEFAULT_URL),
        help=f"the daemon's API (default {DEFAULT_URL}; environment CANARYD_URL)",
    )
    client.add_argument(
        "--token-file",
        default=os.environ.get("CANARYD_TOKEN_FILE"),
        metavar="FILE",
        help="file holding the API token (environment CANARYD_TOKEN_FILE; default: the"
        " token in CANARYD_TOKEN, else none: enough only with api.anonymous_read)",
    )
    client.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="timeout of each API request (default 10)",
    )
    return client


def _status_parser(sub: Any, client: argparse.ArgumentParser) -> None:
    s = sub.add_parser("status", parents=[client], help="what the daemon is doing")
    s.add_argument("canary", nargs="?", metavar="NS/NAME", help=CANARY_HELP + " (default: all)")
    s.add_argument("--json", action="store_true", help="the API's JSON (default: a table)")
    s.add_argument(
        "--watch",
        action="store_true",
        help="keep showing it: redrawn in place on a terminal, a line per change when piped;"
        " Ctrl-C ends it (default: show it once)",
    )
    s.add_argument(
        "--interval",
        type=_interval,
        default=2.0,
        metavar="SECONDS",
        help=f"with --watch: seconds between refreshes, {WATCH_MIN:g} to {WATCH_MAX:g} (default 2)",
    )


def _rollout_parser(sub: Any, client: argparse.ArgumentParser) -> None:
    r = sub.add_parser("rollout", parents=[client], help="start a rollout")
    r.add_argument("canary", metavar="NS/NAME", help=CANARY_HELP)
    r.add_argument("--revision", required=True, help="the revision to roll out")
    r.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to webhooks; repeatable (default none)",
    )
    r.add_argument(
        "--wait",
        action="store_true",
        help="follow it to its end: exit 0 promoted, 1 rolled back (default: return at once)",
    )
    r.add_argument(
        "--timeout",
        type=_duration,
        default=3600.0,
        metavar="D",
        help="with --wait: give up after D (exit 3; 4 if a rollback is decided but the router"
        " has not applied it yet), e.g. 30m (default 1h)",
    )


def _history_parsers(sub: Any, client: argparse.ArgumentParser) -> None:
    h = sub.add_parser("history", parents=[client], help="a canary's past rollouts")
    h.add_argument("canary", metavar="NS/NAME", help=CANARY_HELP)
    h.add_argument(
        "--limit",
        type=int,
        choices=range(1, 201),
        default=20,
        metavar="N",
        help="how many rollouts, newest first, 1 to 200 (default 20)",
    )
    h.add_argument("--json", action="store_true", help="the API's JSON (default: a table)")
    e = sub.add_parser("events", parents=[client], help="what happened to a canary, with times")
    e.add_argument("canary", metavar="NS/NAME", help=CANARY_HELP)
    e.add_argument(
        "--rollout",
        metavar="ID",
        help="the events of this rollout (an id from `canaryd history`; default: the latest"
        " events of the canary)",
    )
    e.add_argument(
        "--ticks",
        action="store_true",
        help="also show analysis.tick events, one per check (default: hidden)",
    )
    e.add_argument("--json", action="store_true", help="the API's JSON (default: lines)")


WATCH_MIN, WATCH_MAX = 0.5, 60.0
"""Bounds of ``status --watch --interval`` (seconds)."""


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not WATCH_MIN <= value <= WATCH_MAX:
        raise argparse.ArgumentTypeError(f"must be from {WATCH_MIN:g} to {WATCH_MAX:g} seconds")
    return value


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
    return anyio.run(_client_command, args)


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
    from canaryd.service.pgstore import redact
    from canaryd.service.statecopy import copy_state

    try:
        counts = copy_state(_store_url(src), _store_url(dst))
    except StoreError as exc:
        _say(f"canaryd: {escape(str(exc))}", err=True)
        return 1
    rows = ", ".join(f"{n} {table}" for table, n in counts.items())
    _say(f"copied {rows} into {escape(redact(_store_url(dst)))}")
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


async def _client_command(args: argparse.Namespace) -> int:
    from canaryd.cli.views import history, status, watch
    from canaryd.client import Client

    async with Client(args.url, _token(args), args.request_timeout) as client:
        if args.command == "status":
            if args.watch and args.json:
                raise ClientError("--watch draws a table; for JSON use --json without --watch")
            return await (watch(client, args) if args.watch else status(client, args))
        key = canary_key(args.canary)
        if args.command in ("history", "events"):
            return await history(client, key, args)
        if args.command == "rollout":
            meta = dict(_kv(m) for m in args.metadata)
            state = await client.post(
                f"{key}/rollouts", {"revision": args.revision, "metadata": meta}
            )
            _say(f"{key}: rollout of {args.revision} started ({escape(str(state['phase']))})")
            if args.wait:
                return await _follow(client, key, args.timeout, state.get("rolloutId"))
            return 0
        return await _operate(client, key, args)


async def _operate(client: Any, key: str, args: argparse.Namespace) -> int:
    """An operator command (promote, abort, pause, resume, approve): print the phase after it."""
    path = (
        f"{key}/gates/{args.gate}/approve" if args.command == "approve" else f"{key}/{args.command}"
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
    from canaryd.client import progress, progress_line

    deadline, last = time.monotonic() + wait_for, ""
    lost: list[float] = []
    pending: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        state = await _poll(client, key, lost)
        if state is None:
            await anyio.sleep(1.0)
            continue
        if _replaced(key, state, rollout_id):
            return 1
        now = progress(state)
        if now != last:
            _say(progress_line(state), flush=True)
            last = now
        pending = state if state["phase"] == "Failed" and state.get("routePending") else None
        ended = _ended(key, state)
        if ended is not None:
            return ended
        await anyio.sleep(1.0)
    return _gave_up(key, wait_for, last, pending)


def _replaced(key: str, state: dict[str, Any], rollout_id: str | None) -> bool:
    """Whether another rollout took the canary over (said so when it did)."""
    if not rollout_id or state.get("rolloutId") == rollout_id:
        return False
    rollout, revision = escape(str(state.get("rolloutId"))), escape(str(state.get("revision")))
    _say(f"{key}: this rollout was replaced by rollout {rollout} of revision {revision}")
    return True


def _gave_up(key: str, wait_for: float, last: str, pending: dict[str, Any] | None) -> int:
    """Say why ``--wait`` stops at its timeout: 4 for a rollback not applied yet, else 3."""
    if pending is not None:
        _say(
            f"{key}: rollback decided ({escape(str(pending['reason']))}) but not applied yet "
            f"after {wait_for:g}s: the router refuses it; canaryd retries it every tick",
            err=True,
        )
        return 4
    _say(f"{key}: still {last} after {wait_for:g}s; giving up waiting", err=True)
    return 3


def _ended(key: str, state: dict[str, Any]) -> int | None:
    """Say how a finished rollout ended: 0 promoted, 1 rolled back; None while it goes on.

    A rollback the router has not applied yet (``routePending``) has not ended:
    it is not called rolled back (docs/reliability.md).
    """
    from canaryd.client import clock, rounded

    if state["phase"] == "Succeeded":
        _say(f"{clock()}  {key}: promoted revision {escape(str(state['revision']))}")
        return 0
    if state["phase"] == "Failed" and not state.get("routePending"):
        _say(f"{clock()}  {key}: rolled back: {escape(rounded(state['reason']))}")
        return 1
    return None


if __name__ == "__main__":
    raise SystemExit(main())
