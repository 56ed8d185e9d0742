"""Scale and latency benchmark: N canaries x M metrics on the real canaryd runtime.

One command::

    python benchmarks/scale.py --canaries 10000 --interval 10 --duration 60

What runs (see ``benchmarks/README.md``):

- a stand-in Prometheus and a stand-in mesh controller, each in its own process
  (``benchmarks/standins.py``);
- in this process, canaryd as the daemon wires it: real ``Settings`` models, the
  shared outgoing-HTTP transport (:func:`canaryd.http.make_transport`), the real
  :class:`~canaryd.providers.prometheus.Prometheus` provider, the webhook
  router, a :class:`~canaryd.service.store.SqliteStore` on a temporary file, and one
  :class:`~canaryd.service.runtime.CanaryRunner` loop per canary on one scheduler.
  Every canary is a blue/green rollout in progress (as after a daemon restart),
  so every tick checks every metric. ``--fail-share`` of them answer a failing
  value: they roll back in the first tick that judges them (threshold 1) and
  are restarted right after (a restarted blue/green rollout's first tick only
  counts an iteration, as in Flagger), which measures the decision latency;
- phase 1, ``--duration`` seconds on schedule: throughput, tick lateness, CPU,
  RSS, decision latency;
- phase 2, saturation, ``--rounds`` times: a bare aiohttp client issuing the
  same queries with the same concurrency, then canaryd with every loop ticking
  back to back; canaryd's query throughput as a share of the bare client's.

Output: a table on the terminal and a JSON file (``--json``).
``python benchmarks/scale.py --markdown A.json B.json`` prints the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import anyio
import anyio.abc

import canaryd
from canaryd.config import MIN_INTERVAL_ENV, PrometheusProvider, Settings
from canaryd.core.analysis import CanaryState, Needs, Observation, Phase
from canaryd.http import POOL_PER_HOST, make_transport
from canaryd.logs import configure
from canaryd.providers import MetricsProvider
from canaryd.providers.prometheus import Prometheus
from canaryd.routers import build_router
from canaryd.service.runtime import CanaryRunner
from canaryd.service.scheduler import Scheduler
from canaryd.service.services import Services
from canaryd.service.store import SqliteStore, StateStore

HERE = Path(__file__).resolve().parent

TEMP_POSTGRES = "postgresql-temp"
"""``--state`` value: PostgreSQL on a cluster started for the run (:func:`temporary_postgres`)."""
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LATE_LIMIT = 0.5
"""Seconds: a tick that starts later than this after its schedule counts as late."""

QUERY = (
    'sum(rate(http_requests_total{job="{{ target }}",code!~"5..",m="%d"}[{{ interval }}])) '
    '/ sum(rate(http_requests_total{job="{{ target }}",m="%d"}[{{ interval }}])) * 100'
)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    """What to run; see :func:`parse_args` for the meaning of each field."""

    canaries: int = 100
    interval: float = 10.0
    duration: float = 60.0
    metrics: int = 2
    fail_share: float = 0.01
    latency_ms: float = 0.0
    pool: int = POOL_PER_HOST
    rounds: int = 2
    saturation: float = 5.0
    sat_canaries: int = 500
    loop: str = "uvloop"
    gc_freeze: bool = True
    json_path: Path | None = None
    state: str | None = None
    """``postgresql://…``: the PostgreSQL store, fenced by a held lease (docs/ha.md)."""

    @property
    def failing(self) -> int:
        """How many canaries answer a failing value (at least one)."""
        return max(1, round(self.canaries * self.fail_share))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line (``--help`` explains each option)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--canaries", type=int, default=100, help="N canaries (default 100)")
    p.add_argument("--interval", type=float, default=10.0, help="analysis interval, seconds")
    p.add_argument("--duration", type=float, default=60.0, help="seconds on schedule")
    p.add_argument("--metrics", type=int, default=2, help="metrics per canary (default 2)")
    p.add_argument("--fail-share", type=float, default=0.01, help="share of failing canaries")
    p.add_argument("--latency-ms", type=float, default=0.0, help="stand-in Prometheus latency")
    p.add_argument(
        "--pool", type=int, default=POOL_PER_HOST, help="HTTP connection pool size (as canaryd's)"
    )
    p.add_argument("--rounds", type=int, default=2, help="saturation rounds (bare, canaryd)")
    p.add_argument("--saturation", type=float, default=5.0, help="seconds per saturation run")
    p.add_argument(
        "--sat-canaries", type=int, default=500, help="canaries ticking back to back at saturation"
    )
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default=_default_loop())
    p.add_argument(
        "--state",
        metavar="postgresql://…",
        help=(
            "state in PostgreSQL, writes fenced by a lease (default: SQLite in a temp dir); "
            f"{TEMP_POSTGRES}: on a cluster started for the run (as root)"
        ),
    )
    p.add_argument("--no-gc-freeze", action="store_true", help="leave the heap unfrozen")
    p.add_argument("--json", type=Path, help="result file (default benchmarks/results/…)")
    p.add_argument("--markdown", nargs="+", type=Path, help="print the README table and exit")
    return p.parse_args(argv)


