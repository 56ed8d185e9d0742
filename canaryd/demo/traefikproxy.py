"""Traefik in the demo (``--router traefik``): a child process with a watched file provider.

The file provider watches a directory holding the operator's file (router
``web``, services ``primary`` and ``canary``) and canaryd's file (the
``weighted`` service ``web``); the demo reads the weights back from Traefik's
API. Shared parts (and the no-traffic scenario's stray v1 app) are in
:mod:`canaryd.demo.fileproxies`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from canaryd.config.models import TraefikRouter
from canaryd.demo.fileproxies import (
    DEMO_CANARY,
    ROUTER_TIMEOUT,
    UPSTREAM,
    addresses,
    behind_stray,
    get_json,
)
from canaryd.demo.procs import free_port, serving
from canaryd.errors import RouterError
from canaryd.routers.traefik import PROMOTED_SUFFIX, dynamic_config, qualified


def traefik_static(port: int, api: int, dynamic: Path) -> dict[str, Any]:
    """Traefik's static config: entry points on loopback, the API, the file provider."""
    return {
        "entryPoints": {
            "web": {"address": f"127.0.0.1:{port}"},
            "traefik": {"address": f"127.0.0.1:{api}"},
        },
        "api": {"insecure": True},
        "metrics": {"prometheus": {"entryPoint": "traefik", "addServicesLabels": True}},
        "providers": {"file": {"directory": str(dynamic), "watch": True}},
        "log": {"level": "ERROR"},
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
    }


def traefik_operator(primary: str, canary: str) -> dict[str, Any]:
    """The operator's dynamic file: router ``web`` to service ``web``, the two app services."""

    def service(address: str) -> dict[str, Any]:
        return {"loadBalancer": {"servers": [{"url": f"http://{address}"}]}}

    return {
        "http": {
            "routers": {UPSTREAM: {"rule": "PathPrefix(`/`)", "service": UPSTREAM}},
            "services": {"primary": service(primary), "canary": service(canary)},
        }
    }


@dataclass
class TraefikPath:
    """A running Traefik in front of the two apps.

    Attributes:
        url: the ``web`` entry point, where the load goes.
        file: canaryd's dynamic file (the weighted service).
        api: Traefik's API.
    """

    url: str
    file: Path
    api: str
    label: str = "Traefik (real), a weighted service in the file provider, read back via its API"
    scale: int = 100
    promotes: bool = True
    """Promotion points the primary at the canary's address (``promotion: address``)."""

    @property
    def router(self) -> dict[str, Any]:
        """canaryd's router config entry for it."""
        return {
            "type": "traefik",
            "file": str(self.file),
            "api": self.api,
            "service": UPSTREAM,
            "primary": "primary",
            "canary": "canary",
            "timeout": ROUTER_TIMEOUT,
        }

    async def weights(self) -> tuple[int, int]:
        """(primary, canary) weights as Traefik's API reports them.

        Raises:
            RouterError: the API did not answer or shows no weighted service.
        """
        answer = await get_json(f"{self.api}/api/http/services/{qualified(UPSTREAM, 'file')}")
        children = (
            answer.get("weighted", {}).get("services", []) if isinstance(answer, dict) else []
        )
        weights = {c.get("name"): int(c.get("weight", 1)) for c in children}
        if not weights:
            raise RouterError("Traefik's API shows no weighted service")
        primary = weights.get("primary", weights.get(UPSTREAM + PROMOTED_SUFFIX, 0))
        return primary, weights.get("canary", 0)


@asynccontextmanager
async def run_traefik(
    binary: str, workdir: Path, primary_port: int, canary_port: int, *, canary_down: bool
) -> AsyncIterator[TraefikPath]:
    """Start Traefik in the foreground; stop it when the block ends.

    Raises:
        DemoError: it did not start or did not become ready.
    """
    ports = (primary_port, canary_port)
    async with behind_stray(_run_traefik, binary, workdir, ports, canary_down) as path:
        yield path


@asynccontextmanager
async def _run_traefik(
    binary: str, workdir: Path, primary_port: int, canary_port: int
) -> AsyncIterator[TraefikPath]:
    port, api = free_port(), free_port()
    primary, canary = addresses(primary_port, canary_port)
    dynamic = workdir / "traefik-dynamic"
    dynamic.mkdir()
    path = TraefikPath(
        f"http://127.0.0.1:{port}/", dynamic / f"canaryd-{UPSTREAM}.yml", f"http://127.0.0.1:{api}"
    )
    static = workdir / "traefik.yml"
    static.write_text(yaml.safe_dump(traefik_static(port, api, dynamic)))
    (dynamic / f"{UPSTREAM}.yml").write_text(yaml.safe_dump(traefik_operator(primary, canary)))
    cfg = TraefikRouter.model_validate(path.router)
    path.file.write_bytes(dynamic_config(cfg, 100, 0, DEMO_CANARY))
    argv = [binary, f"--configfile={static}"]
    async with serving("traefik", argv, workdir / "traefik.log", path.url):
        yield path
