"""Envoy in the demo (``--router envoy``): a child process fed by files canaryd writes.

The listener's routes come from an RDS file that canaryd's ``envoy`` router
replaces, the primary cluster's endpoint from an EDS file it replaces on
promotion; the demo reads the weights back from the admin API's
``/config_dump``. Shared parts (and the no-traffic scenario's stray v1 app) are in
:mod:`canaryd.demo.fileproxies`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canaryd.config.models import EnvoyRouter
from canaryd.demo.fileproxies import (
    ROUTER_TIMEOUT,
    UPSTREAM,
    addresses,
    behind_stray,
    get_json,
)
from canaryd.demo.procs import free_port, serving
from canaryd.errors import RouterError
from canaryd.routers.envoy import eds_file, rds_file, route_configuration


def envoy_cluster(name: str, address: str) -> dict[str, Any]:
    """A static Envoy cluster with one endpoint."""
    host, _, port = address.rpartition(":")
    socket = {"socket_address": {"address": host, "port_value": int(port)}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket}}]}],
        },
    }


def envoy_bootstrap(rds: Path, admin: int, listen: int, eds: Path, canary: str) -> dict[str, Any]:
    """Envoy's bootstrap: the admin API, one listener whose routes come from ``rds``, the
    primary cluster's endpoints from the EDS file ``eds``, the canary's at ``canary``."""
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "web",
        "rds": {
            "route_config_name": UPSTREAM,
            "config_source": {"path_config_source": {"path": str(rds)}},
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    network = {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
    listener = {
        "name": "web",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
        "filter_chains": [{"filters": [network]}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "node": {"id": "canaryd-demo", "cluster": "canaryd-demo"},
        "static_resources": {
            "listeners": [listener],
            "clusters": [
                {
                    "name": "primary",
                    "type": "EDS",
                    "connect_timeout": "1s",
                    "eds_cluster_config": {
                        "eds_config": {"path_config_source": {"path": str(eds)}}
                    },
                },
                envoy_cluster("canary", canary),
            ],
        },
    }


def envoy_weights(dump: Any, primary: str, canary: str) -> tuple[int, int] | None:
    """(primary, canary) weights of the first route in a ``/config_dump`` of route configs."""
    for entry in dump.get("configs", []) if isinstance(dump, dict) else []:
        route_config = entry.get("route_config", {}) if isinstance(entry, dict) else {}
        for host in route_config.get("virtual_hosts", []):
            for route in host.get("routes", []):
                action = route.get("route", {})
                if "cluster" in action:
                    return (100, 0) if action["cluster"] == primary else (0, 100)
                clusters = action.get("weighted_clusters", {}).get("clusters", [])
                weights = {c.get("name"): int(c.get("weight", 0)) for c in clusters}
                return weights.get(primary, 0), weights.get(canary, 0)
    return None


@dataclass
class EnvoyPath:
    """A running Envoy in front of the two apps.

    Attributes:
        url: the listener, where the load goes.
        rds: canaryd's route configuration file.
        admin: Envoy's admin API.
        log: Envoy's log (the router quotes rejections from it).
    """

    url: str
    rds: Path
    admin: str
    log: Path
    eds: Path
    label: str = "Envoy (real), weighted_clusters in an RDS file, read back via /config_dump"
    scale: int = 100
    promotes: bool = True
    """Promotion points the primary at the canary's address (``promotion: address``)."""

    @property
    def router(self) -> dict[str, Any]:
        """canaryd's router config entry for it."""
        return {
            "type": "envoy",
            "file": str(self.rds),
            "admin": self.admin,
            "route_config": UPSTREAM,
            "primary": "primary",
            "canary": "canary",
            "log_path": str(self.log),
            "timeout": ROUTER_TIMEOUT,
            "promotion": "address",
            "primary_eds": str(self.eds),
        }

    async def weights(self) -> tuple[int, int]:
        """(primary, canary) weights as Envoy's admin API reports them.

        Raises:
            RouterError: the admin API did not answer or shows no route.
        """
        dump = await get_json(f"{self.admin}/config_dump?resource=dynamic_route_configs")
        weights = envoy_weights(dump, "primary", "canary")
        if weights is None:
            raise RouterError("Envoy's config dump shows no route")
        return weights


@asynccontextmanager
async def run_envoy(
    binary: str, workdir: Path, primary_port: int, canary_port: int, *, canary_down: bool
) -> AsyncIterator[EnvoyPath]:
    """Start Envoy in the foreground; stop it when the block ends.

    Raises:
        DemoError: it did not start or did not become ready.
    """
    ports = (primary_port, canary_port)
    async with behind_stray(_run_envoy, binary, workdir, ports, canary_down) as path:
        yield path


@asynccontextmanager
async def _run_envoy(
    binary: str, workdir: Path, primary_port: int, canary_port: int
) -> AsyncIterator[EnvoyPath]:
    admin, port = free_port(), free_port()
    primary, canary = addresses(primary_port, canary_port)
    path = EnvoyPath(
        f"http://127.0.0.1:{port}/",
        workdir / "envoy-rds" / f"{UPSTREAM}.json",
        f"http://127.0.0.1:{admin}",
        workdir / "envoy.log",
        workdir / "envoy-rds" / "primary-eds.json",
    )
    path.rds.parent.mkdir()
    host, _, primary_port_text = primary.rpartition(":")
    path.eds.write_bytes(eds_file("primary", [(host, int(primary_port_text))]))
    bootstrap = envoy_bootstrap(path.rds, admin, port, path.eds, canary)
    (workdir / "envoy.json").write_text(json.dumps(bootstrap))
    cfg = EnvoyRouter.model_validate(path.router)
    path.rds.write_bytes(rds_file(route_configuration(cfg, 100, 0))[1])
    argv = [
        binary,
        *("-c", str(workdir / "envoy.json")),
        "--disable-hot-restart",
        *("--concurrency", "1", "--log-level", "warn"),
        *("--log-path", str(path.log), "--file-flush-interval-msec", "100"),
    ]
    async with serving("envoy", argv, workdir / "envoy.out", path.url):
        yield path
