"""A bounded load generator: steady GET requests at a fixed rate through the traffic path."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import anyio

REQUEST_TIMEOUT = 5.0
"""Seconds one request may take before it counts as failed."""

MAX_IN_FLIGHT = 100
"""Requests open at once at most; beyond it a tick's request is skipped, not queued."""


@dataclass
class LoadStats:
    """What the load generator did.

    Attributes:
        statuses: answers by HTTP status (0: no answer).
        skipped: requests not sent because :data:`MAX_IN_FLIGHT` were open.
    """

    statuses: Counter[int] = field(default_factory=Counter)
    skipped: int = 0


async def _one(
    session: aiohttp.ClientSession, url: str, stats: LoadStats, slots: anyio.Semaphore
) -> None:
    try:
        async with session.get(url) as resp:
            await resp.read()
            stats.statuses[resp.status] += 1
    except (aiohttp.ClientError, TimeoutError):
        stats.statuses[0] += 1
    finally:
        slots.release()


async def generate_load(url: str, rate: float, stats: LoadStats) -> None:
    """Send ``rate`` requests per second to ``url`` until cancelled.

    Args:
        url: where to send ``GET`` requests.
        rate: requests per second (> 0).
        stats: updated as answers arrive.
    """
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    slots = anyio.Semaphore(MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(timeout=timeout) as session, anyio.create_task_group() as tg:
        next_at = anyio.current_time()
        while True:
            next_at += 1.0 / rate
            await anyio.sleep(max(0.0, next_at - anyio.current_time()))
            if slots.value == 0:
                stats.skipped += 1
                continue
            await slots.acquire()
            tg.start_soon(_one, session, url, stats, slots)
