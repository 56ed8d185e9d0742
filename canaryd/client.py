"""The API client used by the CLI, and how it shows canaries to people."""

from __future__ import annotations

import json
import math
import re
import time
from types import TracebackType
from typing import Any

import aiohttp

from canaryd.errors import ClientError
from canaryd.http import describe_redirect, redirect_target
from canaryd.terminal import escape

BAR_WIDTH = 20


class Client:
    """Talks to a canaryd API (``/api/v1/canaries/...``)."""

    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        """Remember the daemon's base URL and the bearer token."""
        self.base = url.rstrip("/") + "/api/v1/canaries"
        self.token = token
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        """Open the HTTP session."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def get(self, path: str) -> Any:
        """GET a canary path (``""`` lists them).

        Raises:
            ClientError: unreachable daemon or an error answer.
        """
        return await self._request("GET", path, None)

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST to a canary path with the bearer token.

        Raises:
            ClientError: unreachable daemon or an error answer.
        """
        return await self._request("POST", path, body)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        assert self._session is not None
        url = f"{self.base}/{path}" if path else self.base
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            async with self._session.request(
                method, url, json=body, headers=headers, allow_redirects=False
            ) as resp:
                text = (await resp.read()).decode("utf-8", "replace")
                status = resp.status
                if 300 <= status < 400:  # never followed: docs/reliability.md
                    target = redirect_target(url, resp.headers.get("Location"))
                    raise ClientError(f"{self.base}: {describe_redirect(status, target)}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClientError(
                f"cannot reach canaryd at {self.base}: {exc or 'timeout'}"
                " (is it running? set --url or CANARYD_URL)"
            ) from exc
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply to decode
            data = None
        if status >= 400:
            message = data.get("error", text[:200]) if isinstance(data, dict) else text[:200]
            hint = " (set CANARYD_TOKEN or --token-file)" if status == 401 else ""
            raise ClientError(f"{message} (HTTP {status}){hint}")
        if not isinstance(data, dict):  # a proxy's sign-in page, another service on the port
            raise ClientError(f"{url} did not answer like canaryd: {text[:200]!r}")
        return data


def weight_bar(canary_weight: int) -> str:
    """``[#####...............] 25%``: the canary's share of traffic."""
    filled = round(canary_weight * BAR_WIDTH / 100)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {canary_weight:3d}%"


def progress_line(s: dict[str, Any], now: float | None = None) -> str:
    """One line of ``rollout --wait`` progress: the time (now when None), then :func:`progress`."""
    return f"{clock(now)}  {progress(s)}"


def progress(s: dict[str, Any]) -> str:
    """Where a rollout is, on one line: phase, weight, failures, why (values escaped)."""
    line = (
        f"{_cell(s['namespace'])}/{_cell(s['name'])} {_cell(s['phase']):<16} "
        f"{_cell(s['revision'] or '-')}  {weight_bar(s['canaryWeight'])}  "
        f"failed {_cell(s['failedChecks'])}/{_cell(s['threshold'])}"
    )
    if s.get("iterations"):
        line += f"  iteration {_cell(s['iteration'])}/{_cell(s['iterations'])}"
    wait = waiting_for(s)
    if wait:
        line += f"  {wait}"
    if s.get("reason"):
        line += f"  last failure: {_cell(rounded(s['reason']))}"
    if s.get("routePending"):
        line += f"  {pending_note(s)}"
    return line


def pending_note(s: dict[str, Any]) -> str:
    """What a pending route means: the router has not confirmed it (docs/reliability.md)."""
    if s.get("phase") == "Failed":
        return "rollback not applied yet: the router refused it (retried every tick)"
    return "promote not confirmed by the router yet (retried every tick)"


def phase_cell(s: dict[str, Any]) -> str:
    """The ``PHASE`` cell: the phase, marked while its route waits for the router."""
    return _cell(s["phase"]) + (" (pending)" if s.get("routePending") else "")


