"""Datadog metrics query API (docs/providers.md, "Datadog").

``api: v1`` sends the query to ``GET /api/v1/query`` over the last ``lookback``
seconds, as Flagger does; ``api: v2`` sends formulas and named queries to
``POST /api/v2/query/scalar`` (instant) and ``/api/v2/query/timeseries`` (range).

What an answer means:

- v1: no series, or a series whose points are all ``null``: no data; one
  series: its most recent non-null point; several series: an error.
- v2 scalar: no value, or ``null``: no data; one value: it; several (a
  ``group_by``): an error.
- ``{"errors": [...]}`` or v1's ``{"status": "error"}``: an error naming them;
  HTTP 429 is retried after ``X-RateLimit-Reset`` when that falls within the
  check's budget.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import urlencode

from canaryd.config.models import DatadogProvider
from canaryd.errors import ProviderError
from canaryd.http import POOL_PER_HOST
from canaryd.providers import vendor
from canaryd.providers.base import JSON, HTTPProvider, Request
from canaryd.providers.headers import secret_text
from canaryd.providers.transport import Response

NAME = "datadog"

_ENTRY = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*):\s+(.*)$")
"""A line starting a v2 entry: ``formula: a / b`` or ``a: sum:metric{*}`` (a space after ':')."""


class Datadog(HTTPProvider):
    """A :class:`~canaryd.providers.MetricsProvider` backed by Datadog's query API."""

    def __init__(self, cfg: DatadogProvider, *, pool: int = POOL_PER_HOST) -> None:
        self._cfg = cfg
        super().__init__(
            NAME,
            cfg,
            self._headers,
            pool=pool,
            max_body=vendor.MAX_BODY_BYTES,
            secret_headers=frozenset({"dd-api-key", "dd-application-key"}),
        )

    async def query(self, query: str, *, budget: float) -> float | None:
        """One number over the last ``lookback`` seconds; ``None`` for no data.

        Raises:
            ProviderError: the query failed, or its answer holds several series.
        """
        end = time.time()
        start = end - self._cfg.lookback
        if self._cfg.api == "v1":
            request = _v1_request(query, start, end)
            return await vendor.call(self.endpoint, request, budget, self._v1_instant)
        body = _v2_body("scalar", query, start, end, aggregator=self._cfg.aggregator)
        request = Request("/api/v2/query/scalar", body, content_type=JSON)
        return await vendor.call(self.endpoint, request, budget, self._v2_scalar)

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """The values of one series between ``start`` and ``end`` in time order.

        Raises:
            ProviderError: the query failed, or its answer holds several series.
        """
        if self._cfg.api == "v1":
            request = _v1_request(query, start, end)
            return await vendor.call(self.endpoint, request, budget, self._v1_range)
        body = _v2_body("timeseries", query, start, end, interval=step)
        request = Request("/api/v2/query/timeseries", body, content_type=JSON)
        return await vendor.call(self.endpoint, request, budget, self._v2_range)

    def _headers(self) -> dict[str, str]:
        """The key headers, read from their files on every request.

        Raises:
            ProviderError: a key file cannot be read.
        """
        return {
            "DD-API-KEY": secret_text(self._cfg.api_key_file),
            "DD-APPLICATION-KEY": secret_text(self._cfg.application_key_file),
        }

    def _answer(self, resp: Response) -> Any:
        """The JSON of a 200 answer; Datadog's ``errors`` raised.

        Raises:
            RateLimitedError: HTTP 429 with ``X-RateLimit-Reset``.
            TransientError: other 429 and 5xx answers.
            ProviderError: any other failure.
        """
        vendor.check_rate_limit(NAME, resp)
        doc = vendor.decode(NAME, resp)
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if resp.status != 200 or errors:
            text = "; ".join(map(str, errors)) if isinstance(errors, list) else str(errors or "")
            raise vendor.fail(NAME, resp, text or vendor.shape(NAME, doc).args[0])
        if not isinstance(doc, dict):
            raise vendor.shape(NAME, doc)
        if doc.get("status") == "error":  # v1: a query Datadog could not run
            raise ProviderError(f"datadog query error: {doc.get('error', '')}")
        return doc

    def _v1_series(self, resp: Response) -> list[Any] | None:
        """The point list of a v1 answer's single series (``None`` without series)."""
        series = self._answer(resp).get("series")
        if not isinstance(series, list):
            raise vendor.shape(NAME, series)
        if not series:
            return None
        if len(series) > 1:
            raise vendor.several(NAME, len(series), "aggregate with sum:/avg: and no 'by {}'")
        points = series[0].get("pointlist") if isinstance(series[0], dict) else None
        if not isinstance(points, list) or not all(
            isinstance(p, list) and len(p) == 2 for p in points
        ):
            raise vendor.shape(NAME, series[0])
        return [p[1] for p in points]

    def _v1_instant(self, resp: Response) -> float | None:
        values = self._v1_series(resp)
        return None if values is None else vendor.last_value(values, NAME)

    def _v1_range(self, resp: Response) -> list[float]:
        values = self._v1_series(resp)
        return [] if values is None else vendor.series_values(values, NAME)

    def _v2_attributes(self, resp: Response) -> dict[str, Any]:
        data = self._answer(resp).get("data")
        attributes = data.get("attributes") if isinstance(data, dict) else None
        if not isinstance(attributes, dict):
            raise vendor.shape(NAME, data)
        return attributes

    def _v2_scalar(self, resp: Response) -> float | None:
        columns = self._v2_attributes(resp).get("columns")
        if not isinstance(columns, list):
            raise vendor.shape(NAME, columns)
        numbers = [c for c in columns if isinstance(c, dict) and c.get("type") == "number"]
        if len(numbers) != 1 or not isinstance(numbers[0].get("values"), list):
            raise vendor.shape(NAME, columns)
        values = numbers[0]["values"]
        if len(values) > 1:
            raise vendor.several(NAME, len(values), "drop the group by")
        return vendor.number(values[0], NAME) if values else None

    def _v2_range(self, resp: Response) -> list[float]:
        values = self._v2_attributes(resp).get("values")
        if not isinstance(values, list) or not all(isinstance(v, list) for v in values):
            raise vendor.shape(NAME, values)
        if len(values) > 1:
            raise vendor.several(NAME, len(values), "drop the group by")
        return vendor.series_values(values[0], NAME) if values else []


