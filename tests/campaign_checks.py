"""What the crash campaign checks at its end: verdicts, routes, delivery, messages."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path
from typing import Any

from campaign import BREACHES, NAMESPACE, Ledger, Planned, read_only
from receiver import Request

# --------------------------------------------------------------------------- invariants


def without_timestamps(value: Any) -> Any:
    """A payload without its timestamps: what identifies a message's content."""
    if isinstance(value, dict):
        return {
            k: without_timestamps(v) for k, v in value.items() if k not in ("time", "timestamp")
        }
    if isinstance(value, list):
        return [without_timestamps(v) for v in value]
    return value


def identity(request: Request) -> str:
    """A message's content identity: path plus payload without timestamps."""
    return request.path + " " + json.dumps(without_timestamps(request.json), sort_keys=True)


def keys_by_identity(requests: list[Request]) -> dict[str, set[str]]:
    """Content identity -> the idempotency keys it arrived under."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in requests:
        out[identity(r)].add(r.headers["Idempotency-Key"])
    return out


def expected_routes(healthy: bool) -> list[tuple[str, int, int]]:
    """The router calls of one rollout (first arrival order, retries folded)."""
    if healthy:
        return [("route", 75, 25), ("route", 50, 50), ("promote", 50, 50), ("route", 100, 0)]
    return [("route", 75, 25), ("rollback", 100, 0)]


def routes_of(requests: list[Request], canary: str, revision: str) -> list[tuple[str, int, int]]:
    """Distinct router calls of one rollout, in the order they first arrived."""
    seen: list[tuple[str, int, int]] = []
    for r in requests:
        b = r.json
        if r.path == "/routes" and b["canary"] == canary and b["revision"] == revision:
            call = (b["action"], b["primaryWeight"], b["canaryWeight"])
            if call not in seen:
                seen.append(call)
    return seen


def outbox_rows(db: Path) -> list[tuple[str, str, str]]:
    """(idempotency key, target, status) of every outbox row."""
    with read_only(db) as conn:
        return [tuple(row) for row in conn.execute("SELECT idem, target, status FROM outbox")]


def check_verdicts(planned: list[Planned], ledger: Ledger) -> None:
    """Healthy rollouts Succeeded; failing ones Failed at threshold for their breach."""
    wrong = []
    for p in planned:
        state = ledger.verdicts[(p.canary, p.revision)]
        want = ("Succeeded", None, 0) if p.healthy else ("Failed", BREACHES[p.breach][2], 2)
        got = (state["phase"], state["reason"], state["failedChecks"])
        weights = (state["canaryWeight"], state["primaryWeight"])
        if (got[0], weights) != (want[0], (0, 100)) or (not p.healthy and got != want):
            wrong.append((p, got, weights))
    assert not wrong, f"wrong verdicts: {wrong}"


def check_routes(planned: list[Planned], requests: list[Request]) -> None:
    """The router saw each rollout's routes in order, and ended every canary on the primary."""
    canaries = sorted({p.canary for p in planned})
    misrouted = {
        (p.canary, p.revision): got
        for p in planned
        if (got := routes_of(requests, f"{NAMESPACE}/{p.canary}", p.revision))
        != expected_routes(p.healthy)
    }
    assert not misrouted, f"router calls do not match the verdicts: {misrouted}"
    for canary in canaries:
        calls = [r.json for r in requests if r.path == "/routes"]
        last = [b for b in calls if b["canary"] == f"{NAMESPACE}/{canary}"][-1]
        assert (last["primaryWeight"], last["canaryWeight"]) == (100, 0), last


def dead_for_removal(db: Path) -> dict[str, tuple[str, str]]:
    """Dead letters of canaries a reload removed: key -> (canary, revision)."""
    with read_only(db) as conn:
        rows = conn.execute(
            "SELECT idem, key, payload FROM outbox WHERE status='dead' "
            "AND last_error LIKE '%is no longer configured%'"
        ).fetchall()
    return {idem: (key.split("/")[1], json.loads(p).get("revision")) for idem, key, p in rows}


