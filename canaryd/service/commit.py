"""Committing a decision: route it and record it, in the order that keeps the promises.

:class:`Committer` (the base of :class:`~canaryd.service.runtime.CanaryRunner` above
:class:`~canaryd.service.ledger.Ledger`) carries out a decision the core made. A
decision that moves traffic towards the canary is recorded before its routes are sent
(and reverted if the router refuses them); a rollback is journalled and sent first,
always; a route the router did not confirm is retried every tick
(docs/reliability.md, "Decisions and state").
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from canaryd.core import analysis as core
from canaryd.core.analysis import CanaryState, Decision, Route
from canaryd.errors import FencedError, RouterError, StoreError
from canaryd.routers import RouteRequest
from canaryd.service.effects import rollback_why, router_error
from canaryd.service.ledger import Ledger, PendingRoutes, log_events
from canaryd.service.limits import out_of_resources
from canaryd.service.store import DROP, RELEASE


class Committer(Ledger):
    """Routes and records one canary's decisions (see the module docstring)."""

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
            await self._journal(decision.state, *rollback_why(decision))
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
            raise RouterError(f"rollback pending (retried every tick): {router_error(decision)}")

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
                decision was reverted.
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
        self._pending = PendingRoutes(new.seq, routes, new)  # shown once routed
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
        Otherwise, if the router fails, the decision is reverted: a held check on the state
        ``before`` it, at the weights of the last route the router confirmed (an
        operator command's first route refused: the error is raised); when
        ``before`` is unknown (after a restart) the check holds on the recorded
        state and the routes are sent again next tick.

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
            if route.action == "promote":
                await self._promote_pending(pending, str(exc), command, decision)
            else:
                await self._revert_pending(pending, before, confirmed, exc, command)
            return False
        await self._pending_applied(pending, before)
        return True

    async def _revert_pending(
        self,
        pending: PendingRoutes,
        before: CanaryState | None,
        confirmed: Route | None,
        exc: RouterError,
        command: bool,
    ) -> None:
        """The router refused a recorded route: revert its decision (:meth:`_send_pending`).

        Raises:
            RouterError: (``command`` only) ``exc``, when the router refused the first route.
        """
        now = self.services.clock()
        own = out_of_resources(exc)  # canaryd had no fd or memory: the check holds
        if before is None:
            await self._commit(core.router_failed(self.spec, self.state, str(exc), now, own=own))
            return
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
            raise exc
        failed = core.router_failed(self.spec, base, str(exc), now, own=own)
        await self._commit(failed, held=confirmed)

    async def _pending_applied(self, pending: PendingRoutes, before: CanaryState | None) -> None:
        """The router applied the recorded routes: show their state, settle them in the store."""
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

    async def _promote_pending(
        self, pending: PendingRoutes, error: str, command: bool, decision: Decision | None
    ) -> None:
        """Keep a promotion whose ``promote`` the router answered with an error: recorded
        (its events released) and Promoting with the route pending, retried every tick
        (docs/reliability.md).

        Raises:
            RouterError: (``command`` only) saying the promotion has begun.
        """
        self._pending, self._settle = None, RELEASE
        if decision is not None:
            log_events(decision)
        held = core.route_refused(
            self.spec, Decision(pending.state), "promote", error, self.services.clock()
        )
        assert held is not None
        await self._commit(held)
        if command:
            raise RouterError(f"promotion begun, promote pending (retried every tick): {error}")
