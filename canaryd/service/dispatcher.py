"""The outbox dispatcher: delivers stored alerts and webhooks, at least once, in order.

Messages are written by the runtime in the same transaction as the decision
that caused them; the analysis loop never waits for their delivery. The
dispatcher works through them as follows:

- **Order per canary.** Only the oldest pending message of a canary is ever
  in flight; the next one waits until it is sent or dead-lettered. Canaries
  are independent: a slow or failing receiver of one canary delays no other.
- **Retries.** A failed attempt is retried with exponential backoff and
  jitter (tenacity's wait strategy), persisted as ``next_at`` so it survives
  a restart. The idempotency key is part of the stored row, so every retry,
  before or after a restart, carries the same ``Idempotency-Key``.
- **Dead letters.** A message still failing ``outbox.maxAge`` after it was
  written, or whose alert, notifier or webhook was removed from the
  configuration, is kept with status ``dead``, counted in
  :attr:`Dispatcher.counters` and logged at error as ``notification.failed``.
  A message whose whole canary is not configured waits instead (retried with
  backoff, ``notification.waiting``): a canary removed and added back across
  reloads still gets it; it dies only once ``outbox.maxAge`` old
  (docs/reliability.md, "Delivery").
- **At least once.** A receiver that got a message but whose 2xx never came
  back (timeout, crash, ``kill -9`` of canaryd) gets it again with the same
  key; receivers dedupe by ``Idempotency-Key``.
- **No secrets in errors.** Stored errors and log lines name the receiver's
  host, its status and the first bytes of its answer, never a URL's path or
  query (chat webhook tokens, signed URLs) nor a signing secret.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from canaryd import retry
from canaryd.config.models import AlertSpec, Notifier, Settings, WebhookSpec, read_secret
from canaryd.core.events import Event
from canaryd.errors import CanarydError, StoreError, WebhookError
from canaryd.http import post_json
from canaryd.notifiers import deliver, render
from canaryd.redact import redact, redact_url
from canaryd.service.services import Services
from canaryd.service.store import OutboxMessage, StateStore

log = structlog.get_logger()

BATCH = 100
"""How many canaries' head messages one poll picks up at most."""

