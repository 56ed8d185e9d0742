"""CPU per tick without HTTP: N runners ticking back to back against an in-process provider.

::

    python benchmarks/tick_bench.py --canaries 500 --seconds 10 --rounds 3

Every canary is the blue/green rollout in progress of ``scale.py`` (two metrics,
a passing value), wired as the daemon wires it: ``SqliteStore`` on a temporary
file, JSON logging to ``/dev/null``, the heap frozen. The provider answers after
one trip through the event loop, so what is measured is the tick around the
queries: the observation's tasks, ``decide``, the commit (encoding, the store's
group commit in its thread, the log lines). Run it with ``PYTHONPATH`` pointing
at another tree's copy to compare trees, alternating (benchmarks/README.md,
round 5).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
from scale import Options, Probe, _runner, build_settings

from canaryd.logs import configure
from canaryd.service.runtime import CanaryRunner, freeze_heap
from canaryd.service.services import Services
from canaryd.service.store import SqliteStore

UNUSED = "http://127.0.0.1:9"
"""The configured Prometheus and router addresses: nothing is sent to them."""


class InstantProvider:
    """A provider whose every query answers 99.5 after one trip through the event loop."""

    async def query(self, query: str, *, budget: float) -> float | None:
        """99.5, a passing value for ``scale.py``'s metrics."""
        await asyncio.sleep(0)
        return 99.5

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """Not used: the benchmark's metrics are instant queries."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Nothing to release."""


async def rounds(canaries: int, seconds: float, n: int) -> list[float]:
    """Tick every runner back to back for ``seconds``, ``n`` times; CPU us per tick of each."""
    with tempfile.TemporaryDirectory(prefix="canaryd-tick-") as tmp:
        state = Path(tmp) / "state.db"
        settings = build_settings(Options(canaries=canaries), UNUSED, UNUSED, state)
        store = SqliteStore(state)
        await store.open()
        try:
            services = Services(settings, None, {"prom": InstantProvider()}, {}, store)  # type: ignore[arg-type]
            now = time.time()
            probe = Probe()
            runners = [_runner(c, services, probe, now, False) for c in settings.canaries]
            freeze_heap()
            return [await _round(runners, seconds) for _ in range(n)]
        finally:
            await store.close()


async def _round(runners: Sequence[CanaryRunner], seconds: float) -> float:
    """One round: CPU microseconds per tick, the first fifth of the round left out."""
    ticks = [0]
    marks: list[tuple[int, float]] = []

    async def loop(runner: CanaryRunner) -> None:
        while True:
            await runner.tick()
            ticks[0] += 1

    async def mark() -> None:
        await anyio.sleep(seconds * 0.2)
        marks.append((ticks[0], time.process_time()))

    with anyio.move_on_after(seconds):
        async with anyio.create_task_group() as tg:
            tg.start_soon(mark)
            for runner in runners:
                tg.start_soon(loop, runner)
    count, cpu = marks[0]
    return (time.process_time() - cpu) / max(1, ticks[0] - count) * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    """Print the CPU microseconds per tick of each round and the best."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--canaries", type=int, default=500)
    p.add_argument("--seconds", type=float, default=10.0, help="per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = p.parse_args(argv)
    configure("json", "info", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as we do
    options = {"use_uvloop": True} if args.loop == "uvloop" else {}
    results = anyio.run(
        rounds, args.canaries, args.seconds, args.rounds, backend="asyncio", backend_options=options
    )
    print(" ".join(f"{r:.1f}" for r in results), f"best {min(results):.1f} us/tick")


if __name__ == "__main__":
    main()
