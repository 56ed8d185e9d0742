"""Property-based state-machine test of the runtime and core's trust invariants.

Hypothesis drives one canary's :class:`CanaryRunner` (the real runtime, the real
SQLite store, the pure core) through random sequences of ticks with healthy or
failing metrics, a router that accepts, refuses, applies and then errors, or
"dies" around a route (the daemon is rebuilt from the store, as after
``kill -9``), a store that cannot write, reloads that change the threshold, and
operator commands (start, promote with and without force, abort, pause,
resume, approve). After every step it checks the promises of
docs/reliability.md ("Decisions and state"):

- the state shown (and, once settled, the state recorded) stands on the weights
  the router last applied, apart from the documented windows (routes recorded
  but not yet sent after a restart; a rollback sent but not recorded when the
  daemon died);
- ``rollout.rolled_back`` is reported at most once per rollout, and only while
  the router has all traffic on the primary;
- nothing moves traffic towards the canary, nor promotes, after the router
  applied the rollout's rollback;
- ``rollout.promoted`` only after the router applied that rollout's ``promote``,
  and nothing rolls back a rollout whose ``promote`` the router applied;
- failedChecks never decreases within a rollout and grows by at most one per
  tick, and never grows on a tick whose metrics pass, whatever the router
  answers (its errors hold the check, as in Flagger) and whatever the store
  does (canaryd's store trouble is not blamed on the canary).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from canaryd.config import Settings
from canaryd.core import analysis as core
from canaryd.core.analysis import CanaryState, Phase
from canaryd.core.events import Event
from canaryd.errors import CommandError, RouterError, StoreError
from canaryd.routers import RouteRequest
from canaryd.service import ledger
from canaryd.service.runtime import CanaryRunner
from canaryd.service.services import Services
from canaryd.service.store import SqliteStore

KEY = "prod/web"


class Killed(Exception):  # noqa: N818 - it plays the daemon's death, not an error
    """The daemon died around a router call (``kill -9``)."""


@dataclass
class Router:
    """A router whose next answers the test scripts; remembers what it really applied."""

    mode: str = "ok"
    """ok | refuse | apply-then-error | kill-before | kill-after"""
    now: tuple[int, int] = (100, 0)
    confirmed: tuple[int, int] = (100, 0)
    """The weights of the last route the router answered with success."""
    confirmations: int = 0
    applied: list[RouteRequest] = field(default_factory=list)
    killed_after: RouteRequest | None = None
    unrecorded: list[RouteRequest] = field(default_factory=list)
    """Rollbacks applied whose daemon died before recording them (docs/reliability.md)."""

    async def apply(self, request: RouteRequest) -> None:
        """Apply the route, or fail the way ``mode`` says."""
        if self.mode == "refuse":
            raise RouterError("router lb: 503 refused")
        if self.mode == "kill-before":
            self.mode = "ok"
            raise Killed
        self.now = (request.primary_weight, request.canary_weight)
        self.applied.append(request)
        if self.mode == "apply-then-error":
            raise RouterError("router lb: timed out after applying")
        if self.mode == "kill-after":
            self.mode = "ok"
            self.killed_after = request
            if request.action == "rollback":
                self.unrecorded.append(request)
            raise Killed
        self.confirmed = self.now
        self.confirmations += 1

    async def aclose(self) -> None:
        """Nothing to release."""


@dataclass
class Provider:
    """Answers every query with ``value``."""

    value: float = 99.9

    async def query(self, query: str, *, budget: float) -> float | None:
        """The scripted value."""
        return self.value

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """Unused."""
        return []

    async def aclose(self) -> None:
        """Nothing to release."""


class Store:
    """The real SQLite store, unable to write while ``full`` (a full disk's StoreError)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.full = False
        self.events: list[Event] = []  # every event recorded, in order

    async def save(
        self, key: str, state: CanaryState, record: Any, events: Any, *args: Any, **kw: Any
    ) -> None:
        """Save through the real store, or fail like a full disk."""
        if self.full:
            raise StoreError("state store: database or disk is full")
        await self.inner.save(key, state, record, events, *args, **kw)
        self.events += events

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def make_settings(tmp: Path, shape: str, threshold: int, flag: str | None = None) -> Settings:
    """A one-canary config of the given shape (canary, gated, blue-green, ab); ``flag``:
    ``skipAnalysis`` or ``suspend`` set."""
    a: dict[str, Any] = {"interval": "1s", "threshold": threshold}
    if shape in ("canary", "gated"):
        a.update(stepWeight=25, maxWeight=50, stepWeightPromotion=50)
    else:
        a["iterations"] = 2
    if shape == "ab":
        a["match"] = [{"headers": {"x-canary": {"exact": "1"}}}]
    if shape == "gated":
        a["webhooks"] = [{"name": "release", "type": "confirm-promotion"}]
    a["metrics"] = [{"name": "sr", "query": "up", "thresholdRange": {"min": 99}, "interval": "30s"}]
    canary: dict[str, Any] = {"name": "web", "namespace": "prod", "router": "lb", "analysis": a}
    if flag is not None:
        canary[flag] = True
    return Settings.model_validate(
        {
            "state": f"sqlite://{tmp}/state.db",
            "providers": {"prom": {"type": "prometheus"}},
            "routers": {"lb": {"type": "webhook", "url": "http://127.0.0.1:9/"}},
            "canaries": [canary],
        }
    )


def _rollout_of(request: RouteRequest) -> str:
    return request.idempotency_key.split(":")[1]


class TrustMachine(RuleBasedStateMachine):
    """One canary under hostile sequences of faults and commands."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="canaryd-props-"))
        self.router = Router()
        self.provider = Provider()
        self.clock = 1000.0
        self.events: list[tuple[Event, tuple[int, int]]] = []
        self.max_failed: dict[str | None, int] = {}
        self.failed: set[str] = set()  # rollouts shown Failed
        self.gap: int | None = None  # routes applied when the record fell behind the router
        self.revisions = 0
        self.runner: CanaryRunner | None = None
        self._orig_log = ledger.__dict__["log_event"]
        ledger.__dict__["log_event"] = self._log

    def _log(self, event: Event) -> None:
        self.events.append((event, self.router.now))

    def teardown(self) -> None:
        """Close the store and the loop; restore the event logger."""
        ledger.__dict__["log_event"] = self._orig_log
        if self.runner is not None:
            self.loop.run_until_complete(self.store.inner.close())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, coro: Any) -> Any:
        """Run a coroutine; a Killed daemon is rebuilt from the store."""
        try:
            return self.loop.run_until_complete(coro)
        except Killed:
            self.router.killed_after = None
            self.loop.run_until_complete(self._restart())
            return None

    async def _open(self) -> None:
        inner = SqliteStore(self.tmp / "state.db")
        await inner.open()
        self.store = Store(inner)

    async def _restart(self) -> None:
        """Rebuild the runner from the store, as a restarted daemon does.

        What the dead daemon had not recorded is lost (docs/reliability.md): a rollback
        sent but not recorded, decisions waiting for a full disk. Until the router
        applies the next route, the record may lag behind it, and failedChecks restarts
        from the record.
        """
        states = await self.store.inner.load_states()
        pending = await self.store.inner.load_pending()
        state = states.get(KEY, CanaryState())
        self.runner = self._runner(state)
        self.runner.restore(pending.get(KEY))
        self.router.confirmed = self.router.now  # the dead daemon's route went through
        if (state.primary_weight, state.canary_weight) != self.router.now:
            self.gap = self.router.confirmations
        for req in self.router.applied:  # rollbacks the record lost (sent, never recorded)
            lost = state.rollout_id == _rollout_of(req) and state.phase is not Phase.FAILED
            if req.action == "rollback" and lost:
                self.router.unrecorded.append(req)
        if state.rollout_id is not None:
            self.max_failed[state.rollout_id] = state.failed_checks
            if state.phase is not Phase.FAILED:  # a rollback the record lost
                self.failed.discard(state.rollout_id)

    def _runner(self, state: CanaryState) -> CanaryRunner:
        services = Services(
            self.cfg,
            None,  # type: ignore[arg-type]  # no webhook has a URL
            {"prom": self.provider},
            {"lb": self.router},
            self.store,  # type: ignore[arg-type]
            clock=lambda: self.clock,
        )
        return CanaryRunner(self.cfg.canaries[0], state, services)

    @initialize(shape=st.sampled_from(["canary", "gated", "blue-green", "ab"]), t=st.integers(1, 3))
    def setup(self, shape: str, t: int) -> None:
        """Build the daemon for a canary of one shape and threshold."""
        self.shape = shape
        self.cfg = make_settings(self.tmp, shape, t)
        self.loop.run_until_complete(self._open())
        self.runner = self._runner(CanaryState())
        self.start()

    # ------------------------------------------------------------------ rules

    @rule(metric=st.sampled_from([99.9, 50.0]))
    def metrics_change(self, metric: float) -> None:
        """The canary's success rate changes (99.9 passes, 50 fails), for the next ticks."""
        self.provider.value = metric

    @rule(mode=st.sampled_from(["ok", "refuse", "apply-then-error", "kill-before", "kill-after"]))
    def router_changes(self, mode: str) -> None:
        """The router starts to behave this way (a kill happens once, then it works)."""
        self.router.mode = mode

    @rule(full=st.booleans())
    def disk_changes(self, full: bool) -> None:
        """The state store's disk fills up, or is freed."""
        self.store.full = full

    @rule()
    def tick(self) -> None:
        """One tick with the current metrics, router and disk."""
        assert self.runner is not None
        before, mode, healthy = self.runner.state, self.router.mode, self.provider.value > 99
        self.clock += 1.0
        self.run(self.runner.tick())
        after = self.runner.state
        event(f"{after.phase.value}{' pending' if after.route_pending else ''}")
        if after.rollout_id == before.rollout_id and mode != "kill-before":
            assert after.failed_checks <= before.failed_checks + 1, (before, after)
            if healthy and mode in ("ok", "refuse", "apply-then-error") and self.gap is None:
                assert after.failed_checks == before.failed_checks, (
                    "a healthy canary was blamed",
                    before,
                    after,
                )

    @rule()
    def tick_more(self) -> None:
        """Ticks are the common step (rollouts get far enough for faults to matter)."""
        self.tick()

    @rule()
    def tick_again(self) -> None:
        """Ticks are the common step (rollouts get far enough for faults to matter)."""
        self.tick()

    @rule()
    def start(self) -> None:
        """Start a new revision (possibly mid-rollout, or while a rollback is pending)."""
        assert self.runner is not None
        self.revisions += 1
        self._command(self.runner.start_rollout(f"v{self.revisions}", {}))

    @rule(verb=st.sampled_from(["promote", "force", "abort", "pause", "resume", "approve"]))
    def command(self, verb: str) -> None:
        """An operator command, whatever the router and the disk are doing."""
        assert self.runner is not None
        spec = self.runner.spec
        fns = {
            "promote": lambda s, now: core.promote(spec, s, now),
            "force": lambda s, now: core.promote(spec, s, now, force=True),
            "abort": lambda s, now: core.abort(spec, s, now),
            "pause": lambda s, now: core.pause(spec, s, now),
            "resume": lambda s, now: core.resume(spec, s, now),
            "approve": lambda s, now: core.approve(spec, s, "promotion", now),
        }
        interrupt = verb in ("promote", "force", "abort", "pause")
        self.clock += 0.1
        self._command(self.runner.command(fns[verb], interrupt=interrupt))

    def _command(self, coro: Any) -> None:
        with contextlib.suppress(CommandError, RouterError, StoreError):  # refused: fine
            self.run(coro)

    @rule(t=st.integers(1, 4), flag=st.sampled_from([None, None, "skipAnalysis", "suspend"]))
    def reload(self, t: int, flag: str | None) -> None:
        """A reload that changes the threshold, skipAnalysis or suspend (SIGHUP)."""
        assert self.runner is not None
        self.cfg = make_settings(self.tmp, self.shape, t, flag)
        self.runner.reconfigure(self.cfg.canaries[0], self.cfg)

    @rule()
    def restart(self) -> None:
        """A restart (graceful: nothing in flight) from the store."""
        self.loop.run_until_complete(self._restart())

    # ------------------------------------------------------------------ invariants

    @invariant()
    def shown_weights_are_the_routers(self) -> None:
        """The state shown stands on the weights the router last applied."""
        r = self.runner
        if r is None or r._pending is not None:
            return
        if self.gap is not None and self.router.confirmations > self.gap:
            self.gap = None
        if self.gap is not None:
            return
        state = r.state
        assert (state.primary_weight, state.canary_weight) == self.router.confirmed, (
            state,
            self.router.confirmed,
            self.router.applied[-3:],
        )

    @invariant()
    def settled_record_is_the_shown_state(self) -> None:
        """Once settled, the store holds exactly the state shown."""
        r = self.runner
        if r is None or not r.settled:
            return
        stored = self.loop.run_until_complete(self.store.inner.load_states()).get(KEY)
        if stored is None:
            assert r.state == CanaryState()
            return
        assert stored == r.state

    @invariant()
    def rollbacks_reported_only_when_applied(self) -> None:
        """rollout.rolled_back is reported only while the router has all traffic on the primary."""
        for ev, router_now in self.events:
            if ev.name == "rollout.rolled_back":
                assert router_now == (100, 0), (ev, router_now)

    @invariant()
    def rollbacks_recorded_once(self) -> None:
        """rollout.rolled_back is recorded at most once per rollout (one revision each here)."""
        rolled = [e.revision for e in self.store.events if e.name == "rollout.rolled_back"]
        assert len(rolled) == len(set(rolled)), rolled

    @invariant()
    def nothing_forward_after_rollback(self) -> None:
        """After the router applied a rollout's rollback, nothing of it moves forward."""
        rolled: set[str] = set()
        for req in self.router.applied:
            rid = _rollout_of(req)
            if rid in rolled:
                assert req.action == "rollback" or req.canary_weight == 0, req
                assert req.action != "promote", req
            if req.action == "rollback" and not any(req is u for u in self.router.unrecorded):
                rolled.add(rid)

    @invariant()
    def a_promoted_primary_is_never_rolled_back(self) -> None:
        """Once the router applied a rollout's promote, nothing rolls that rollout back."""
        promoted = set()
        for req in self.router.applied:
            rid = _rollout_of(req)
            assert not (rid in promoted and req.action == "rollback"), req
            if req.action == "promote":
                promoted.add(rid)
        r = self.runner
        if r is not None and r.state.rollout_id in promoted:
            assert r.state.phase is not Phase.FAILED, r.state

    @invariant()
    def promoted_only_after_promote(self) -> None:
        """rollout.promoted follows a promote the router applied, for that revision."""
        promoted = {req.revision for req in self.router.applied if req.action == "promote"}
        for ev, _ in self.events:
            if ev.name == "rollout.promoted":
                assert ev.revision in promoted, ev

    @invariant()
    def failed_checks_never_decrease(self) -> None:
        """failedChecks never decreases within a rollout (in the state shown)."""
        r = self.runner
        if r is None or r.state.rollout_id is None:
            return
        rid = r.state.rollout_id
        seen = self.max_failed.get(rid, 0)
        if self.gap is None:
            assert r.state.failed_checks >= seen, (rid, seen, r.state)
        self.max_failed[rid] = max(seen, r.state.failed_checks)

    @invariant()
    def no_way_back_from_a_rollback(self) -> None:
        """A rollout once shown Failed is never shown in any other phase again."""
        r = self.runner
        if r is None or r.state.rollout_id is None:
            return
        if r.state.phase is Phase.FAILED:
            self.failed.add(r.state.rollout_id)
        else:
            assert r.state.rollout_id not in self.failed, r.state

    @invariant()
    def finished_states_are_on_the_primary(self) -> None:
        """Succeeded, or Failed with the rollback applied: all traffic on the primary."""
        r = self.runner
        if r is None:
            return
        s = r.state
        if s.phase is Phase.SUCCEEDED or (s.phase is Phase.FAILED and not s.route_pending):
            assert (s.primary_weight, s.canary_weight) == (100, 0), s


TrustMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("CANARYD_PROPERTY_EXAMPLES", "120")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_trust_invariants = TrustMachine.TestCase
test_trust_invariants.__doc__ = "Random faults and commands never break a trust invariant."
