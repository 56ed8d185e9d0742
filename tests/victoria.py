"""A real VictoriaMetrics for tests: Debian's ``victoria-metrics`` on loopback.

:func:`start_victoria` runs the single-node binary with ``-storageDataPath`` in
a temporary directory and ``-httpListenAddr 127.0.0.1:PORT``; recent points are
queryable at once (``-search.latencyOffset=0s``, cache off). Tests import
samples with :meth:`VictoriaServer.import_text` (Prometheus exposition format
with millisecond timestamps) and read them through canaryd's Prometheus provider.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prom import require_binary
from support import free_port, retry_on_port_clash

from canaryd.config import PrometheusProvider

READY_TIMEOUT = 30.0
"""Seconds victoria-metrics may take to answer ``/health``."""

STOP_TIMEOUT = 10.0
"""Seconds it may take to exit after SIGTERM before it is killed."""


@dataclass
class VictoriaServer:
    """A running ``victoria-metrics``.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        process: the process (stopped by :meth:`stop`).
        workdir: log and data.
    """

    url: str
    process: subprocess.Popen[bytes]
    workdir: Path

    def provider_config(self, **overrides: Any) -> PrometheusProvider:
        """A canaryd Prometheus provider config pointing at this server."""
        return PrometheusProvider.model_validate(
            {"type": "prometheus", "address": self.url, "timeout": 5.0, **overrides}
        )

    def import_text(self, text: str) -> None:
        """Import samples (``name{labels} value timestamp_ms`` lines), then flush them."""
        req = urllib.request.Request(
            f"{self.url}/api/v1/import/prometheus", data=text.encode(), method="POST"
        )
        urllib.request.urlopen(req, timeout=10).close()
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log."""
        path = self.workdir / "victoria.log"
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


def _start_victoria_once(workdir: Path) -> VictoriaServer:
    """Start victoria-metrics on a free 127.0.0.1 port and wait until it is healthy.

    Raises:
        pytest.fail.Exception, pytest.skip.Exception: the binary is missing.
        RuntimeError: it exited or was not ready within READY_TIMEOUT.
    """
    binary = require_binary("victoria-metrics", "victoria-metrics")
    port = free_port()
    with (workdir / "victoria.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"-storageDataPath={workdir / 'data'}",
                f"-httpListenAddr=127.0.0.1:{port}",
                "-retentionPeriod=100y",
                "-search.latencyOffset=0s",
                "-search.disableCache",
                "-loggerLevel=ERROR",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = VictoriaServer(f"http://127.0.0.1:{port}", process, workdir)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"victoria-metrics exited early:\n{server.log_tail()}")
        with (
            suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{server.url}/health", timeout=1) as resp,
        ):
            if resp.status == 200:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(
        f"victoria-metrics not ready within {READY_TIMEOUT:g}s:\n{server.log_tail()}"
    )


def start_victoria(workdir: Path) -> VictoriaServer:
    """:func:`_start_victoria_once`, again on a new port if another process took it."""
    return retry_on_port_clash(lambda: _start_victoria_once(workdir))
