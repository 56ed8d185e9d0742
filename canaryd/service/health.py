"""How a running daemon is doing: ``/readyz``, systemd's ``STATUS=`` and watchdog, roles.

:class:`Health` reads the daemon's parts (its runners, scheduler, lease) and says
whether it is ready, behind schedule (ticks starting more than ``behind_seconds``
late: ``/readyz`` 503, ``STATUS=``, ``scheduler.behind``; docs/reliability.md) or
stalled (a loop that has not started a tick for longer than it possibly could:
the watchdog is withheld), and whether this replica leads or follows
(docs/ha.md). It decides nothing and changes no canary.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from canaryd.core.analysis import Phase
from canaryd.service.sdnotify import watchdog_period

if TYPE_CHECKING:
    from canaryd.service.daemon import Daemon

log = structlog.get_logger()

STATUS_SECONDS = 10.0
"""How often ``STATUS=`` is refreshed when systemd asks for no watchdog."""

BEHIND_LOG_SECONDS = 60.0
"""While behind, ``scheduler.behind`` is logged at most this often."""


class Health:
    """The daemon's health: readiness, schedule lag, stalled loops, the status line."""

    def __init__(self, daemon: Daemon) -> None:
        """Watch ``daemon`` (its settings, such as ``stall_grace``, are read when used)."""
        self.daemon = daemon
        self.stalled_loops: list[str] = []
        """The canaries the last heartbeat found stalled."""
        self.behind = 0.0
        """How far behind schedule the last heartbeat found the ticks (0: on time)."""
        self._behind_logged = -math.inf
        self._said_behind = False
        self._since: dict[str, float] = {}
        """When each canary's loop started (a loop that never ticked is stalled from then)."""
        self._status = ""
        """The ``STATUS=`` line last sent."""
        self.loops_running = False
        """Whether the canaries' loops run (a replica holding the lease leads only then)."""

    def started(self, key: str, now: float) -> None:
        """Note that the loop of ``key`` started at ``now`` (service clock)."""
        self._since[key] = now

    # ------------------------------------------------------------------ roles (docs/ha.md)

    @property
    def role(self) -> str:
        """``leader`` or ``follower`` (a daemon on SQLite always leads).

        A replica that has taken the lease leads once its loops run on the state read
        after taking it. Until then its canaries are a follower's copies, which may lack
        the old leader's last decisions and are replaced when the loops start: a change
        they took would be decided again (docs/ha.md, "Followers").
        """
        lease = self.daemon.lease
        if lease is None:
            return "leader"
        return "leader" if lease.leading and self.loops_running else "follower"

    @property
    def leader_address(self) -> str | None:
        """The API address of the replica that leads, when known."""
        lease = self.daemon.lease
        if lease is None:
            return None
        return lease.leader.address if lease.leader is not None else None

    def replica(self) -> dict[str, Any]:
        """``role`` and ``leader`` for API answers when there are several replicas, else {}."""
        if self.daemon.lease is None:
            return {}
        return {"role": self.role, "leader": self.leader_address}

    # ------------------------------------------------------------------ status line

    def status_line(self) -> str:
        """One line for ``systemctl status``: ``3 canaries, 1 progressing, 0 failed``."""
        states = [r.state for r in self.daemon.runners.values()]
        n = len(states)
        line = (
            f"{n} {'canary' if n == 1 else 'canaries'}, "
            f"{sum(s.active for s in states)} progressing, "
            f"{sum(s.phase is Phase.FAILED for s in states)} failed"
        )
        if self.behind:
            line += f"; behind schedule by {self.behind:.1f}s"
        if self.stalled_loops:
            line += f"; stalled: {', '.join(self.stalled_loops)}"
        lease = self.daemon.lease
        if lease is not None:  # docs/ha.md
            if lease.leading:
                return f"leader (epoch {lease.epoch}): {line}"
            return f"follower of {self.leader_address or 'nobody yet'}: {line}"
        return line

    def send_status(self, *, changed_only: bool) -> None:
        """Send ``STATUS=`` (with ``changed_only``: only when the line is not the last one
        sent, so a change of state costs one datagram per change of the summary)."""
        status = self.status_line()
        if changed_only and status == self._status:
            return
        self._status = status
        self.daemon.notifier.status(status)

    # ------------------------------------------------------------------ schedule

    def schedule_lag(self) -> float:
        """How far behind their due time ticks start now, in seconds (see the scheduler)."""
        return self.daemon.scheduler.lag(self.daemon.scheduler.now())

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``'s status and body: ready, not ready, or behind schedule."""
        daemon = self.daemon
        if not daemon.ready:
            return 503, {"error": "not ready"}
        lag = self.schedule_lag()
        if lag > daemon.behind_seconds:
            return 503, {
                "error": f"behind schedule by {lag:.1f}s",
                "status": "behind",
                "lagSeconds": round(lag, 3),
                "canaries": len(daemon.runners),
            }
        return 200, {"status": "ready", "canaries": len(daemon.runners), **self.replica()}

    def check_schedule(self) -> None:
        """Note whether the ticks are behind schedule; log it at most once a minute."""
        lag = self.schedule_lag()
        behind = lag if lag > self.daemon.behind_seconds else 0.0
        now = time.monotonic()
        if behind and now - self._behind_logged >= BEHIND_LOG_SECONDS:
            self._behind_logged, self._said_behind = now, True
            scheduler = self.daemon.scheduler
            log.warning(
                "scheduler.behind",
                lag_seconds=round(lag, 3),
                ticking=scheduler.ticking,
                waiting=scheduler.overdue(scheduler.now()),
                canaries=len(self.daemon.runners),
            )
        elif not behind and self._said_behind:  # flapping around the line: one pair a minute
            self._said_behind = False
            log.info("scheduler.caught_up", lag_seconds=round(lag, 3))
        self.behind = behind

    def stalled(self, now: float) -> list[str]:
        """Canaries whose loop has not started a tick for longer than it possibly could.

        A canary whose tick is due and waits for a free slot (the daemon is behind
        schedule) is late, not stalled: the scheduler starts it in its turn.
        """
        out = []
        loop_now = self.daemon.scheduler.now()
        for key, runner in self.daemon.runners.items():
            if self.daemon.scheduler.queued(key, loop_now):
                continue  # waits its turn behind schedule: late, not stalled
            interval = runner.spec.analysis.interval
            # a webhook's own timeout may hold a tick beyond the interval (docs/flagger.md)
            limit = runner.observe_limit()
            since = max(runner.last_tick, self._since.get(key, now))
            if now - since > interval + limit + self.daemon.stall_grace:
                out.append(key)
        return sorted(out)

    async def heartbeat(self) -> None:
        """``WATCHDOG=1`` at half systemd's period while the loops tick; ``STATUS=`` always."""
        period = watchdog_period()
        notifier = self.daemon.notifier
        while True:
            self.check_schedule()
            stalled = self.stalled(self.daemon.services.clock())
            if stalled != self.stalled_loops:
                if stalled:
                    log.error("watchdog.withheld", stalled=stalled)
                else:
                    log.info("watchdog.resumed")
                self.stalled_loops = stalled
            if period is not None and not stalled:
                notifier.watchdog(self.status_line())
            else:
                notifier.status(self.status_line())
            await anyio.sleep(period / 2 if period is not None else STATUS_SECONDS)
