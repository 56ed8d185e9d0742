"""A real Prometheus for tests, scraping a metrics endpoint the test controls.

- :class:`MetricsApp`: an aiohttp server (background thread, 127.0.0.1, free
  port) serving a Prometheus text exposition whose samples a test sets at any
  time with :meth:`MetricsApp.set`, :meth:`MetricsApp.set_many` or
  :meth:`MetricsApp.set_histogram`.
- :func:`start_prometheus`: the real ``prometheus`` binary on a free port with a
  temporary data dir, scraping a MetricsApp every second (``honor_labels``, so
  the ``job`` label a test sets is the one stored).
- :func:`seed_openmetrics`: deterministic history, written with
  ``promtool tsdb create-blocks-from openmetrics`` into a data dir that
  :func:`start_prometheus` can then serve.
- :func:`eventually`: bounded polling, for values that need a scrape or two.

``tests/conftest.py`` turns these into the ``metrics_app`` and ``prometheus``
session fixtures and the ``unique_job`` fixture. The Prometheus is shared by
the whole session, so every test selects on its own ``unique_job``.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from support import free_port, retry_on_port_clash

from canaryd.config import PrometheusProvider
from canaryd.providers.prometheus import Prometheus

T = TypeVar("T")

READY_TIMEOUT = 30.0
"""Seconds Prometheus may take to answer ``/-/ready``."""

STOP_TIMEOUT = 10.0
"""Seconds Prometheus may take to exit after SIGTERM before it is killed."""

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


def require_binary(name: str, package: str = "prometheus") -> str:
    """Return the path of a server binary; fail in CI, skip elsewhere, when missing.

    ``package`` is the Debian package to name in the message.

    Raises:
        pytest.fail.Exception: the binary is missing and ``CI=true``.
        pytest.skip.Exception: the binary is missing outside CI.
    """
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (install it with: apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def histogram_samples(
    name: str, labels: Mapping[str, str], buckets: Mapping[float, float], total: float
) -> list[tuple[str, Mapping[str, str], float]]:
    """The samples of a histogram: cumulative ``buckets`` (upper bound -> count) and ``_sum``.

    ``+Inf`` is added when missing (count of the largest bucket); ``_count``
    equals the ``+Inf`` bucket. Pass the result to :meth:`MetricsApp.set_many`.
    """
    counts = dict(buckets)
    counts.setdefault(math.inf, max(counts.values(), default=0.0))
    samples: list[tuple[str, Mapping[str, str], float]] = [
        (f"{name}_bucket", {**labels, "le": _format_value(le)}, count)
        for le, count in sorted(counts.items())
    ]
    samples += [(f"{name}_count", labels, counts[math.inf]), (f"{name}_sum", labels, total)]
    return samples


class MetricsApp:
    """A scrape target whose samples the test sets (aiohttp in a background thread).

    Example::

        app.set("http_requests_total", {"job": "web-canary", "code": "200"}, 123.0)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: dict[SampleKey, float] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the scrape target."""
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, labels: Mapping[str, str], value: float) -> None:
        """Set one sample (created if new) to ``value``."""
        self.set_many([(name, labels, value)])

    def set_many(self, samples: Iterable[tuple[str, Mapping[str, str], float]]) -> None:
        """Set several samples at once, so one scrape sees all of them or none."""
        with self._lock:
            for name, labels, value in samples:
                self._samples[(name, tuple(sorted(labels.items())))] = float(value)

    def set_histogram(
        self, name: str, labels: Mapping[str, str], buckets: Mapping[float, float], total: float
    ) -> None:
        """Set a whole histogram at once (see :func:`histogram_samples`)."""
        self.set_many(histogram_samples(name, labels, buckets, total))

    def exposition(self) -> str:
        """The current samples in the Prometheus text format."""
        with self._lock:
            items = sorted(self._samples.items())
        lines = []
        for (name, labels), value in items:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{name}{{{inner}}} {_format_value(value)}")
        return "\n".join(lines) + "\n"

    async def _handle(self, request: web.Request) -> web.Response:
        return web.Response(text=self.exposition(), content_type="text/plain")

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    def start(self, timeout: float = 10.0) -> None:
        """Start serving ``/metrics``; return when the port is known.

        Raises:
            RuntimeError: the server did not start in time.
        """
        self._thread = threading.Thread(target=self._run, name="metrics-app", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None or not self.port:
            raise RuntimeError(f"MetricsApp did not start: {self._error!r}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and its thread."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)


@dataclass
class PrometheusServer:
    """A running ``prometheus`` process.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        process: the process (stopped by :meth:`stop`).
        workdir: config, log and (unless given) data dir live here.
        app: the MetricsApp it scrapes, if any.
    """

    url: str
    process: subprocess.Popen[bytes]
    workdir: Path
    app: MetricsApp | None = None

    def provider_config(self, **overrides: Any) -> PrometheusProvider:
        """A canaryd provider config pointing at this server (keys as in the YAML)."""
        return PrometheusProvider.model_validate(
            {"type": "prometheus", "address": self.url, "timeout": 5.0, **overrides}
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log, for error messages."""
        path = self.workdir / "prometheus.log"
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