def _default_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def options(args: argparse.Namespace) -> Options:
    """Options from the command line.

    Raises:
        SystemExit: the duration leaves no measurement window after the first interval.
    """
    if args.duration < 2 * args.interval:
        raise SystemExit("--duration must be at least twice --interval")
    default = HERE / "results" / f"scale-{args.canaries}-{args.interval:g}s.json"
    return Options(
        args.canaries,
        args.interval,
        args.duration,
        args.metrics,
        args.fail_share,
        args.latency_ms,
        args.pool,
        args.rounds,
        args.saturation,
        min(args.sat_canaries, args.canaries),
        args.loop,
        not args.no_gc_freeze,
        args.json or default,
        args.state,
    )


# --------------------------------------------------------------------------- stand-ins


@dataclass
class StandIn:
    """A stand-in server process; closing its stdin stops it."""

    proc: subprocess.Popen[bytes]
    url: str

    async def stats(self) -> Any:
        """The server's ``GET /stats`` document."""
        async with aiohttp.ClientSession() as s, s.get(self.url + "/stats") as resp:
            return await resp.json()


@contextmanager
def stand_in(role: str, *extra: str) -> Iterator[StandIn]:
    """Start ``benchmarks/standins.py ROLE`` and yield it once it listens."""
    cmd = [sys.executable, str(HERE / "standins.py"), role, *extra]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"stand-in {role} did not start: {line!r}")
        yield StandIn(proc, f"http://127.0.0.1:{int(line.split()[1])}")
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------- config


def canary_name(i: int, failing: bool) -> str:
    """``c00042``, or ``fail-c00042`` for a canary whose metrics fail."""
    return f"{'fail-' if failing else ''}c{i:05d}"


def build_settings(opts: Options, prom: str, router: str, state: Path) -> Settings:
    """The daemon's configuration: N blue/green canaries of M metrics each."""
    metrics = [
        {"name": f"m{j}", "query": QUERY % (j, j), "thresholdRange": {"min": 90}, "interval": "1m"}
        for j in range(opts.metrics)
    ]
    analysis = {
        "interval": opts.interval,
        "threshold": 1,
        "iterations": 1_000_000,
        "metrics": metrics,
    }
    canaries = [
        {
            "name": canary_name(i, i < opts.failing),
            "namespace": "bench",
            "router": "mesh",
            "provider": "prom",
            "analysis": analysis,
        }
        for i in range(opts.canaries)
    ]
    # a benchmark may tick faster than the production floor (docs/flagger.md, "Floors")
    os.environ.setdefault(MIN_INTERVAL_ENV, "0.01")
    return Settings.model_validate(
        {
            "state": f"sqlite://{state}",
            "providers": {"prom": {"type": "prometheus", "address": prom, "timeout": "5s"}},
            "routers": {"mesh": {"type": "webhook", "url": router + "/routes", "timeout": "5s"}},
            "canaries": canaries,
        }
    )


