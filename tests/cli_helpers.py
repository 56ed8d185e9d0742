"""A real in-process daemon and a ``canaryd`` runner shared by the test_cli_* modules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import pytest
import structlog
from daemons import api_url, running_daemon
from service_helpers import backends, canary, service_config
from support import eventually

from canaryd.cli import main
from canaryd.service.daemon import Daemon


@dataclass
class Cli:
    """Runs ``canaryd`` commands against one daemon and captures what they print."""

    daemon: Daemon
    url: str
    token_file: Path
    capsys: pytest.CaptureFixture[str]

    async def __call__(self, *argv: str, token: bool = True) -> tuple[int, str, str]:
        """Run one command in a worker thread (it runs its own event loop)."""
        args = [*argv, "--url", self.url]
        if token:
            args += ["--token-file", str(self.token_file)]
        self.capsys.readouterr()
        code = await anyio.to_thread.run_sync(main, args)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
async def cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cli]:
    """A daemon with prod/web and prod/api (interval 1h: only commands wake a tick)."""
    monkeypatch.delenv("CANARYD_TOKEN", raising=False)
    monkeypatch.delenv("CANARYD_TOKEN_FILE", raising=False)
    async with backends() as (prom, router):
        cfg = service_config(
            tmp_path,
            prom,
            router,
            [canary(interval="1h"), canary("api", interval="1h", manual_promotion=True)],
        )
        with structlog.testing.capture_logs():  # the daemon's log lines stay off stdout
            async with running_daemon(cfg) as daemon:
                yield Cli(daemon, api_url(cfg), tmp_path / "api-token", capsys)


async def rollout_at_10(cli: Cli) -> None:
    code, out, err = await cli("rollout", "prod/web", "--revision", "v2")
    assert (code, out, err) == (0, "prod/web: rollout of v2 started (Progressing)\n", "")
    runner = cli.daemon.runner("prod/web")
    assert runner is not None
    await eventually(lambda: runner.state.canary_weight == 10, what="first step")
