"""systemd integration: the notify protocol, the watchdog heartbeat, and the shipped unit file."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from daemons import api_url, daemon_process, write_config
from service_helpers import canary
from support import eventually

from canaryd.config.loader import load_config
from canaryd.service.daemon import Daemon
from canaryd.service.sdnotify import Notifier, socket_address, watchdog_period

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "canaryd.service"
UNREACHABLE = "http://127.0.0.1:9"


class NotifySocket:
    """systemd's side of ``NOTIFY_SOCKET``: a datagram socket that collects messages."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        self.messages: list[dict[str, str]] = []

    def poll(self) -> None:
        """Collect every datagram waiting on the socket."""
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append(fields)

    def wait_for(self, key: str, within: float = 15.0, after: int = 0) -> dict[str, str]:
        """The first message from index ``after`` on that has ``key``; bounded by ``within``."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.poll()
            found = [m for m in self.messages[after:] if key in m]
            if found:
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"no {key} within {within:g}s; got {self.messages[after:]}")


@pytest.fixture(params=["path", "abstract"], ids=["path-socket", "abstract-socket"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    """A bound ``AF_UNIX`` datagram socket: a filesystem path, or ``@name`` (abstract)."""
    address = str(tmp_path / "notify") if request.param == "path" else f"@canaryd-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(socket_address(address))
        sock.setblocking(False)
        yield NotifySocket(sock, address)


# --------------------------------------------------------------------------- protocol


def test_notifier_sends_datagrams(notify_socket: NotifySocket) -> None:
    """Each call is one datagram of KEY=VALUE lines, on path and abstract sockets alike."""
    notifier = Notifier(notify_socket.address)
    assert notifier.ready("1 canary, 0 progressing, 0 failed")
    assert notifier.reloading()
    notify_socket.poll()
    ready, reloading = notify_socket.messages
    assert ready == {"READY": "1", "STATUS": "1 canary, 0 progressing, 0 failed"}
    assert reloading["RELOADING"] == "1" and reloading["MONOTONIC_USEC"].isdigit()


def test_notifier_without_socket_does_nothing() -> None:
    """Outside systemd (no NOTIFY_SOCKET) nothing is sent and nothing fails."""
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert not notifier.ready("x")


def test_notifier_survives_a_missing_socket(tmp_path: Path) -> None:
    """A socket that went away makes a send return False, never raise."""
    assert not Notifier(str(tmp_path / "gone")).watchdog("x")


@pytest.mark.parametrize(
    ("environ", "period"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
    ids=["unset", "usec", "our-pid", "other-pid", "zero", "garbage"],
)
def test_watchdog_period(environ: dict[str, str], period: float | None) -> None:
    """WATCHDOG_USEC gives the period, unless WATCHDOG_PID names another process."""
    assert watchdog_period(environ) == period


# --------------------------------------------------------------------------- the daemon


def _readyz(url: str) -> int:
    with urllib.request.urlopen(url + "/readyz", timeout=2.0) as answer:
        return int(answer.status)


@pytest.mark.slow
def test_daemon_speaks_the_notify_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """READY=1 after the API answers, WATCHDOG=1 periodically, RELOADING/READY on SIGHUP,
    STOPPING=1 on SIGTERM, then exit 0."""
    config = write_config(
        tmp_path,
        [canary(interval="100ms"), canary("api", interval="100ms")],
        providers={"prom": {"type": "prometheus", "address": UNREACHABLE, "timeout": "1s"}},
        routers={"lb": {"type": "webhook", "url": UNREACHABLE, "timeout": "1s"}},
    )
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.setblocking(False)
        systemd = NotifySocket(sock, address)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        monkeypatch.setenv("WATCHDOG_USEC", "400000")
        with daemon_process(config, tmp_path / "canaryd.log") as proc:
            ready = systemd.wait_for("READY")
            assert _readyz(api_url(config)) == 200, "READY=1 before the API answers"
            assert ready["STATUS"] == "2 canaries, 0 progressing, 0 failed"
            before = systemd.messages[: systemd.messages.index(ready)]
            assert not any("WATCHDOG" in m for m in before), "heartbeat before READY=1"
            first = systemd.wait_for("WATCHDOG", after=len(systemd.messages))
            systemd.wait_for("WATCHDOG", after=systemd.messages.index(first) + 1)
            mark = len(systemd.messages)
            proc.send_signal(signal.SIGHUP)
            reloading = systemd.wait_for("RELOADING", after=mark)
            assert reloading["MONOTONIC_USEC"].isdigit()
            systemd.wait_for("READY", after=systemd.messages.index(reloading) + 1)
            mark = len(systemd.messages)
            proc.send_signal(signal.SIGTERM)
            systemd.wait_for("STOPPING", after=mark)
            assert proc.wait(timeout=30) == 0
    lines = (tmp_path / "canaryd.log").read_text().splitlines()
    assert "daemon.stopped" in [json.loads(line)["event"] for line in lines]


@pytest.mark.anyio
async def test_watchdog_stops_when_a_loop_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a canary's tick hangs past its deadline, WATCHDOG=1 is withheld."""
    from daemons import running_daemon

    address = str(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    config = write_config(
        tmp_path,
        [canary(interval="100ms")],
        providers={"prom": {"type": "prometheus", "address": UNREACHABLE, "timeout": "1s"}},
        routers={"lb": {"type": "webhook", "url": UNREACHABLE, "timeout": "1s"}},
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.setblocking(False)
        systemd = NotifySocket(sock, address)
        async with running_daemon(config) as daemon:
            daemon.stall_grace, daemon.tick_grace = 0.3, 0.2

            def count() -> int:
                systemd.poll()
                return sum("WATCHDOG" in m for m in systemd.messages)

            await eventually(lambda: count() >= 2, what="WATCHDOG=1 while healthy")

            async def hang() -> None:
                await anyio.sleep_forever()

            runner = daemon.runner("prod/web")
            monkeypatch.setattr(runner, "tick", hang)
            await eventually(
                lambda: daemon.health.stalled(time.time()), what="the loop counts as stalled"
            )
            systemd.poll()
            withheld = len(systemd.messages)

            def more_heartbeats() -> bool:
                systemd.poll()
                return len(systemd.messages) >= withheld + 3

            await eventually(more_heartbeats, what="three more heartbeats")
            later = systemd.messages[withheld:]
            assert not any("WATCHDOG" in m for m in later)
            assert later[-1]["STATUS"].endswith("stalled: prod/web")
            daemon.stop()  # the hung tick is abandoned after tick_grace


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_tick_waiting_for_a_slow_hook_within_its_timeout_is_not_a_stall(
    tmp_path: Path,
) -> None:
    """A tick that waits for a webhook longer than the tick's budget, but within the hook's own
    timeout, is not counted as stalled: systemd's watchdog is not withheld for it."""
    from daemons import running_daemon
    from receiver import Receiver

    async with Receiver(statuses=[500], delay=2.0) as hook:
        hooks = [{"name": "stop", "type": "rollback", "url": hook.url, "timeout": "5s"}]
        config = write_config(
            tmp_path,
            [canary(interval="100ms", webhooks=hooks)],
            providers={"prom": {"type": "prometheus", "address": UNREACHABLE, "timeout": "1s"}},
            routers={"lb": {"type": "webhook", "url": UNREACHABLE, "timeout": "1s"}},
        )
        async with running_daemon(config) as daemon:
            daemon.stall_grace = 0.3  # without the hook's timeout: stalled after 0.48 s
            runner = daemon.runner("prod/web")
            assert runner is not None
            await runner.start_rollout("v2", {})
            await hook.wait_for(1)
            seen = []
            for _ in range(15):  # 1.5 s of the 2 s the hook holds its answer
                seen += daemon.health.stalled(time.time())
                await anyio.sleep(0.1)
            assert len(hook.requests) == 1, "the tick is still waiting for the hook"
            daemon.stop()
    assert seen == []


# --------------------------------------------------------------------------- the unit file


def _systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        message = "systemd-analyze not found; install it: apt-get install systemd"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def _rendered_unit(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at this environment's canaryd."""
    canaryd = Path(sys.executable).parent / "canaryd"
    assert canaryd.exists(), f"{canaryd} missing: install the project (pip install -e .)"
    unit = tmp_path / "canaryd.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/canaryd", str(canaryd)))
    return unit


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
def test_unit_file_verifies(tmp_path: Path) -> None:
    """``systemd-analyze verify`` exits 0 and says nothing about canaryd's unit.

    Warnings about the host's other units (a package's unit using an obsolete
    setting) are not canaryd's and are ignored.
    """
    unit = _rendered_unit(tmp_path)
    result = subprocess.run(
        [_systemd_analyze(), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, lines_about(unit, result.stdout + result.stderr)) == (0, [])


_OTHER = re.compile(r"(/\S+|[\w@.\\-]+\.(service|socket|target|timer|mount|path|slice|swap)):")
"""A line of ``systemd-analyze`` output that starts with a unit file's path or a unit's name."""


def lines_about(unit: Path, output: str) -> list[str]:
    """The lines of ``systemd-analyze verify`` output that are about ``unit``.

    A line that starts with another unit's path or name is about the host's units.
    """
    return [
        line
        for line in output.splitlines()
        if line.startswith((f"{unit.name}:", f"{unit}:")) or not _OTHER.match(line)
    ]


def test_verify_output_about_other_units_is_ignored() -> None:
    """Warnings naming another unit (by path or name) are ignored; ours and unnamed ones count."""
    unit = Path("/tmp/x/canaryd.service")
    output = "\n".join(
        [
            "/lib/systemd/system/carbon-cache.service:8: Standard output type syslog is obsolete",
            "snapd.socket: Unit configuration has fatal error, unit will not be started.",
            "/tmp/x/canaryd.service:12: Unknown key name 'Foo' in section 'Service'",
            "canaryd.service: Command /nope is not executable: No such file or directory",
            "Unit canaryd.service is masked.",
        ]
    )
    assert lines_about(unit, output) == output.splitlines()[2:]


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
def test_unit_file_security_score(tmp_path: Path) -> None:
    """``systemd-analyze security --offline=yes`` rates the unit at most 2.0."""
    result = subprocess.run(
        [_systemd_analyze(), "security", "--offline=yes", str(_rendered_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for canaryd\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0


@pytest.mark.parametrize(
    "line",
    [
        "Type=notify",
        "WatchdogSec=30s",
        "LimitNOFILE=65536",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=canaryd",
        "ConfigurationDirectory=canaryd",
        "LoadCredential=api-token:/etc/canaryd/api-token",
        "Environment=CANARYD_API__TOKEN_FILE=%d/api-token",
    ],
    ids=lambda line: line.split("=")[0],
)
def test_unit_file_has(line: str) -> None:
    """The unit sets notify, watchdog, fd limit, reload, user, dirs and secrets as asked."""
    assert line in UNIT.read_text().splitlines()


def _journald_lines_per_second(unit: str) -> float:
    """The sustained log rate journald lets through for ``unit``; infinite if unlimited.

    Without ``LogRateLimitIntervalSec=`` the unit gets journald's defaults
    (``RateLimitBurst=10000`` per ``RateLimitIntervalSec=30s``); an interval of 0
    switches the limit off.
    """
    interval = re.search(r"^LogRateLimitIntervalSec=(\d+)s?$", unit, re.MULTILINE)
    burst = re.search(r"^LogRateLimitBurst=(\d+)$", unit, re.MULTILINE)
    seconds = int(interval.group(1)) if interval else 30
    lines = int(burst.group(1)) if burst else 10_000
    return float("inf") if seconds == 0 or lines == 0 else lines / seconds


def test_journald_keeps_every_line_at_the_sized_load() -> None:
    """journald's rate limit lets through one analysis.tick line per check at N = 10,000, 10 s."""
    assert _journald_lines_per_second(UNIT.read_text()) >= 10_000 / 10


def test_journald_rate_reads_journalds_defaults() -> None:
    """A unit without the settings gets journald's default of 10,000 lines per 30 s."""
    assert _journald_lines_per_second("[Service]\n") == pytest.approx(10_000 / 30)
    assert _journald_lines_per_second("LogRateLimitBurst=60000\n") == 2_000


def test_stop_timeout_leaves_room_for_a_graceful_stop() -> None:
    """TimeoutStopSec exceeds the tick grace, the outbox flush and the API shutdown together."""
    from canaryd.service.api import SHUTDOWN_SECONDS
    from canaryd.service.daemon import FLUSH_GRACE_SECONDS, TICK_GRACE_SECONDS

    match = re.search(r"^TimeoutStopSec=(\d+)s$", UNIT.read_text(), re.MULTILINE)
    assert match is not None
    needed = 2 * TICK_GRACE_SECONDS + FLUSH_GRACE_SECONDS + SHUTDOWN_SECONDS
    assert int(match.group(1)) >= needed + 10


# --------------------------------------------------------------------------- credentials


def _credentials(tmp_path: Path) -> Path:
    creds = tmp_path / "credentials"
    creds.mkdir()
    token = creds / "api-token"
    token.write_text("from-credential\n")
    token.chmod(0o400)
    return creds


def test_credentials_directory_is_expanded_in_file_keys(tmp_path: Path) -> None:
    """``${CREDENTIALS_DIRECTORY}`` in a ``*_file`` key names systemd's credential directory."""
    creds = _credentials(tmp_path)
    config = tmp_path / "canaryd.yaml"
    config.write_text('api: {token_file: "${CREDENTIALS_DIRECTORY}/api-token"}\n')
    loaded = load_config(config, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert loaded.settings.api.token_file == str(creds / "api-token")


def test_unit_environment_points_the_token_at_the_credential(tmp_path: Path) -> None:
    """The unit's ``CANARYD_API__TOKEN_FILE=%d/api-token`` sets the token without the file."""
    creds = _credentials(tmp_path)
    config = tmp_path / "canaryd.yaml"
    config.write_text(f"state: sqlite://{tmp_path}/state.db\n")
    env = {"CANARYD_API__TOKEN_FILE": str(creds / "api-token")}
    daemon = Daemon(config, load_config(config, environ=env))
    assert daemon.api_token == "from-credential"