# --------------------------------------------------------------------------- probes


@dataclass
class Probe:
    """What the instrumented runners report.

    Attributes:
        recording: on during the scheduled phase.
        saturating: loops tick back to back (saturation phase).
        lateness: seconds between each scheduled tick's due time and its start.
        done: anyio-clock times at which ticks with metric checks completed.
        decided: (canary, revision) -> ``time.time()`` the failing tick's last metric came back.
        saturated_checks: checks completed while saturating.
        errors: checks of healthy canaries with a metric that has no value (a
            provider error or a deadline); a healthy daemon has none.
    """

    recording: bool = False
    saturating: bool = False
    lateness: array[float] = field(default_factory=lambda: array("d"))
    done: array[float] = field(default_factory=lambda: array("d"))
    decided: dict[tuple[str, str], float] = field(default_factory=dict)
    saturated_checks: int = 0
    errors: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class TimedProvider:
    """Delegates to the real provider and notes when the last answer came back."""

    def __init__(self, inner: MetricsProvider) -> None:
        """Wrap ``inner``."""
        self.inner = inner
        self.last = 0.0

    async def query(self, query: str, *, budget: float) -> float | None:
        """The inner provider's answer; remembers ``time.time()`` on return."""
        try:
            return await self.inner.query(query, budget=budget)
        finally:
            self.last = time.time()

    async def aclose(self) -> None:
        """The inner provider is closed by whoever opened it."""

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """The inner provider's answer."""
        return await self.inner.query_range(query, start=start, end=end, step=step, budget=budget)


@dataclass
class BenchRunner(CanaryRunner):
    """A runner that reports to a :class:`Probe` and restarts its failed rollouts.

    ``wake`` is silenced so a restart keeps the loop's cadence (the daemon's API
    would wake the loop; here only the saturation phase does, on purpose).
    """

    probe: Probe = field(default_factory=Probe)
    timed: TimedProvider | None = None
    rollouts: int = 0

    def wake(self) -> None:
        """Ignore wake-ups from commands (see the class docstring)."""

    async def safe_tick(self) -> None:
        """Record the tick's lateness, tick, restart a rolled-back rollout."""
        if self.probe.recording:
            self.probe.lateness.append(anyio.current_time() - self.next_at)
        await super().safe_tick()
        if self.state.phase is Phase.FAILED:
            self.rollouts += 1
            await self.start_rollout(f"r{self.rollouts}", {})
        if self.probe.saturating:
            CanaryRunner.wake(self)

    async def observe(self, need: Needs) -> Observation:
        """Observe as usual, then note the completed check."""
        obs = await super().observe(need)
        if need.checks:
            probe = self.probe
            if probe.recording:
                probe.done.append(anyio.current_time())
            if probe.saturating:
                probe.saturated_checks += 1
            if self.timed is not None and self.state.revision is not None:
                probe.decided[(self.key, self.state.revision)] = self.timed.last
            elif any(m.value is None for m in obs.metrics):
                probe.errors += 1
                for m in obs.metrics:
                    if m.value is None:  # not the metric of the same check that answered
                        reason = (m.error or "no data")[:60]
                        probe.reasons[reason] = probe.reasons.get(reason, 0) + 1
        return obs


