"""Security: secret files readable by others stop the daemon with a clear message."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemons import TOKEN, write_config
from security_helpers import MESH, one_canary, secret_file
from structlog.testing import capture_logs

from canaryd.service.daemon import run_daemon

pytestmark = pytest.mark.anyio


SECRET_PLACES: dict[str, Callable[[str], dict[str, Any]]] = {
    "api-token": lambda f: {"api": {"token_file": f}},
    "router-secret": lambda f: {"routers": {"mesh": {**MESH["mesh"], "secret_file": f}}},
    "notifier-url-file": lambda f: {
        "notifiers": {"pager": {"type": "slack", "url_file": f}},
        "canaries": [{**one_canary()[0], "alerts": [{"name": "a", "notifier": "pager"}]}],
    },
    "notifier-secret": lambda f: {
        "notifiers": {"pager": {"type": "webhook", "url": "http://127.0.0.1:9/", "secret_file": f}}
    },
    "webhook-secret": lambda f: {
        "canaries": [
            {
                **one_canary()[0],
                "analysis": {
                    "stepWeight": 50,
                    "webhooks": [
                        {
                            "name": "h",
                            "type": "event",
                            "url": "http://127.0.0.1:9/",
                            "secret_file": f,
                        }
                    ],
                },
            }
        ]
    },
    "prometheus-bearer": lambda f: {
        "providers": {"prom": {"type": "prometheus", "bearer_token_file": f}}
    },
    "prometheus-password": lambda f: {
        "providers": {"prom": {"type": "prometheus", "username": "u", "password_file": f}}
    },
}


@pytest.mark.parametrize("place", list(SECRET_PLACES), ids=list(SECRET_PLACES))
async def test_daemon_refuses_to_start_with_a_secret_file_readable_by_others(
    tmp_path: Path, place: str
) -> None:
    """The start path exits 1 naming the file and the chmod that fixes it, never its content."""
    value = f"s3cr3t-{secrets.token_hex(8)}"
    secret = secret_file(tmp_path, "secret", value, 0o644)
    top: dict[str, Any] = {"routers": MESH, **SECRET_PLACES[place](secret)}
    canaries = top.pop("canaries", one_canary())
    cfg = write_config(tmp_path, canaries, **top)
    with capture_logs() as logs, anyio.fail_after(20):
        code = await run_daemon(cfg)
    text = json.dumps(logs, default=str)
    assert code == 1
    assert f"secret file {secret} is readable by others; run: chmod o-r {secret}" in text, text
    assert value not in text and "Traceback" not in text


@pytest.mark.slow
def test_canaryd_run_with_a_world_readable_token_file_exits_with_a_clear_message(
    tmp_path: Path,
) -> None:
    """``canaryd run`` itself (a process) prints the problem as one log line and exits 1."""
    cfg = write_config(tmp_path, one_canary(), routers=MESH)
    (tmp_path / "api-token").chmod(0o644)
    done = subprocess.run(
        [sys.executable, "-m", "canaryd", "run", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CANARYD_LOG_FORMAT": "json"},
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "is readable by others; run: chmod o-r" in out and str(tmp_path / "api-token") in out
    assert TOKEN not in out and "Traceback" not in out
