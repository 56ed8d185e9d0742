"""The async shell around the pure core: one analysis loop per canary.

A :class:`CanaryRunner` owns one canary. Each tick it asks the core what to
observe, gathers it concurrently (webhooks, metric queries) within a deadline
well inside the interval, asks the core to decide, and records the new state
together with its events and outbox messages in one transaction. A decision
that moves traffic towards the canary is recorded before its routes are sent
(and reverted if the router refuses them); a rollback is sent first, always.
When the store cannot record, failing checks still count in memory and roll
back, and are recorded once it can (docs/reliability.md, "Decisions and
state"). A :class:`~canaryd.service.scheduler.Scheduler` runs the loops: ticks keep
their cadence and never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import structlog

from canaryd.config.models import (
    CanaryConfig,
    Settings,
    WebhookSpec,
    WebhookType,
)
from canaryd.config.queries import ResolvedMetric as ResolvedMetric
from canaryd.config.queries import compare_config as compare_config
from canaryd.config.queries import resolve_metric as resolve_metric
from canaryd.config.queries import resolve_metrics as resolve_metrics
from canaryd.core import analysis as core
from canaryd.core.analysis import (
    CanaryState,
    CheckRecord,
    CompareSeries,
    Decision,
    Emit,
    HookResult,
    MetricValue,
    Needs,
    Observation,
    Route,
    RunHooks,
)
from canaryd.core.events import Event
from canaryd.errors import (
    CanarydError,
    FencedError,
    NotFoundError,
    ProviderError,
    ResourceError,
    RouterError,
    StoreError,
)
from canaryd.http import HttpTransport
from canaryd.logs import log_event
from canaryd.providers import MetricsProvider
from canaryd.routers import Router, RouteRequest
from canaryd.service.limits import out_of_resources
from canaryd.service.rollbacks import Entry as JournalEntry
from canaryd.service.rollbacks import RollbackJournal
from canaryd.service.scheduler import Scheduler
from canaryd.service.store import DROP, RELEASE, OutboxMessage, StateStore, event_to_dict
from canaryd.service.webhooks import call as call_webhook
from canaryd.service.webhooks import event_payload, longest_call
from canaryd.service.webhooks import payload as webhook_payload

log = structlog.get_logger()

OBSERVE_SHARE = 0.8
"""Share of the interval a tick may spend observing (metric retries included)."""

MAX_OBSERVE_SECONDS = 60.0
"""Upper bound on one tick's observation, whatever the interval."""

BACKLOG_KEEP = 1000
"""Decisions a canary keeps in memory while the store cannot record them (oldest dropped)."""

TAKEOVER_SECONDS = 120.0
"""How long a re-added canary's loop waits for its previous loop's last tick or command."""

UNRECORDED_GRACE_SECONDS = 60.0
"""How long a removed canary's loop, or a stopping daemon, keeps trying to record the
decisions the store could not take (then says in ``state.unrecorded_lost`` what is lost)."""

UNRECORDED_RETRY_SECONDS = 0.5
"""On stop, how often a loop tries again to record what the store did not take."""

UNRECORDED_STOP_SECONDS = 10.0
"""On stop, how long all loops together may try to record those (inside systemd's
``TimeoutStopSec=60s`` with the tick and outbox graces)."""


@dataclass(frozen=True, slots=True)
class _Pending:
    """Routes of a recorded decision not yet applied by the router."""

    seq: int
    routes: tuple[Route, ...]
    state: CanaryState
    """The state the decision recorded (shown once the routes are applied)."""


@dataclass(frozen=True, slots=True)
class _Unsaved:
    """A decision that took effect while the store could not record it."""

    state: CanaryState
    record: CheckRecord | None
    events: list[Event]
    outbox: list[OutboxMessage]


def route_to_dict(route: Route) -> dict[str, Any]:
    """A route as recorded with the decision that sends it."""
    return {
        "action": route.action,
        "primaryWeight": route.primary_weight,
        "canaryWeight": route.canary_weight,
        "match": [dict(m) for m in route.match],
    }


def route_from_dict(data: Mapping[str, Any]) -> Route:
    """A route recorded by :func:`route_to_dict`."""
    return Route(
        data["action"],
        int(data["primaryWeight"]),
        int(data["canaryWeight"]),
        tuple(data.get("match", ())),
    )


def _router_error(decision: Decision) -> str:
    """The router's error in a decision that recorded a refused rollback."""
    return next(
        (
            str(e.event.fields.get("error"))
            for e in decision.effects
            if isinstance(e, Emit) and e.event.name in ("router.failed", "rollback.pending")
        ),
        "the router refused it",
    )


def _rollback_why(decision: Decision) -> tuple[str, Mapping[str, Any]]:
    """The reason and ``rollout.rolled_back`` fields of a decision that rolls back."""
    for effect in decision.effects:
        if isinstance(effect, Emit) and effect.event.name == "rollout.rolled_back":
            return decision.state.reason or "", effect.event.fields
    return decision.state.reason or "", decision.state.rollback_fields


def first_delay(key: str, interval: float) -> float:
    """Seconds from the start of a canary's loop to its first tick, in ``[0, interval)``.

    The share of the interval comes from a hash of the key, so the first ticks
    of thousands of loops started together (a daemon restart with rollouts in
    progress) spread evenly over one interval instead of all firing at once,
    and a canary keeps the same share every time.
    """
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return interval * int.from_bytes(digest, "big") / 2**64


