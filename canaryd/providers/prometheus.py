"""Prometheus HTTP API provider (Prometheus, Thanos, Mimir, VictoriaMetrics).

What a query's answer means for a metric check:

- a scalar, or an instant vector with exactly one series: its value;
- an empty vector, or a NaN value (e.g. ``0/0`` when there was no traffic):
  ``None``, "no data", which fails the check unless ``onNoData`` says otherwise;
- ``+Inf``/``-Inf`` are values, not "no data": ``histogram_quantile`` answers
  ``+Inf`` when the quantile falls into the ``+Inf`` bucket, which is a real
  (very slow) latency that should fail a ``max`` bound;
- several series, a range vector or a string: :class:`ProviderError`.

Transient failures (connection errors, timeouts, HTTP 429 and 5xx, except
Prometheus's own ``bad_data``/``execution`` errors) are retried with
exponential backoff and jitter. All attempts together stay within the caller's
``budget``: an attempt whose timeout would end after the budget is not started.
Each attempt may take ``min(timeout, budget)``, so with a budget shorter than
the provider's timeout there is a single attempt. Other failures (HTTP 4xx, a
PromQL error, an answer that is not Prometheus JSON) are raised at once. Error
messages carry Prometheus's own error text and the first bytes of unexpected
bodies, never a credential.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from canaryd.config.models import PrometheusProvider
from canaryd.errors import ProviderError
from canaryd.http import POOL_PER_HOST
from canaryd.providers.base import (
    RETRY_INITIAL_WAIT,
    RETRY_MAX_WAIT,
    HTTPProvider,
    ProviderStats,
    Request,
    TransientError,
    http_error,
    is_transient,
    json_or_none,
    preview,
)
from canaryd.providers.headers import auth_headers
from canaryd.providers.transport import Response

__all__ = ["RETRY_INITIAL_WAIT", "RETRY_MAX_WAIT", "Prometheus", "ProviderStats"]

MAX_BODY_BYTES = 1024 * 1024
"""Answers larger than this are refused (a metric query answers a few hundred bytes)."""

BODIES_KEPT = 65536
"""Encoded instant-query bodies a provider keeps (two per canary at 10,000 canaries: ~4 MB)."""

_PERMANENT_ERROR_TYPES = frozenset({"bad_data", "execution"})
"""Prometheus errors that say the query itself is wrong: retrying cannot help."""

T = TypeVar("T")


class Prometheus(HTTPProvider):
    """A :class:`~canaryd.providers.MetricsProvider` backed by the Prometheus HTTP API.

    Queries go over the provider's own keep-alive connections
    (:mod:`canaryd.providers.transport`), at most ``pool`` at once; close the
    provider with :meth:`aclose` (or use it as an async context manager).

    Args:
        cfg: the provider's configuration (address, timeout, auth, TLS).
        pool: connections to Prometheus at most; further queries wait for one
            (the request's timeout starts once they have it).
    """

    def __init__(self, cfg: PrometheusProvider, *, pool: int = POOL_PER_HOST) -> None:
        self._cfg = cfg
        self._bodies: dict[str, bytes] = {}
        super().__init__(
            "prometheus",
            cfg,
            self._headers,
            pool=pool,
            max_body=MAX_BODY_BYTES,
            # without secret files the request headers never change: built once, not per query
            static=not (cfg.bearer_token_file or cfg.username),
        )

    async def query(self, query: str, *, budget: float) -> float | None:
        """Run an instant query and return its single value.

        Args:
            query: PromQL expression (already rendered).
            budget: seconds all attempts together may take.

        Returns:
            The value, or ``None`` when there is no data (empty vector or NaN).

        Raises:
            ProviderError: the request failed for good, Prometheus rejected the
                query, or the answer is not exactly one scalar or series.
        """
        body = self._bodies.get(query)
        if body is None:  # a canary asks the same queries every tick: encoded once
            if len(self._bodies) >= BODIES_KEPT:
                self._bodies.clear()
            body = self._bodies[query] = _form_body({"query": query})
        return await self._call("/api/v1/query", body, budget, _instant_value)

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """Run a range query over one series and return its values in time order.

        Args:
            query: PromQL expression (already rendered).
            start: first evaluation time, unix seconds.
            end: last evaluation time, unix seconds.
            step: seconds between evaluations.
            budget: seconds all attempts together may take.

        Returns:
            The series' values (NaN kept as ``float('nan')``); ``[]`` when no series.

        Raises:
            ProviderError: the request failed for good, Prometheus rejected the
                query, or the answer holds more than one series.
        """
        form = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        return await self._call("/api/v1/query_range", _form_body(form), budget, _range_values)

    async def _call(self, path: str, body: bytes, budget: float, parse: Callable[[Any], T]) -> T:
        """POST a form body with retries on transient failures; ``parse`` the answer's ``data``.

        Raises:
            ProviderError: permanent failure, or transient ones until the budget ran out.
        """

        def data(resp: Response) -> T:
            return parse(_answer_data(resp.status, resp.body, resp.complete))

        return await self.endpoint.call(Request(path, body), budget, data)

    def _headers(self) -> dict[str, str]:
        """Request headers: configured extras plus auth (secrets read on every call).

        Raises:
            ProviderError: a secret file cannot be read, or both kinds of auth are set.
        """
        cfg = self._cfg
        if cfg.bearer_token_file and cfg.username:
            raise ProviderError("set bearer_token_file or username/password_file, not both")
        return auth_headers(
            cfg.headers,
            token_file=cfg.bearer_token_file,
            username=cfg.username,
            password_file=cfg.password_file,
        )


_FORM_QUOTED = [
    chr(c)
    if chr(c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
    else "+"
    if c == 32
    else f"%{c:02X}"
    for c in range(128)
]
"""``quote_plus``'s form of every ASCII character (a full table: misses are slow)."""


def _form_body(form: dict[str, str]) -> bytes:
    """``urlencode(form).encode()``, with one ``str.translate`` per ASCII value.

    ``urlencode`` quotes byte by byte in Python (3 % of a saturated daemon's CPU);
    the table gives the same escapes. Keys are plain names; values with
    non-ASCII characters take ``urlencode``'s way.
    """
    if not all(v.isascii() for v in form.values()):
        return urlencode(form).encode()
    return "&".join(f"{k}={v.translate(_FORM_QUOTED)}" for k, v in form.items()).encode()


def _http_error(status: int, body: bytes, problem: str) -> str:
    """``prometheus answered HTTP 503, not JSON: <preview>`` style message."""
    return http_error("prometheus", status, body, problem)


def _answer_data(status: int, body: bytes, complete: bool) -> Any:
    """Decode one answer and return its ``data``.

    Raises:
        TransientError: HTTP 429/5xx without a permanent Prometheus error.
        ProviderError: any other failure.
    """
    retryable = is_transient(status)
    if not complete:
        raise ProviderError(_http_error(status, body, f" with more than {MAX_BODY_BYTES} bytes"))
    doc = json_or_none(body)
    if not isinstance(doc, dict) or doc.get("status") not in ("success", "error"):
        kind = TransientError if retryable else ProviderError
        raise kind(_http_error(status, body, "" if retryable else ", not Prometheus JSON"))
    if doc["status"] == "error":
        error_type = str(doc.get("errorType", "error"))
        message = f"prometheus {error_type}: {doc.get('error', '')}"
        permanent = error_type in _PERMANENT_ERROR_TYPES or not retryable
        raise (ProviderError if permanent else TransientError)(message)
    if status != 200:
        kind = TransientError if retryable else ProviderError
        raise kind(_http_error(status, body, ""))
    return doc.get("data")


def _shape_error(data: Any) -> ProviderError:
    """The error for an answer whose ``data`` does not have the documented shape."""
    return ProviderError(
        f"prometheus answered an unexpected result: {preview(json.dumps(data).encode())}"
    )


def _number(sample: Any) -> float:
    """The float of a ``[timestamp, "value"]`` pair (``"NaN"``, ``"+Inf"`` included).

    Raises:
        ProviderError: not a two-item list, or its value is neither a number nor a
            numeric string (a bare string such as ``"12"`` would index to ``"2"``; a
            boolean is not a number; an integer beyond float range overflows).
    """
    value = sample[1] if isinstance(sample, list) and len(sample) == 2 else None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _shape_error(sample)
    try:
        return float(value)
    except (ValueError, OverflowError) as exc:
        raise _shape_error(sample) from exc


def _instant_value(data: Any) -> float | None:
    """The single value of an instant query's ``data``, or ``None`` for no data.

    Raises:
        ProviderError: not a scalar or single-series vector.
    """
    if not isinstance(data, dict):
        raise _shape_error(data)
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        value = _number(result)
    elif kind == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise ProviderError(
                f"query returned {len(result)} series; a metric query must return "
                "exactly one (aggregate with sum() or similar)"
            )
        value = _number(result[0].get("value") if isinstance(result[0], dict) else None)
    elif kind == "matrix":
        raise ProviderError(
            "query returned a range vector; a metric query must return a scalar or an "
            "instant vector (wrap the [range] selector in a function such as rate())"
        )
    elif kind == "string":
        raise ProviderError("query returned a string; a metric query must return a number")
    else:
        raise _shape_error(data)
    return None if math.isnan(value) else value


def _range_values(data: Any) -> list[float]:
    """The values of a range query's single series (``[]`` when there is none).

    Raises:
        ProviderError: more than one series, or not a matrix.
    """
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        raise _shape_error(data)
    result = data.get("result")
    if not isinstance(result, list):
        raise _shape_error(data)
    if not result:
        return []
    if len(result) > 1:
        raise ProviderError(
            f"range query returned {len(result)} series; a metric query must return "
            "exactly one (aggregate with sum() or similar)"
        )
    values = result[0].get("values") if isinstance(result[0], dict) else None
    if not isinstance(values, list):
        raise _shape_error(data)
    return [_number(sample) for sample in values]
