"""SIGKILL between a rollback and its alert: a real daemon process, real receivers.

The daemon (``python -m canaryd run``) analyses a canary against a stand-in for
Prometheus's query API that answers a failing value, routes through a webhook
router, and alerts a Slack-type notifier whose receiver is down (connection
refused). Once the state file shows the canary Failed with its alert pending,
the daemon is killed with SIGKILL, the receiver comes up on the same port, and
a second daemon on the same state file delivers the alert under the stored key.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import pytest
from daemons import daemon_process, log_events
from receiver import Receiver
from support import eventually, free_port

pytestmark = pytest.mark.anyio

T = TypeVar("T")

TOKEN = "e2e-api-token"
CHAT_PATH = "/services/T000/B000/XXXXchat-tokenXXXX"
FAILING = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "50"]}]},
}


def NOT_NONE(value: object) -> bool:  # noqa: N802 - reads as a constant in calls
    """Accept any result but None."""
    return value is not None


def write_config(tmp_path: Path, *, listen: int, prom: str, router: str, chat_port: int) -> Path:
    """The daemon's config (JSON is YAML) and its chmod-600 API token file."""
    token = tmp_path / "api-token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    cfg = {
        "listen": f"127.0.0.1:{listen}",
        "state": f"sqlite://{tmp_path}/state.db",
        "api": {"token_file": str(token)},
        "outbox": {
            "maxAge": "60s",
            "initialBackoff": "200ms",
            "maxBackoff": "500ms",
            "pollInterval": "200ms",
        },
        "providers": {"prom": {"type": "prometheus", "address": prom, "timeout": "2s"}},
        "routers": {"mesh": {"type": "webhook", "url": f"{router}/routes", "timeout": "2s"}},
        "notifiers": {
            "oncall": {
                "type": "slack",
                "url": f"http://127.0.0.1:{chat_port}{CHAT_PATH}",
                "timeout": "2s",
            }
        },
        "canaries": [
            {
                "name": "web",
                "namespace": "prod",
                "router": "mesh",
                "provider": "prom",
                "analysis": {
                    "interval": "300ms",
                    "threshold": 1,
                    "stepWeight": 50,
                    "metrics": [
                        {"name": "success-rate", "query": "sr", "thresholdRange": {"min": 99}}
                    ],
                },
                "alerts": [{"name": "oncall", "notifier": "oncall", "severity": "error"}],
            }
        ],
    }
    path = tmp_path / "canaryd.yaml"
    path.write_text(json.dumps(cfg, indent=2))
    return path


async def wait_ready(
    session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]
) -> None:
    """Wait until ``/readyz`` answers 200 (the daemon must not exit meanwhile)."""

    async def ready() -> bool:
        assert proc.poll() is None, "the daemon exited"
        try:
            async with session.get(url + "/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    deadline = time.monotonic() + 15.0
    while not await ready():
        assert time.monotonic() < deadline, "the daemon did not become ready within 15s"
        await anyio.sleep(0.1)


def state_db(tmp_path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """The canary's phase and its outbox rows, read without disturbing the daemon."""
    path = tmp_path / "state.db"
    if not path.exists():
        return None, []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        db.row_factory = sqlite3.Row
        state = db.execute("SELECT state FROM canaries WHERE key='prod/web'").fetchone()
        rows = db.execute("SELECT * FROM outbox ORDER BY id").fetchall()
    phase = json.loads(state["state"])["phase"] if state else None
    return phase, [dict(r) for r in rows]


@pytest.mark.slow
async def test_alert_pending_at_sigkill_is_delivered_after_restart(tmp_path: Path) -> None:
    """A rollback's alert still pending when the daemon is SIGKILLed goes out after a restart."""
    listen, chat_port = free_port(), free_port()
    log = tmp_path / "canaryd.log"
    prom_answer = json.dumps(FAILING)
    async with (
        Receiver(body=prom_answer, content_type="application/json") as prom,
        Receiver() as router,
        aiohttp.ClientSession() as session,
    ):
        config = write_config(
            tmp_path, listen=listen, prom=prom.url, router=router.url, chat_port=chat_port
        )
        api = f"http://127.0.0.1:{listen}"
        with daemon_process(config, log) as first:
            await wait_ready(session, api, first)
            async with session.post(
                f"{api}/api/v1/canaries/prod/web/rollouts",
                json={"revision": "v2"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as resp:
                assert resp.status == 201, await resp.text()

            def failed_with_alert_tried() -> dict[str, Any] | None:
                phase, rows = state_db(tmp_path)
                tried = [r for r in rows if r["status"] == "pending" and r["attempts"] >= 1]
                return tried[0] if phase == "Failed" and tried else None

            pending = await eventually(
                failed_with_alert_tried, NOT_NONE, within=15, what="Failed with a tried alert"
            )
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        assert pending is not None
        assert pending["target"] == "alert:oncall"
        assert json.loads(pending["payload"])["event"] == "rollout.rolled_back"
        assert "Connect" in pending["last_error"] and "chat-token" not in pending["last_error"]
        assert router.requests[-1].json["action"] == "rollback"

        async with Receiver(port=chat_port) as chat:
            with daemon_process(config, log) as second:
                await wait_ready(session, api, second)
                chat.wait_limit = 15.0
                await chat.wait_for(1)

                def sent() -> list[dict[str, Any]] | None:
                    rows = state_db(tmp_path)[1]
                    return rows if all(r["status"] == "sent" for r in rows) else None

                rows = await eventually(sent, NOT_NONE, within=15, what="the alert marked sent")
                assert rows is not None
                second.send_signal(signal.SIGTERM)
                assert second.wait(timeout=10) == 0
    assert len(chat.requests) == 1
    alert = chat.requests[0]
    assert alert.path == CHAT_PATH
    assert alert.headers["Idempotency-Key"] == pending["idem"]
    assert "rolled back" in alert.json["text"].lower()
    assert [(r["idem"], r["status"]) for r in rows] == [(pending["idem"], "sent")]
    lines = log_events(log)
    assert any(e["event"] == "notification.retrying" for e in lines)
    assert "chat-token" not in log.read_text()
    assert TOKEN not in log.read_text()
