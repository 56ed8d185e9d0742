"""Router models (docs/routers.md).

Webhook, HAProxy, NGINX, Envoy, Traefik, Caddy, Consul, ALB, exec.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    field_validator,
    model_validator,
)

from canaryd.config.models.base import (
    DEFAULT_HTTP_TIMEOUT,
    HttpBase,
    HttpUrl,
    Model,
    Name,
    Timeout,
    check_name,
)


class WebhookRouter(Model):
    """The generic mesh controller: canaryd POSTs route/promote/rollback actions."""

    type: Literal["webhook"]
    url: HttpUrl
    timeout: Timeout = DEFAULT_HTTP_TIMEOUT
    secret_file: str | None = None
    secret_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


class HAProxyRouter(Model):
    """HAProxy runtime API: server weights in one backend (socket is a unix path or host:port)."""

    type: Literal["haproxy"]
    socket: str
    backend: str
    primary: str
    canary: str
    timeout: Timeout = 5.0
    promotion: Literal["address", "verify"] = "address"
    """``address``: promote points the primary server at the canary's address
    (``set server ... addr``); ``verify``: promote only checks both servers exist
    (the deploy pipeline redeploys the primary itself). See docs/routers.md."""


def _one_or_more(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _proxy_words(values: list[str]) -> list[str]:
    for value in values:
        if not value or any(c.isspace() or c in ";{}#'\"\\" for c in value):
            raise ValueError(f"{value!r}: one word without spaces, quotes, ';', '{{', '}}' or '#'")
    return values


ProxyWords = Annotated[
    list[str], BeforeValidator(_one_or_more), AfterValidator(_proxy_words), Field(min_length=1)
]
"""One or more words that go into a proxy's config file (addresses, names)."""

ProxyWord = Annotated[str, AfterValidator(lambda v: _proxy_words([v])[0])]
"""One word that goes into a proxy's config file."""


def _directive_text(value: str) -> str:
    if any(c in ";{}#\r\n" for c in value):
        raise ValueError(
            f"{value!r}: one directive's text, without ';', '{{', '}}', '#' or newlines"
        )
    return value.strip()


NginxText = Annotated[str, AfterValidator(_directive_text)]
"""Text that goes into one NGINX directive (canaryd adds the ``;``)."""


class NginxRouter(Model):
    """NGINX: an ``upstream`` block in an include file (test, reload), or NGINX Plus's API."""

    type: Literal["nginx"]
    file: str | None = None
    api: HttpUrl | None = None
    upstream: Annotated[str, AfterValidator(check_name)]
    primary: ProxyWords
    canary: ProxyWords
    server_options: NginxText = ""
    directives: list[NginxText] = Field(default_factory=list)
    nginx_bin: str = "nginx"
    conf: str | None = None
    test_command: list[str] | None = Field(default=None, min_length=1)
    reload_command: list[str] | None = Field(default=None, min_length=1)
    pid_path: str | None = "/run/nginx.pid"
    username: str | None = None
    password_file: str | None = None
    timeout: Timeout = 10.0
    promotion: Literal["address", "verify"] = "address"
    """``address`` (file mode): promote points the primary's server lines at the
    canary's addresses; ``verify``: promote only sets weights (the deploy
    pipeline redeploys the primary). See docs/routers.md, "NGINX"."""

    @model_validator(mode="after")
    def _file_or_api(self) -> NginxRouter:
        if (self.file is None) == (self.api is None):
            raise ValueError("set exactly one of file (NGINX) or api (NGINX Plus)")
        if (
            self.api is not None
            and self.promotion == "address"
            and "promotion" in self.model_fields_set
        ):
            raise ValueError("promotion: address needs file; through NGINX Plus's api it is verify")
        return self


class EnvoyRouter(Model):
    """Envoy: canaryd writes the RDS file Envoy watches and reads it back via the admin API."""

    type: Literal["envoy"]
    file: str
    admin: HttpUrl = "http://127.0.0.1:9901"
    route_config: ProxyWord
    primary: ProxyWord
    canary: ProxyWord
    domains: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    prefix: str = "/"
    log_path: str | None = None
    timeout: Timeout = 10.0
    promotion: Literal["address", "verify"] = "verify"
    """``address``: promote points the primary cluster at the canary cluster's
    endpoints by replacing ``primary_eds`` (the primary cluster is an EDS
    cluster reading that file); ``verify``: promote only sets weights. See
    docs/routers.md, "Envoy"."""
    primary_eds: str | None = None

    @model_validator(mode="after")
    def _eds_for_address(self) -> EnvoyRouter:
        if self.promotion == "address" and self.primary_eds is None:
            raise ValueError(
                "promotion: address needs primary_eds (the EDS file of the primary cluster)"
            )
        return self


