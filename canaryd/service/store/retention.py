"""Retention: what the stores keep of past rollouts, events and delivered messages."""

from __future__ import annotations

from dataclasses import dataclass

EVENTS_KEEP = 500
"""Events kept per canary outside any rollout (config, reload, daemon events)."""

SENT_KEEP_SECONDS = 7 * 86400.0
"""How long delivered outbox messages are kept (dead letters are kept until removed by hand)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """What :meth:`SqliteStore.prune` keeps (the config's ``history``, docs/api.md "History").

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
