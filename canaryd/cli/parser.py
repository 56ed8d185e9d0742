"""The ``canaryd`` command line's arguments (docs/design.md, "Command line").

:func:`build_parser` describes every subcommand; :mod:`canaryd.cli.commands`
runs them.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from canaryd import __version__

DEFAULT_CONFIG = "/etc/canaryd/canaryd.yaml"
DEFAULT_URL = "http://127.0.0.1:9879"


CANARY_HELP = "the canary, NAMESPACE/NAME; a NAME alone is in namespace 'default'"


def build_parser() -> argparse.ArgumentParser:
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
