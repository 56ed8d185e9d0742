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


def weight_bar(canary_weight: Any) -> str:
    """``[#####...............] 25%``: the canary's share of traffic (``-`` if not a number)."""
    weight = finite(canary_weight)
    if weight is None:
        return f"[{'.' * BAR_WIDTH}]   -"
    filled = min(max(round(weight * BAR_WIDTH / 100), 0), BAR_WIDTH)
    shown = f"{canary_weight:3d}" if isinstance(canary_weight, int) else f"{weight:3.4g}"
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {shown}%"


def progress_line(s: dict[str, Any], now: float | None = None) -> str:
    """One line of ``rollout --wait`` progress: the time (now when None), then :func:`progress`."""
    return f"{clock(now)}  {progress(s)}"


def progress(s: dict[str, Any]) -> str:
    """Where a rollout is, on one line: phase, weight, failures, why (values escaped)."""
    line = (
        f"{_key(s)} {_cell(s.get('phase')):<16} "
        f"{_cell(s.get('revision') or '-')}  {weight_bar(s.get('canaryWeight'))}  "
        f"failed {_cell(s.get('failedChecks'))}/{_cell(s.get('threshold'))}"
    )
    if s.get("iterations"):
        line += f"  iteration {_cell(s.get('iteration'))}/{_cell(s['iterations'])}"
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
    return _cell(s.get("phase")) + (" (pending)" if s.get("routePending") else "")


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
    key = _key(s)
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
    """A value from the daemon as printable text: controls escaped (:mod:`canaryd.terminal`);
    ``-`` for a value the answer lacks."""
    return "-" if value is None else escape(str(value))


def _key(s: dict[str, Any]) -> str:
    """``NAMESPACE/NAME`` of a listed canary, ``-`` for a part the answer lacks."""
    return f"{_cell(s.get('namespace'))}/{_cell(s.get('name'))}"


def last_check(s: dict[str, Any]) -> str:
    """The ``LAST CHECK`` cell: why the rollout ended or what it waits for, else the last check.

    The last check is ``pass``, or its outcome and what failed (metric, value, bound).
    """
    why = situation(s)
    if why:
        return why
    check = s.get("lastCheck")
    if not check or not isinstance(check, dict):
        return "-"
    if check.get("outcome") == "pass" or not check.get("reason"):
        return _cell(check.get("outcome", "-"))
    return f"{_cell(check.get('outcome'))}: {_cell(rounded(check['reason']))}"


def render_table(rows: list[dict[str, Any]]) -> str:
    """The ``canaryd status`` table: one canary per line, every value escaped.

    A field the answer lacks (a follower's, an older daemon's) shows as ``-``; an
    entry that is not an object is left out.
    """
    rows = [s for s in rows if isinstance(s, dict)]
    if not rows:
        return "no canaries configured"
    names = [_key(s) for s in rows]
    width = max(len("CANARY"), *(len(name) for name in names))
    phases = [phase_cell(s) for s in rows]
    wide = max(16, *(len(p) for p in phases))
    lines = [
        f"{'CANARY':<{width}}  {'PHASE':<{wide}} {'REVISION':<14} {'CANARY WEIGHT':<27} "
        f"{'FAILED':<7} WHY / LAST CHECK"
    ]
    for name, phase, s in zip(names, phases, rows, strict=True):
        failed = f"{_cell(s.get('failedChecks'))}/{_cell(s.get('threshold'))}"
        lines.append(
            f"{name:<{width}}  {phase:<{wide}} "
            f"{_cell(s.get('revision') or '-')[:14]:<14} {weight_bar(s.get('canaryWeight')):<27} "
            f"{failed:<7} {last_check(s)}"
        )
    return "\n".join(line.rstrip() for line in lines)
