"""A real InfluxDB 1.x for tests: Debian's ``influxd`` on loopback with a temporary config.

:func:`start_influxdb` writes a config whose meta, data and WAL directories are
in a temporary directory, binds HTTP and RPC to free 127.0.0.1 ports, turns
authentication on and creates the admin user :data:`USER` (password
:data:`PASSWORD`) and the database :data:`DATABASE`. Tests write points with
:meth:`InfluxServer.write` (the ``/write`` line protocol) on measurements of
their own, so they share the session's server safely (``tests/conftest.py``:
the ``influxdb`` fixture).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prom import require_binary
from support import free_port, retry_on_port_clash

from canaryd.config import InfluxDBProvider

READY_TIMEOUT = 30.0
"""Seconds influxd may take to answer ``/ping``."""

STOP_TIMEOUT = 10.0
"""Seconds influxd may take to exit after SIGTERM before it is killed."""

USER = "canaryd"
PASSWORD = "influx-test-pass"
DATABASE = "canaryd"

_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{http}"
  auth-enabled = true
  log-enabled = false
  pprof-enabled = false
[logging]
  level = "warn"
"""


@dataclass
class InfluxServer:
    """A running ``influxd``.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        process: the process (stopped by :meth:`stop`).
        workdir: config, log and data.
    """

    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    def password_file(self) -> str:
        """A secret file (mode 600) holding the admin password."""
        path = self.workdir / "password"
        if not path.exists():
            path.write_text(PASSWORD + "\n")
            os.chmod(path, 0o600)
        return str(path)

    def provider_config(self, **overrides: Any) -> InfluxDBProvider:
        """A canaryd provider config for this server: InfluxQL, the test database, basic auth."""
        return InfluxDBProvider.model_validate(
            {
                "type": "influxdb",
                "address": self.url,
                "database": DATABASE,
                "username": USER,
                "password_file": self.password_file(),
                "timeout": 5.0,
                **overrides,
            }
        )

    def request(self, path: str, params: dict[str, str], body: bytes | None = None) -> bytes:
        """An authenticated POST to the server (raises on HTTP errors)."""
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        req = urllib.request.Request(
            f"{self.url}{path}?{urllib.parse.urlencode(params)}",
            data=body or b"",
            headers={"Authorization": f"Basic {auth}"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            data: bytes = resp.read()
            return data

    def write(self, lines: list[str]) -> None:
        """Write points in line protocol (timestamps in seconds) to the test database."""
        self.request("/write", {"db": DATABASE, "precision": "s"}, "\n".join(lines).encode())

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        path = self.workdir / "influxd.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the process; kill it if it does not exit within STOP_TIMEOUT."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start_influxdb_once(workdir: Path) -> InfluxServer:
    """Start ``influxd`` on free 127.0.0.1 ports with auth on, an admin user and a database.

    Raises:
        pytest.fail.Exception, pytest.skip.Exception: influxd is missing.
        RuntimeError: influxd exited or was not ready within READY_TIMEOUT.
    """
    binary = require_binary("influxd", "influxdb")
    http = free_port()
    config = workdir / "influxdb.conf"
    config.write_text(_CONFIG.format(root=workdir, rpc=free_port(), http=http))
    with (workdir / "influxd.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "-config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = InfluxServer(f"http://127.0.0.1:{http}", process, workdir)
    try:
        _wait_ready(server)
        # with auth on and no user yet, InfluxDB accepts exactly this: the first admin
        create = f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"
        urllib.request.urlopen(
            urllib.request.Request(
                f"{server.url}/query", data=urllib.parse.urlencode({"q": create}).encode()
            ),
            timeout=10,
        ).close()
        answer = json.loads(server.request("/query", {"q": f"CREATE DATABASE {DATABASE}"}))
        if "error" in json.dumps(answer):
            raise RuntimeError(f"influxdb refused CREATE DATABASE: {answer}")
    except BaseException:
        server.stop()
        raise
    return server


def start_influxdb(workdir: Path) -> InfluxServer:
    """:func:`_start_influxdb_once`, again on new ports if another process took one."""
    return retry_on_port_clash(lambda: _start_influxdb_once(workdir))


def _wait_ready(server: InfluxServer) -> None:
    """Poll ``/ping`` until it answers 204.

    Raises:
        RuntimeError: the process exited or READY_TIMEOUT passed.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"influxd exited early:\n{server.log_tail()}")
        with (
            suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{server.url}/ping", timeout=1) as resp,
        ):
            if resp.status == 204:
                return
        time.sleep(0.1)
    raise RuntimeError(f"influxd not ready within {READY_TIMEOUT:g}s:\n{server.log_tail()}")
