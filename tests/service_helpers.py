"""Configs and stand-in servers for tests that run a whole daemon (API, CLI, signals, metrics).

A :class:`~receiver.Receiver` plays Prometheus (its body is a Prometheus answer
that a test may change at any time) and another one plays the webhook router.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from daemons import write_config
from receiver import Receiver

from canaryd.service.daemon import Daemon


def prom_answer(value: float | None) -> bytes:
    """A Prometheus instant-query answer with one sample (or none, for no data)."""
    result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
    data = {"resultType": "vector", "result": result}
    return json.dumps({"status": "success", "data": data}).encode()


def canary(
    name: str = "web",
    namespace: str = "prod",
    *,
    minimum: float = 90.0,
    manual_promotion: bool = False,
    **analysis: Any,
) -> dict[str, Any]:
    """A canary on provider ``prom`` and router ``lb``, one metric ``success`` >= ``minimum``."""
    spec: dict[str, Any] = {"interval": "100ms", "threshold": 3, "stepWeight": 10, "maxWeight": 30}
    spec.update(analysis)
    spec["metrics"] = [
        {"name": "success", "query": "up", "thresholdRange": {"min": minimum}, "interval": "1m"}
    ]
    if manual_promotion:
        spec["webhooks"] = [{"name": "release", "type": "confirm-promotion"}]
    return {"name": name, "namespace": namespace, "router": "lb", "analysis": spec}


@asynccontextmanager
async def backends(value: float | None = 99.9) -> AsyncIterator[tuple[Receiver, Receiver]]:
    """A fake Prometheus answering ``value`` and a webhook router answering 200."""
    async with (
        Receiver(body=prom_answer(value), content_type="application/json") as prom,
        Receiver() as router,
    ):
        yield prom, router


def service_config(
    tmp_path: Path, prom: Receiver, router: Receiver, canaries: list[dict[str, Any]], **top: Any
) -> Path:
    """A daemon config (API token in ``daemons.TOKEN``) using the two stand-ins."""
    return write_config(
        tmp_path,
        canaries,
        providers={"prom": {"type": "prometheus", "address": prom.url, "timeout": "2s"}},
        routers={"lb": {"type": "webhook", "url": router.url + "/route", "timeout": "2s"}},
        **top,
    )


def phase_of(daemon: Daemon, key: str) -> str:
    """The phase of a canary of an in-process daemon."""
    runner = daemon.runner(key)
    assert runner is not None, f"no runner {key}"
    return runner.state.phase.value
