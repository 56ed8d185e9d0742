"""Helpers to run a real canaryd (in-process or as a subprocess) against test servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import yaml
from support import free_port

from canaryd.client import Client
from canaryd.config.loader import load_config
from canaryd.service.daemon import Daemon

TOKEN = "test-token-0123456789"


def write_config(tmp_path: Path, canaries: list[dict[str, Any]], **top: Any) -> Path:
    """Write a canaryd config with an API token file (mode 600) and return its path."""
    token = tmp_path / "api-token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{free_port()}",
        "state": f"sqlite://{tmp_path}/state.db",
        "api": {"token_file": str(token)},
        "log": {"format": "json"},
        "canaries": canaries,
    }
    config.update(top)
    path = tmp_path / "canaryd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def api_url(config: Path) -> str:
    """The daemon's base URL for a config written by :func:`write_config`."""
    listen = yaml.safe_load(config.read_text())["listen"]
    return f"http://{listen}"


@asynccontextmanager
async def running_daemon(config: Path) -> AsyncIterator[Daemon]:
    """Run a daemon in-process for the duration of the block."""
    daemon = Daemon(config, load_config(config))
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(15):
            await tg.start(daemon.run)
        try:
            yield daemon
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def client_for(config: Path) -> AsyncIterator[Client]:
    """An API client with the test token."""
    async with Client(api_url(config), TOKEN, timeout=5.0) as c:
        yield c


async def wait_for_state(client: Client, key: str, accept: Any, within: float = 30.0) -> Any:
    """Poll the API until ``accept(state)`` holds; fail with the last state otherwise."""
    deadline = time.monotonic() + within
    state: Any = None
    while time.monotonic() < deadline:
        state = await client.get(key)
        if accept(state):
            return state
        await anyio.sleep(0.1)
    raise AssertionError(f"state not reached within {within:g}s; last: {state}")


@contextmanager
def daemon_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``canaryd run -c config`` as a subprocess; kill it (if alive) on exit."""
    env = {**os.environ, "CANARYD_LOG_FORMAT": "json"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "canaryd", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