async def gather(calls: Sequence[Callable[[], Coroutine[Any, Any, None]]]) -> None:
    """Run the calls concurrently and return once all are done; the last runs in this task.

    The calls live in one task group, an asyncio one: anyio's (4.x) gives each
    task a cancel scope and an event of its own, which cost ~50 us per tick
    (a fifth of a tick's CPU without its HTTP requests) at thousands of ticks
    per second. Cancelling the caller (the tick's deadline, shutdown) cancels
    every call; a call that raises cancels the others, as in any task group.

    Raises:
        ExceptionGroup: a call raised.
    """
    async with asyncio.TaskGroup() as tg:
        for call in calls[:-1]:
            tg.create_task(call())
        await calls[-1]()


def freeze_heap() -> None:
    """Keep the objects that live as long as the daemon out of the garbage collector's way.

    Call once the config is loaded and the runners are built: everything
    allocated so far (config models, runners, their metrics) moves to the
    permanent generation, so full collections no longer walk 10,000 canaries'
    worth of objects while ticks wait.
    """
    gc.collect()
    gc.freeze()


@dataclass
class Services:
    """What runners share: HTTP session, adapters, store, clock."""

    settings: Settings
    session: HttpTransport  # outgoing HTTP of routers, webhooks, notifiers
    providers: Mapping[str, MetricsProvider]
    routers: Mapping[str, Router]
    store: StateStore
    clock: Callable[[], float] = time.time
    on_change: Callable[[str, CanaryState], None] = lambda key, state: None
    journal: RollbackJournal | None = None
    """Where rollbacks are written before they are sent (docs/reliability.md)."""
    epoch: Callable[[], int | None] = lambda: None
    """The leader lease's epoch, put in router idempotency keys (docs/ha.md); None: no lease."""
    leading: Callable[[], bool] = lambda: True
    """Whether this replica may act (it holds the leader lease, docs/ha.md); routes are not
    sent otherwise."""