def _v1_request(query: str, start: float, end: float) -> Request:
    """``GET /api/v1/query?from=..&to=..&query=..`` (whole seconds, as the API takes)."""
    params = urlencode({"from": int(start), "to": int(end), "query": query})
    return Request(f"/api/v1/query?{params}", method=b"GET")


def parse_v2(query: str) -> tuple[str, dict[str, str]]:
    """The formula and named queries of a v2 query text.

    Either one plain metrics query (named ``a``, the formula ``a``), or lines
    ``formula: <formula>`` and ``<name>: <metrics query>``; a line not starting
    an entry continues the previous one.

    Raises:
        ProviderError: no query, an entry named twice, or several queries and no formula.
    """
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in query.splitlines():
        match = _ENTRY.match(line)
        if match:
            if match[1] in entries:
                raise ProviderError(f"datadog v2 query: {match[1]!r} is set twice")
            current = entries[match[1]] = [match[2]]
        elif current is not None:
            current.append(line.strip())
    if not entries:
        text = " ".join(query.split())
        if not text:
            raise ProviderError("datadog query is empty")
        return "a", {"a": text}
    named = {k: " ".join(" ".join(v).split()) for k, v in entries.items()}
    formula = named.pop("formula", None)
    if not named:
        raise ProviderError("datadog v2 query: a formula needs named queries (a: <query>)")
    if formula is None:
        if len(named) > 1:
            raise ProviderError("datadog v2 query: several queries need a 'formula:' line")
        formula = next(iter(named))
    return formula, named


def _v2_body(
    kind: str,
    query: str,
    start: float,
    end: float,
    *,
    aggregator: str = "avg",
    interval: float | None = None,
) -> bytes:
    """The JSON body of a v2 scalar or timeseries request (times in milliseconds)."""
    formula, named = parse_v2(query)
    queries: list[dict[str, Any]] = [
        {"name": name, "data_source": "metrics", "query": text} for name, text in named.items()
    ]
    if kind == "scalar":
        for item in queries:
            item["aggregator"] = aggregator
    attributes: dict[str, Any] = {
        "formulas": [{"formula": formula}],
        "queries": queries,
        "from": int(start * 1000),
        "to": int(end * 1000),
    }
    if interval is not None:
        attributes["interval"] = int(interval * 1000)
    doc = {"data": {"type": f"{kind}_request", "attributes": attributes}}
    return json.dumps(doc).encode()
