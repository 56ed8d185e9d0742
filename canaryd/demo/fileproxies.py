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

NGINX is started here; Envoy in :mod:`canaryd.demo.envoyproxy`, Traefik in
:mod:`canaryd.demo.traefikproxy`, both with this module's shared parts.

The no-traffic scenario: NGINX's canary server is a port nobody listens on (NGINX
retries the request on the primary, so clients see no error); Envoy's and
Traefik's canary cluster/service points at a stray copy of v1 (a third demo
app, not scraped), so the canary app (v2) receives nothing while the proxy
reports its weight. (Not at the primary app itself: with the same address on
both sides, canaryd would take the canary for promoted and refuse the rollback.)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from canaryd.config.models import NginxRouter
from canaryd.demo.procs import free_port, python_module, serving
from canaryd.errors import RouterError
from canaryd.routers.nginx import render_upstream

UPSTREAM = "web"
"""The name of the upstream (NGINX), route configuration (Envoy) and weighted service
(Traefik)."""

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


async def get_json(url: str) -> Any:
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


def addresses(primary_port: int, canary_port: int) -> tuple[str, str]:
    """The two apps' ``host:port`` addresses on 127.0.0.1."""
    return f"127.0.0.1:{primary_port}", f"127.0.0.1:{canary_port}"


@asynccontextmanager
async def stray_v1(workdir: Path, wanted: bool) -> AsyncIterator[int | None]:
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
    async with serving(
        "stray v1 app", argv, workdir / "stray.log", f"http://127.0.0.1:{port}/metrics"
    ):
        yield port


P = TypeVar("P")


@asynccontextmanager
async def behind_stray(
    start: Callable[[str, Path, int, int], AbstractAsyncContextManager[P]],
    binary: str,
    workdir: Path,
    ports: tuple[int, int],
    canary_down: bool,
) -> AsyncIterator[P]:
    """Enter ``start(binary, workdir, primary_port, canary_port)``; with ``canary_down`` the
    canary side is a stray copy of v1 (:func:`stray_v1`) instead of the canary app.

    Raises:
        DemoError: the stray app or the proxy did not start.
    """
    primary_port, canary_port = ports
    async with (
        stray_v1(workdir, canary_down) as stray,
        start(binary, workdir, primary_port, stray or canary_port) as path,
    ):
        yield path


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
    primary, canary = addresses(primary_port, free_port() if canary_down else canary_port)
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
    async with serving("nginx", argv, workdir / "nginx.log", path.url):
        yield path
