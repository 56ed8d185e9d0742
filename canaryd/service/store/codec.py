"""Rows as both stores write and read them: states, events, checks, rollouts, outbox messages.

The one place where canaryd's values become the JSON text and column values
stored (:func:`dumps`, :class:`DecisionRows`) and where stored rows become
values again (:func:`loads`, :func:`state_from_dict`, :func:`rollout_summary`,
:func:`message_from_row`), whichever store holds them (docs/design.md, "State").
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from canaryd.core.analysis import CanaryState, CheckRecord, Phase
from canaryd.core.events import Event
from canaryd.errors import StoreError
from canaryd.jsonenc import make_encoder, map_leaves
from canaryd.service.store.contract import OutboxMessage


def _finite(value: Any) -> Any:
    """A NaN or infinite float as its text (JSON has no such number); anything else as is."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def loads(text: str) -> Any:
    """The value of stored JSON (both stores read through it)."""
    return json.loads(text)


_ENCODE_FINITE = make_encoder(str, allow_nan=False)
_ENCODE = make_encoder(str)


def dumps(value: Any) -> str:
    """JSON for the store and the API: compact, NaN-safe."""
    try:  # values are almost always finite: skip the copy that map_leaves makes
        return _ENCODE_FINITE(value)
    except ValueError:
        return _ENCODE(map_leaves(value, _finite))


_STATE_FIELDS = fields(CanaryState)


def state_to_dict(state: CanaryState) -> dict[str, Any]:
    """A state as plain JSON data."""
    data = {f.name: getattr(state, f.name) for f in _STATE_FIELDS}  # asdict deep-copies
    data["approvals"] = sorted(state.approvals)
    data["metadata"] = dict(state.metadata)
    data["rollback_fields"] = dict(state.rollback_fields)
    return data


def state_from_dict(data: dict[str, Any]) -> CanaryState:
    """Rebuild a state; unknown keys (from a newer version) are ignored.

    Raises:
        StoreError: the data is not a valid state.
    """
    known = {f.name for f in fields(CanaryState)}
    try:
        kw = {k: v for k, v in data.items() if k in known}
        kw["phase"] = Phase(kw.get("phase", Phase.INITIALIZED))
        if kw.get("paused_phase"):
            kw["paused_phase"] = Phase(kw["paused_phase"])
        kw["approvals"] = frozenset(kw.get("approvals", ()))
        return CanaryState(**kw)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"stored state is invalid: {exc}") from exc


def event_to_dict(event: Event) -> dict[str, Any]:
    """An event as plain JSON data (the shape stored, alerted and served)."""
    return {
        "event": event.name,
        "level": event.level,
        "canary": event.canary,
        "revision": event.revision,
        "phase": event.phase,
        "time": event.time,
        **event.fields,
    }


@dataclass(frozen=True, slots=True)
class DecisionRows:
    """A decision as the rows it writes, JSON already encoded.

    Encoding happens in the event loop's thread, before the save is queued: the
    store's thread then runs little Python besides SQLite (which releases the
    GIL), so it seldom holds the GIL while the event loop wants it.
    """

    key: str
    state: str
    rollout: str | None
    record: tuple[float, str] | None
    events: list[tuple[str, float, str, str, str, str | None]]
    """Event rows; the last value is the rollout the event belongs to (see :func:`rollout_of`)."""
    outbox: list[tuple[str, str, str, str]]
    seq: int = 0
    routes: str | None = None
    """JSON of the routes this decision will send (its messages are held meanwhile)."""
    settle: str | None = None
    """``RELEASE`` or ``DROP`` the held messages and recorded routes of an earlier save."""
    summary: tuple[Any, ...] | None = None
    """The rollout's row in ``rollouts`` (see :func:`rollout_row`), if the state has one."""

    @classmethod
    def encode(
        cls,
        key: str,
        state: CanaryState,
        record: CheckRecord | None,
        events: Sequence[Event],
        outbox: Sequence[OutboxMessage],
        routes: Sequence[dict[str, Any]] | None = None,
        settle: str | None = None,
    ) -> DecisionRows:
        """Encode a decision (the arguments of :meth:`StateStore.save`) as its rows."""
        return cls(
            key,
            dumps(state_to_dict(state)),
            state.rollout_id,
            None if record is None else (record.time, dumps(record.as_dict())),
            [
                (key, e.time, e.name, e.level, dumps(event_to_dict(e)), rollout_of(state, e))
                for e in events
            ],
            [(m.key, m.idempotency_key, m.target, dumps(m.payload)) for m in outbox],
            state.seq,
            None if routes is None else dumps(list(routes)),
            settle,
            rollout_row(key, state, record),
        )


def rollout_of(state: CanaryState, event: Event) -> str | None:
    """The rollout an event belongs to: the state's, unless that one had ended before it."""
    if state.finished_at is not None and event.time > state.finished_at:
        return None  # e.g. a reload after a promotion: not part of that rollout's story
    return state.rollout_id


def rollout_row(key: str, state: CanaryState, record: CheckRecord | None) -> tuple[Any, ...] | None:
    """The upsert values of a rollout's summary row after a decision (None: no rollout)."""
    if state.rollout_id is None:
        return None
    return (
        key,
        state.rollout_id,
        state.revision,
        state.phase.value,
        state.reason,
        dumps(dict(state.metadata)),
        state.started_at,
        state.finished_at,
        0 if record is None else 1,
        int(record is not None and record.outcome == "fail"),
    )


_OUTCOMES = {Phase.SUCCEEDED.value: "promoted", Phase.FAILED.value: "rolled_back"}


def rollout_summary(row: tuple[Any, ...], *, current: bool) -> dict[str, Any]:
    """A ``rollouts`` row as the API shows it; an older rollout that never ended was superseded."""
    rollout, revision, phase, reason, metadata, started, ended, checks, failed = row
    outcome = _OUTCOMES.get(phase) or ("running" if current else "superseded")
    return {
        "id": rollout,
        "revision": revision,
        "outcome": outcome,
        "phase": phase,
        "reason": reason,
        "metadata": loads(metadata),
        "startedAt": started,
        "endedAt": ended,
        "checkCount": checks,
        "failedCheckCount": failed,
    }


def message_from_row(row: tuple[Any, ...]) -> OutboxMessage:
    """An outbox row ``(id, key, idem, target, payload, attempts, created)`` as a message."""
    message_id, key, idem, target, payload, attempts, created = row
    return OutboxMessage(
        key, idem, target, loads(payload), int(message_id), int(attempts), float(created)
    )