# --------------------------------------------------------------------------- measurement


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def machine() -> dict[str, Any]:
    """Where the benchmark ran."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "canaryd": canaryd.__version__,
        "canaryd_path": str(Path(canaryd.__file__).parent),
    }


# --------------------------------------------------------------------------- wiring


@dataclass
class Rig:
    """The daemon under test: services, runners and the probe they report to."""

    opts: Options
    services: Services
    runners: list[BenchRunner]
    probe: Probe
    rss_empty: int


async def build_rig(opts: Options, stack: AsyncExitStack, prom: StandIn, receiver: StandIn) -> Rig:
    """Open the store and session and build one instrumented runner per canary."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="canaryd-bench-")))
    store = await _open_store(opts, tmp, stack)
    stack.push_async_callback(store.close)
    session = make_transport(opts.pool)
    stack.push_async_callback(session.aclose)
    rss_empty = rss_bytes()  # the empty daemon: imports, store, session
    settings = build_settings(opts, prom.url, receiver.url, tmp / "state.db")
    providers: dict[str, MetricsProvider] = {}
    for name, cfg in settings.providers.items():
        assert isinstance(cfg, PrometheusProvider)  # the benchmark configures only Prometheus
        provider = Prometheus(cfg, pool=opts.pool)  # what build_provider builds, pool sized
        stack.push_async_callback(provider.aclose)
        providers[name] = provider
    routers = {n: build_router(n, c, session) for n, c in settings.routers.items()}
    services = Services(settings, session, providers, routers, store)
    probe = Probe()
    now = time.time()
    runners = [
        _runner(c, services, probe, now, i < opts.failing) for i, c in enumerate(settings.canaries)
    ]
    return Rig(opts, services, runners, probe, rss_empty)


async def _open_store(opts: Options, tmp: Path, stack: AsyncExitStack) -> StateStore:
    """SQLite in ``tmp``, or PostgreSQL (``--state``) fenced by a lease held for the run."""
    if not opts.state:
        lite = SqliteStore(tmp / "state.db")
        await lite.open()
        return lite
    import psycopg

    from canaryd.service.lease import Lease
    from canaryd.service.store.postgres import PostgresStore

    url = opts.state
    if url == TEMP_POSTGRES:
        url = stack.enter_context(temporary_postgres())
    lease = Lease(url, cluster=f"bench-{os.getpid()}", ttl=24 * 3600.0)
    store = PostgresStore(url, fence=lease, max_size=16)
    await store.open()  # creates the schema, lease table included
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        if await lease.attempt(conn) is None:
            raise SystemExit(f"lease {lease.cluster} is held by another process")
    return store


@contextmanager
def temporary_postgres() -> Iterator[str]:
    """A PostgreSQL cluster for this run only, started as the tests start theirs; its URL.

    Debian's server on a temporary directory and a free port on 127.0.0.1 (see
    ``tests/postgres.py``: ``initdb``/``pg_ctl`` as the ``postgres`` user, hence
    root), stopped and removed at the end.

    Raises:
        SystemExit: PostgreSQL (or ``runuser``) is not installed.
    """
    import pytest

    sys.path.insert(0, str(HERE.parent / "tests"))
    from postgres import start_postgres

    with ExitStack() as stack:
        try:
            server = stack.enter_context(start_postgres())
        except (pytest.skip.Exception, pytest.fail.Exception) as exc:
            raise SystemExit(f"--state {TEMP_POSTGRES}: {exc}") from None
        yield server.create_database()


def _runner(spec: Any, services: Services, probe: Probe, now: float, failing: bool) -> BenchRunner:
    """A runner resuming a blue/green rollout in progress (as after a restart)."""
    state = CanaryState(  # past the first iteration: blue/green judges from the second tick
        phase=Phase.PROGRESSING,
        revision="r0",
        rollout_id=f"{spec.name}-r0",
        started_at=now,
        iteration=1,
    )
    timed = None
    if failing:
        timed = TimedProvider(services.providers["prom"])
        services = Services(
            services.settings, services.http, {"prom": timed}, services.routers, services.store
        )
    return BenchRunner(spec, state, services, probe=probe, timed=timed)


async def run_loops(
    runners: Sequence[BenchRunner], seconds: float, first: float | None = None
) -> None:
    """Run the runners' loops on one scheduler (as the daemon does) for ``seconds``.

    ``first``: seconds to every first tick (default: spread over one interval).
    """
    scheduler = Scheduler()
    for runner in runners:
        runner.schedule(scheduler, first)
    with anyio.move_on_after(seconds):
        await scheduler.run()


# --------------------------------------------------------------------------- phases


