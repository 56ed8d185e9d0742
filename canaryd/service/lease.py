"""Leader lease on PostgreSQL: one leader per cluster, fenced by an epoch (docs/ha.md).

One row per cluster in the ``lease`` table. A replica takes or renews it with
one statement evaluated on the **database's** clock::

    UPDATE lease SET holder = me, epoch = <same if I hold it unexpired, else + 1>,
                     expires_at = now() + ttl
     WHERE expires_at < now() OR holder = me RETURNING epoch

every ``ttl / 3``. Locally, a leader counts its lease from *before* it sent the
statement and stops deciding ``ttl / 6`` before that local deadline, so it stops
before the database can consider the lease expired (clocks drift far less than
``ttl / 6`` over one ``ttl``). Past the deadline :attr:`Lease.epoch` is None and
every write the store is asked for is refused (:mod:`canaryd.service.store.postgres`); a write
that reaches the database with a stale epoch is refused there too.

Leadership is one-way in a process: a replica that loses the lease stops (the
daemon exits and systemd starts it again as a follower), so no decision of an old
term can be made after a new leader's first.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import psycopg
import structlog

from canaryd.redact import redact_dsn
from canaryd.service.store.postgres import first_line

log = structlog.get_logger()

_TAKE = """
INSERT INTO lease AS l (cluster, holder, address, epoch, expires_at)
VALUES (%(cluster)s, %(me)s, %(address)s, 1, now() + %(ttl)s * interval '1 second')
ON CONFLICT (cluster) DO UPDATE SET
    holder = excluded.holder, address = excluded.address,
    epoch = CASE WHEN l.holder = excluded.holder AND l.expires_at >= now()
                 THEN l.epoch ELSE l.epoch + 1 END,
    expires_at = excluded.expires_at
WHERE l.expires_at < now() OR l.holder = excluded.holder
RETURNING epoch
"""

_READ = (
    "SELECT holder, address, epoch, GREATEST(EXTRACT(EPOCH FROM expires_at - now()), 0) "
    "FROM lease WHERE cluster = %s"
)


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease: replica id, API address, epoch."""

    holder: str
    address: str
    epoch: int


@dataclass
class Lease:
    """This replica's side of a cluster's leader lease.

    Attributes:
        url: the PostgreSQL URL (the lease has its own connection: renewals never
            wait behind the store's pool).
        cluster: the lease row's name (replicas of one cluster share it).
        address: this replica's API address, shown to followers and clients.
        ttl: seconds a lease lasts without renewal.
        me: this replica's id (unique per process).
        clock: monotonic seconds (tests may replace it).
    """

    url: str
    cluster: str = "default"
    address: str = ""
    ttl: float = 15.0
    me: str = field(default_factory=lambda: replica_id())
    clock: Callable[[], float] = time.monotonic
    leader: Holder | None = None
    """The holder last seen (this replica when it leads)."""
    _epoch: int | None = None
    _deadline: float = 0.0
    _lost: bool = False
    _remaining: float = 0.0
    """Seconds the holder's lease had left when last read (a follower's next try)."""

    @property
    def renew_every(self) -> float:
        """Seconds between renewals (``ttl / 3``)."""
        return self.ttl / 3

    @property
    def epoch(self) -> int | None:
        """The epoch this replica holds, None when it is not (or may no longer be) leader."""
        if self._epoch is None or self.clock() >= self._deadline:
            return None
        return self._epoch

    @property
    def leading(self) -> bool:
        """Whether this replica may decide now."""
        return self.epoch is not None

    @property
    def lost(self) -> bool:
        """Whether this replica led and lost the lease (it must stop)."""
        return self._lost or (self._epoch is not None and self.epoch is None)

    async def attempt(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> int | None:
        """Take or renew the lease once; return the epoch held, or None (someone else leads)."""
        sent = self.clock()
        args = {"cluster": self.cluster, "me": self.me, "address": self.address, "ttl": self.ttl}
        cur = await conn.execute(_TAKE, args)
        row = await cur.fetchone()
        if row is None:
            if self._epoch is not None:
                self._lost = True
            cur = await conn.execute(_READ, (self.cluster,))
            seen = await cur.fetchone()
            self.leader = None if seen is None else Holder(str(seen[0]), str(seen[1]), int(seen[2]))
            self._remaining = 0.0 if seen is None else float(seen[3])
            return None
        epoch: int = int(row[0])
        if self._epoch is not None and epoch != self._epoch:
            self._lost = True  # it expired under us and we took it again: a new term
            return None
        self._epoch = epoch
        self._deadline = sent + self.ttl - self.ttl / 6
        self.leader = Holder(self.me, self.address, epoch)
        return epoch

    async def run(self, on_change: Callable[[], None]) -> None:
        """Take and renew the lease every ``ttl / 3`` until cancelled or lost.

        ``on_change`` is called when leadership is gained, when the leader seen
        changes, and when it is lost (then this returns).
        """
        seen: Holder | None = None
        conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        try:
            while True:
                if not self.lost:  # a leader resumed past its deadline does not try again
                    conn = await self._try(conn)
                if self.leader != seen or self.lost:
                    seen = self.leader
                    on_change()
                if self.lost:
                    return
                await self._pause()
        finally:
            if conn is not None:
                with anyio.CancelScope(shield=True):
                    await conn.close()

    async def _try(
        self, conn: psycopg.AsyncConnection[tuple[Any, ...]] | None
    ) -> psycopg.AsyncConnection[tuple[Any, ...]] | None:
        """One bounded attempt; returns the connection to reuse (None after a failure)."""
        try:
            with anyio.fail_after(self.renew_every):
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(
                        self.url,
                        autocommit=True,
                        connect_timeout=max(1, int(self.ttl / 3)),
                        options=f"-c lock_timeout={max(50, int(self.renew_every * 800))}",
                    )
                await self.attempt(conn)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning(
                "lease.renew_failed", db=redact_dsn(self.url), error=first_line(exc, self.url)
            )
            if conn is not None:
                with anyio.CancelScope(shield=True):
                    await conn.close()
            return None
        return conn

    async def _pause(self) -> None:
        """Sleep until the next renewal (a leader) or the holder's expiry (a follower).

        A leader wakes early enough to stop at its local deadline.
        """
        delay = self.renew_every
        if self._epoch is not None:
            delay = min(delay, max(0.0, self._deadline - self.clock()))
        elif self.leader is not None:  # try again the moment the holder's lease expires
            delay = min(delay, self._remaining + 0.01)
        await anyio.sleep(delay)

    async def release(self) -> None:
        """Give the lease up at once (a clean stop): a follower takes it without waiting."""
        if self._epoch is None or self.lost:
            return
        try:
            with anyio.fail_after(2.0):
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=2
                ) as conn:
                    await conn.execute(
                        "UPDATE lease SET expires_at = now() - interval '1 second' "
                        "WHERE cluster = %s AND holder = %s AND epoch = %s",
                        (self.cluster, self.me, self._epoch),
                    )
        except (psycopg.Error, OSError, TimeoutError) as exc:
            log.warning("lease.release_failed", error=first_line(exc, self.url))
        self._epoch = None


def replica_id() -> str:
    """A replica's id in the lease: ``host/pid/random`` (unique per process, readable)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
