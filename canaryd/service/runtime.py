"""The async shell around the pure core: one analysis loop per canary.

A :class:`CanaryRunner` owns one canary. Each tick it asks the core what to
observe, gathers it concurrently (webhooks, metric queries) within a deadline
well inside the interval (:mod:`~canaryd.service.observe`), asks the core to
decide, and commits the decision (:mod:`~canaryd.service.commit`): the new state
is recorded together with its events and outbox messages in one transaction
(:mod:`~canaryd.service.ledger`). A decision that moves traffic towards the canary
is recorded before its routes are sent (and reverted if the router refuses them);
a rollback is sent first, always. When the store cannot record, failing checks
still count in memory and roll back, and are recorded once it can
(docs/reliability.md, "Decisions and state"). A
:class:`~canaryd.service.scheduler.Scheduler` runs the loops: ticks keep their
cadence and never overlap. Operator commands go through the same lock as the
tick; restart recovery, reload takeover, removal and stop are
:mod:`~canaryd.service.lifecycle`'s (docs/design.md, "A tick").
"""

from __future__ import annotations

import gc
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from canaryd.config.models import CanaryConfig, Settings
from canaryd.config.queries import ResolvedMetric, resolve_metrics
from canaryd.core import analysis as core
from canaryd.core.analysis import CanaryState, Decision, Needs, Observation
from canaryd.errors import CanarydError, NotFoundError
from canaryd.service.lifecycle import Lifecycle
from canaryd.service.observe import Observer
from canaryd.service.scheduler import Scheduler
from canaryd.service.services import Services

log = structlog.get_logger()


def first_delay(key: str, interval: float) -> float:
    """Seconds from the start of a canary's loop to its first tick, in ``[0, interval)``.

    The share of the interval comes from a hash of the key, so the first ticks
    of thousands of loops started together (a daemon restart with rollouts in
    progress) spread evenly over one interval instead of all firing at once,
    and a canary keeps the same share every time.
    """
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return interval * int.from_bytes(digest, "big") / 2**64


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
class CanaryRunner(Lifecycle):
    """The analysis loop and command entry point of one canary."""

    metrics: list[ResolvedMetric] = field(default_factory=list)
    last_tick: float = 0.0
    next_at: float = 0.0
    """When the next tick is due (the scheduler's clock: the event loop's in the daemon);
    kept by the scheduler."""

    def __post_init__(self) -> None:
        """Resolve metric queries once; they change only with the config."""
        super().__post_init__()
        self.metrics = resolve_metrics(self.services.settings, self.spec)
        self._index()
        self._next: tuple[CanaryConfig, list[ResolvedMetric], Services] | None = None
        self._woken = False  # woken before being scheduled: the first tick is due at once
        self._on_wake: Callable[[], None] | None = None  # set by schedule()

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
        """Build the observer of the config (its webhooks and metrics sorted once)."""
        self._observer = Observer(self.spec, self.metrics, self.services)

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
            obs = await self.observe(need)
            if self._observer.interrupted:
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
        if interrupt:
            self._observer.interrupt()
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
        return await self._take_over()

    async def start_rollout(self, revision: str, metadata: Mapping[str, str]) -> CanaryState:
        """Begin a rollout, or restart it with a new revision (see
        :func:`canaryd.core.analysis.start_rollout`)."""
        rollout_id = uuid.uuid4().hex[:12]
        return await self.command(
            lambda s, now: core.start_rollout(self.spec, s, revision, metadata, rollout_id, now)
        )

    # ------------------------------------------------------------------ observe

    def observe_limit(self) -> float:
        """The longest a tick may observe (:meth:`canaryd.service.observe.Observer.limit`)."""
        return self._observer.limit()

    async def observe(self, need: Needs) -> Observation:
        """Gather what ``need`` asks for (:meth:`canaryd.service.observe.Observer.observe`)."""
        return await self._observer.observe(need, self.state)