async def scheduled_phase(rig: Rig) -> dict[str, Any]:
    """Run on schedule for ``--duration`` seconds; throughput, lateness, CPU, RSS."""
    opts, probe = rig.opts, rig.probe
    probe.recording = True
    t0, cpu0 = anyio.current_time(), time.process_time()
    await run_loops(rig.runners, opts.duration)
    cpu, elapsed = time.process_time() - cpu0, anyio.current_time() - t0
    probe.recording = False
    rss = rss_bytes()
    window = [t for t in probe.done if t0 + opts.interval <= t < t0 + opts.duration]
    late = probe.lateness
    return {
        "elapsed_s": elapsed,
        "checks": len(probe.done),
        "checks_per_s": len(window) / (opts.duration - opts.interval),
        "scheduled_per_s": opts.canaries / opts.interval,
        "ticks": len(late),
        "check_errors": probe.errors,
        "check_error_reasons": dict(sorted(probe.reasons.items(), key=lambda kv: -kv[1])[:5]),
        "late_p50_ms": percentile(late, 50) * 1000,
        "late_p99_ms": percentile(late, 99) * 1000,
        "late_max_ms": max(late, default=float("nan")) * 1000,
        "on_time_share": sum(1 for x in late if x <= LATE_LIMIT) / max(1, len(late)),
        "cpu_s_per_1000_checks": cpu / max(1, len(probe.done)) * 1000,
        "cpu_share": cpu / elapsed,
        "rss_mib": rss / 2**20,
        "rss_empty_mib": rig.rss_empty / 2**20,
        "rss_per_canary_kib": (rss - rig.rss_empty) / rig.opts.canaries / 1024,
    }


def saturating(rig: Rig) -> list[BenchRunner]:
    """The canaries of the saturation phase: the last ``--sat-canaries``.

    Failing canaries are the first ones, so these are healthy (unless there are
    fewer canaries than that): every tick is one check and its queries, the work
    the bare client's queries stand for. Rollbacks are measured by phase 1.
    """
    return list(rig.runners[-rig.opts.sat_canaries :])


async def saturated_canaryd(rig: Rig) -> tuple[float, float]:
    """``--sat-canaries`` loops tick back to back; returns (queries/s, CPU s per 1,000 checks).

    That many canaries keep every connection of the pool busy with queries
    waiting; more would only make the queue longer.
    """
    probe, seconds = rig.probe, rig.opts.saturation
    runners = saturating(rig)
    probe.saturating = True
    marks: list[tuple[int, float]] = []

    async def mark_after_warmup() -> None:
        await anyio.sleep(seconds * 0.2)
        marks.append((probe.saturated_checks, time.process_time()))

    t0 = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(mark_after_warmup)
        await run_loops(runners, seconds, first=0.0)
    probe.saturating = False
    checks0, cpu0 = marks[0]
    checks = probe.saturated_checks - checks0
    elapsed = anyio.current_time() - t0 - seconds * 0.2
    cpu = time.process_time() - cpu0
    return checks * rig.opts.metrics / elapsed, cpu / max(1, checks) * 1000


async def bare_client(rig: Rig, prom: StandIn) -> tuple[float, float]:
    """The ceiling: plain aiohttp, the same queries and concurrency; returns queries/s.

    One worker per query of the saturating canaries posts it again and again
    through a pool of the same size, as canaryd's loops do at saturation.

    Returns:
        Queries per second and CPU seconds per 1,000 queries.
    """
    queries = [m.query for r in saturating(rig) for m in r.metrics]
    url, seconds, limit = prom.url + "/api/v1/query", rig.opts.saturation, rig.opts.pool
    counted = [0, 0]  # [queries answered, count at the end of warm-up]
    cpu = [0.0]
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(query: str) -> None:
            body = urlencode({"query": query}).encode()
            while True:
                async with session.post(url, data=body, headers=FORM) as resp:
                    json.loads(await resp.read())
                counted[0] += 1

        async def warm_up() -> None:
            await anyio.sleep(seconds * 0.2)
            counted[1], cpu[0] = counted[0], time.process_time()

        with anyio.move_on_after(seconds):
            async with anyio.create_task_group() as tg:
                tg.start_soon(warm_up)
                for query in queries:
                    tg.start_soon(worker, query)
        answered = counted[0] - counted[1]
        used = time.process_time() - cpu[0]
        return answered / (seconds * 0.8), used / max(1, answered) * 1000


