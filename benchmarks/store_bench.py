"""Saves per second of the state store alone: C concurrent savers for T seconds.

::

    python benchmarks/store_bench.py --state postgresql-temp --savers 100 --seconds 5
    PYTHONPATH=/path/to/old/tree python benchmarks/store_bench.py --state postgresql-temp

Each saver saves one canary's decision (a state and a check record) again and
again, as a tick would, through ``StateStore.save``; on PostgreSQL the store is
fenced by a lease it holds, as on a leader (``scale.py``'s ``_open_store``).
Prints saves/s, the latency of a save (p50/p99) and this process's CPU per save
(benchmarks/README.md, "State in PostgreSQL").
"""

from __future__ import annotations

import argparse
import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path
from tempfile import TemporaryDirectory

from scale import Options, _open_store

from canaryd.core.analysis import CanaryState, CheckRecord, Outcome, Phase
from canaryd.service.store import StateStore


async def saver(store: StateStore, i: int, until: float, latencies: list[float]) -> None:
    """Save canary ``i``'s decisions one after the other until ``until``."""
    n = 0
    while time.perf_counter() < until:
        n += 1
        state = CanaryState(phase=Phase.PROGRESSING, revision="r0", rollout_id=f"c{i}-r0")
        record = CheckRecord(time.time(), n, Outcome.PASS, 10, 1, 0, None)
        start = time.perf_counter()
        await store.save(f"bench/c{i}", state, record, [], [])
        latencies.append(time.perf_counter() - start)


async def main(state: str | None, savers: int, seconds: float) -> str:
    """Run the savers on a store opened as ``scale.py`` opens it; the result line."""
    with TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            opts = Options(state=state)
            store = await _open_store(opts, Path(tmp), stack)
            latencies: list[float] = []
            cpu = time.process_time()
            until = time.perf_counter() + seconds
            await asyncio.gather(*(saver(store, i, until, latencies) for i in range(savers)))
            cpu = time.process_time() - cpu
            await store.close()
    latencies.sort()
    n = len(latencies)
    return (
        f"savers={savers} saves/s={n / seconds:.0f} p50={latencies[n // 2] * 1e3:.1f}ms "
        f"p99={latencies[int(n * 0.99)] * 1e3:.1f}ms CPU us/save={cpu / n * 1e6:.0f}"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state", help="postgresql://… or postgresql-temp (default: SQLite)")
    p.add_argument("--savers", type=int, default=100)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    print(asyncio.run(main(args.state, args.savers, args.seconds)))
