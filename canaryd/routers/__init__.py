"""Traffic routers: the :class:`Router` seam, the request it takes, and its factory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from canaryd.config.models import (
    AlbRouter,
    CaddyRouter,
    ConsulRouter,
    EnvoyRouter,
    ExecRouter,
    HAProxyRouter,
    NginxRouter,
    RouterConfig,
    TraefikRouter,
    WebhookRouter,
)
from canaryd.core.analysis import Action as Action
from canaryd.http import HttpTransport


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One instruction to a router.

    Attributes:
        canary: ``namespace/name``.
        revision: the rollout's revision.
        action: ``route`` (set weights), ``promote`` (make the primary run the
            canary's revision), ``rollback`` (all traffic to the primary).
        primary_weight: percent of traffic for the primary (0..100).
        canary_weight: percent for the canary; the two add up to 100.
        match: A/B header/cookie rules, handed to the router as they are.
        idempotency_key: stable across retries and restarts of the same decision.
    """

    canary: str
    revision: str | None
    action: Action
    primary_weight: int
    canary_weight: int
    idempotency_key: str
    match: list[dict[str, Any]] = field(default_factory=list)

    def weights(self) -> tuple[int, int]:
        """The ``(primary, canary)`` percents to set: the request's, or 100/0 for a rollback."""
        if self.action == "rollback":
            return 100, 0
        return self.primary_weight, self.canary_weight


class Router(Protocol):
    """Something that moves traffic between primary and canary."""

    async def apply(self, request: RouteRequest) -> None:
        """Apply the request and return once the router confirms it.

        Raises:
            RouterError: not applied or not confirmed; the message carries the
                router's own error text.
        """
        ...

    async def aclose(self) -> None:
        """Release what the router holds (idempotent); no request after it.

        Routers that only borrow the daemon's HTTP transport hold nothing.
        """
        ...


@runtime_checkable
class Checkable(Protocol):
    """A router that can verify cheaply that it is reachable and set up (``check --online``).

    Routers without such a check are reported as "not checked".
    """

    async def check(self) -> str:
        """Verify the router without changing anything; say what was found.

        Raises:
            RouterError: unreachable, or what the configuration names is not there.
        """
        ...


def build_router(name: str, cfg: RouterConfig, http: HttpTransport) -> Router:
    """Create the router for a config entry (the config's ``type`` picks the class).

    Raises:
        RouterError: the router's secret cannot be read.
    """
    if isinstance(cfg, WebhookRouter):
        from canaryd.routers.webhook import WebhookRouterClient

        return WebhookRouterClient(cfg, http, name=name)
    if isinstance(cfg, HAProxyRouter):
        from canaryd.routers.haproxy import HAProxyRuntime

        return HAProxyRuntime(cfg)
    if isinstance(cfg, NginxRouter | EnvoyRouter | TraefikRouter):
        return _build_file_router(cfg, http)
    return _build_api_router(name, cfg, http)


def credential_files(cfg: RouterConfig) -> tuple[str, ...]:
    """Files besides its ``*_file`` keys that a router reads secrets from when built.

    A reload builds the router anew when one of them changed (canaryd/service/adapters.py);
    only the ``alb`` router has such files (its AWS keys: docs/routers.md, "AWS ALB").
    """
    if isinstance(cfg, AlbRouter):
        from canaryd.routers.alb import credential_files as aws_files

        return aws_files()
    return ()


def _build_api_router(name: str, cfg: RouterConfig, http: HttpTransport) -> Router:
    """The API- and command-driven routers (docs/routers.md); imported on first use.

    Raises:
        RouterError: the router's secret cannot be read.
    """
    if isinstance(cfg, CaddyRouter):
        from canaryd.routers.caddy import CaddyAdmin

        return CaddyAdmin(cfg, http)
    if isinstance(cfg, ConsulRouter):
        from canaryd.routers.consul import ConsulSplitter

        return ConsulSplitter(cfg, http)
    if isinstance(cfg, AlbRouter):
        from canaryd.routers.alb import AlbListener

        return AlbListener(cfg)
    if isinstance(cfg, ExecRouter):
        from canaryd.routers.exec import ExecCommand

        return ExecCommand(cfg, name=name)
    raise AssertionError(f"unhandled router type {cfg!r}")  # config validation prevents this


def _build_file_router(
    cfg: NginxRouter | EnvoyRouter | TraefikRouter, http: HttpTransport
) -> Router:
    """The routers that write a file for a proxy (``docs/routers.md``)."""
    if isinstance(cfg, NginxRouter) and cfg.api is not None:
        from canaryd.routers.nginx_plus import NginxPlusRouter

        return NginxPlusRouter(cfg, http)
    if isinstance(cfg, NginxRouter):
        from canaryd.routers.nginx import NginxFileRouter

        return NginxFileRouter(cfg)
    if isinstance(cfg, EnvoyRouter):
        from canaryd.routers.envoy import EnvoyFileRouter

        return EnvoyFileRouter(cfg, http)
    from canaryd.routers.traefik import TraefikFileRouter

    return TraefikFileRouter(cfg, http)
