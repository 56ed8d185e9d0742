"""The building blocks of the configuration models.

Value types (durations, intervals, names), the base model, secrets and headers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
)

from canaryd.durations import parse_duration
from canaryd.errors import SecretError
from canaryd.redact import protect


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be a finite duration")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_finite)]
"""Seconds; accepts ``30s``, ``1m``, ``1h30m``, ``500ms`` or a number of seconds."""

MIN_INTERVAL = 1.0
"""Floor of ``analysis.interval`` and ``metrics[].interval`` (seconds); see docs/flagger.md."""

MIN_INTERVAL_ENV = "UNSAFE_CANARYD_MIN_INTERVAL"
"""Environment variable lowering :data:`MIN_INTERVAL` (test suites only; never below 10 ms)."""


def min_interval() -> float:
    """The interval floor in force: :data:`MIN_INTERVAL` unless lowered for a test suite.

    Test suites drive real daemons with sub-second intervals; they set
    ``UNSAFE_CANARYD_MIN_INTERVAL`` (seconds, at least 0.01). Anything
    unparsable is ignored. See docs/flagger.md, "Floors".
    """
    text = os.environ.get(MIN_INTERVAL_ENV)
    if not text:
        return MIN_INTERVAL
    try:
        value = float(text)
    except ValueError:
        return MIN_INTERVAL
    return max(0.01, min(value, MIN_INTERVAL)) if math.isfinite(value) else MIN_INTERVAL


def _interval_floor(value: float) -> float:
    floor = min_interval()
    if value < floor:
        raise ValueError(f"must be at least {floor:g}s (the floor; docs/flagger.md)")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than 0s")
    return value


Interval = Annotated[Duration, AfterValidator(_interval_floor)]
"""An analysis or metric interval: a :data:`Duration` of at least :func:`min_interval`."""

Timeout = Annotated[Duration, AfterValidator(_positive)]
"""A timeout or delay: a :data:`Duration` greater than zero."""


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""A URL with an ``http://`` or ``https://`` scheme (``hooks.slack.com/...`` is refused)."""


def _http_base(value: str) -> str:
    _http_url(value)
    return value.rstrip("/")


HttpBase = Annotated[str, AfterValidator(_http_base)]
"""An :data:`HttpUrl` without trailing slashes: the address of an API (a server, an admin API)."""

Finite = Annotated[float, Field(allow_inf_nan=False)]
"""A number that is neither NaN nor infinite."""

DEFAULT_HTTP_TIMEOUT = 10.0
"""Default timeout (seconds) of every outgoing HTTP call that does not set its own."""


def check_name(value: str) -> str:
    """A name canaryd uses in keys, URLs and files (see :data:`Name`).

    Raises:
        ValueError: empty, too long, or a character outside letters, digits and ``-_.``.
    """
    if not value or len(value) > 253 or not all(c.isalnum() or c in "-_." for c in value):
        raise ValueError("must be 1-253 characters of letters, digits, '-', '_' or '.'")
    return value


Name = Annotated[str, AfterValidator(check_name)]


def _check_template_key(value: str) -> str:
    namespace, _, name = value.rpartition("/")
    if namespace:
        check_name(namespace)
    check_name(name)
    return value


TemplateKey = Annotated[str, AfterValidator(_check_template_key)]
"""A template's name, or ``NAMESPACE/NAME`` for a namespaced MetricTemplate."""


class Model(BaseModel):
    """Base of every config model: unknown keys are errors, models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def read_secret(
    path: str | None, env: str | None = None, *, environ: Mapping[str, str] | None = None
) -> SecretStr | None:
    """Read a secret from a file (stripped of surrounding whitespace) or an env variable.

    Args:
        path: the secret file (``*_file`` keys); must not be readable by others.
        env: name of the environment variable (``*_env`` keys), used when there is no path.
        environ: the environment to read ``env`` from (default: ``os.environ``).

    Raises:
        SecretError: the file cannot be read or is readable by others, or the variable is
            not set.
    """
    if path:
        if "\x00" in path:
            raise SecretError("secret file path contains a NUL byte")
        p = Path(path)
        try:
            mode = p.stat().st_mode
            if mode & 0o004:
                raise SecretError(
                    f"secret file {path} is readable by others; run: chmod o-r {path}"
                )
            value = p.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise SecretError(f"secret file {path} is not UTF-8 text") from exc
    elif env:
        found = (os.environ if environ is None else environ).get(env)
        if found is None:
            raise SecretError(f"environment variable {env} is not set")
        value = found
    else:
        return None
    protect(value)  # never in a log line: docs/reliability.md, "Log lines"
    return SecretStr(value)


HEADER_SHAPE = "a name is one word without ':', a value one line"
HEADER_LATIN1 = "only Latin-1 text can be sent"


def header_problem(name: str, value: str) -> str | None:
    """Why ``name: value`` cannot be sent as one HTTP request header; None if it can.

    The one header rule of canaryd: the config checks configured headers with it, the
    providers check headers built from secret files with it before sending.
    """
    if not name or any(c in name for c in "\r\n: ") or "\r" in value or "\n" in value:
        return HEADER_SHAPE
    try:
        f"{name}{value}".encode("latin-1")
    except UnicodeEncodeError:
        return HEADER_LATIN1
    return None


def checked_headers(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` unchanged if every one can be sent.

    Raises:
        ValueError: ``header '<name>': <problem>`` for the first that cannot.
    """
    for name, value in headers.items():
        problem = header_problem(name, value)
        if problem is not None:
            raise ValueError(f"header {name!r}: {problem}")
    return headers


Headers = Annotated[dict[str, str], AfterValidator(checked_headers)]
"""Request headers set in the configuration, each one that can be sent (:func:`checked_headers`)."""