Target = WebhookSpec | tuple[AlertSpec, Notifier]
"""What a message is delivered to: a webhook, or an alert and its notifier."""


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event stored by :func:`canaryd.service.store.event_to_dict`."""
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
    """Seconds to wait before attempt ``attempts + 1``: exponential, jittered, at most maxBackoff.

    ``initialBackoff * 2**(attempts-1)`` plus up to ``initialBackoff`` of jitter
    (:func:`canaryd.retry.jittered_exponential`, the metrics providers' spelling).
    """
    cfg = settings.outbox
    wait = retry.jittered_exponential(cfg.initialBackoff, cfg.maxBackoff)
    return min(retry.wait_after(wait, attempts), cfg.maxBackoff)


def resolve(settings: Settings, message: OutboxMessage) -> Target:
    """Find the configured target of ``message``.

    Raises:
        LookupError: the canary, alert, notifier or webhook is no longer configured
            (the message says which).
    """
    canary = settings.canary(message.key)
    if canary is None:
        raise LookupError(f"canary {message.key} is no longer configured")
    kind, _, name = message.target.partition(":")
    if kind == "hook":
        hook = next((h for h in canary.analysis.webhooks if h.name == name), None)
        if hook is None or hook.url is None:
            raise LookupError(f"webhook {name} of {message.key} is no longer configured")
        return hook
    alert = next((a for a in canary.alerts if a.name == name), None) if kind == "alert" else None
    if alert is None:
        raise LookupError(f"alert {name} of {message.key} is no longer configured")
    notifier = settings.notifiers.get(alert.notifier)
    if notifier is None:
        raise LookupError(f"notifier {alert.notifier} (alert {name}) is no longer configured")
    return alert, notifier


def _attempt_fields(message: OutboxMessage) -> dict[str, Any]:
    """Log fields naming a message and the delivery attempt just made."""
    namespace, _, name = message.key.partition("/")
    return {
        "canary": name,
        "namespace": namespace,
        "target": message.target,
        "idempotency_key": message.idempotency_key,
        "attempts": message.attempts + 1,
    }


def _describe(exc: Exception) -> str:
    if isinstance(exc, CanarydError | ValueError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


@dataclass
class Dispatcher:
    """Delivers the outbox until cancelled (see the module docstring for the guarantees).

    Attributes:
        services: returns what the daemon currently runs with (config reloads
            take effect at the next delivery).
        store: the state store holding the outbox.
        clock: Unix time, the clock the store stamps ``created`` with.
        counters: ``sent`` deliveries, ``failed`` attempts, ``dead`` letters.
    """

    services: Callable[[], Services]
    store: StateStore
    clock: Callable[[], float]
    counters: dict[str, int] = field(default_factory=lambda: {"sent": 0, "failed": 0, "dead": 0})
    _busy: set[str] = field(default_factory=set, init=False, repr=False)
    _done: anyio.Event | None = field(default=None, init=False, repr=False)
    _finished: int = field(default=0, init=False, repr=False)
    """Deliveries finished so far (a sequence number)."""
    _ended: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    """Message id -> :attr:`_finished` when its delivery ended, while a due list is read."""
    _reading: list[int] = field(default_factory=list, init=False, repr=False)
    """:attr:`_finished` when each due list read in progress started."""

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll for due messages and deliver them, canaries in parallel, until cancelled."""
        async with anyio.create_task_group() as tg:
            task_status.started()
            while True:
                try:
                    started = await self._start_due(tg)
                except StoreError as exc:
                    log.error("outbox.store_failed", error=str(exc))
                    started = 0
                if not started:
                    await self._idle(self.services().settings.outbox.pollInterval)

    async def drain_once(self) -> int:
        """Deliver every message due now (one per canary) and wait; return how many were tried.

        Raises:
            StoreError: the outbox cannot be read.
        """
        async with anyio.create_task_group() as tg:
            started = await self._start_due(tg)
        return started

    async def _start_due(self, tg: anyio.abc.TaskGroup) -> int:
        """Start delivering the head message of every canary with none in flight."""
        due = await self._read_due()
        fresh = [m for m in due if m.key not in self._busy]
        for message in fresh:
            self._busy.add(message.key)
            tg.start_soon(self._deliver_guarded, message)
        return len(fresh)

    async def _read_due(self) -> list[OutboxMessage]:
        """The due list, less the messages whose delivery ended while it was read.

        A pooled store may answer from a snapshot taken before such a delivery's mark,
        so its message can still show as due: it is left for the next read (which
        starts after the mark) instead of being sent twice (docs/reliability.md,
        "Delivery").

        Raises:
            StoreError: the outbox cannot be read.
        """
        before = self._finished
        self._reading.append(before)
        try:
            due = await self.store.due(self.clock(), limit=len(self._busy) + BATCH)
        finally:
            self._reading.remove(before)
        ended = {i for i, n in self._ended.items() if n > before}
        oldest = min(self._reading, default=self._finished)  # what reads still in progress need
        self._ended = {i: n for i, n in self._ended.items() if n > oldest}
        return [m for m in due if m.id not in ended]

    async def _idle(self, seconds: float) -> None:
        """Sleep until the poll interval passes or a delivery finishes."""
        if self._done is None:
            self._done = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._done.wait()
        self._done = anyio.Event()

    async def _deliver_guarded(self, message: OutboxMessage) -> None:
        try:
            await self._deliver_one(message)
        except StoreError as exc:  # stays pending; retried with the same key
            log.error("outbox.store_failed", error=str(exc), target=message.target)
        finally:
            self._finished += 1
            if self._reading:
                self._ended[message.id] = self._finished
            self._busy.discard(message.key)
            if self._done is not None:
                self._done.set()

    async def _deliver_one(self, message: OutboxMessage) -> None:
        svc = self.services()
        try:
            target = resolve(svc.settings, message)
        except LookupError as exc:
            reason = f"target removed from the configuration: {exc.args[0]}"
            if svc.settings.canary(message.key) is None:
                await self._unconfigured(svc.settings, message, reason)
            else:
                await self._dead(message, reason)
            return
        try:
            await self.send(svc, target, message)
        except Exception as exc:  # any failure is retried; none may stop the dispatcher
            url = target.url if isinstance(target, WebhookSpec) else target[1].url
            await self._failed(svc.settings, message, redact(_describe(exc), url))
            return
        self.counters["sent"] += 1
        await self.store.mark(message.id, "sent")

    async def _failed(self, settings: Settings, message: OutboxMessage, error: str) -> None:
        now = self.clock()
        self.counters["failed"] += 1
        deadline = message.created + settings.outbox.maxAge
        if now >= deadline:
            await self._dead(message, error)
            return
        delay = backoff(settings, message.attempts + 1)
        # The last attempt happens at maxAge, so a dead letter is never later than that.
        next_at = min(now + delay, deadline)
        await self.store.mark(message.id, "pending", next_at=next_at, error=error)
        log.warning(
            "notification.retrying",
            **_attempt_fields(message),
            retry_in=round(next_at - now, 2),
            error=error,
        )

    async def _unconfigured(self, settings: Settings, message: OutboxMessage, error: str) -> None:
        """Keep a message of a canary not configured now pending, in case a reload adds the
        canary back, until it is ``outbox.maxAge`` old (then a dead letter)."""
        now = self.clock()
        deadline = message.created + settings.outbox.maxAge
        if now >= deadline:
            await self._dead(message, error)
            return
        next_at = min(now + backoff(settings, message.attempts + 1), deadline)
        await self.store.mark(message.id, "pending", next_at=next_at, error=error)
        log.warning(
            "notification.waiting",
            **_attempt_fields(message),
            retry_in=round(next_at - now, 2),
            error=error,
        )

    async def _dead(self, message: OutboxMessage, error: str) -> None:
        await self.store.mark(message.id, "dead", error=error)
        self.counters["dead"] += 1
        log.error(
            "notification.failed",
            **_attempt_fields(message),
            age=round(self.clock() - message.created, 1),
            error=error,
            dead_letter=True,
        )

    async def send(self, svc: Services, target: Target, message: OutboxMessage) -> None:
        """Deliver one message once, to a target found by :func:`resolve`.

        Raises:
            WebhookError: not delivered (network error, timeout or non-2xx answer);
                the message has the status and the first bytes of the answer,
                never a URL's path or a secret.
            ValueError: a secret file is unreadable, or the stored event cannot be rendered.
        """
        if isinstance(target, WebhookSpec):
            await self._send_hook(svc, target, message)
        else:
            await self._send_alert(svc, target[1], message)

    async def _send_hook(self, svc: Services, hook: WebhookSpec, message: OutboxMessage) -> None:
        url = hook.url or ""
        secret = await anyio.to_thread.run_sync(read_secret, hook.secret_file, hook.secret_env)
        try:
            answer = await post_json(
                svc.http,
                url,
                message.payload,
                timeout=hook.timeout,
                idempotency_key=message.idempotency_key,
                secret=secret,
                verify_tls=not hook.disableTLS,
            )
        except WebhookError as exc:
            raise WebhookError(redact(f"webhook {hook.name} {exc}", url, secret)) from None
        if not answer.ok:
            text = f"webhook {hook.name} {redact_url(url)}: {answer.describe()}"
            raise WebhookError(redact(text, url, secret))

    async def _send_alert(self, svc: Services, notifier: Notifier, message: OutboxMessage) -> None:
        payload, content_type = render(
            notifier.type,
            event_from_dict(message.payload),
            channel=notifier.channel,
            username=notifier.username,
            event_id=message.idempotency_key,
        )
        secret = await anyio.to_thread.run_sync(
            read_secret, notifier.secret_file, notifier.secret_env
        )
        try:
            await deliver(
                svc.http,
                notifier,
                payload,
                content_type,
                idempotency_key=message.idempotency_key,
                secret=secret,
            )
        except WebhookError as exc:  # deliver already hides url_file URLs; hide the rest
            raise WebhookError(redact(str(exc), notifier.url, secret)) from None
