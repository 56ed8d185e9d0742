"""Retention: what both stores keep of past rollouts, events and delivered messages.

The rules are written once, as a plan (:mod:`canaryd.service.store.plans`) that
each store runs in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from canaryd.service.store.plans import Plan

EVENTS_KEEP = 500
"""Events kept per canary outside any rollout (config, reload, daemon events)."""

SENT_KEEP_SECONDS = 7 * 86400.0
"""How long delivered outbox messages are kept (dead letters are kept until removed by hand)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """What a store's ``prune`` keeps (the config's ``history``, docs/api.md "History").

    Attributes:
        keep: newest rollouts kept per canary.
        max_age: seconds a finished rollout is kept after it ended.
        failed_keep: newest rolled-back rollouts kept per canary.
        failed_max_age: seconds a rolled-back rollout is kept after it ended.
        checks_per_rollout: newest check records kept per rollout.
    """

    keep: int = 20
    max_age: float = 30 * 86400.0
    failed_keep: int = 50
    failed_max_age: float = 90 * 86400.0
    checks_per_rollout: int = 1000


_EXPIRED = """
SELECT key, rollout FROM (
    SELECT key, rollout, phase, COALESCE(ended, updated) AS ended,
        ROW_NUMBER() OVER (PARTITION BY key ORDER BY started DESC, updated DESC) AS n,
        ROW_NUMBER() OVER (PARTITION BY key, phase = 'Failed'
                           ORDER BY started DESC, updated DESC) AS m
    FROM rollouts) r
WHERE n > 1 AND (
    (phase = 'Failed' AND (m > ? OR ended < ?))
    OR (phase != 'Failed' AND (n > ? OR ended < ?)))
"""
"""Rollouts past their retention. The newest of a canary (``n = 1``) always stays; an
older one that never ended was superseded: its age counts from its last record."""


def prune(now: float, keep: Retention) -> Plan[None]:
    """Drop what ``keep`` no longer keeps, and sent messages older than a week.

    Every delete goes through an index: the history holds many rows per canary.
    """
    yield "DELETE FROM outbox WHERE status='sent' AND created < ?", (now - SENT_KEEP_SECONDS,)
    bounds = (keep.failed_keep, now - keep.failed_max_age, keep.keep, now - keep.max_age)
    expired = yield _EXPIRED, bounds
    for key, rollout in expired:
        for table in ("checks", "events", "rollouts"):
            yield f"DELETE FROM {table} WHERE key=? AND rollout=?", (key, rollout)
    cap = keep.checks_per_rollout
    long = yield "SELECT key, rollout FROM rollouts WHERE checks > ?", (cap,)
    for key, rollout in long:  # a long rollout keeps its newest checks and events
        for table in ("checks", "events"):
            yield from _keep_newest(table, "key=? AND rollout=?", (key, rollout), cap)
    canaries = yield "SELECT key FROM canaries", ()
    for (key,) in canaries:
        yield from _keep_newest("events", "key=? AND rollout IS NULL", (key,), EVENTS_KEEP)


def _keep_newest(table: str, where: str, args: tuple[Any, ...], n: int) -> Plan[None]:
    """Delete the rows of ``table`` matching ``where`` except the newest ``n``."""
    sql = f"SELECT id FROM {table} WHERE {where} ORDER BY id DESC LIMIT 1 OFFSET ?"
    row = yield sql, (*args, n - 1)
    if row:
        yield f"DELETE FROM {table} WHERE {where} AND id < ?", (*args, row[0][0])
