"""The commands that show rollouts to people: ``status`` (once or ``--watch``), ``history``,
``events``, and how they draw what the daemon answers.

Every value from the daemon is escaped before it reaches the terminal
(:mod:`canaryd.terminal`); odd values (huge numbers, NaN, text where a number
belongs) print as they are or as ``-``, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any
from urllib.parse import quote

import anyio

from canaryd.cli.output import say as _say
from canaryd.client import (
    clock,
    finite,
    gate_flag,
    render_table,
    rounded,
    stamp,
)
from canaryd.errors import ClientError
from canaryd.terminal import escape


def canary_key(canary: str) -> str:
    """``NAMESPACE/NAME`` from what the user typed; a NAME alone is in namespace ``default``.

    Raises:
        ClientError: not a canary name.
    """
    ns, sep, name = canary.partition("/")
    if not sep:
        ns, name = "default", canary
    if not ns or not name or "/" in name:
        raise ClientError(f"expected NAMESPACE/NAME, got {canary!r}")
    return f"{ns}/{name}"


def _cell(value: Any) -> str:
    """A value from the daemon as printable text: controls escaped."""
    return escape(str(value))


async def _rows(
    client: Any, canary: str | None, roles: list[str] | None = None
) -> list[dict[str, Any]]:
    """The canaries ``status`` shows: one (with its checks and events) or all.

    With several replicas (docs/ha.md) the listing says who leads: that line goes
    to ``roles``.
    """
    if canary:
        return [await client.get(canary_key(canary))]
    body = await client.get("")
    if "role" in body and roles is not None:
        leader = _cell(body.get("leader") or "unknown")
        roles.append(f"this replica is the {_cell(body.get('role'))}; leader: {leader}")
    return _listed(body, "canaries")


async def status(client: Any, args: argparse.Namespace) -> int:
    roles: list[str] = []
    rows = await _rows(client, args.canary, roles)
    for line in roles if not args.json else ():
        _say(line)
    if args.json:
        _say(json.dumps(rows[0] if args.canary else {"canaries": rows}, indent=2))
    else:
        _say(render_detail(rows[0]) if args.canary else render_table(rows))
    return 0


CLEAR = "\x1b[H\x1b[2J"
"""Cursor home, clear screen: how ``status --watch`` redraws on a terminal."""


async def watch(client: Any, args: argparse.Namespace) -> int:
    """``status --watch``: redraw in place on a terminal, a line per change when piped.

    Runs until Ctrl-C. An unreachable daemon after the first answer (a restart) is
    shown and retried; the first request's error ends the command (exit 2).
    """
    view = Watch(tty=sys.stdout.isatty(), interval=args.interval)
    rows: list[dict[str, Any]] | None = await _rows(client, args.canary)
    while True:
        text = view.frame(rows, problem=None if rows is not None else view.problem)
        if text is not None:
            sys.stdout.write(CLEAR + text + "\n" if view.tty else text + "\n")
            sys.stdout.flush()
        await anyio.sleep(args.interval)
        try:
            rows = await _rows(client, args.canary)
        except ClientError as exc:
            if "cannot reach canaryd" not in str(exc):
                raise
            rows, view.problem = None, f"lost contact with canaryd; retrying ({exc})"


async def history(client: Any, key: str, args: argparse.Namespace) -> int:
    """``canaryd history`` and ``canaryd events``: past rollouts, or a canary's events."""
    if args.command == "history":
        try:
            data = await client.get(f"{key}/rollouts?limit={args.limit}")
        except ClientError as exc:
            if "(HTTP 405)" not in str(exc):  # 405: a daemon from before the history API
                raise
            events = _listed(await client.get(key), "events")
            data = {"rollouts": rollouts_from_events(events)}
        rollouts = _listed(data, "rollouts")
        _say(json.dumps(data, indent=2) if args.json else render_history(rollouts))
        return 0
    path = f"{key}/rollouts/{quote(args.rollout, safe='')}" if args.rollout else key
    events = _listed(await client.get(path), "events")
    _say(json.dumps(events, indent=2) if args.json else render_events(events, ticks=args.ticks))
    return 0


