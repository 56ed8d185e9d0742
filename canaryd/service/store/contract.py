"""The state store's contract: what canaryd keeps so that it survives a restart.

:class:`StateStore` is what the runner, the dispatcher and the API use;
:mod:`~canaryd.service.store.sqlite` and :mod:`~canaryd.service.store.postgres`
implement it (docs/design.md, "State").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from canaryd.core.analysis import CanaryState, CheckRecord
from canaryd.core.events import Event

if TYPE_CHECKING:
    from canaryd.service.store.retention import Retention

RELEASE = "release"
"""Settle: the routes a decision asked for were applied; its held messages may go out."""

DROP = "drop"
"""Settle: the routes a decision asked for were never applied; its held messages are deleted."""

ROLLOUT_LIMIT = 2000
"""The newest checks and events one rollout is read with, each (:meth:`StateStore.rollout`)."""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message to deliver later: an alert or a webhook call.

    Attributes:
        key: canary ``namespace/name`` (messages of one canary go out in order).
        idempotency_key: stable across retries and restarts.
        target: ``alert:<alert name>`` or ``hook:<webhook name>``.
        payload: the event (alerts) or the webhook body (hooks).
        id: row id once stored.
        attempts: delivery attempts so far.
        created: Unix time it was stored.
    """

    key: str
    idempotency_key: str
    target: str
    payload: dict[str, Any]
    id: int = 0
    attempts: int = 0
    created: float = 0.0


class StateStore(Protocol):
    """Where canaryd keeps what must survive a restart."""

    async def load_states(self) -> dict[str, CanaryState]:
        """Every stored canary state, by key."""
        ...

    async def save(
        self,
        key: str,
        state: CanaryState,
        record: CheckRecord | None,
        events: Sequence[Event],
        outbox: Sequence[OutboxMessage],
        *,
        routes: Sequence[dict[str, Any]] | None = None,
        settle: str | None = None,
    ) -> None:
        """Persist a decision atomically.

        A decision that moves traffic is saved with its ``routes`` before they are
        sent: its outbox messages are held until a later save of the canary
        settles them (``RELEASE`` once the routes were applied, ``DROP`` if they
        never were), and the routes stay recorded until then (see
        docs/reliability.md).

        Raises:
            StoreError: nothing was written.
        """
        ...

    async def load_pending(self) -> dict[str, tuple[int, list[dict[str, Any]]]]:
        """Routes saved but not yet settled, by key: (decision number, routes)."""
        ...

    async def history(self, key: str, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent check records of a canary, newest first."""
        ...

    async def events(self, key: str, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent events of a canary, newest first."""
        ...

    async def rollouts(self, key: str, limit: int = 50) -> list[dict[str, Any]]:
        """A canary's rollouts, newest first (docs/api.md, "History")."""
        ...

    async def rollout(
        self, key: str, rollout: str, limit: int = ROLLOUT_LIMIT
    ) -> dict[str, Any] | None:
        """One rollout with its checks and events, oldest first; None if not kept."""
        ...

    async def prune(self, now: float | None = None, keep: Retention | None = None) -> None:
        """Forget delivered outbox messages and the rollouts ``keep`` no longer keeps.

        Raises:
            StoreError: nothing was pruned.
        """
        ...

    async def due(self, now: float, limit: int = 100) -> list[OutboxMessage]:
        """Outbox messages to deliver now: the oldest pending one of each canary."""
        ...

    async def mark(
        self, message_id: int, status: str, *, next_at: float = 0.0, error: str | None = None
    ) -> None:
        """Record a delivery attempt of an outbox message and its new status."""
        ...

    async def outbox_stats(self) -> dict[str, Any]:
        """Counts of outbox messages by status, and the oldest pending one's age."""
        ...

    async def close(self) -> None:
        """Release the store's resources (idempotent)."""
        ...