async def saturation_phase(rig: Rig, prom: StandIn) -> dict[str, Any]:
    """Alternate bare client and saturated canaryd ``--rounds`` times; best of each."""
    bare: list[float] = []
    bare_cpu: list[float] = []
    ours: list[float] = []
    cpu: list[float] = []
    for _ in range(rig.opts.rounds):
        qps, cpu_per_1000 = await bare_client(rig, prom)
        bare.append(qps)
        bare_cpu.append(cpu_per_1000)
        qps, cpu_per_1000 = await saturated_canaryd(rig)
        ours.append(qps)
        cpu.append(cpu_per_1000)
    nan = float("nan")
    per_query = min(cpu, default=nan) / rig.opts.metrics
    return {
        "bare_cpu_s_per_1000_queries": min(bare_cpu, default=nan),
        "saturated_cpu_s_per_1000_queries": per_query,
        "cpu_ratio": min(bare_cpu, default=nan) / per_query,
        "ceiling_qps": max(bare, default=nan),
        "canaryd_qps": max(ours, default=nan),
        "ceiling_ratio": max(ours, default=nan) / max(bare, default=nan),
        "saturated_cpu_s_per_1000_checks": min(cpu, default=nan),
        "rounds": {"ceiling_qps": bare, "canaryd_qps": ours},
    }


def decision_latency(probe: Probe, receiver_stats: Any) -> dict[str, Any]:
    """Last metric of a failing tick back -> rollback request at the receiver."""
    samples = []
    for canary, revision, arrived in receiver_stats["rollbacks"]:
        decided = probe.decided.get((canary, revision))
        if decided:
            samples.append(arrived - decided)
    return {
        "decisions": len(samples),
        "decision_p50_ms": percentile(samples, 50) * 1000,
        "decision_p99_ms": percentile(samples, 99) * 1000,
        "decision_max_ms": max(samples, default=float("nan")) * 1000,
    }


# --------------------------------------------------------------------------- main


async def bench(opts: Options) -> dict[str, Any]:
    """Run both phases and return every number, with the options and the machine."""
    uv = ["--uvloop"] if opts.loop == "uvloop" else []
    limit = str(opts.duration + opts.rounds * opts.saturation * 2 + 300)
    with (
        stand_in(
            "prometheus", "--latency-ms", str(opts.latency_ms), "--max-seconds", limit, *uv
        ) as prom,
        stand_in("receiver", "--max-seconds", limit, *uv) as receiver,
    ):
        async with AsyncExitStack() as stack:
            t = time.monotonic()
            rig = await build_rig(opts, stack, prom, receiver)
            if opts.gc_freeze:
                from canaryd.service.runtime import freeze_heap  # absent before the scale work

                freeze_heap()  # as the daemon does once its runners are built
            setup = time.monotonic() - t
            result = await scheduled_phase(rig)
            result.update(decision_latency(rig.probe, await receiver.stats()))
            result.update(await saturation_phase(rig, prom))
            result["setup_s"] = setup
            result["prometheus_queries"] = (await prom.stats())["queries"]
    options_doc = {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}
    if opts.state and opts.state != TEMP_POSTGRES:
        from canaryd.redact import redact_dsn

        options_doc["state"] = redact_dsn(opts.state)  # no password in the result file
    return {"options": options_doc, "machine": machine(), "result": result}


