"""The async shell around the pure core: one analysis loop per canary.

A :class:`CanaryRunner` owns one canary. Each tick it asks the core what to
observe, gathers it concurrently (webhooks, metric queries) within a deadline
well inside the interval, asks the core to decide, applies the routes, and
persists the new state together with its events and outbox messages in one
transaction. Only then does the in-memory state change: a canary never advances
on state that is not on disk. A :class:`~canaryd.scheduler.Scheduler` runs the
loops: ticks keep their cadence and never overlap.
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

import aiohttp
import structlog

from canaryd import analysis as core
from canaryd.analysis import (
    CanaryState,
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
from canaryd.config import CanaryConfig, CompareSpec, MetricSpec, Settings, WebhookSpec, WebhookType
from canaryd.errors import (
    CanarydError,
    ProviderError,
    ResourceError,
    RouterError,
    StoreError,
    TemplateError,
)
from canaryd.judgemodel import MetricConfig
from canaryd.limits import out_of_resources
from canaryd.logs import log_event
from canaryd.providers import MetricsProvider
from canaryd.routers import Router, RouteRequest
from canaryd.scheduler import Scheduler
from canaryd.store import OutboxMessage, SqliteStore, event_to_dict
from canaryd.templates import builtin_query, builtin_variables, render, template_variables
from canaryd.webhooks import call as call_webhook
from canaryd.webhooks import event_payload, longest_call
from canaryd.webhooks import payload as webhook_payload

log = structlog.get_logger()

OBSERVE_SHARE = 0.8
"""Share of the interval a tick may spend observing (metric retries included)."""

MAX_OBSERVE_SECONDS = 60.0
"""Upper bound on one tick's observation, whatever the interval."""


@dataclass(frozen=True, slots=True)
class ResolvedMetric:
    """A metric with its provider and its query rendered for one canary."""

    spec: MetricSpec
    provider: str
    query: str
    primary_query: str | None = None

    @property
    def compare(self) -> CompareSpec | None:
        """The metric's compare settings, if it is judged against the primary."""
        return self.spec.compare


def compare_config(spec: MetricSpec) -> MetricConfig:
    """The statistical judge's settings for a compare metric."""
    assert spec.compare is not None
    return spec.compare.to_config(spec.name)


def _metric_source(
    settings: Settings, canary: CanaryConfig, m: MetricSpec
) -> tuple[str, str | None, str | None]:
    """The metric's query template, the provider it names, and its mesh (built-ins only)."""
    if m.query is not None:
        return m.query, m.provider, None
    if m.templateRef is not None:
        ref = m.templateRef
        found = settings.template_for(ref, canary.namespace)
        if found is None:
            where = ref.namespace or canary.namespace
            raise TemplateError(
                f"metric {m.name}: template {ref.name!r} is not defined in namespace {where!r}"
            )
        tpl = found[1]
        return tpl.query, m.provider or tpl.provider, None
    mesh = canary.meshProvider or settings.meshProvider
    return builtin_query(m.name, mesh), m.provider, mesh


def resolve_metric(settings: Settings, canary: CanaryConfig, m: MetricSpec) -> ResolvedMetric:
    """Pick one metric's provider and render its query (both sides for a compare metric).

    Raises:
        TemplateError: the template names an unknown variable or mesh, or no provider fits.
    """
    text, provider, mesh = _metric_source(settings, canary, m)
    provider = (
        provider
        or canary.provider
        or (next(iter(settings.providers)) if len(settings.providers) == 1 else None)
    )
    if provider is None or provider not in settings.providers:
        raise TemplateError(f"metric {m.name}: no provider (set provider on the canary)")

    def rendered(template: str, target: str) -> str:
        values = template_variables(
            namespace=canary.namespace,
            name=canary.name,
            target=target,
            interval=m.interval,
            variables={**canary.variables, **m.templateVariables},
            service=canary.service_name,
            ingress=canary.ingress_name,
            route=canary.route_name,
        )
        return render(template, builtin_variables(mesh, values) if mesh else values)

    primary = None
    if m.compare is not None:
        primary = rendered(m.compare.primaryQuery or text, canary.primary_target_name)
        text = m.compare.canaryQuery or text
    return ResolvedMetric(m, provider, rendered(text, canary.target_name), primary)