def clock(when: float | None = None) -> str:
    """``HH:MM:SS`` of Unix time ``when`` (now when None), in local time."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() if when is None else when))


def finite(value: Any) -> float | None:
    """A number from the daemon as a finite float; None for anything else (huge, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None


def stamp(when: Any) -> str:
    """``YYYY-MM-DD HH:MM:SS`` local time of a Unix time from the daemon, ``-`` if absent."""
    seconds = finite(when)
    if seconds is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    except (OverflowError, OSError, ValueError):  # a time no calendar holds
        return "-"


_LONG_NUMBER = re.compile(r"(?<![\w.])(-?\d+\.\d{4,})(?:e[-+]?\d+)?")


def rounded(text: Any) -> str:
    """``text`` with long decimals cut to 4 significant digits (``97.23456789`` -> ``97.23``)."""
    return _LONG_NUMBER.sub(lambda m: f"{float(m[0]):.4g}", str(text))


def gate_flag(gate: Any) -> str:
    """A gate as ``canaryd approve --gate`` names it (``confirm-promotion`` -> ``promotion``)."""
    name = str(gate)
    return name.removeprefix("confirm-")


def waiting_for(s: dict[str, Any]) -> str:
    """What a running rollout waits for (a gate, a resume), with the command; else ``""``."""
    key = f"{_cell(s['namespace'])}/{_cell(s['name'])}"
    if s.get("phase") == "Paused":
        return f"paused (resume: canaryd resume {key})"
    if s.get("gate"):
        flag = _cell(gate_flag(s["gate"]))
        return f"waiting for gate {flag} (open: canaryd approve {key} --gate {flag})"
    return ""


def situation(s: dict[str, Any]) -> str:
    """Why a canary is where it is: how its rollout ended, or what it waits for, else ``""``.

    A rollback the router has not applied yet (``routePending``) is not called
    rolled back (docs/reliability.md).
    """
    phase, reason = s.get("phase"), _cell(rounded(s.get("reason") or "no reason recorded"))
    if phase == "Failed":
        if s.get("routePending"):
            return f"{pending_note(s)}; why: {reason}"
        return f"rolled back: {reason}"
    if phase == "Succeeded":
        return f"promoted {_cell(s.get('revision') or '-')}"
    return waiting_for(s)


def _cell(value: Any) -> str:
    """A value from the daemon as printable text: controls escaped (:mod:`canaryd.terminal`)."""
    return escape(str(value))


def last_check(s: dict[str, Any]) -> str:
    """The ``LAST CHECK`` cell: why the rollout ended or what it waits for, else the last check.

    The last check is ``pass``, or its outcome and what failed (metric, value, bound).
    """
    why = situation(s)
    if why:
        return why
    check = s.get("lastCheck")
    if not check:
        return "-"
    if check.get("outcome") == "pass" or not check.get("reason"):
        return _cell(check.get("outcome", "-"))
    return f"{_cell(check['outcome'])}: {_cell(rounded(check['reason']))}"


def render_table(rows: list[dict[str, Any]]) -> str:
    """The ``canaryd status`` table: one canary per line, every value escaped."""
    if not rows:
        return "no canaries configured"
    names = [f"{_cell(s['namespace'])}/{_cell(s['name'])}" for s in rows]
    width = max(len("CANARY"), *(len(name) for name in names))
    phases = [phase_cell(s) for s in rows]
    wide = max(16, *(len(p) for p in phases))
    lines = [
        f"{'CANARY':<{width}}  {'PHASE':<{wide}} {'REVISION':<14} {'CANARY WEIGHT':<27} "
        f"{'FAILED':<7} WHY / LAST CHECK"
    ]
    for name, phase, s in zip(names, phases, rows, strict=True):
        failed = f"{_cell(s['failedChecks'])}/{_cell(s['threshold'])}"
        lines.append(
            f"{name:<{width}}  {phase:<{wide}} "
            f"{_cell(s['revision'] or '-')[:14]:<14} {weight_bar(s['canaryWeight']):<27} "
            f"{failed:<7} {last_check(s)}"
        )
    return "\n".join(line.rstrip() for line in lines)


def render_detail(s: dict[str, Any]) -> str:
    """``canaryd status NS/NAME``: the table line, times, and the last check metric by metric."""
    lines = [render_table([s])]
    lines.append(f"started {stamp(s.get('startedAt'))}  finished {stamp(s.get('finishedAt'))}")
    checks = s.get("checks") or []
    if checks and isinstance(checks[0], dict):
        check = checks[0]
        lines.append(f"last check {stamp(check.get('time'))}: {_cell(check.get('outcome', '-'))}")
        lines.extend(
            f"  {metric_line(m)}" for m in check.get("metrics") or [] if isinstance(m, dict)
        )
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