class TraefikRouter(Model):
    """Traefik: canaryd writes a ``weighted`` service for the file provider, reads it back."""

    type: Literal["traefik"]
    file: str
    api: HttpUrl = "http://127.0.0.1:8080"
    service: Annotated[str, AfterValidator(check_name)]
    primary: ProxyWord
    canary: ProxyWord
    provider: Annotated[str, AfterValidator(check_name)] = "file"
    username: str | None = None
    password_file: str | None = None
    timeout: Timeout = 10.0
    promotion: Literal["address", "verify"] = "address"
    """``address``: promote points the weighted service's primary side at the
    canary service's server URLs (a service in canaryd's file); ``verify``:
    promote only sets weights. See docs/routers.md, "Traefik"."""


class CaddyRouter(Model):
    """Caddy's admin API: weighted_round_robin weights of one reverse_proxy handler.

    ``handler`` is the handler's ``@id`` or its config path (``/config/apps/...``);
    ``primary``/``canary`` are upstream ``dial`` addresses (docs/routers.md, "Caddy").
    """

    type: Literal["caddy"]
    admin: HttpBase = "http://127.0.0.1:2019"
    handler: str = Field(min_length=1)
    primary: str = Field(min_length=1)
    canary: str = Field(min_length=1)
    timeout: Timeout = 5.0
    promotion: Literal["address", "verify"] = "address"
    """``address``: promote points the primary upstream's ``dial`` at the canary's
    (and tags it ``@id`` ``<handler>-canaryd-primary``); ``verify``: promote only
    sets weights. See docs/routers.md, "Caddy"."""

    @field_validator("handler")
    @classmethod
    def _id_or_path(cls, v: str) -> str:
        if v.startswith("/") and not v.startswith("/config/"):
            raise ValueError("must be an @id or a path starting with /config/")
        if any(c in v for c in "?#") or any(c.isspace() for c in v):
            raise ValueError("must not contain '?', '#' or whitespace")
        return v.rstrip("/")


class ConsulRouter(Model):
    """Consul service mesh: a ``service-splitter`` config entry (docs/routers.md, "Consul")."""

    type: Literal["consul"]
    address: HttpBase = "http://127.0.0.1:8500"
    service: Name
    primary_subset: str | None = None
    canary_subset: str | None = None
    primary_service: Name | None = None
    canary_service: Name | None = None
    datacenter: str | None = None
    namespace: str | None = None
    partition: str | None = None
    token_file: str | None = None
    timeout: Timeout = 5.0

    @model_validator(mode="after")
    def _two_targets(self) -> ConsulRouter:
        primary = (self.primary_service or self.service, self.primary_subset)
        if primary == (self.canary_service or self.service, self.canary_subset):
            raise ValueError(
                "primary and canary are the same split target; set primary_subset/"
                "canary_subset or primary_service/canary_service"
            )
        return self


class AlbRouter(Model):
    """AWS Application Load Balancer: target-group weights of a listener's forward action."""

    type: Literal["alb"]
    listener_arn: str = Field(min_length=1)
    rule_arn: str | None = None
    primary_target_group_arn: str = Field(min_length=1)
    canary_target_group_arn: str = Field(min_length=1)
    region: str | None = None
    endpoint_url: HttpBase | None = None
    timeout: Timeout = 10.0


class ExecRouter(Model):
    """Any other router: runs ``command`` (an argv, no shell) with the action and weights."""

    type: Literal["exec"]
    command: list[str] = Field(min_length=1)
    timeout: Timeout = 30.0
    env: dict[str, str] = Field(default_factory=dict)
    retry_exit_codes: list[int] = Field(default_factory=lambda: [75])

    @field_validator("command")
    @classmethod
    def _program(cls, v: list[str]) -> list[str]:
        if not v[0] or any("\x00" in arg for arg in v):
            raise ValueError("the first item is the program; no item may contain NUL")
        return v


RouterConfig = Annotated[
    WebhookRouter
    | HAProxyRouter
    | CaddyRouter
    | ConsulRouter
    | AlbRouter
    | ExecRouter
    | NginxRouter
    | EnvoyRouter
    | TraefikRouter,
    Field(discriminator="type"),
]