def resolve_metrics(settings: Settings, canary: CanaryConfig) -> list[ResolvedMetric]:
    """Pick each metric's provider and render its query (both sides for compare metrics).

    Raises:
        TemplateError: a template names an unknown variable, or no provider fits.
    """
    return [resolve_metric(settings, canary, m) for m in canary.analysis.metrics]


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
    session: aiohttp.ClientSession
    providers: Mapping[str, MetricsProvider]
    routers: Mapping[str, Router]
    store: SqliteStore
    clock: Callable[[], float] = time.time
    on_change: Callable[[str, CanaryState], None] = lambda key, state: None


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
        self.last_record: core.CheckRecord | None = None
        """The newest check record this runner saved (None: read it from the store)."""

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return self.spec.key

    @property
    def version(self) -> int:
        """Decisions persisted so far; stored with the state, so it survives restarts."""
        return self.state.seq

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
            self._adopt()
            self.last_tick = self.services.clock()
            structlog.contextvars.bind_contextvars(
                canary=self.spec.name,
                namespace=self.spec.namespace,
                revision=self.state.revision,
                phase=self.state.phase.value,
            )
            if self.state.route_pending:
                await self._retry_rollback_route()
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

        A rollback still waiting for the router is tried first, so that a command
        never builds on traffic that has not gone back to the primary.

        Raises:
            CommandError: the command does not fit the current state.
            RouterError: the router refused the command's route; nothing changed,
                except that a refused rollback stays pending (retried every tick).
            StoreError: it could not be persisted (nothing changed).
        """
        observing = self._observing
        if interrupt and observing is not None and not observing.expired():
            self._interrupted = True
            observing.reschedule(asyncio.get_running_loop().time())
        async with self._lock:
            self._adopt()
            if self.state.route_pending:
                await self._retry_rollback_route()
            decision = fn(self.state, self.services.clock())
            if not decision.effects:
                return self.state  # a no-op (the same revision started again)
            await self._commit(decision, raise_store_errors=True, command=True)
        self.wake()
        return self.state

    async def start_rollout(self, revision: str, metadata: Mapping[str, str]) -> CanaryState:
        """Begin a rollout, or restart it with a new revision (see
        :func:`canaryd.analysis.start_rollout`)."""
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
        values: list[MetricValue] = [MetricValue(m.spec.name, None) for m in plain]
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
                MetricValue(m.spec.name, None, error=late, own=True) for m in self._plain
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
            return MetricValue(m.spec.name, None, lo, hi, str(exc), m.spec.onNoData, own)
        return MetricValue(m.spec.name, value, lo, hi, None, m.spec.onNoData)

    # ------------------------------------------------------------------ commit

    async def _route(self, route: Route, state: CanaryState, seq: int) -> None:
        # The key names the route itself, not only its slot: a decision re-made after a
        # crash or a failed save (same version) may route differently, and a router that
        # dedupes by key must not answer a rollback with the replay of an advance.
        what = f"{route.action}:{route.primary_weight}-{route.canary_weight}"
        request = RouteRequest(
            canary=self.key,
            revision=state.revision,
            action=route.action,
            primary_weight=route.primary_weight,
            canary_weight=route.canary_weight,
            idempotency_key=f"{self.key}:{state.rollout_id}:{self.version + 1}:route:{seq}:{what}",
            match=[dict(m) for m in route.match],
        )
        await self.services.routers[self.spec.router].apply(request)

    async def _apply_routes(
        self, decision: Decision, *, command: bool = False, held: Route | None = None
    ) -> Decision:
        """Carry out the decision's routes; a router failure becomes a failed check.

        A rollback whose route fails stays Failed with ``route_pending`` (the loop
        retries the route) at the weights the router still has (``held``: the
        last route it confirmed, by default the recorded state's); any other
        decision is replaced by a failed check on the state before it
        (:func:`canaryd.analysis.router_failed`), holding the weights of the last
        route the router confirmed, so nothing is recorded as applied that was not.

        Raises:
            RouterError: with ``command``, a route other than a rollback failed
                (an operator command never adds a failed check).
        """
        routes = [e for e in decision.effects if isinstance(e, Route)]
        confirmed: Route | None = None
        for seq, route in enumerate(routes):
            try:
                await self._route(route, decision.state, seq)
            except RouterError as exc:
                if decision.state.phase is core.Phase.FAILED:
                    now = self.services.clock()
                    kept = confirmed or held
                    weights = (
                        (kept.primary_weight, kept.canary_weight)
                        if kept is not None
                        else (self.state.primary_weight, self.state.canary_weight)
                    )
                    failed = core.router_failed(
                        self.spec, decision.state, str(exc), now, weights=weights
                    )
                    return Decision(
                        failed.state, decision.effects + failed.effects, decision.record
                    )
                if command and confirmed is None:
                    raise
                return await self._route_failed(decision, confirmed, exc)
            confirmed = route
        return decision

    async def _route_failed(
        self, decision: Decision, confirmed: Route | None, exc: RouterError
    ) -> Decision:
        """The state before ``decision``, at the weights the router last confirmed, judged."""
        before = replace(self.state, ticks=decision.state.ticks)
        if confirmed is not None:
            before = replace(
                before,
                primary_weight=confirmed.primary_weight,
                canary_weight=confirmed.canary_weight,
            )
        failed = core.router_failed(
            self.spec, before, str(exc), self.services.clock(), own=out_of_resources(exc)
        )
        if failed.state.phase is core.Phase.FAILED:
            return await self._apply_routes(failed, held=confirmed)
        return Decision(failed.state, failed.effects, decision.record)

    async def _retry_rollback_route(self) -> None:
        try:
            await self._route(Route("rollback", 100, 0), self.state, 0)
        except RouterError as exc:
            log.error("router.failed", error=str(exc), retrying=True)
            return
        applied = replace(self.state, route_pending=False, primary_weight=100, canary_weight=0)
        await self._commit(Decision(applied))

    async def _commit(
        self, decision: Decision, *, raise_store_errors: bool = False, command: bool = False
    ) -> None:
        """Route, persist, then adopt a decision (see the module docstring).

        Raises:
            StoreError: with ``raise_store_errors``, it could not be persisted.
            RouterError: with ``command``, the router refused the command's route
                (a refused rollback is persisted as pending first).
        """
        try:
            if any(isinstance(e, Route) and e.action != "rollback" for e in decision.effects):
                # A store that cannot record a move towards the canary must not see the
                # traffic move: the canary holds where the store says it is (read-only,
                # full, locked store). A rollback always goes out: when unsure, traffic
                # goes back to the primary, and the next tick re-decides it idempotently.
                await self._persist(decision, rehearse=True)
            decision = await self._apply_routes(decision, command=command)
            new = await self._persist(decision)
        except StoreError as exc:
            log.error(
                "state.persist_failed",
                error=str(exc),
                canary=self.spec.name,
                namespace=self.spec.namespace,
            )
            if raise_store_errors:
                raise
            return
        self.state = new
        if decision.record is not None:
            self.last_record = decision.record
        for effect in decision.effects:
            if isinstance(effect, Emit):
                log_event(effect.event)
        self.services.on_change(self.key, new)
        if command and new.route_pending:
            error = next(
                (
                    str(e.event.fields.get("error"))
                    for e in decision.effects
                    if isinstance(e, Emit) and e.event.name == "router.failed"
                ),
                "the router refused it",
            )
            raise RouterError(f"rollback pending (retried every tick): {error}")

    async def _persist(self, decision: Decision, *, rehearse: bool = False) -> CanaryState:
        """Save the decision (or only rehearse the save) and return the state saved.

        Raises:
            StoreError: it could not be written.
        """
        new = replace(decision.state, seq=self.version + 1)
        events = [e.event for e in decision.effects if isinstance(e, Emit)]
        outbox = self._outbox(decision, self.version + 1)
        store = self.services.store
        write = store.rehearse if rehearse else store.save
        await write(self.key, new, decision.record, events, outbox)
        return new

    def _outbox(self, decision: Decision, version: int) -> list[OutboxMessage]:
        """Alerts, event webhooks and post-rollout hooks caused by a decision."""
        from canaryd.notifiers import wanted

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
