"""The ``canaryd`` client subcommands: they talk to a running daemon's HTTP API.

Client commands find the daemon through ``--url`` / ``CANARYD_URL`` and the
token through ``--token-file`` / ``CANARYD_TOKEN`` (docs/design.md, "Command line").
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import anyio

from canaryd.cli.output import say as _say
from canaryd.cli.views import canary_key
from canaryd.errors import ClientError
from canaryd.terminal import escape


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClientError(f"cannot read token file {args.token_file}: {exc.strerror}") from exc
    return os.environ.get("CANARYD_TOKEN")


async def client_command(args: argparse.Namespace) -> int:
    """Run a client subcommand (status, history, rollout, operator commands) against the API.

    Raises:
        ClientError: the daemon is unreachable or refused the request, or an
            argument is malformed.
    """
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
                return await follow(client, key, args.timeout, state.get("rolloutId"))
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


async def follow(client: Any, key: str, wait_for: float, rollout_id: str | None) -> int:
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