def _listed(data: dict[str, Any], field: str, *, strict: bool = True) -> list[dict[str, Any]]:
    """The objects listed under ``field`` of an answer (none when not ``strict`` and absent).

    Raises:
        ClientError: (``strict`` only) the answer has no such list (not a canaryd of this
            version).
    """
    items = data.get(field)
    if not isinstance(items, list):
        if not strict:
            return []
        raise ClientError(f"the daemon's answer has no {field!r} list")
    return [item for item in items if isinstance(item, dict)]


def render_detail(s: dict[str, Any]) -> str:
    """``canaryd status NS/NAME``: the table line, times, and the last check metric by metric."""
    lines = [render_table([s])]
    lines.append(f"started {stamp(s.get('startedAt'))}  finished {stamp(s.get('finishedAt'))}")
    checks = _listed(s, "checks", strict=False)
    if checks:
        check = checks[0]
        lines.append(f"last check {stamp(check.get('time'))}: {_cell(check.get('outcome', '-'))}")
        lines.extend(f"  {metric_line(m)}" for m in _listed(check, "metrics", strict=False))
    return "\n".join(lines)


def _number(value: Any) -> str:
    number = finite(value)
    return _cell(value) if number is None else f"{number:.4g}"


def _measured(raw: Any) -> float | None:
    """A metric value as the API writes it (a number, ``"inf"``, ``"NaN"``); None for no data."""
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            return None
    if isinstance(raw, float) and math.isinf(raw):
        return raw
    return finite(raw)


def metric_line(m: dict[str, Any]) -> str:
    """One metric of a check: its value against its condition, and whether it held.

    ``no data`` when the provider returned nothing; a dry-run metric is marked as such
    (judged and shown, never failing a check: docs/design.md, dry-run metrics).
    """
    value, low, high = _measured(m.get("value")), finite(m.get("min")), finite(m.get("max"))
    bounds = [f"min {_number(low)}" if low is not None else "", ""]
    bounds[1] = f"max {_number(high)}" if high is not None else ""
    condition = " ".join(b for b in bounds if b) or "no bounds"
    if m.get("error"):
        shown, verdict = "error", f"error: {_cell(m['error'])}"
    elif value is None:  # null, NaN (as the API writes it) or nothing a number can be
        shown, verdict = "no data", "no data"
    else:
        shown = _number(value)
        out = (low is not None and value < low) or (high is not None and value > high)
        verdict = "out of range" if out else "ok"
    dry = "  (dry run)" if m.get("dryRun") else ""
    return f"{_cell(m.get('name', '?'))} {shown} ({condition}): {verdict}{dry}"


class Watch:
    """What ``status --watch`` prints each refresh: a whole screen, or the changed lines."""

    def __init__(self, *, tty: bool, interval: float) -> None:
        """Remember the output kind; nothing shown yet."""
        self.tty = tty
        self.interval = interval
        self.problem: str | None = None
        self._seen: dict[str, str] = {}
        self._said: str | None = None
        self._headed = False

    def frame(self, rows: list[dict[str, Any]] | None, problem: str | None = None) -> str | None:
        """The text of this refresh, or None when a pipe has nothing new to read."""
        if self.tty:
            head = f"{clock()}  every {self.interval:g}s  (Ctrl-C to stop)"
            body = _cell(problem) if rows is None else render_table(rows)
            return f"{head}\n\n{body}"
        if rows is None:
            said, self._said = self._said, problem
            return None if problem == said else f"{clock()}  {_cell(problem)}"
        self._said = None
        table = render_table(rows).split("\n")
        fresh = [f"{clock()}  {line}" for line in table[1:] if self._changed(line)]
        if not fresh:
            return None
        if not self._headed:
            self._headed = True
            fresh.insert(0, f"{'TIME':<8}  {table[0]}")
        return "\n".join(fresh)

    def _changed(self, line: str) -> bool:
        key = line.split(" ", 1)[0]
        if self._seen.get(key) == line:
            return False
        self._seen[key] = line
        return True


