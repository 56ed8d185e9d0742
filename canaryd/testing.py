"""Fakes of canaryd's seams, for tests of logic (docs/design.md, "Seams").

Each fake satisfies its Protocol and records what it was asked, so a test can drive a
runner, the dispatcher or an adapter without a real server:

- :class:`FakeProvider` (:class:`canaryd.providers.MetricsProvider`): scripted values.
- :class:`FakeRouter` (:class:`canaryd.routers.Router`): records route requests,
  fails while ``down``.
- :class:`FakeStore` (:class:`canaryd.service.store.StateStore`): in memory, with the
  outbox's held/pending/sent life cycle.
- :class:`FakeClock`: a wall clock a test moves forward (``Services.clock``).
- :class:`FakeLoopClock` (:class:`canaryd.service.scheduler.Clock`): the scheduler's
  clock, moved by hand; its timers fire only when the test moves it past them.
- :class:`FakeHttp` (:class:`canaryd.http.HttpTransport`): records requests and answers
  with scripted responses (or raises, like an unreachable server).

Tests of real HTTP behaviour (redirects, TLS, timeouts, bounded bodies) use real servers.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from canaryd.core.analysis import CanaryState, CheckRecord, Phase
from canaryd.core.events import Event
from canaryd.errors import RouterError, WebhookError
from canaryd.http import HttpRequest, HttpResponse
from canaryd.routers import RouteRequest
from canaryd.service.store import (
    RELEASE,
    ROLLOUT_LIMIT,
    OutboxMessage,
    Retention,
    event_to_dict,
    state_from_dict,
    state_to_dict,
)

Script = list[float | Exception | None]


@dataclass
class FakeProvider:
    """Answers every query with the next value of a script (the last one repeats).

    A scripted exception is raised instead of answering; ``None`` is "no data".
    Range queries answer :attr:`series`.
    """

    values: Script = field(default_factory=lambda: [99.9])
    series: list[float] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    closed: bool = False

    async def query(self, query: str, *, budget: float) -> float | None:
        """Record the query and return (or raise) the next scripted value."""
        self.queries.append(query)
        value = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        if isinstance(value, Exception):
            raise value
        return value

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """Record the query and return :attr:`series`."""
        self.queries.append(query)
        return list(self.series)

    async def aclose(self) -> None:
        """Remember that the provider was closed."""
        self.closed = True


@dataclass
class FakeRouter:
    """Records route requests; fails like an unreachable router while ``down`` is set."""

    requests: list[RouteRequest] = field(default_factory=list)
    down: bool = False
    closed: bool = False

    async def apply(self, request: RouteRequest) -> None:
        """Record the request, or raise :class:`RouterError` while ``down``."""
        if self.down:
            raise RouterError("router lb: connection refused")
        self.requests.append(request)

    async def aclose(self) -> None:
        """Remember that the router was closed."""
        self.closed = True


@dataclass
class FakeClock:
    """Unix time plus an offset the test moves forward (backoff and ages without waiting)."""

    offset: float = 0.0
    base: Callable[[], float] = time.time

    def __call__(self) -> float:
        """Now, as the code under test sees it."""
        return self.base() + self.offset

    def advance(self, seconds: float) -> None:
        """Jump ``seconds`` into the future."""
        self.offset += seconds


@dataclass(eq=False)
class FakeTimer:
    """A callback :class:`FakeLoopClock` calls at ``when`` unless cancelled."""

    when: float
    callback: Callable[[], object]
    cancelled: bool = False

    def cancel(self) -> None:
        """Do not call it."""
        self.cancelled = True


@dataclass(eq=False)
class FakeLoopClock:
    """A monotonic clock with timers, moved by hand (the scheduler's ``clock``).

    Nothing happens until the test calls :meth:`advance`, which calls the timers due by
    then in the order of their time, the clock reading each timer's time as it is
    called; the tasks those callbacks wake run once the test yields to the event loop.
    """

    now: float = 1000.0
    _timers: list[tuple[float, int, FakeTimer]] = field(default_factory=list)
    _seq: int = 0

    def time(self) -> float:
        """Now."""
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        """Call ``callback(*args)`` once :meth:`advance` reaches ``when``."""
        timer = FakeTimer(when, lambda: callback(*args))
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, timer))
        return timer

    def next_timer(self) -> float | None:
        """When the earliest timer not cancelled is due (None: there is none)."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def advance(self, seconds: float) -> None:
        """Move ``seconds`` on, calling the timers due by then, earliest first."""
        target = self.now + seconds
        while (when := self.next_timer()) is not None and when <= target:
            _, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            timer.callback()
        self.now = target

    async def sleep(self, seconds: float) -> None:
        """Return once :meth:`advance` has moved the clock ``seconds`` on."""
        done = asyncio.get_running_loop().create_future()
        timer = self.call_at(self.now + seconds, _resolve, done)
        try:
            await done
        finally:
            timer.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class _Stored:
    message: OutboxMessage
    status: str
    next_at: float
    error: str | None = None


@dataclass
class FakeStore:
    """An in-memory :class:`~canaryd.service.store.StateStore`.

    States are kept as the JSON-shaped dicts the real store writes (so a loaded state
    is a copy, as after a restart); outbox messages go ``held`` (saved with routes),
    ``pending``, then ``sent`` or ``dead`` through :meth:`mark`.
    """

    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    logged: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    outbox: list[_Stored] = field(default_factory=list)
    pending_routes: dict[str, tuple[int, list[dict[str, Any]]]] = field(default_factory=dict)
    rollout_log: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    saves: int = 0
    closed: bool = False

    async def load_states(self) -> dict[str, CanaryState]:
        """Every stored state, by key (fresh copies)."""
        return {key: state_from_dict(data) for key, data in self.states.items()}

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
        """Keep the decision; messages saved with ``routes`` are held until settled."""
        if settle is not None:
            self._settle(key, settle)
        self.saves += 1
        self.states[key] = state_to_dict(state)
        if record is not None:
            self.records.setdefault(key, []).append(record.as_dict())
        self.logged.setdefault(key, []).extend(event_to_dict(e) for e in events)
        self._log_rollout(key, state, record, events)
        known = {s.message.idempotency_key for s in self.outbox}
        status = "pending" if routes is None else "held"
        for m in outbox:
            if m.idempotency_key not in known:
                stored = OutboxMessage(
                    m.key, m.idempotency_key, m.target, m.payload, len(self.outbox) + 1
                )
                self.outbox.append(_Stored(stored, status, 0.0))
        if routes is not None:
            self.pending_routes[key] = (state.seq, list(routes))

    def _log_rollout(
        self, key: str, state: CanaryState, record: CheckRecord | None, events: Sequence[Event]
    ) -> None:
        if not state.rollout_id:
            return
        entry = self.rollout_log.setdefault(key, {}).setdefault(
            state.rollout_id, {"id": state.rollout_id, "checks": [], "events": []}
        )
        entry.update(revision=state.revision, phase=state.phase.value, metadata=state.metadata)
        if record is not None:
            entry["checks"].append(record.as_dict())
        entry["events"].extend(event_to_dict(e) for e in events)

    def _settle(self, key: str, how: str) -> None:
        for s in list(self.outbox):
            if s.status == "held" and s.message.key == key:
                if how == RELEASE:
                    s.status = "pending"
                else:
                    self.outbox.remove(s)
        self.pending_routes.pop(key, None)

    async def load_pending(self) -> dict[str, tuple[int, list[dict[str, Any]]]]:
        """Routes saved but not yet settled, by key."""
        return dict(self.pending_routes)

    async def history(self, key: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest check records of a canary, newest first."""
        return self.records.get(key, [])[::-1][:limit]

    async def events(self, key: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest events of a canary, newest first."""
        return self.logged.get(key, [])[::-1][:limit]

    async def rollouts(self, key: str, limit: int = 50) -> list[dict[str, Any]]:
        """A canary's rollouts, newest first: id, revision, phase, outcome, metadata, checkCount.

        A subset of the real store's ``RolloutSummary`` (no times, no failed-check count).
        """
        entries = list(self.rollout_log.get(key, {}).values())[::-1][:limit]
        return [self._summary(e, current=i == 0) for i, e in enumerate(entries)]

    async def rollout(
        self, key: str, rollout: str, limit: int = ROLLOUT_LIMIT
    ) -> dict[str, Any] | None:
        """One rollout's summary with its checks and events (oldest first); None if unknown."""
        entries = self.rollout_log.get(key, {})
        if rollout not in entries:
            return None
        entry = entries[rollout]
        body = self._summary(entry, current=list(entries)[-1] == rollout)
        body["checks"], body["events"] = entry["checks"][-limit:], entry["events"][-limit:]
        return body

    @staticmethod
    def _summary(entry: dict[str, Any], *, current: bool) -> dict[str, Any]:
        outcomes = {Phase.SUCCEEDED.value: "promoted", Phase.FAILED.value: "rolled_back"}
        outcome = outcomes.get(entry["phase"]) or ("running" if current else "superseded")
        return {
            "id": entry["id"],
            "revision": entry["revision"],
            "phase": entry["phase"],
            "outcome": outcome,
            "metadata": entry["metadata"],
            "checkCount": len(entry["checks"]),
        }

    async def prune(self, now: float | None = None, keep: Retention | None = None) -> None:
        """Forget delivered messages (rollouts are all kept)."""
        self.outbox = [s for s in self.outbox if s.status != "sent"]

    async def due(self, now: float, limit: int = 100) -> list[OutboxMessage]:
        """Per canary, its oldest pending message if it is due."""
        heads: dict[str, _Stored] = {}
        for s in self.outbox:
            if s.status == "pending":
                heads.setdefault(s.message.key, s)
        due = [s for s in heads.values() if s.next_at <= now]
        return [s.message for s in due][:limit]

    async def mark(
        self, message_id: int, status: str, *, next_at: float = 0.0, error: str | None = None
    ) -> None:
        """Record a delivery attempt and the message's new status."""
        for s in self.outbox:
            if s.message.id == message_id:
                m = s.message
                s.message = OutboxMessage(
                    m.key, m.idempotency_key, m.target, m.payload, m.id, m.attempts + 1, m.created
                )
                s.status, s.next_at, s.error = status, next_at, error

    async def outbox_stats(self) -> dict[str, Any]:
        """Counts by status (the fake keeps no creation times: no oldest age)."""
        counts: dict[str, int] = {}
        for s in self.outbox:
            counts[s.status] = counts.get(s.status, 0) + 1
        return {"counts": counts, "oldest_pending": None}

    async def close(self) -> None:
        """Remember that the store was closed."""
        self.closed = True


@dataclass
class FakeHttp:
    """An :class:`~canaryd.http.HttpTransport` that records requests and scripts answers.

    ``answers`` are used in order (the last one repeats); an exception in the script is
    raised instead, e.g. ``WebhookError("host: connection refused")`` for a server that
    cannot be reached. ``handler``, when set, computes each answer from the request.
    """

    answers: list[HttpResponse | Exception] = field(
        default_factory=lambda: [HttpResponse(200, {}, b"")]
    )
    handler: Callable[[HttpRequest], HttpResponse] | None = None
    requests: list[HttpRequest] = field(default_factory=list)
    closed: bool = False

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Record the request and return (or raise) the next scripted answer."""
        if self.closed:
            raise WebhookError("transport used after aclose")
        self.requests.append(request)
        if self.handler is not None:
            return self.handler(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def aclose(self) -> None:
        """Remember that the transport was closed."""
        self.closed = True


def answer(
    status: int = 200, body: bytes = b"", headers: Mapping[str, str] | None = None
) -> HttpResponse:
    """A scripted :class:`~canaryd.http.HttpResponse` for :class:`FakeHttp`."""
    return HttpResponse(status, dict(headers or {}), body)