ROWS: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("canaries", "N", lambda r: f"{r['options']['canaries']:,}"),
    ("interval", "I (s)", lambda r: f"{r['options']['interval']:g}"),
    ("checks/s", "checks/s (sched.)", lambda r: _rate(r["result"])),
    ("on time", "ticks ≤500 ms", lambda r: f"{r['result']['on_time_share'] * 100:.2f}%"),
    ("lateness", "late p50/p99/max ms", lambda r: _late(r["result"])),
    ("cpu", "CPU s/1k checks", lambda r: f"{r['result']['cpu_s_per_1000_checks']:.3f}"),
    ("rss", "RSS KiB/canary", lambda r: f"{r['result']['rss_per_canary_kib']:.1f}"),
    ("decision", "decision p50/p99 ms", lambda r: _decision(r["result"])),
    ("ceiling", "bare q/s", lambda r: f"{r['result']['ceiling_qps']:,.0f}"),
    ("canaryd", "canaryd q/s", lambda r: f"{r['result']['canaryd_qps']:,.0f}"),
    ("ratio", "ratio", lambda r: f"{r['result']['ceiling_ratio']:.2f}"),
]


def _rate(r: dict[str, Any]) -> str:
    return f"{r['checks_per_s']:,.1f} ({r['scheduled_per_s']:,.1f})"


def _late(r: dict[str, Any]) -> str:
    return f"{r['late_p50_ms']:.1f}/{r['late_p99_ms']:.1f}/{r['late_max_ms']:.0f}"


def _decision(r: dict[str, Any]) -> str:
    return f"{r['decision_p50_ms']:.1f}/{r['decision_p99_ms']:.1f} (n={r['decisions']})"


def terminal_table(doc: dict[str, Any]) -> str:
    """One result as ``label  value`` lines."""
    width = max(len(label) for _, label, _ in ROWS)
    lines = [f"{label:<{width}}  {fmt(doc)}" for _, label, fmt in ROWS]
    m = doc["machine"]
    lines.append(f"{'machine':<{width}}  {m['nproc']} x {m['cpu']}, Python {m['python']}")
    return "\n".join(lines)


def _tree(doc: dict[str, Any]) -> str:
    """``old e02b1f5`` for a run of ``backtoback.sh`` (which tags its files), else ``-``."""
    tree = doc.get("tree")
    return f"{tree['label']} {tree['commit']}" if tree else "-"


TREE_ROWS: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("tree", "tree", _tree),
    ("loop", "loop", lambda r: str(r["options"].get("loop", "?"))),
]
"""Leading columns when the results come from ``backtoback.sh``."""


def markdown_table(docs: Sequence[dict[str, Any]]) -> str:
    """Several results as one Markdown table (one row per run).

    Results of ``backtoback.sh`` (tagged with their tree) get the tree and the event
    loop first and ``cpu_ratio`` last.
    """
    rows = ROWS
    if any("tree" in d for d in docs):
        cpu_ratio = ("cpu_ratio", "`cpu_ratio`", lambda r: f"{r['result']['cpu_ratio']:.2f}")
        rows = [*TREE_ROWS, *ROWS, cpu_ratio]
    head = "| " + " | ".join(label for _, label, _ in rows) + " |"
    rule = "|" + "|".join("---" if key in ("tree", "loop") else "---:" for key, _, _ in rows) + "|"
    body = ["| " + " | ".join(fmt(d) for _, _, fmt in rows) + " |" for d in docs]
    return "\n".join([head, rule, *body])


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark (or, with ``--markdown``, tabulate earlier results)."""
    args = parse_args(argv)
    if args.markdown:
        print(markdown_table([json.loads(p.read_text()) for p in args.markdown]))
        return
    opts = options(args)
    resource.setrlimit(resource.RLIMIT_NOFILE, _nofile())
    configure("json", "info", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives as long as we do
    backend_options = {"use_uvloop": True} if opts.loop == "uvloop" else {}
    doc = anyio.run(bench, opts, backend="asyncio", backend_options=backend_options)
    assert opts.json_path is not None
    opts.json_path.parent.mkdir(parents=True, exist_ok=True)
    opts.json_path.write_text(json.dumps(doc, indent=2) + "\n")
    print(terminal_table(doc))
    print(f"{'json':<{max(len(label) for _, label, _ in ROWS)}}  {opts.json_path}")


def _nofile() -> tuple[int, int]:
    """Raise the open-files limit to its hard maximum (a big pool needs sockets)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard, hard


if __name__ == "__main__":
    main()