def _write_config(workdir: Path, target: str | None) -> Path:
    scrape = (
        "scrape_configs:\n"
        "  - job_name: metrics-app\n"
        "    honor_labels: true\n"
        "    static_configs:\n"
        f'      - targets: ["{target}"]\n'
        if target
        else "scrape_configs: []\n"
    )
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n" + scrape
    )
    return config


def _start_prometheus_once(
    workdir: Path, *, app: MetricsApp | None = None, data_dir: Path | None = None
) -> PrometheusServer:
    """Start ``prometheus`` on a free 127.0.0.1 port and wait until it is ready.

    Args:
        workdir: an empty directory for config, log and data.
        app: the MetricsApp to scrape every second, if any.
        data_dir: an existing TSDB (e.g. from :func:`seed_openmetrics`); default
            ``workdir/data``.

    Raises:
        pytest.fail.Exception, pytest.skip.Exception: the binary is missing.
        RuntimeError: Prometheus exited or was not ready within READY_TIMEOUT.
    """
    binary = require_binary("prometheus")
    port = free_port()
    config = _write_config(workdir, app.address if app else None)
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={data_dir or workdir / 'data'}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, workdir, app)
    try:
        _wait_until(server, "/-/ready", lambda body: True)
        if app is not None:  # the first scrape comes up to ~5s after start (target discovery)
            _wait_until(server, "/api/v1/query?query=up", lambda body: b'"1"]' in body)
    except BaseException:
        server.stop()
        raise
    return server


def start_prometheus(
    workdir: Path, *, app: MetricsApp | None = None, data_dir: Path | None = None
) -> PrometheusServer:
    """:func:`_start_prometheus_once`, again on a new port if another process took it."""
    return retry_on_port_clash(lambda: _start_prometheus_once(workdir, app=app, data_dir=data_dir))


def _wait_until(server: PrometheusServer, path: str, accept: Callable[[bytes], bool]) -> None:
    """Poll ``path`` until it answers 200 with a body ``accept`` likes.

    Raises:
        RuntimeError: the process exited or READY_TIMEOUT passed.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"prometheus exited with code {server.process.returncode}:\n{server.log_tail()}"
            )
        with (
            suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(f"{server.url}{path}", timeout=1) as resp,
        ):
            if resp.status == 200 and accept(resp.read()):
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"prometheus at {server.url}: {path} not as expected within {READY_TIMEOUT:g}s:\n"
        f"{server.log_tail()}"
    )


def seed_openmetrics(text: str, data_dir: Path | None = None) -> Path:
    """Write OpenMetrics samples (with timestamps, in seconds) into a new TSDB.

    Args:
        text: OpenMetrics exposition; ``# EOF`` is appended when missing.
        data_dir: where to create the blocks; default a new temporary directory.

    Returns:
        The data dir, to pass to :func:`start_prometheus`.

    Raises:
        pytest.fail.Exception, pytest.skip.Exception: promtool is missing.
        RuntimeError: promtool rejected the input (its output is in the message).
    """
    promtool = require_binary("promtool")
    target = data_dir or Path(tempfile.mkdtemp(prefix="canaryd-tsdb-"))
    target.mkdir(parents=True, exist_ok=True)
    body = text if text.rstrip().endswith("# EOF") else text.rstrip("\n") + "\n# EOF\n"
    source = target.parent / f"{target.name}.om"
    source.write_text(body)
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promtool failed ({done.returncode}): {done.stderr or done.stdout}")
    return target


@asynccontextmanager
async def open_provider(cfg: PrometheusProvider) -> AsyncIterator[Prometheus]:
    """A :class:`Prometheus` provider, closed on exit."""
    async with Prometheus(cfg) as provider:
        yield provider
