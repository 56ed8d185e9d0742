"""The whole configuration file (:class:`Settings`) and its service sections.

API, outbox, history, log and HA settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from canaryd.config.models.analysis import Template, TemplateRef
from canaryd.config.models.base import Model, Name, TemplateKey, Timeout
from canaryd.config.models.canary import CanaryConfig
from canaryd.config.models.notifiers import Notifier
from canaryd.config.models.providers import ProviderConfig
from canaryd.config.models.routers import RouterConfig
from canaryd.redact import dsn_passwords, protect


class ApiConfig(Model):
    """HTTP API settings."""

    token_file: str | None = None
    token_env: str | None = None
    anonymous_read: bool = False
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)


class OutboxConfig(Model):
    """Delivery of alerts and webhooks: retried with backoff, dead-lettered after ``maxAge``."""

    maxAge: Timeout = 3600.0
    initialBackoff: Timeout = 1.0
    maxBackoff: Timeout = 60.0
    pollInterval: Timeout = 0.5


CHECKS_PER_ROLLOUT_MAX = 2000
"""The most check records (and events) a rollout keeps: as many as the API reads for one
rollout (``canaryd.service.store.contract.ROLLOUT_LIMIT``; a test holds them equal)."""


class HistoryConfig(Model):
    """How long past rollouts (their checks and events) are kept; see docs/api.md, "History".

    A canary's current rollout is always kept. A finished rollout goes when it
    is beyond the newest ``keep`` of its canary or older than ``maxAge``; a
    rolled-back one only beyond the newest ``failedKeep`` failed ones or older
    than ``failedMaxAge``. A long rollout keeps its newest ``checksPerRollout``
    check records (and as many events), 10 to :data:`CHECKS_PER_ROLLOUT_MAX`.
    """

    keep: int = Field(default=20, ge=1)
    maxAge: Timeout = 30 * 86400.0
    failedKeep: int = Field(default=50, ge=1)
    failedMaxAge: Timeout = 90 * 86400.0
    checksPerRollout: int = Field(default=1000, ge=10, le=CHECKS_PER_ROLLOUT_MAX)


class LogConfig(Model):
    """Logging: JSON lines (journald) or console; ``auto`` picks console on a terminal."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class HaConfig(Model):
    """High availability with ``state: postgresql://…``: the leader lease (docs/ha.md)."""

    cluster: str = Field("default", min_length=1, max_length=200)
    """The lease row's name: replicas of one cluster share it."""
    leaseTtl: Timeout = 15.0
    """Seconds a lease lasts unrenewed; renewed every ``leaseTtl / 3``."""
    advertise: str = ""
    """This replica's API URL as others reach it (default ``http://`` + ``listen``)."""


POSTGRES_SCHEMES = ("postgresql://", "postgres://")

DEFAULT_STATE = "sqlite:///var/lib/canaryd/state.db"
"""The documented state file; its directory is created when missing (systemd's
``StateDirectory=`` normally provides it)."""


class Settings(BaseSettings):
    """The whole configuration file.

    Environment variables ``CANARYD_<KEY>`` (``__`` for nesting, e.g.
    ``CANARYD_PROVIDERS__PROM__ADDRESS``) override the file.
    """

    model_config = SettingsConfigDict(
        env_prefix="CANARYD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        case_sensitive=False,
    )

    include: list[str] = Field(default_factory=list)
    listen: str = "127.0.0.1:9879"
    state: str = DEFAULT_STATE
    api: ApiConfig = Field(default_factory=ApiConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    ha: HaConfig = Field(default_factory=HaConfig)
    meshProvider: str = "prometheus"
    providers: dict[Name, ProviderConfig] = Field(default_factory=dict)
    routers: dict[Name, RouterConfig] = Field(default_factory=dict)
    notifiers: dict[Name, Notifier] = Field(default_factory=dict)
    templates: dict[TemplateKey, Template] = Field(default_factory=dict)
    canaries: list[CanaryConfig] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment overrides the file (the file arrives as init kwargs)."""
        return (env_settings, init_settings)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        _, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9879")
        return v

    @field_validator("state")
    @classmethod
    def _state_url(cls, v: str) -> str:
        if v.startswith(POSTGRES_SCHEMES):  # several replicas, one leader (docs/ha.md)
            for password in dsn_passwords(v):
                protect(password)  # never in a log line, a library's included
            return v
        if not v.startswith("sqlite://"):
            raise ValueError(
                "must be sqlite:///ABSOLUTE/PATH, sqlite://RELATIVE/PATH or postgresql://…"
            )
        # a typo must not start an empty history elsewhere: only the default's directory
        # is created (docs/reliability.md, "State path")
        folder = Path(v.removeprefix("sqlite://")).parent
        if v != DEFAULT_STATE and not folder.is_dir():
            raise ValueError(
                f"directory {folder} does not exist (canaryd creates the state file, not its "
                f"directory; the default {DEFAULT_STATE} is the exception)"
            )
        return v

    @property
    def postgres(self) -> bool:
        """Whether the state is in PostgreSQL (high availability, docs/ha.md)."""
        return self.state.startswith(POSTGRES_SCHEMES)

    @property
    def state_path(self) -> Path:
        """Filesystem path of the SQLite state file."""
        return Path(self.state.removeprefix("sqlite://"))

    @property
    def listen_host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def template_for(self, ref: TemplateRef, namespace: str) -> tuple[str, Template] | None:
        """The template a ``templateRef`` names, and its key, looked up as Flagger does.

        The reference's namespace (default: the canary's ``namespace``) and
        name select a namespaced template; a template without a namespace
        matches by name alone.
        """
        wanted = ref.namespace or namespace
        for key in (f"{wanted}/{ref.name}", ref.name):
            tpl = self.templates.get(key)
            if tpl is not None and tpl.namespace in (None, wanted):
                return key, tpl
        return None

    def canary(self, key: str) -> CanaryConfig | None:
        """The canary named ``namespace/name``, if configured."""
        return next((c for c in self.canaries if c.key == key), None)
