"""Group commit for a store whose writes are awaited: saves arriving together, one transaction.

The PostgreSQL store pays a transaction's round trips (and its fence check)
once per batch instead of once per save (docs/ha.md, "Fencing"). There is no
writer task: the first caller to find no batch being written writes one, with
every save queued by then; when it is done, it hands the next batch to the
first caller still waiting (*baton passing*). Each caller is told its own
outcome, and only once its batch's transaction has ended.

A batch is written under :func:`asyncio.shield`: the scheduler cancels an
abandoned tick with ``Task.cancel()``, which anyio's shielded scopes do not
stop, and the other savers of the batch must still be told. The write is
bounded by its store's timeout, so the shielded task cannot outlive it by more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

Outcomes = list[BaseException | None]
"""Each save's error (None: committed), in the batch's order."""


@dataclass(eq=False)
class _Save(Generic[T]):
    """One queued save: its item, and how it ended (``done``) or that it must write (``lead``)."""

    item: T
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # cheaper than anyio's
    done: bool = False
    lead: bool = False
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Writes queued saves in batches of at most ``limit``, one batch at a time.

    Args:
        write: writes a batch in one transaction; returns each save's error, or
            raises when the whole batch failed (every save is told that error).
        limit: the most saves in one batch.
    """

    def __init__(self, write: Callable[[Sequence[T]], Awaitable[Outcomes]], limit: int) -> None:
        """Remember how a batch is written."""
        self._write = write
        self._limit = limit
        self._queue: list[_Save[T]] = []
        self._writing = False
        self._flushing: asyncio.Future[None] | None = None  # a strong reference (asyncio.shield)

    async def submit(self, item: T) -> None:
        """Queue a save and return once its batch is committed.

        A cancelled caller stops waiting; its save is withdrawn unless a batch
        already holds it. A batch being written is finished even when the caller
        writing it is cancelled, so the others are always told.

        Raises:
            BaseException: this save's error, as ``write`` reported or raised it.
        """
        save = _Save(item)
        self._queue.append(save)
        if self._writing:
            try:
                await save.ready.wait()
            except BaseException:
                self._withdraw(save)
                raise
            if save.done:
                return self._outcome(save)
        self._writing = True
        self._flushing = asyncio.ensure_future(self._flush())
        await asyncio.shield(self._flushing)
        return self._outcome(save)

    @staticmethod
    def _outcome(save: _Save[T]) -> None:
        """Return, or raise the save's error."""
        if save.error is not None:
            raise save.error

    async def _flush(self) -> None:
        """Write the oldest queued saves as one batch, tell each, pass the baton on."""
        batch, self._queue = self._queue[: self._limit], self._queue[self._limit :]
        try:
            outcomes = await self._write([s.item for s in batch])
        except BaseException as exc:  # the whole batch failed: nothing of it was written
            outcomes = [exc] * len(batch)
        for save, error in zip(batch, outcomes, strict=True):
            save.done, save.error = True, error
            save.ready.set()
        self._writing = False
        self._pass_baton()

    def _pass_baton(self) -> None:
        """Wake the oldest waiting save to write the next batch, if any waits."""
        if self._queue and not self._writing:
            self._writing = True
            self._queue[0].lead = True
            self._queue[0].ready.set()

    def _withdraw(self, save: _Save[T]) -> None:
        """A cancelled caller's save leaves the queue; a baton it was handed goes on."""
        if save.done:
            return
        self._queue.remove(save)
        if save.lead:
            self._writing = False
            self._pass_baton()
