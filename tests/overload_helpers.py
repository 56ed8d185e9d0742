"""Daemons, canaries and API calls shared by the test_overload_* modules.

The faults there are real (a daemon under a low ``RLIMIT_NOFILE``, a process really
out of descriptors, a loop really starved); every load is bounded and ends by itself
(docs/reliability.md, "canaryd's own trouble").
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
from prom import PrometheusServer, open_provider
from support import eventually

UNREACHABLE = "http://127.0.0.1:9"


async def readyz_async(base: str) -> int:
    """``GET /readyz``'s status (0 when the connection fails)."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as resp,
        ):
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


@contextmanager
def daemon_limited(
    config: Path, log: Path, nofile: int, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``canaryd run`` as a subprocess whose RLIMIT_NOFILE (soft and hard) is ``nofile``."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "canaryd", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CANARYD_LOG_FORMAT": "json", **env},
            preexec_fn=limit,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


async def stopped(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the daemon and wait (60 s at most) without blocking this event loop."""
    proc.send_signal(signal.SIGTERM)
    with anyio.fail_after(60):
        assert await anyio.to_thread.run_sync(proc.wait) == 0


async def api_up(base: str, within: float) -> None:
    """Wait until the API answers ``/readyz`` with 200."""
    await eventually(lambda: readyz_async(base), lambda s: s == 200, within=within)


async def seed(prom: PrometheusServer, samples: dict[str, float]) -> None:
    """Set ``ovl_success`` of each job and wait until Prometheus answers every value."""
    assert prom.app is not None
    prom.app.set_many([("ovl_success", {"job": job}, v) for job, v in samples.items()])
    async with open_provider(prom.provider_config()) as provider:
        for job, value in samples.items():
            query = f'max(ovl_success{{job="{job}"}})'
            await eventually(
                partial(provider.query, query, budget=2.0), partial(same, value), within=15
            )


def same(expected: float, got: float | None) -> bool:
    """Whether Prometheus answered ``expected``."""
    return got == expected


def prometheus_config(prom: PrometheusServer) -> dict[str, Any]:
    """The session Prometheus as a provider entry of a config file."""
    return {"type": "prometheus", "address": prom.url, "timeout": "2s"}
