"""The daemon, config and polls shared by the test_outages_* modules.

Each test runs a real daemon (in-process, real HTTP) against the session's real
Prometheus, reached through a :class:`~faults.PromProxy` that can go down, answer
slowly or answer garbage, and against stand-in routers and receivers on
127.0.0.1 that can refuse, fail or hang. The state store lives on a small tmpfs
the test mounts, which it fills for real (``tests/disks.py``), or is made
read-only on its own connection (``PRAGMA query_only``); both work as root,
where ``chmod`` stops nothing. The store on a filesystem the kernel turns
read-only is in ``test_disk_faults.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from daemons import wait_for_state, write_config
from prom import PrometheusServer, open_provider
from support import eventually

from canaryd.client import Client

KEY = "prod/web"
THRESHOLD = 3


def config(
    tmp_path: Path,
    job: str,
    prom_url: str,
    router_url: str,
    *,
    hooks_url: str | None = None,
    threshold: int = THRESHOLD,
    max_weight: int = 50,
    state_dir: Path | None = None,
) -> Path:
    """One canary on two gauges of ``job``; alerts and outbox hooks go to ``hooks_url``."""
    analysis: dict[str, Any] = {
        "interval": "0.3s",
        "threshold": threshold,
        "stepWeight": 25,
        "maxWeight": max_weight,
        "metrics": [
            {
                "name": "success-rate",
                "templateRef": {"name": "success"},
                "thresholdRange": {"min": 99},
            },
            {"name": "latency", "templateRef": {"name": "latency"}, "thresholdRange": {"max": 500}},
        ],
    }
    top: dict[str, Any] = {
        "providers": {"prom": {"type": "prometheus", "address": prom_url, "timeout": "2s"}},
        "routers": {"mesh": {"type": "webhook", "url": f"{router_url}/routes", "timeout": "0.5s"}},
        "templates": {
            "success": {"provider": "prom", "query": 'max(out_success{job="{{ target }}"})'},
            "latency": {"provider": "prom", "query": 'max(out_p99_ms{job="{{ target }}"})'},
        },
        "outbox": {"initialBackoff": "0.1s", "maxBackoff": "0.5s", "pollInterval": "0.1s"},
    }
    if state_dir is not None:
        top["state"] = f"sqlite://{state_dir}/state.db"
    canary: dict[str, Any] = {
        "name": "web",
        "namespace": "prod",
        "target": job,
        "router": "mesh",
        "provider": "prom",
        "analysis": analysis,
    }
    if hooks_url is not None:
        analysis["webhooks"] = [
            {"name": "events", "type": "event", "url": f"{hooks_url}/events", "timeout": "0.5s"},
            {"name": "post", "type": "post-rollout", "url": f"{hooks_url}/post", "timeout": "0.5s"},
        ]
        canary["alerts"] = [{"name": "pager", "notifier": "pager"}]
        top["notifiers"] = {
            "pager": {"type": "webhook", "url": f"{hooks_url}/alerts", "timeout": "0.5s"}
        }
    return write_config(tmp_path, [canary], **top)


async def seed(prom: PrometheusServer, job: str, success: float = 99.9, p99: float = 120) -> None:
    """Set the job's gauges and wait until Prometheus answers them."""
    assert prom.app is not None
    prom.app.set_many([("out_success", {"job": job}, success), ("out_p99_ms", {"job": job}, p99)])
    async with open_provider(prom.provider_config()) as provider:
        await eventually(
            lambda: provider.query(
                f'max(out_success{{job="{job}"}}) * 100000 + max(out_p99_ms{{job="{job}"}})',
                budget=2.0,
            ),
            lambda v: v is not None and abs(v - (success * 100000 + p99)) < 1e-6,
            within=15,
        )


async def finished(client: Client, revision: str, within: float = 20.0) -> dict[str, Any]:
    """Wait until the rollout of ``revision`` is Succeeded or Failed; return the state."""
    state: dict[str, Any] = await wait_for_state(
        client,
        KEY,
        lambda s: s["revision"] == revision and s["phase"] in ("Succeeded", "Failed"),
        within=within,
    )
    return state


def crashes(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    """Log entries that say a tick or a request hit a bug."""
    return [e for e in logs if e["event"] in ("tick.crashed", "api.crashed")]


def outbox(db: Path) -> list[tuple[str, str, str]]:
    """(key, target, status) of every outbox row, oldest first."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT idem, target, status FROM outbox ORDER BY id").fetchall()
    return [tuple(r) for r in rows]