def check_delivery(
    requests: list[Request], db: Path, excused: Collection[str] = ()
) -> list[tuple[str, str, str]]:
    """Keys and contents match one to one; every outbox row was sent and received, no other.

    ``excused``: keys of rows that may be dead instead (their canary was removed).
    """
    doubled = {k: v for k, v in keys_by_identity(requests).items() if len(v) > 1}
    assert not doubled, f"same message under different idempotency keys: {doubled}"
    contents: dict[str, set[str]] = defaultdict(set)
    for r in requests:
        contents[r.headers["Idempotency-Key"]].add(identity(r))
    reused = {k: v for k, v in contents.items() if len(v) > 1}
    assert not reused, f"one idempotency key for different messages: {reused}"
    rows = outbox_rows(db)
    received = {r.headers["Idempotency-Key"] for r in requests if r.path != "/routes"}
    lost = [row for row in rows if row[0] not in received and row[0] not in excused]
    undelivered = [row for row in rows if row[2] != "sent" and row[0] not in excused]
    phantom = received - {row[0] for row in rows}
    assert not lost, f"outbox messages never received: {lost[:10]}"
    assert not undelivered, f"outbox messages not marked sent: {undelivered[:10]}"
    assert not phantom, f"received messages the outbox never held: {sorted(phantom)[:10]}"
    return rows


def check_messages_per_rollout(
    planned: list[Planned], requests: list[Request], excused: Collection[tuple[str, str]] = ()
) -> None:
    """Each rollout alerted its start and its end, and ran its post-rollout hook.

    ``excused``: rollouts (canary, revision) some of whose messages died with their
    canary's removal.
    """
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in requests:
        body = r.json
        if r.path == "/alerts":
            seen[(body["name"], body["revision"])].add(body["event"])
        elif r.path == "/post":
            seen[(body["name"], body["revision"])].add(f"post:{body['phase']}")
    missing = {}
    for p in planned:
        end = (
            ("rollout.promoted", "post:Succeeded")
            if p.healthy
            else ("rollout.rolled_back", "post:Failed")
        )
        if (p.canary, p.revision) in excused:
            continue
        if not {"rollout.started", *end} <= seen[(p.canary, p.revision)]:
            missing[(p.canary, p.revision)] = seen[(p.canary, p.revision)]
    assert not missing, f"rollouts without their alerts or post-rollout hook: {missing}"


def check_invariants(
    planned: list[Planned],
    ledger: Ledger,
    requests: list[Request],
    db: Path,
    *,
    removals: bool = False,
) -> dict[str, Any]:
    """Assert every promise of the campaign; return the figures.

    With ``removals`` (reloads removed canaries), messages a removed canary's
    dispatcher dead-lettered as "no longer configured" are excused (counted).
    """
    dead = dead_for_removal(db) if removals else {}
    check_verdicts(planned, ledger)
    check_routes(planned, requests)
    rows = check_delivery(requests, db, dead.keys())
    check_messages_per_rollout(planned, requests, set(dead.values()))
    decreased = {rid: seq for rid, seq in ledger.failed_checks.items() if seq != sorted(seq)}
    assert not decreased, f"failedChecks decreased within a rollout: {decreased}"
    with read_only(db) as conn:
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    assert integrity == "ok", integrity

    routes = [r for r in requests if r.path == "/routes"]
    outbox = [r for r in requests if r.path != "/routes"]
    return {
        "rollouts": len(planned),
        "rollouts_succeeded": sum(p.healthy for p in planned),
        "rollouts_failed": sum(not p.healthy for p in planned),
        "wrong_verdicts": 0,
        "router_calls": len(routes),
        "router_calls_repeated_same_key": len(routes)
        - len({r.headers["Idempotency-Key"] for r in routes}),
        "messages_in_outbox": len(rows),
        "messages_delivered": len({r.headers["Idempotency-Key"] for r in outbox}),
        "deliveries": len(outbox),
        "redeliveries_same_key": len(outbox) - len({r.headers["Idempotency-Key"] for r in outbox}),
        "duplicates_under_other_keys": 0,
        "messages_lost": 0,
        **({"dead_letters_of_removed_canaries": len(dead)} if removals else {}),
        "failed_checks_decreased": 0,
        "integrity_check": integrity,
    }
