"""Helpers to run a real canaryd (in-process or as a subprocess) against test servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import yaml
from support import eventually, free_port
from support.ports import ATTEMPTS, is_port_clash, listening

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
    """Run a daemon in-process for the duration of the block.

    A listen port taken meanwhile (tests/support/ports.py): the config gets a new one
    (:func:`new_listen_port`) and the daemon is started again.
    """
    async with AsyncExitStack() as stack:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                daemon = await stack.enter_async_context(_running_once(config))
            except BaseException as exc:
                if attempt == ATTEMPTS or not is_port_clash(exc) or not new_listen_port(config):
                    raise
                continue
            yield daemon
            return


@asynccontextmanager
async def _running_once(config: Path) -> AsyncIterator[Daemon]:
    """Run a daemon in-process once for the duration of the block."""
    daemon = Daemon(config, load_config(config))
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(15):
            await tg.start(daemon.run)
        try:
            yield daemon
        finally:
            tg.cancel_scope.cancel()


def new_listen_port(config: Path) -> bool:
    """Give a config from :func:`write_config` a new free ``listen`` port; False if it has none."""
    data = yaml.safe_load(config.read_text())
    host, _, port = str(data.get("listen", "")).rpartition(":")
    if host != "127.0.0.1" or not port.isdigit():
        return False
    data["listen"] = f"127.0.0.1:{free_port()}"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return True


@asynccontextmanager
async def client_for(config: Path) -> AsyncIterator[Client]:
    """An API client with the test token."""
    async with Client(api_url(config), TOKEN, timeout=5.0) as c:
        yield c


async def wait_for_state(client: Client, key: str, accept: Any, within: float = 30.0) -> Any:
    """Poll the API until ``accept(state)`` holds; fail with the last state otherwise."""
    return await eventually(
        lambda: client.get(key), accept, within=within, interval=0.1, what=f"state of {key}"
    )


@contextmanager
def daemon_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``canaryd run -c config`` as a subprocess; kill it (if alive) on exit.

    A daemon that exits at start because its listen port was taken meanwhile is started
    again on a new port (:func:`new_listen_port`; its lines about the clash are removed
    from ``log``). Other daemons are yielded as they are, running or not.
    """
    for attempt in range(1, ATTEMPTS + 1):
        size = log.stat().st_size if log.exists() else 0
        proc = _spawn_daemon(config, log)
        clashed = attempt < ATTEMPTS and _exited_on_clash(proc, config, log, size)
        if not clashed or not new_listen_port(config):
            break
        with log.open("r+b") as out:
            out.truncate(size)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def _spawn_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``canaryd run -c config`` logging JSON to ``log`` (appended)."""
    env = {**os.environ, "CANARYD_LOG_FORMAT": "json"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "canaryd", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


CLASH_WAIT = 30.0
"""Seconds :func:`daemon_process` waits for a daemon to listen or exit before yielding it."""


def _exited_on_clash(proc: subprocess.Popen[bytes], config: Path, log: Path, size: int) -> bool:
    """Wait until the daemon listens or exits (bounded); True if it exited on a port clash."""
    listen = str(yaml.safe_load(config.read_text()).get("listen", ""))
    port = int(listen.rpartition(":")[2]) if listen.rpartition(":")[2].isdigit() else None
    deadline = time.monotonic() + CLASH_WAIT
    while proc.poll() is None and time.monotonic() < deadline:
        if port is None or listening(proc.pid, port):
            return False
        time.sleep(0.05)
    if proc.poll() is None:
        return False
    with log.open("rb") as out:
        out.seek(size)
        return is_port_clash(RuntimeError(out.read().decode(errors="replace")))


def log_events(log: Path, name: str | None = None, *, offset: int = 0) -> list[dict[str, Any]]:
    """The daemon's JSON log lines written from byte ``offset`` of ``log`` on, of event
    ``name`` when given; anything else (a line cut by a SIGKILL, not JSON) is skipped."""
    out = []
    with log.open("rb") as lines:
        lines.seek(offset)
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and name in (None, entry.get("event")):
                out.append(entry)
    return out
