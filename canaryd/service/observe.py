"""Observing: one tick's webhook calls and metric queries, gathered within its deadline.

An :class:`Observer` holds what a canary observes under one config (its webhooks
sorted by kind, its metric queries resolved) and gathers what the core's
:class:`~canaryd.core.analysis.Needs` asks for into an
:class:`~canaryd.core.analysis.Observation`: every call of the tick in one task group,
within a deadline well inside the interval (docs/design.md, "A tick").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from canaryd.config.models import CanaryConfig, WebhookSpec, WebhookType
from canaryd.config.queries import ResolvedMetric, compare_config
from canaryd.core import analysis as core
from canaryd.core.analysis import (
    CanaryState,
    CompareSeries,
    HookResult,
    MetricValue,
    Needs,
    Observation,
)
from canaryd.errors import ProviderError, ResourceError
from canaryd.service.services import Services
from canaryd.service.webhooks import call as call_webhook
from canaryd.service.webhooks import longest_call

OBSERVE_SHARE = 0.8
"""Share of the interval a tick may spend observing (metric retries included)."""

MAX_OBSERVE_SECONDS = 60.0
"""Upper bound on one tick's observation, whatever the interval."""


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


@dataclass(eq=False, slots=True)
class Observer:
    """How one canary observes under one config; a runner builds a new one when it adopts
    another config."""

    spec: CanaryConfig
    metrics: Sequence[ResolvedMetric]
    services: Services
    interrupted: bool = field(default=False, init=False)
    """The observation in flight (or the last one) was cut short by :meth:`interrupt`."""
    _observing: asyncio.Timeout | None = field(default=None, init=False)
    """The deadline of the observation in flight, for a command that cuts it short."""
    _hooks: dict[WebhookType, tuple[WebhookSpec, ...]] = field(init=False)
    _hook_limits: dict[WebhookType, float] = field(init=False)
    _plain: tuple[ResolvedMetric, ...] = field(init=False)
    _pairs: tuple[ResolvedMetric, ...] = field(init=False)

    def __post_init__(self) -> None:
        """Sort the config's webhooks and metrics the way every tick asks for them."""
        hooks = self.spec.analysis.webhooks
        self._hooks = {h.type: tuple(w for w in hooks if w.type == h.type) for h in hooks}
        self._hook_limits = {k: max(map(longest_call, ws)) for k, ws in self._hooks.items()}
        self._plain = tuple(m for m in self.metrics if m.primary_query is None)
        self._pairs = tuple(m for m in self.metrics if m.primary_query is not None)

    def interrupt(self) -> None:
        """Cut the observation in flight short (an operator's command decides instead)."""
        observing = self._observing
        if observing is not None and not observing.expired():
            self.interrupted = True
            observing.reschedule(asyncio.get_running_loop().time())

    def _budget(self) -> float:
        return min(self.spec.analysis.interval * OBSERVE_SHARE, MAX_OBSERVE_SECONDS)

    def limit(self) -> float:
        """The longest a tick may observe: its budget, or longer for a webhook whose own
        ``timeout`` (times its attempts) is longer. A hook's timeout is honoured, as in
        Flagger; the tick then waits for it and stays bounded by it (docs/flagger.md)."""
        return max((self._budget(), *self._hook_limits.values()))

    async def observe(self, need: Needs, state: CanaryState) -> Observation:
        """Gather what ``need`` asks for, concurrently, within the tick's deadline.

        Metric queries keep to the tick's budget; webhooks get their own timeout, so
        the deadline is the longest of the two (plus 5 s of slack). Every webhook
        call and metric query of the tick runs in one task group (the last one in
        the tick's own task), not a task group per kind: at thousands of ticks per
        second each task and task group costs. :attr:`interrupted` tells afterwards
        whether :meth:`interrupt` cut it short.
        """
        self.interrupted = False
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
            self._plan_hooks(calls, results, kind, slot, state)
        deadline = max((budget, *(self._hook_limits.get(k, 0.0) for k, _ in kinds))) + 5.0
        if calls:
            try:
                with contextlib.suppress(TimeoutError):  # unanswered by then counts as failed
                    async with asyncio.timeout(deadline) as self._observing:  # cheaper than anyio's
                        await gather(calls)
            finally:
                self._observing = None
        return self._observation(need, results, deadline, state)

    def _plan_hooks(
        self,
        calls: list[Callable[[], Coroutine[Any, Any, None]]],
        results: dict[str, Any],
        kind: WebhookType,
        slot: str,
        state: CanaryState,
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
                out[i] = await self._call_hook(hook, f"{slot}:{i}", state)
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

    def _observation(
        self, need: Needs, results: dict[str, Any], deadline: float, state: CanaryState
    ) -> Observation:
        """Assemble an observation; a webhook missing at the deadline counts as failed.

        A metric query missing at the deadline is canaryd's own trouble: the provider
        gives up within the budget itself, so a query still running 5 s later means
        canaryd could not run it (an overloaded event loop), and the check holds.
        """
        timeout = HookResult("deadline", False, f"no answer within {deadline:g}s")
        gates = {kind: results.get(f"gate:{kind.value}", (timeout,)) for kind in need.gates}
        closed = next(
            (k for k, r in gates.items() if not core.gate_open(self.spec, state, k, r)), None
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

    async def _call_hook(self, hook: WebhookSpec, slot: str, state: CanaryState) -> HookResult:
        key = f"{self.spec.key}:{state.rollout_id}:{state.ticks}:{slot}"
        return await call_webhook(self.services.http, self.spec, state, hook, key)

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
