"""A one-canary config and a runner with fakes at the provider/router seams, for runtime tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from postgres import query

from canaryd.config import Settings
from canaryd.core.analysis import CanaryState
from canaryd.http import HttpTransport
from canaryd.service.runtime import CanaryRunner
from canaryd.service.services import Services
from canaryd.service.store import StateStore
from canaryd.testing import FakeProvider, FakeRouter


def settings(tmp_path: Path, **analysis: Any) -> Settings:
    """A one-canary config whose single metric is a plain query on provider ``prom``."""
    a: dict[str, Any] = {"interval": "1s", "threshold": 2, "stepWeight": 25, "maxWeight": 50}
    a.update(analysis)
    a.setdefault(
        "metrics",
        [
            {
                "name": "sr",
                "query": 'rate(x{job="{{ target }}"}[{{ interval }}])',
                "thresholdRange": {"min": 99},
                "interval": "30s",
            }
        ],
    )
    return Settings.model_validate(
        {
            "state": f"sqlite://{tmp_path}/state.db",
            "providers": {"prom": {"type": "prometheus"}},
            "routers": {"lb": {"type": "webhook", "url": "http://127.0.0.1:9/"}},
            "canaries": [
                {
                    "name": "web",
                    "namespace": "prod",
                    "router": "lb",
                    "target": "web-canary",
                    "analysis": a,
                }
            ],
        }
    )


def runner(
    cfg: Settings,
    store: StateStore,
    session: HttpTransport,
    provider: FakeProvider,
    router: FakeRouter,
    state: CanaryState | None = None,
) -> CanaryRunner:
    """A runner for the config's only canary, with a fixed clock."""
    services = Services(
        cfg, session, {"prom": provider}, {"lb": router}, store, clock=lambda: 1000.0
    )
    return CanaryRunner(cfg.canaries[0], state or CanaryState(), services)


# --------------------------------------------------------------------------- the outbox


def outbox(store: StateStore) -> list[tuple[str, dict[str, Any]]]:
    """The outbox rows (target, payload) in the order they were written."""
    rows = query(store, "SELECT target, payload FROM outbox ORDER BY id")
    return [(target, json.loads(body)) for target, body in rows]
