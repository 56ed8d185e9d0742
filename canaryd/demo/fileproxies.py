"""The file-based proxies of the demo: NGINX, Envoy and Traefik as child processes.

Each listens on 127.0.0.1 in front of the two demo apps, with its config in the
scenario's temporary directory, and is driven by canaryd's own router for it
(docs/routers.md):

- NGINX (``--router nginx``): ``upstream web`` lives in an include file that
  canaryd's ``nginx`` router rewrites, tests (``nginx -t``) and reloads. NGINX
  has no API to read weights back: the demo reads the split from the header
  line canaryd writes into the include file.
- Envoy (``--router envoy``): the listener's routes come from an RDS file that
  canaryd's ``envoy`` router replaces, the primary cluster's endpoint from an
  EDS file it replaces on promotion; the demo reads the weights back from the
  admin API's ``/config_dump``.
- Traefik (``--router traefik``): the file provider watches a directory holding
  the operator's file (router ``web``, services ``primary`` and ``canary``) and
  canaryd's file (the ``weighted`` service ``web``); the demo reads the weights
  back from Traefik's API.

Every router runs with ``promotion: address``: after a promotion the primary
points at the canary's address, and the demo checks that v2 answers.

The no-traffic scenario: NGINX's canary server is a port nobody listens on (NGINX
retries the request on the primary, so clients see no error); Envoy's and
Traefik's canary cluster/service points at a stray copy of v1 (a third demo
app, not scraped), so the canary app (v2) receives nothing while the proxy
reports its weight. (Not at the primary app itself: with the same address on
both sides, canaryd would take the canary for promoted and refuse the rollback.)
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from canaryd.config.models import EnvoyRouter, NginxRouter, TraefikRouter
from canaryd.demo.procs import child, free_port, python_module, wait_ready
from canaryd.errors import RouterError
from canaryd.routers.envoy import eds_file, rds_file, route_configuration
from canaryd.routers.nginx import render_upstream
from canaryd.routers.traefik import PROMOTED_SUFFIX, dynamic_config, qualified

UPSTREAM = "web"
"""The name of the upstream (NGINX), route configuration (Envoy) and weighted service (Traefik)."""

DEMO_CANARY = "demo/canary"
"""The canary named in the first file the demo writes (canaryd's own writes name theirs)."""

ROUTER_TIMEOUT = "5s"
"""The ``timeout`` of the router config entries."""

READ_TIMEOUT = 2.0
"""Seconds one read-back of the weights may take."""

NGINX_CONFIG = """\
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-tmp/body;
    proxy_temp_path {dir}/nginx-tmp/proxy;
    fastcgi_temp_path {dir}/nginx-tmp/fastcgi;
    uwsgi_temp_path {dir}/nginx-tmp/uwsgi;
    scgi_temp_path {dir}/nginx-tmp/scgi;
    include {dir}/nginx-canaryd/*.conf;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://{upstream}; }}
    }}
}}
"""

_SPLIT = re.compile(r"primary (\d+)%, canary (\d+)%")


async def _get_json(url: str) -> Any:
    """GET a local admin URL and decode its JSON.

    Raises:
        RouterError: it did not answer 200 with JSON within :data:`READ_TIMEOUT`.
    """
    timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                raise RouterError(f"{url}: HTTP {resp.status}")
            return await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise RouterError(f"{url}: {exc or type(exc).__name__}") from exc


def _addresses(primary_port: int, canary_port: int) -> tuple[str, str]:
    return f"127.0.0.1:{primary_port}", f"127.0.0.1:{canary_port}"


@asynccontextmanager
async def _stray_v1(workdir: Path, wanted: bool) -> AsyncIterator[int | None]:
    """A third demo app answering as the primary (v1) when ``wanted``; yields its port.

    Raises:
        DemoError: it did not start.
    """
    if not wanted:
        yield None
        return
    port = free_port()
    argv = python_module(
        "canaryd.demo.app", "--name", "primary", "--version", "v1", "--port", str(port)
    )
    async with child("stray v1 app", argv, workdir / "stray.log") as proc:
        await wait_ready(proc, f"http://127.0.0.1:{port}/metrics")
        yield port


# --------------------------------------------------------------------------- NGINX


@dataclass
class NginxPath:
    """A running NGINX in front of the two apps.

    Attributes:
        url: the frontend, where the load goes.
        include: canaryd's include file holding ``upstream web``.
        conf: NGINX's main configuration file.
        binary: the nginx binary (canaryd's router runs ``nginx -t`` and ``-s reload``).
        pid: NGINX's PID file.
        primary: the primary app's address.
        canary: the canary app's address.
    """

    url: str
    include: Path
    conf: Path
    binary: str
    pid: Path
    primary: str
    canary: str
    label: str = "NGINX (real), weights in an include file, tested and reloaded"
    scale: int = 100
    promotes: bool = True
    """Promotion points the primary at the canary's address (``promotion: address``)."""

    @property
    def router(self) -> dict[str, Any]:
        """canaryd's router config entry for it."""
        return {
            "type": "nginx",
            "file": str(self.include),
            "upstream": UPSTREAM,
            "primary": self.primary,
            "canary": self.canary,
            "nginx_bin": self.binary,
            "conf": str(self.conf),
            "pid_path": str(self.pid),
            "timeout": ROUTER_TIMEOUT,
        }

    async def weights(self) -> tuple[int, int]:
        """(primary, canary) percent as the include file NGINX loaded says.

        Raises:
            RouterError: the file cannot be read or has no split line.
        """
        try:
            text = self.include.read_text()
        except OSError as exc:
            raise RouterError(f"{self.include}: {exc.strerror}") from exc
        match = _SPLIT.search(text)
        if match is None:
            raise RouterError(f"{self.include}: no split line")
        return int(match[1]), int(match[2])


@asynccontextmanager
async def run_nginx(
    binary: str, workdir: Path, primary_port: int, canary_port: int, *, canary_down: bool
) -> AsyncIterator[NginxPath]:
    """Start NGINX in the foreground; stop it when the block ends.

    Raises:
        DemoError: it did not start or did not become ready.
    """
    port = free_port()
    primary, canary = _addresses(primary_port, free_port() if canary_down else canary_port)
    include = workdir / "nginx-canaryd" / f"{UPSTREAM}.conf"
    for sub in ("nginx-canaryd", "nginx-tmp"):
        (workdir / sub).mkdir()
    path = NginxPath(
        f"http://127.0.0.1:{port}/",
        include,
        workdir / "nginx.conf",
        binary,
        workdir / "nginx.pid",
        primary,
        canary,
    )
    path.conf.write_text(NGINX_CONFIG.format(dir=workdir, port=port, upstream=UPSTREAM))
    cfg = NginxRouter.model_validate(path.router)
    include.write_text(render_upstream(cfg, DEMO_CANARY, 100, 0))
    argv = [binary, "-c", str(path.conf), "-p", str(workdir), "-e", "stderr"]
    async with child("nginx", argv, workdir / "nginx.log") as proc:
        await wait_ready(proc, path.url)
        yield path


# --------------------------------------------------------------------------- Envoy


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
        dump = await _get_json(f"{self.admin}/config_dump?resource=dynamic_route_configs")
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
    async with (
        _stray_v1(workdir, canary_down) as stray,
        _run_envoy(binary, workdir, primary_port, stray or canary_port) as path,
    ):
        yield path


@asynccontextmanager
async def _run_envoy(
    binary: str, workdir: Path, primary_port: int, canary_port: int
) -> AsyncIterator[EnvoyPath]:
    admin, port = free_port(), free_port()
    primary, canary = _addresses(primary_port, canary_port)
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
    async with child("envoy", argv, workdir / "envoy.out") as proc:
        await wait_ready(proc, path.url)
        yield path


# --------------------------------------------------------------------------- Traefik


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
        answer = await _get_json(f"{self.api}/api/http/services/{qualified(UPSTREAM, 'file')}")
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
    async with (
        _stray_v1(workdir, canary_down) as stray,
        _run_traefik(binary, workdir, primary_port, stray or canary_port) as path,
    ):
        yield path


@asynccontextmanager
async def _run_traefik(
    binary: str, workdir: Path, primary_port: int, canary_port: int
) -> AsyncIterator[TraefikPath]:
    port, api = free_port(), free_port()
    primary, canary = _addresses(primary_port, canary_port)
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
    async with child("traefik", argv, workdir / "traefik.log") as proc:
        await wait_ready(proc, path.url)
        yield path