@dataclass
class CanaryRunner:
    """The analysis loop and command entry point of one canary."""

    spec: CanaryConfig
    state: CanaryState
    services: Services
    metrics: list[ResolvedMetric] = field(default_factory=list)
    last_tick: float = 0.0
    next_at: float = 0.0
    """When the next tick is due (the event loop's clock, ``anyio.current_time()``); kept by
    the scheduler."""

    def __post_init__(self) -> None:
        """Resolve metric queries once; they change only with the config."""
        self.metrics = resolve_metrics(self.services.settings, self.spec)
        self._index()
        # asyncio's: a free lock is taken without a trip through the event loop or
        # anyio's task lookups (~4 % of a saturated daemon's CPU)
        self._lock = asyncio.Lock()
        self._next: tuple[CanaryConfig, list[ResolvedMetric], Services] | None = None
        self._woken = False  # woken before being scheduled: the first tick is due at once
        # the deadline of the observation in flight, for a command that cuts it short
        self._observing: asyncio.Timeout | None = None
        self._interrupted = False
        self._on_wake: Callable[[], None] | None = None  # set by schedule()
        self._backlog: list[_Unsaved] = []  # decisions the store could not record yet
        self._pending: _Pending | None = None  # recorded routes the router has not confirmed
        self._settle: str | None = None  # owed to the store by the next save of this canary
        self._predecessor: CanaryRunner | None = None  # the loop this one replaces (a reload)
        self._retired = False  # removed by a reload: decides nothing more
        self._draining = False  # removed with a rollback pending: retries only that rollback
        self._on_drained: Callable[[], None] | None = None
        self._drain_until = 0.0  # a removed loop's unrecorded decisions: given up after this
        self._lost_rollback: JournalEntry | None = None  # sent before a restart, unrecorded
        self._seq = 0  # number of the last decision made, shown or not yet (routes pending)
        self.last_record: CheckRecord | None = None
        """The newest check record this runner applied (None: read it from the store)."""

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return self.spec.key

    @property
    def version(self) -> int:
        """Decisions made so far (recorded, or waiting for the store); stored with the state."""
        return max(self.state.seq, self._seq)

    def reconfigure(
        self, spec: CanaryConfig, settings: Settings, services: Services | None = None
    ) -> None:
        """Adopt a changed config (and the services built for it), keeping the rollout.

        A tick or command in flight finishes with the config it started with (it
        never observes with one and decides with the other); the new one applies
        from the next tick or command on.

        Raises:
            TemplateError: the new config's queries cannot be rendered.
        """
        metrics = resolve_metrics(settings, spec)
        self._next = (spec, metrics, services or self.services)
        if not self._lock.locked():
            self._adopt()

    def _adopt(self) -> None:
        """Switch to the config :meth:`reconfigure` left, if any (under the tick lock)."""
        if self._next is not None:
            (self.spec, self.metrics, self.services), self._next = self._next, None
            self._index()

    def _index(self) -> None:
        """Sort the config's webhooks and metrics the way every tick asks for them."""
        hooks = self.spec.analysis.webhooks
        self._hooks = {h.type: tuple(w for w in hooks if w.type == h.type) for h in hooks}
        self._hook_limits = {k: max(map(longest_call, ws)) for k, ws in self._hooks.items()}
        self._plain = tuple(m for m in self.metrics if m.primary_query is None)
        self._pairs = tuple(m for m in self.metrics if m.primary_query is not None)

    def wake(self) -> None:
        """Run the next tick now (after a command) instead of at the next interval."""
        if self._on_wake is None:
            self._woken = True
        else:
            self._on_wake()

    # ------------------------------------------------------------------ loop

    @property
    def interval(self) -> float:
        """Seconds between ticks."""
        return self.spec.analysis.interval

    def schedule(self, scheduler: Scheduler, first: float | None = None) -> None:
        """Put this canary's loop on ``scheduler``, its first tick ``first`` seconds from now.

        By default the first tick comes after :func:`first_delay` (at once if woken
        before), so the first ticks of thousands of loops started together spread
        over one interval.
        """
        delay = first_delay(self.key, self.interval) if first is None else first
        delay = 0.0 if self._woken else delay
        self._woken = False
        self._on_wake = scheduler.add(self, delay)

    async def safe_tick(self) -> None:
        """One tick; any error is logged and the loop goes on."""
        try:
            await self.tick()
        except CanarydError as exc:
            log.error("tick.failed", error=str(exc))
        except Exception:  # a bug must not stop the other canaries
            log.exception("tick.crashed")

    async def tick(self) -> None:
        """Observe, decide, route, persist."""
        async with self._lock:
            if not await self._prepare():
                return
            if self._draining:
                await self._drain()
                return
            if self._lost_rollback is not None:
                await self._rollback_again()
                return
            self.last_tick = self.services.clock()
            structlog.contextvars.bind_contextvars(
                canary=self.spec.name,
                namespace=self.spec.namespace,
                revision=self.state.revision,
                phase=self.state.phase.value,
            )
            if core.pending_route(self.state) is not None:
                await self._retry_pending_route()
                return  # the tick after the router confirmed it goes on from there
            await self._catch_up()
            if self._pending is not None and not await self._send_pending(None):
                return
            need = core.needs(self.spec, self.state)
            if not need.anything:
                return
            self._interrupted = False
            obs = await self.observe(need)
            if self._interrupted:
                return  # an operator's abort/pause/promote decides instead; nothing is counted
            decision = core.decide(self.spec, self.state, obs, self.services.clock())
            await self._commit(decision)

    async def command(
        self, fn: Callable[[CanaryState, float], Decision], *, interrupt: bool = False
    ) -> CanaryState:
        """Apply an operator command (a pure core function) and persist it.

        A command waits for the tick in flight. With ``interrupt`` (abort, pause,
        promote) it first cuts short the tick's observation, which a webhook's own
        timeout may stretch to minutes: that tick then decides nothing and counts
        nothing, and the command applies at once (docs/flagger.md).

        A route still waiting for the router (a rollback, a promote) is tried first, so
        that a command never builds on traffic that has not gone back to the primary.

        Raises:
            CommandError: the command does not fit the current state.
            NotFoundError: the canary was removed from the config meanwhile.
            RouterError: the router refused the command's route; nothing changed,
                except that a refused rollback or promote stays pending (retried
                every tick).
            StoreError: it could not be persisted (nothing changed, except that a
                rollback command still rolled the traffic back).
        """
        observing = self._observing
        if interrupt and observing is not None and not observing.expired():
            self._interrupted = True
            observing.reschedule(asyncio.get_running_loop().time())
        async with self._lock:
            if not await self._prepare() or self._draining:
                raise NotFoundError(f"no canary {self.key} (removed from the config)")
            if self._lost_rollback is not None:
                await self._rollback_again()
            if core.pending_route(self.state) is not None:
                await self._retry_pending_route()
            decision = fn(self.state, self.services.clock())
            if not decision.effects:
                return self.state  # a no-op (the same revision started again)
            await self._commit(decision, raise_store_errors=True, command=True)
        self.wake()
        return self.state

    async def _prepare(self) -> bool:
        """Under the lock: adopt a new config; take over from the loop this one replaces.

        Returns:
            False if this loop was removed (it decides nothing more), or its
            predecessor's last tick did not end in time (try again next tick).
        """
        if self._retired:
            return False
        self._adopt()
        pred = self._predecessor
        if pred is None:
            return True
        try:
            async with asyncio.timeout(TAKEOVER_SECONDS):
                await pred._lock.acquire()
        except TimeoutError:
            log.error("reload.takeover_late", canary=self.spec.name, namespace=self.spec.namespace)
            return False
        try:  # the state after the previous loop's last decision, recorded or not
            pred._retired = True
            self.state, self._backlog, self._pending, self._settle, self._seq = (
                pred.state,
                pred._backlog,
                pred._pending,
                pred._settle,
                pred._seq,
            )
            self._predecessor = None
        finally:
            pred._lock.release()
        self.services.on_change(self.key, self.state)
        return True

    def succeed(self, predecessor: CanaryRunner) -> None:
        """Continue the canary of a loop a reload removed (see docs/reliability.md).

        The loop's state is read only once the predecessor's tick or command in
        flight has ended, so a tick committed after the reload is not lost.
        """
        predecessor._retired = True
        predecessor._draining = False  # its pending rollback is this loop's now
        self._predecessor = predecessor
        self.state = predecessor.state

    def retire(self, on_drained: Callable[[], None] | None = None) -> bool:
        """Decide nothing more (removed by a reload); a tick in flight still ends.

        A canary whose rollback the router has not applied yet keeps ticking, only
        to send that rollback until the router confirms it; one whose decisions the
        store has not recorded yet (or with a tick in flight that may leave some)
        keeps ticking to record them, for :data:`UNRECORDED_GRACE_SECONDS` at most.
        Then it calls ``on_drained`` (docs/reliability.md, "A canary removed with a
        rollback pending"). A pending ``promote`` is not retried: the event
        ``reload.promote_abandoned`` says so.

        Returns:
            Whether the loop keeps ticking for its pending rollback or unrecorded work.
        """
        route = core.pending_route(self.state)
        where = {"canary": self.spec.name, "namespace": self.spec.namespace}
        if route is not None and route.action == "promote":
            log.error("reload.promote_abandoned", **where, revision=self.state.revision)
        rollback = route is not None and route.action == "rollback"
        if not (rollback or self._lock.locked() or self._backlog or self._settle):
            self._retired = True
            return False
        self._draining, self._on_drained = True, on_drained
        self._drain_until = self.services.clock() + UNRECORDED_GRACE_SECONDS
        if rollback:
            log.error(
                "reload.rollback_pending",
                **where,
                detail="removed from the config; its rollback is retried until the router "
                "applies it",
            )
        return True

    async def _drain(self) -> None:
        """Retry the pending rollback of a removed canary, record what the store has not;
        retire once the router took the rollback and the store the rest (or its time ran out).
        """
        rollback = core.pending_route(self.state) is not None
        await self._catch_up()
        if rollback:
            await self._retry_pending_route()
            if core.pending_route(self.state) is not None:
                return
            log.info(
                "reload.rollback_applied", canary=self.spec.name, namespace=self.spec.namespace
            )
        if self._backlog or self._settle:
            if self.services.clock() < self._drain_until:
                return
            self.unrecorded_lost("removed from the config")
        self._draining, self._retired = False, True
        if self._on_drained is not None:
            self._on_drained()

    async def close(self, within: float = UNRECORDED_STOP_SECONDS) -> None:
        """At stop: try to record what the store has not (``within`` seconds at most), and
        say in ``state.unrecorded_lost`` what it still could not."""
        if not (self._backlog or self._settle) or self._retired:
            return  # a retired loop's successor owns its backlog
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within), self._lock:
                await self._catch_up()
                while self._backlog or self._settle:  # until it can, or the time is up
                    await asyncio.sleep(UNRECORDED_RETRY_SECONDS)
                    await self._catch_up()
        if self._backlog or self._settle:
            self.unrecorded_lost("daemon stopping")

    def unrecorded_lost(self, why: str) -> None:
        """Log the decisions this loop gives up recording (it stops owning them)."""
        log.error(
            "state.unrecorded_lost",
            canary=self.spec.name,
            namespace=self.spec.namespace,
            reason=why,
            unrecorded=len(self._backlog),
            seqs=[u.state.seq for u in self._backlog],
            failed_checks=self.state.failed_checks,
            phase=self.state.phase.value,
        )

    @property
    def settled(self) -> bool:
        """Idle, with everything it decided recorded and routed: the store alone tells its state."""
        return not (
            self._lock.locked() or self._backlog or self._pending or self._settle or self._draining
        )

    def recover(self, entry: JournalEntry | None) -> None:
        """Take the newest journalled rollback of this canary (read at start): one the
        store has not recorded is decided again before anything else (docs/reliability.md,
        "A rollback the store never recorded")."""
        if (
            entry is not None
            and entry.rollout == self.state.rollout_id
            and entry.seq > self.state.seq
            and self.state.active
        ):
            self._lost_rollback = entry

    async def _rollback_again(self) -> None:
        """Send and record again the rollback the store lost to a restart."""
        entry, self._lost_rollback = self._lost_rollback, None
        assert entry is not None
        decision = core.rollback_again(
            self.spec, self.state, self.services.clock(), entry.reason, entry.fields
        )
        log.warning(
            "rollback.unrecorded_resent",
            canary=self.spec.name,
            namespace=self.spec.namespace,
            revision=self.state.revision,
            reason=entry.reason,
        )
        await self._commit(decision)

    async def _journal(self, state: CanaryState, reason: str, fields: Mapping[str, Any]) -> None:
        """Write a rollback to the journal before it is sent (a no-op without a journal)."""
        journal = self.services.journal
        if journal is not None:
            entry = JournalEntry(self.key, state.rollout_id, self.version + 1, reason, dict(fields))
            await journal.record(entry)

    async def _catch_up(self) -> None:
        """Record what the store could not take before (a no-op when nothing waits)."""
        if not (self._backlog or self._settle):
            return
        try:
            await self._flush_backlog()
            if self._settle is not None:
                await self._store_save(self.state, None, [], [])
        except StoreError as exc:
            self._persist_failed(exc)

    async def start_rollout(self, revision: str, metadata: Mapping[str, str]) -> CanaryState:
        """Begin a rollout, or restart it with a new revision (see
        :func:`canaryd.core.analysis.start_rollout`)."""
        rollout_id = uuid.uuid4().hex[:12]
        return await self.command(
            lambda s, now: core.start_rollout(self.spec, s, revision, metadata, rollout_id, now)
        )

    # ------------------------------------------------------------------ observe

    def _budget(self) -> float:
        return min(self.spec.analysis.interval * OBSERVE_SHARE, MAX_OBSERVE_SECONDS)

    def observe_limit(self) -> float:
        """The longest a tick may observe: its budget, or longer for a webhook whose own
        ``timeout`` (times its attempts) is longer. A hook's timeout is honoured, as in
        Flagger; the tick then waits for it and stays bounded by it (docs/flagger.md)."""
        return max((self._budget(), *self._hook_limits.values()))

    async def observe(self, need: Needs) -> Observation:
        """Gather what ``need`` asks for, concurrently, within the tick's deadline.

        Metric queries keep to the tick's budget; webhooks get their own timeout, so
        the deadline is the longest of the two (plus 5 s of slack). Every webhook
        call and metric query of the tick runs in one task group (the last one in
        the tick's own task), not a task group per kind: at thousands of ticks per
        second each task and task group costs.
        """
        results: dict[str, Any] = {}
        budget = self._budget()
        calls: list[Callable[[], Coroutine[Any, Any, None]]] = []
        kinds = [(WebhookType.ROLLBACK, "rollback")] if need.rollback_hooks else []
        kinds += [(kind, f"gate:{kind.value}") for kind in need.gates]
        if need.pre_rollout:
            kinds.append((WebhookType.PRE_ROLLOUT, "pre"))
        if need.checks:
            kinds.append((WebhookType.ROLLOUT, "rollout"))
            self._plan_metrics(calls, results, budget)
        for kind, slot in kinds:
            self._plan_hooks(calls, results, kind, slot)
        deadline = max((budget, *(self._hook_limits.get(k, 0.0) for k, _ in kinds))) + 5.0
        if calls:
            try:
                with contextlib.suppress(TimeoutError):  # unanswered by then counts as failed
                    async with asyncio.timeout(deadline) as self._observing:  # cheaper than anyio's
                        await gather(calls)
            finally:
                self._observing = None
        return self._observation(need, results, deadline)

    def _plan_hooks(
        self,
        calls: list[Callable[[], Coroutine[Any, Any, None]]],
        results: dict[str, Any],
        kind: WebhookType,
        slot: str,
    ) -> None:
        """Add a call per webhook of ``kind``; ``results[slot]`` is set once all have answered.

        Most canaries have no webhooks of most kinds: their slot is filled at once.
        """
        chosen = self._hooks.get(kind, ())
        if not chosen:
            results[slot] = ()
            return
        out: list[HookResult] = [HookResult(h.name, False) for h in chosen]
        pending = [len(chosen)]

        def call(i: int, hook: WebhookSpec) -> Callable[[], Coroutine[Any, Any, None]]:
            async def one() -> None:
                out[i] = await self._call_hook(hook, f"{slot}:{i}")
                pending[0] -= 1
                if not pending[0]:
                    results[slot] = tuple(out)

            return one

        calls += [call(i, hook) for i, hook in enumerate(chosen)]

    def _plan_metrics(
        self,
        calls: list[Callable[[], Coroutine[Any, Any, None]]],
        results: dict[str, Any],
        budget: float,
    ) -> None:
        """Add a call per metric query; ``results["metrics"/"compare"]`` once all have answered."""
        plain, pairs = self._plain, self._pairs
        values: list[MetricValue] = [
            MetricValue(m.spec.name, None, dry_run=m.spec.dryRun) for m in plain
        ]
        series: list[CompareSeries] = [CompareSeries(compare_config(m.spec)) for m in pairs]
        pending = [len(plain) + len(pairs)]

        def finish() -> None:
            pending[0] -= 1
            if not pending[0]:
                results["metrics"], results["compare"] = tuple(values), tuple(series)

        async def one(i: int, m: ResolvedMetric) -> None:
            values[i] = await self._query(m, budget)
            finish()

        async def both(i: int, m: ResolvedMetric) -> None:
            series[i] = await self._query_range(m, budget)
            finish()

        if not pending[0]:
            results["metrics"], results["compare"] = (), ()
        calls += [partial(one, i, m) for i, m in enumerate(plain)]
        calls += [partial(both, i, m) for i, m in enumerate(pairs)]

    def _observation(self, need: Needs, results: dict[str, Any], deadline: float) -> Observation:
        """Assemble an observation; a webhook missing at the deadline counts as failed.

        A metric query missing at the deadline is canaryd's own trouble: the provider
        gives up within the budget itself, so a query still running 5 s later means
        canaryd could not run it (an overloaded event loop), and the check holds.
        """
        timeout = HookResult("deadline", False, f"no answer within {deadline:g}s")
        gates = {kind: results.get(f"gate:{kind.value}", (timeout,)) for kind in need.gates}
        closed = next(
            (k for k, r in gates.items() if not core.gate_open(self.spec, self.state, k, r)), None
        )
        late = "canaryd did not finish the query within the tick's deadline"
        if "metrics" in results:
            metrics, compare = results["metrics"], results["compare"]
        else:
            metrics = tuple(
                MetricValue(m.spec.name, None, error=late, dry_run=m.spec.dryRun, own=True)
                for m in self._plain
            )
            compare = tuple(
                CompareSeries(compare_config(m.spec), error=late, own=True) for m in self._pairs
            )
        return Observation(
            rollback=results.get("rollback", ()),
            gate_open=closed is None,
            closed_gate=closed,
            gate_muted=closed is not None and self._muted(closed, gates[closed]),
            pre_rollout=results.get("pre", (timeout,)) if need.pre_rollout else (),
            rollout=results.get("rollout", (timeout,)) if need.checks else (),
            metrics=metrics if need.checks else (),
            compare=compare if need.checks else (),
        )

    def _muted(self, kind: WebhookType | None, results: tuple[HookResult, ...]) -> bool:
        """Whether the first gate webhook that kept the gate closed has ``muteAlert``."""
        closing = next((r.name for r in results if not r.ok), None)
        hooks = self._hooks.get(kind, ()) if kind is not None else ()
        return any(h.name == closing and h.muteAlert for h in hooks)

    async def _call_hook(self, hook: WebhookSpec, slot: str) -> HookResult:
        key = f"{self.key}:{self.state.rollout_id}:{self.state.ticks}:{slot}"
        return await call_webhook(self.services.session, self.spec, self.state, hook, key)

    async def _query_range(self, m: ResolvedMetric, budget: float) -> CompareSeries:
        """Both sides of a compare metric over its lookback window."""
        assert m.compare is not None and m.primary_query is not None
        end = self.services.clock()
        start, step = end - m.compare.lookback, m.compare.step
        provider = self.services.providers[m.provider]
        config = compare_config(m.spec)
        try:
            control = await provider.query_range(
                m.primary_query, start=start, end=end, step=step, budget=budget / 2
            )
            experiment = await provider.query_range(
                m.query, start=start, end=end, step=step, budget=budget / 2
            )
        except ProviderError as exc:
            return CompareSeries(config, error=str(exc), own=isinstance(exc, ResourceError))
        return CompareSeries(config, tuple(control), tuple(experiment))

    async def _query(self, m: ResolvedMetric, budget: float) -> MetricValue:
        bounds = m.spec.thresholdRange
        lo, hi = (bounds.min, bounds.max) if bounds else (None, None)
        try:
            value = await self.services.providers[m.provider].query(m.query, budget=budget)
        except ProviderError as exc:
            own = isinstance(exc, ResourceError)
            return MetricValue(
                m.spec.name, None, lo, hi, str(exc), m.spec.onNoData, m.spec.dryRun, own=own
            )
        return MetricValue(m.spec.name, value, lo, hi, None, m.spec.onNoData, m.spec.dryRun)

    # ------------------------------------------------------------------ commit

    async def _route(self, route: Route, state: CanaryState, seq: int, n: int) -> None:
        """Send one route of decision number ``seq`` (its ``n``-th).

        The key names the route itself, not only its slot: a decision re-made after a
        crash or a failed save (same number) may route differently, and a router that
        dedupes by key must not answer a rollback with the replay of an advance.
        """
        if not self.services.leading():  # a replica that lost its lease sends nothing
            raise FencedError(f"{self.key}: route not sent: this replica no longer leads")
        what = f"{route.action}:{route.primary_weight}-{route.canary_weight}"
        epoch = self.services.epoch()
        term = "" if epoch is None else f":epoch:{epoch}"
        request = RouteRequest(
            canary=self.key,
            revision=state.revision,
            action=route.action,
            primary_weight=route.primary_weight,
            canary_weight=route.canary_weight,
            idempotency_key=f"{self.key}:{state.rollout_id}:{seq}:route:{n}:{what}{term}",
            match=[dict(m) for m in route.match],
        )
        await self.services.routers[self.spec.router].apply(request)

    async def _apply_routes(self, decision: Decision, *, held: Route | None = None) -> Decision:
        """Carry out a decision's rollback route (sent before its state is recorded).

        A rollback whose route fails stays Failed with ``route_pending`` (the loop
        retries the route) at the weights the router still has (``held``: the last
        route it confirmed, by default the recorded state's), reported as pending and
        not as rolled back (:func:`canaryd.core.analysis.route_refused`). Routes towards
        the canary never come here: they are sent only once recorded
        (:meth:`_commit_forward`).
        """
        routes = [e for e in decision.effects if isinstance(e, Route)]
        for n, route in enumerate(routes):
            try:
                await self._route(route, decision.state, self.version + 1, n)
            except RouterError as exc:
                weights = (
                    (held.primary_weight, held.canary_weight)
                    if held is not None
                    else (self.state.primary_weight, self.state.canary_weight)
                )
                now = self.services.clock()
                refused = core.route_refused(
                    self.spec, decision, route.action, str(exc), now, weights=weights
                )
                assert refused is not None  # only rollbacks come here
                return refused
        return decision

    async def _retry_pending_route(self) -> None:
        """Send the route the router has not confirmed again; record what it answered.

        Confirmed, a rollback is reported as done only now (``rollout.rolled_back``,
        post-rollout hooks); refused again, ``router.failed`` is recorded and alerted.
        """
        route = core.pending_route(self.state)
        assert route is not None
        if route.action == "rollback":
            state = self.state
            await self._journal(state, state.reason or "", state.rollback_fields)
        try:
            await self._route(route, self.state, self.version + 1, 0)
        except RouterError as exc:
            failed = core.router_failed(self.spec, self.state, str(exc), self.services.clock())
            await self._commit(failed)
            return
        await self._commit(core.route_applied(self.spec, self.state, self.services.clock()))

    async def _commit(
        self,
        decision: Decision,
        *,
        raise_store_errors: bool = False,
        command: bool = False,
        held: Route | None = None,
    ) -> None:
        """Route and record a decision (see docs/reliability.md, "Decisions and state").

        A decision that moves traffic anywhere but back to the primary is recorded
        first and routed after (:meth:`_commit_forward`). Any other decision is
        routed first (a rollback always goes out) and then recorded; if the store
        cannot record it, a tick's decision still takes effect in memory and waits
        in :attr:`_backlog` until the store takes it, so failing checks keep
        counting towards the rollback whatever the store does.

        Raises:
            StoreError: (``raise_store_errors`` only) the decision could not be recorded;
                nothing changed unless it rolled traffic back.
            RouterError: (``command`` only) the router refused the command's route
                (a refused rollback or promote is recorded as pending first).
        """
        routes = tuple(e for e in decision.effects if isinstance(e, Route))
        if any(r.action != "rollback" for r in routes):
            await self._commit_forward(decision, routes, raise_store_errors, command)
            return
        rollback = bool(routes)
        if rollback:
            await self._journal(decision.state, *_rollback_why(decision))
        decision = await self._apply_routes(decision, held=held)
        if rollback and self._pending is not None:
            self._pending, self._settle = None, self._settle or DROP  # never sent: forget them
        try:
            await self._flush_backlog()
            new = await self._persist(decision)
        except StoreError as exc:
            self._persist_failed(exc)
            if raise_store_errors and not rollback:
                raise
            new = self._remember(decision)
            self._applied(decision, new)
            if raise_store_errors:
                raise StoreError(f"traffic rolled back, not yet recorded: {exc}") from exc
            return
        self._applied(decision, new)
        if command and rollback and new.route_pending:
            raise RouterError(f"rollback pending (retried every tick): {_router_error(decision)}")

    async def _commit_forward(
        self,
        decision: Decision,
        routes: tuple[Route, ...],
        raise_store_errors: bool,
        command: bool,
    ) -> None:
        """Record a decision that moves traffic, then send its routes (revert if they fail).

        Raises:
            StoreError: (``raise_store_errors`` only) it could not be recorded; nothing moved.
            RouterError: (``command`` only) the router refused its first route; the
                decision was reverted without a failed check.
        """
        before = self.state
        try:
            await self._flush_backlog()
            new = await self._persist(decision, routes)
        except StoreError as exc:  # hold: nothing recorded, nothing moves
            self._persist_failed(exc)
            if raise_store_errors:
                raise
            return
        self._pending = _Pending(new.seq, routes, new)  # shown once routed
        if await self._send_pending(before, command=command, decision=decision):
            self._applied(decision, new)

    async def _send_pending(
        self,
        before: CanaryState | None,
        *,
        command: bool = False,
        decision: Decision | None = None,
    ) -> bool:
        """Send the recorded routes not yet applied; settle them in the store.

        A ``promote`` the router answered with an error (it may have applied it) is
        not reverted: the promotion has begun (:meth:`_promote_pending`).
        Otherwise, if the router fails, the decision is reverted: a failed check on the state
        ``before`` it, at the weights of the last route the router confirmed (an
        operator command's first route refused: no failed check, and the error is
        raised); when ``before`` is unknown (after a restart) the failed check is
        on the recorded state and the routes are sent again next tick.

        Returns:
            Whether the routes were applied.

        Raises:
            RouterError: (``command`` only) the router refused the first route.
        """
        pending = self._pending
        assert pending is not None
        confirmed: Route | None = None
        try:
            for n, route in enumerate(pending.routes):
                await self._route(route, pending.state, pending.seq, n)
                confirmed = route
        except RouterError as exc:
            now = self.services.clock()
            if route.action == "promote":
                await self._promote_pending(pending, str(exc), command, decision)
                return False
            own = out_of_resources(exc)  # canaryd had no fd or memory: the check holds
            if before is None:
                await self._commit(
                    core.router_failed(self.spec, self.state, str(exc), now, own=own)
                )
                return False
            self._pending, self._settle = None, DROP
            base = replace(before, ticks=pending.state.ticks)
            if confirmed is not None:
                base = replace(
                    base,
                    primary_weight=confirmed.primary_weight,
                    canary_weight=confirmed.canary_weight,
                )
            elif command:
                await self._commit(Decision(base))
                raise
            failed = core.router_failed(self.spec, base, str(exc), now, own=own)
            await self._commit(failed, held=confirmed)
            return False
        self._pending, self._settle = None, RELEASE
        state = pending.state
        if before is None:  # resent after a restart or a reload: a later command may have
            state = self.state if self.state.seq > pending.seq else pending.state
            if state is not self.state:  # decided before, applied only now: show it
                self.state = state
                self.services.on_change(self.key, state)
        with contextlib.suppress(StoreError):  # else the next save of this canary settles
            await self._flush_backlog()
            await self._store_save(state, None, [], [])
        return True

    async def _promote_pending(
        self, pending: _Pending, error: str, command: bool, decision: Decision | None
    ) -> None:
        """Keep a promotion whose ``promote`` the router answered with an error: recorded
        (its events released) and Promoting with the route pending, retried every tick
        (docs/reliability.md).

        Raises:
            RouterError: (``command`` only) saying the promotion has begun.
        """
        self._pending, self._settle = None, RELEASE
        if decision is not None:
            for effect in decision.effects:
                if isinstance(effect, Emit):
                    log_event(effect.event)
        held = core.route_refused(
            self.spec, Decision(pending.state), "promote", error, self.services.clock()
        )
        assert held is not None
        await self._commit(held)
        if command:
            raise RouterError(f"promotion begun, promote pending (retried every tick): {error}")

    def restore(self, pending: tuple[int, list[dict[str, Any]]] | None) -> None:
        """Take the routes a previous run recorded but may not have sent (sent next tick).

        A loop that continues a removed one takes that one's instead (:meth:`succeed`).
        """
        if pending is not None and self._predecessor is None:
            seq, routes = pending
            self._pending = _Pending(seq, tuple(route_from_dict(r) for r in routes), self.state)

    async def _flush_backlog(self) -> None:
        """Record the decisions the store could not take, oldest first.

        Raises:
            StoreError: the store still cannot record them (what is left stays queued).
        """
        while self._backlog:
            u = self._backlog[0]
            await self._store_save(u.state, u.record, u.events, u.outbox)
            self._backlog.pop(0)

    async def _store_save(
        self,
        state: CanaryState,
        record: CheckRecord | None,
        events: Sequence[Event],
        outbox: Sequence[OutboxMessage],
        routes: Sequence[Route] | None = None,
    ) -> None:
        """One save of this canary, settling what an earlier one left held.

        Raises:
            StoreError: it could not be written.
        """
        await self.services.store.save(
            self.key,
            state,
            record,
            events,
            outbox,
            routes=None if routes is None else [route_to_dict(r) for r in routes],
            settle=self._settle,
        )
        self._settle = None

    def _persist_failed(self, exc: StoreError) -> None:
        log.error(
            "state.persist_failed",
            error=str(exc),
            canary=self.spec.name,
            namespace=self.spec.namespace,
            unrecorded=len(self._backlog),
        )

    async def _persist(
        self, decision: Decision, routes: Sequence[Route] | None = None
    ) -> CanaryState:
        """Save the decision (and the routes it will send) and return the state saved.

        Raises:
            StoreError: it could not be written.
        """
        new = replace(decision.state, seq=self.version + 1)
        events = [e.event for e in decision.effects if isinstance(e, Emit)]
        await self._store_save(
            new, decision.record, events, self._outbox(decision, new.seq), routes
        )
        self._seq = new.seq
        return new

    def _remember(self, decision: Decision) -> CanaryState:
        """Keep a decision the store could not record, to record it later; return its state."""
        new = replace(decision.state, seq=self.version + 1)
        self._seq = new.seq
        events = [e.event for e in decision.effects if isinstance(e, Emit)]
        self._backlog.append(
            _Unsaved(new, decision.record, events, self._outbox(decision, new.seq))
        )
        if len(self._backlog) > BACKLOG_KEEP:
            dropped = self._backlog.pop(0)
            log.error("state.unrecorded_dropped", seq=dropped.state.seq, kept=BACKLOG_KEEP)
        return new

    def _applied(self, decision: Decision, new: CanaryState) -> None:
        """The decision took effect: show it, log its events."""
        self.state = new
        if decision.record is not None:
            self.last_record = decision.record
        for effect in decision.effects:
            if isinstance(effect, Emit):
                log_event(effect.event)
        self.services.on_change(self.key, new)

    def _outbox(self, decision: Decision, version: int) -> list[OutboxMessage]:
        """Alerts, event webhooks and post-rollout hooks caused by a decision."""
        from canaryd.core.alerts import wanted

        out: list[OutboxMessage] = []
        prefix = f"{self.key}:{decision.state.rollout_id}:{version}"
        hooks = self.spec.analysis.webhooks
        for n, effect in enumerate(decision.effects):
            if isinstance(effect, RunHooks):
                for hook in (h for h in hooks if h.type == effect.type):
                    out.append(
                        OutboxMessage(
                            self.key,
                            f"{prefix}:{n}:hook:{hook.name}",
                            f"hook:{hook.name}",
                            webhook_payload(self.spec, decision.state, hook),
                        )
                    )
            if not isinstance(effect, Emit):
                continue  # event webhooks get every event, analysis.tick included
            event = effect.event
            for hook in (h for h in hooks if h.type == WebhookType.EVENT):
                body = event_payload(self.spec, decision.state, hook, event)
                body["event"] = event_to_dict(event)
                out.append(
                    OutboxMessage(
                        self.key, f"{prefix}:{n}:hook:{hook.name}", f"hook:{hook.name}", body
                    )
                )
            for a in (a for a in self.spec.alerts if wanted(a, event)):
                body = event_to_dict(event)
                out.append(
                    OutboxMessage(self.key, f"{prefix}:{n}:alert:{a.name}", f"alert:{a.name}", body)
                )
        return out
