"""Notifier models: where alerts go, and their severities."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import (
    model_validator,
)

from canaryd.config.models.base import DEFAULT_HTTP_TIMEOUT, HttpUrl, Model, Timeout


class Severity(StrEnum):
    """Alert severity; a filter of ``warn`` lets warn and error through."""

    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class Notifier(Model):
    """Where alerts go: chat webhooks, a generic JSON webhook, or CloudEvents."""

    type: Literal["slack", "msteams", "discord", "gchat", "rocket", "webhook", "cloudevents"]
    url: HttpUrl | None = None
    url_file: str | None = None
    secret_file: str | None = None
    secret_env: str | None = None
    channel: str | None = None
    username: str | None = None
    timeout: Timeout = DEFAULT_HTTP_TIMEOUT

    @model_validator(mode="after")
    def _one_url(self) -> Notifier:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("set exactly one of url or url_file")
        return self
