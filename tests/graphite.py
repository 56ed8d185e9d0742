"""A real Graphite for tests: Debian's carbon-cache and graphite-web on loopback.

- :func:`start_graphite`: ``carbon-cache`` in the foreground with a temporary
  config and whisper directory (retention ``1s:2h``, so a test writes one
  point per second of its own choosing), and graphite-web under Django's
  ``runserver`` with a test settings module pointing at that whisper directory,
  at carbon's cache (points not yet on disk are read from it) and at a
  temporary SQLite database. Both bind 127.0.0.1 on free ports.
- :meth:`GraphiteServer.send`: datapoints over carbon's plaintext protocol.

``tests/conftest.py`` turns this into the session fixture ``graphite``; tests
write to metric names of their own (``unique_job``), so they share it safely.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prom import require_binary
from support import free_port, retry_on_port_clash

from canaryd.config import GraphiteProvider

READY_TIMEOUT = 60.0
"""Seconds carbon-cache and graphite-web may take to come up (Django's migrate is slow)."""

STOP_TIMEOUT = 10.0
"""Seconds a process may take to exit after SIGTERM before it is killed."""

SYSTEM_PYTHON = "/usr/bin/python3"
"""graphite-web and Django are Debian packages of the system Python, not of the venv."""

_CARBON_CONF = """\
[cache]
STORAGE_DIR = {root}/storage/
LOCAL_DATA_DIR = {root}/storage/whisper/
CONF_DIR = {root}/conf/
LOG_DIR = {root}/log/
PID_DIR = {root}/
DATABASE = whisper
USER =
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 10000
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line}
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {query}
LOG_UPDATES = False
LOG_LISTENER_CONN_SUCCESS = False
"""

_WEB_SETTINGS = """\
SECRET_KEY = "canaryd-tests"
STORAGE_DIR = {root!r} + "/storage"
WHISPER_DIR = {root!r} + "/storage/whisper"
LOG_DIR = {root!r} + "/log"
INDEX_FILE = {root!r} + "/storage/index"
CARBONLINK_HOSTS = ["127.0.0.1:{query}"]
DATABASES = {{"default": {{"NAME": {root!r} + "/graphite.db",
                          "ENGINE": "django.db.backends.sqlite3"}}}}
ALLOWED_HOSTS = ["127.0.0.1"]
"""


@dataclass
class GraphiteServer:
    """A running carbon-cache + graphite-web pair.

    Attributes:
        url: graphite-web's ``http://127.0.0.1:PORT``.
        line_port: carbon's plaintext receiver.
        workdir: configs, logs, whisper files and the SQLite database.
        processes: carbon-cache and graphite-web (stopped by :meth:`stop`).
    """

    url: str
    line_port: int
    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def provider_config(self, **overrides: Any) -> GraphiteProvider:
        """A canaryd provider config pointing at this graphite-web."""
        return GraphiteProvider.model_validate(
            {"type": "graphite", "address": self.url, "timeout": 5.0, **overrides}
        )

    def send(self, points: Iterable[tuple[str, float, float]]) -> None:
        """Write ``(metric, value, unix time)`` points over the plaintext protocol."""
        lines = "".join(f"{name} {value!r} {int(ts)}\n" for name, value, ts in points)
        with socket.create_connection(("127.0.0.1", self.line_port), timeout=5) as sock:
            sock.sendall(lines.encode())

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of both logs, for error messages."""
        out = []
        for name in ("carbon.log", "web.log"):
            path = self.workdir / name
            text = path.read_text(errors="replace") if path.exists() else ""
            out.append(f"--- {name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        """Terminate both processes; kill any that does not exit within STOP_TIMEOUT."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _start_graphite_once(workdir: Path) -> GraphiteServer:
    """Start carbon-cache and graphite-web on free 127.0.0.1 ports; wait until both answer.

    Raises:
        pytest.fail.Exception, pytest.skip.Exception: carbon-cache or graphite-web is
            missing (``apt-get install graphite-carbon graphite-web``).
        RuntimeError: a process exited or was not ready within READY_TIMEOUT.
    """
    carbon = require_binary("carbon-cache", "graphite-carbon")
    require_binary("graphite-manage", "graphite-web")
    line, pickle, query, web = (free_port() for _ in range(4))
    root = str(workdir)
    for sub in ("storage/whisper", "log", "conf"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    (workdir / "conf" / "carbon.conf").write_text(
        _CARBON_CONF.format(root=root, line=line, pickle=pickle, query=query)
    )
    (workdir / "conf" / "storage-schemas.conf").write_text(
        "[default]\npattern = .*\nretentions = 1s:2h\n"
    )
    (workdir / "graphite_test_settings.py").write_text(_WEB_SETTINGS.format(root=root, query=query))
    env = {
        **os.environ,
        "PYTHONPATH": root,
        "DJANGO_SETTINGS_MODULE": "graphite.settings",
        "GRAPHITE_SETTINGS_MODULE": "graphite_test_settings",
        "PYTHONWARNINGS": "ignore",
    }
    server = GraphiteServer(f"http://127.0.0.1:{web}", line, workdir)
    try:
        server.processes.append(_spawn(workdir / "carbon.log", env, [
            carbon, f"--config={workdir}/conf/carbon.conf", "--nodaemon",
            f"--pidfile={workdir}/carbon.pid", "start",
        ]))  # fmt: skip
        subprocess.run(
            [SYSTEM_PYTHON, "-m", "django", "migrate", "--run-syncdb", "-v0"],
            env=env, check=True, capture_output=True, timeout=READY_TIMEOUT,
        )  # fmt: skip
        server.processes.append(_spawn(workdir / "web.log", env, [
            SYSTEM_PYTHON, "-m", "django", "runserver", f"127.0.0.1:{web}", "--noreload",
        ]))  # fmt: skip
        _wait_ready(server, line)
    except BaseException:
        server.stop()
        raise
    return server


def start_graphite(workdir: Path) -> GraphiteServer:
    """:func:`_start_graphite_once`, again on new ports if another process took one."""
    return retry_on_port_clash(lambda: _start_graphite_once(workdir))


def _spawn(log_path: Path, env: dict[str, str], argv: list[str]) -> subprocess.Popen[bytes]:
    """Start one process, its output to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


def _wait_ready(server: GraphiteServer, line_port: int) -> None:
    """Poll carbon's port and graphite-web's ``/render`` until both answer.

    Raises:
        RuntimeError: a process exited or READY_TIMEOUT passed.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    carbon_up = web_up = False
    while time.monotonic() < deadline and not (carbon_up and web_up):
        for process in server.processes:
            if process.poll() is not None:
                raise RuntimeError(f"graphite exited early:\n{server.log_tail()}")
        if not carbon_up:
            with suppress(OSError), socket.create_connection(("127.0.0.1", line_port), 1):
                carbon_up = True
        if not web_up:
            with (
                suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{server.url}/render?target=x&format=json", timeout=2),
            ):
                web_up = True
        time.sleep(0.1)
    if not (carbon_up and web_up):
        raise RuntimeError(f"graphite not ready within {READY_TIMEOUT:g}s:\n{server.log_tail()}")
