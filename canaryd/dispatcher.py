"""The outbox dispatcher: delivers stored alerts and webhooks, at least once, in order.

Messages are written by the runtime in the same transaction as the decision
that caused them. The dispatcher sends, per canary, the oldest pending message
first (a later one waits until it is sent or dead), retries with exponential
backoff and jitter (tenacity's wait strategy, persisted as ``next_at``), and
dead-letters a message older than ``outbox.maxAge`` (logged as
``notification.failed``). The analysis loop never waits for any of this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from tenacity import RetryCallState, wait_exponential_jitter

from canaryd.config import Settings, read_secret
from canaryd.errors import CanarydError, StoreError, WebhookError
from canaryd.events import Event
from canaryd.http import post_json
from canaryd.runtime import Services
from canaryd.store import OutboxMessage, SqliteStore

log = structlog.get_logger()


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event stored by :func:`canaryd.store.event_to_dict`."""
    base = {"event", "level", "canary", "revision", "phase", "time"}
    return Event(
        data["event"],
        data["canary"],
        data.get("revision"),
        data.get("phase", ""),
        float(data.get("time", 0.0)),
        {k: v for k, v in data.items() if k not in base},
    )


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds to wait before attempt ``attempts + 1`` (exponential, jittered)."""
    wait = wait_exponential_jitter(
        initial=settings.outbox.initialBackoff,
        max=settings.outbox.maxBackoff,
        jitter=settings.outbox.initialBackoff,
    )
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempts)
    return float(wait(state))


@dataclass
class Dispatcher:
    """Delivers the outbox until cancelled."""

    services: Callable[[], Services]
    store: SqliteStore
    clock: Callable[[], float]
    counters: dict[str, int] = field(default_factory=lambda: {"sent": 0, "failed": 0, "dead": 0})

    async def run(self) -> None:
        """Poll for due messages and deliver them, canaries in parallel."""
        while True:
            try:
                sent = await self.drain_once()
            except StoreError as exc:
                log.error("outbox.store_failed", error=str(exc))
                sent = 0
            if not sent:
                await anyio.sleep(self.services().settings.outbox.pollInterval)

    async def drain_once(self) -> int:
        """Deliver every message due now (one per canary); return how many were tried."""
        due = await self.store.due(self.clock())
        async with anyio.create_task_group() as tg:
            for message in due:
                tg.start_soon(self._deliver_one, message)
        return len(due)

    async def _deliver_one(self, message: OutboxMessage) -> None:
        svc = self.services()
        try:
            await self.send(svc, message)
        except (CanarydError, ValueError) as exc:
            await self._failed(svc.settings, message, str(exc))
            return
        self.counters["sent"] += 1
        await self.store.mark(message.id, "sent")

    async def _failed(self, settings: Settings, message: OutboxMessage, error: str) -> None:
        now = self.clock()
        self.counters["failed"] += 1
        if now - message.created >= settings.outbox.maxAge:
            self.counters["dead"] += 1
            await self.store.mark(message.id, "dead", error=error)
            log.error(
                "notification.failed",
                target=message.target,
                canary=message.key,
                idempotency_key=message.idempotency_key,
                attempts=message.attempts + 1,
                error=error,
                dead_letter=True,
            )
            return
        delay = backoff(settings, message.attempts + 1)
        await self.store.mark(message.id, "pending", next_at=now + delay, error=error)
        log.warning(
            "notification.retrying",
            target=message.target,
            canary=message.key,
            attempts=message.attempts + 1,
            retry_in=round(delay, 2),
            error=error,
        )

    async def send(self, svc: Services, message: OutboxMessage) -> None:
        """Deliver one message once.

        Raises:
            WebhookError: not delivered (network error or non-2xx answer).
            ValueError: its target is no longer configured or a secret is unreadable.
        """
        canary = svc.settings.canary(message.key)
        kind, _, name = message.target.partition(":")
        if canary is None:
            raise ValueError(f"canary {message.key} is no longer configured")
        if kind == "hook":
            hook = next((h for h in canary.analysis.webhooks if h.name == name), None)
            if hook is None or hook.url is None:
                raise ValueError(f"webhook {name} is no longer configured")
            answer = await post_json(
                svc.session,
                hook.url,
                message.payload,
                timeout=hook.timeout,
                idempotency_key=message.idempotency_key,
                secret=read_secret(hook.secret_file, hook.secret_env),
            )
            if not answer.ok:
                raise WebhookError(f"webhook {name}: {answer.describe()}")
            return
        await self._send_alert(svc, canary.alerts, name, message)

    async def _send_alert(
        self, svc: Services, alerts: Any, name: str, message: OutboxMessage
    ) -> None:
        from canaryd.notifiers import deliver, render

        alert = next((a for a in alerts if a.name == name), None)
        notifier = svc.settings.notifiers.get(alert.notifier) if alert else None
        if notifier is None:
            raise ValueError(f"alert {name} is no longer configured")
        payload, content_type = render(
            notifier.type,
            event_from_dict(message.payload),
            channel=notifier.channel,
            username=notifier.username,
            event_id=message.idempotency_key,
        )
        await deliver(
            svc.session,
            notifier,
            payload,
            content_type,
            idempotency_key=message.idempotency_key,
            secret=read_secret(notifier.secret_file, notifier.secret_env),
        )