def render_history(rollouts: list[dict[str, Any]]) -> str:
    """``canaryd history``: one past rollout per line, newest first, with why it ended.

    The id is what ``canaryd events --rollout`` takes.
    """
    if not rollouts:
        return "no rollouts recorded"
    ids = [_cell(r.get("id") or "-") for r in rollouts]
    width = max(len("ID"), *(len(i) for i in ids))
    lines = [
        f"{'ID':<{width}}  {'STARTED':<19}  {'REVISION':<14} {'OUTCOME':<12} {'DURATION':>8}"
        "  FAILED/CHECKS  REASON"
    ]
    for rid, r in zip(ids, rollouts, strict=True):
        checks = f"{_cell(r.get('failedCheckCount', 0))}/{_cell(r.get('checkCount', 0))}"
        took = duration(r.get("startedAt"), r.get("endedAt"))
        lines.append(
            f"{rid:<{width}}  {stamp(r.get('startedAt')):<19}  "
            f"{_cell(r.get('revision') or '-')[:14]:<14} {_cell(r.get('outcome', '-')):<12} "
            f"{took:>8}  {checks:<13}  {_cell(rounded(r.get('reason') or '-'))}"
        )
    return "\n".join(line.rstrip() for line in lines)


def duration(start: Any, end: Any) -> str:
    """``1h02m``, ``4m05s`` or ``12s`` from two Unix times; ``-`` when either is missing."""
    begin, finish = finite(start), finite(end)
    if begin is None or finish is None or abs(finish - begin) > 1e12:
        return "-"
    seconds = max(0, round(finish - begin))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


_EVENT_FIELDS = ("reason", "metric", "value", "min", "max", "gate", "error", "webhook")


def event_line(e: dict[str, Any]) -> str:
    """One event: local time, name, revision, phase, weights, then what it is about."""
    head = (
        f"{stamp(e.get('time'))}  {_cell(e.get('event', '?')):<22} "
        f"{_cell(e.get('revision') or '-'):<12} {_cell(e.get('phase', '-')):<16}"
    )
    if isinstance(e.get("canaryWeight"), int):
        head += f" weight {_cell(e['canaryWeight'])}%"
    shown = {**e, "gate": gate_flag(e["gate"])} if e.get("gate") is not None else e
    about = [
        f"{k}={_cell(rounded(_number(shown[k])))}" for k in _EVENT_FIELDS if e.get(k) is not None
    ]
    if e.get("dryRun"):
        about.append("(dry run)")
    return " ".join([head, *about]).rstrip()


def _event_time(e: dict[str, Any]) -> float:
    return finite(e.get("time")) or 0.0


def render_events(events: list[dict[str, Any]], *, ticks: bool = False) -> str:
    """``canaryd events``: oldest first, one per line; ``analysis.tick`` only with ``ticks``."""
    shown = [
        e for e in events if isinstance(e, dict) and (ticks or e.get("event") != "analysis.tick")
    ]
    if not shown:
        return "no events recorded"
    shown.sort(key=_event_time)
    return "\n".join(event_line(e) for e in shown)


_ENDINGS = {"rollout.promoted": "promoted", "rollout.rolled_back": "rolled_back"}


def rollouts_from_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rollouts pieced together from a canary's recent events, newest first.

    For a daemon without the history API (docs/api.md, "History"): only the
    rollouts whose events are still among the recent ones appear.
    """
    rollouts: list[dict[str, Any]] = []
    ordered = sorted(
        (e for e in events if isinstance(e, dict) and finite(e.get("time")) is not None),
        key=_event_time,
    )
    for e in ordered:
        name = e.get("event")
        if name in ("rollout.started", "rollout.restarted"):
            if rollouts and rollouts[-1]["outcome"] == "running":
                rollouts[-1]["outcome"] = "superseded"
            rollouts.append(
                {"id": "-", "revision": e.get("revision"), "outcome": "running", "reason": None}
                | {"startedAt": e["time"], "endedAt": None, "checkCount": 0, "failedCheckCount": 0}
            )
        elif rollouts and rollouts[-1]["outcome"] == "running":
            current = rollouts[-1]
            current["checkCount"] += name == "analysis.tick"
            current["failedCheckCount"] += name == "check.failed"
            if name in _ENDINGS:
                current.update(outcome=_ENDINGS[name], endedAt=e["time"], reason=e.get("reason"))
    return rollouts[::-1]
