"""Graphite render API provider (graphite-web, carbonapi, hosted Graphite).

A query is what Flagger's Graphite provider takes: the parameters of
``/render`` as a URL query string, ``target=…&from=-5min`` (a query that does
not start with ``name=`` is one ``target``). Runs of whitespace, newlines
included, become one space, so a long target can be written over several lines.
``format=json`` is always asked for.

What an answer means for a metric check (docs/providers.md, "Graphite"):

- exactly one series: the value of its last non-null datapoint;
- no series, or a series whose datapoints are all null: ``None``, "no data";
- several series: :class:`~canaryd.errors.ProviderError` (Flagger takes the
  last datapoint of the last series; canaryd refuses to guess which series is
  meant: aggregate with ``sumSeries()`` or similar);
- range queries (``compare:``) replace ``from``/``until`` with the window and
  return the series' datapoints, null as NaN, at Graphite's own resolution
  (``step`` is not a render parameter).

Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried
within the budget (:mod:`canaryd.providers.base`); an HTTP 4xx or an answer
that is not Graphite JSON is raised at once.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl

from canaryd.config.models import GraphiteProvider
from canaryd.errors import ProviderError
from canaryd.http import POOL_PER_HOST
from canaryd.providers.base import (
    HTTPProvider,
    Request,
    http_error,
    json_or_none,
    preview,
    query_string,
    status_error,
)
from canaryd.providers.headers import auth_headers
from canaryd.providers.transport import Response

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Answers larger than this are refused (a day of 10-second points is ~200 KB)."""

_PARAM = re.compile(r"^[A-Za-z_]+=")
_SPACE = re.compile(r"\s+")


class Graphite(HTTPProvider):
    """A :class:`~canaryd.providers.MetricsProvider` backed by Graphite's ``/render``.

    Args:
        cfg: the provider's configuration.
        pool: connections to Graphite at most.
    """

    def __init__(self, cfg: GraphiteProvider, *, pool: int = POOL_PER_HOST) -> None:
        self._cfg = cfg
        super().__init__(
            "graphite",
            cfg,
            self._headers,
            pool=pool,
            max_body=MAX_BODY_BYTES,
            static=not (cfg.bearer_token_file or cfg.username),
        )

    async def query(self, query: str, *, budget: float) -> float | None:
        """The last non-null value of the query's single series, or ``None`` for no data.

        Raises:
            ProviderError: the request failed for good, Graphite rejected the
                query, or the answer holds several series.
        """
        request = Request(render_path(query), method=b"GET")
        return await self.endpoint.call(request, budget, lambda r: last_value(_series(r)))

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """The datapoints of the query's single series from ``start`` to ``end``.

        Raises:
            ProviderError: the request failed for good, or several series.
        """
        # Graphite's ``from`` is exclusive (whisper starts at the next step): one second
        # earlier makes ``start`` the first point, as in Prometheus's range queries
        window = {"from": str(math.floor(start) - 1), "until": str(math.ceil(end))}
        request = Request(render_path(query, window), method=b"GET")
        return await self.endpoint.call(request, budget, lambda r: all_values(_series(r)))

    def _headers(self) -> dict[str, str]:
        cfg = self._cfg
        return auth_headers(
            cfg.headers,
            token_file=cfg.bearer_token_file,
            username=cfg.username,
            password_file=cfg.password_file,
        )


def render_path(query: str, override: dict[str, str] | None = None) -> str:
    """``/render?…&format=json`` for a query (see the module docstring).

    ``override`` replaces parameters of the query (``from``/``until`` of a range).
    """
    text = _SPACE.sub(" ", query).strip()
    params = parse_qsl(text, keep_blank_values=True) if _PARAM.match(text) else [("target", text)]
    replaced = {"format", *(override or {})}
    kept = [(k, v.strip()) for k, v in params if k not in replaced]
    return "/render" + query_string([*kept, *(override or {}).items(), ("format", "json")])


def _series(resp: Response) -> list[list[float]]:
    """The values of every series of a render answer, null as NaN.

    Raises:
        TransientError: HTTP 429 or 5xx.
        ProviderError: any other failure.
    """
    if not resp.complete:
        raise ProviderError(http_error("graphite", resp.status, resp.body, " too large"))
    if resp.status != 200:
        raise status_error("graphite", resp.status, resp.body)
    doc = json_or_none(resp.body)
    if not isinstance(doc, list) or not all(isinstance(s, dict) for s in doc):
        raise ProviderError(f"graphite answered something other than render JSON: {_shown(doc)}")
    return [_points(series) for series in doc]


def _points(series: dict[str, Any]) -> list[float]:
    """One series' datapoint values (``[[value, timestamp], …]``), null as NaN.

    Raises:
        ProviderError: not a list of ``[value, timestamp]`` pairs with numeric values.
    """
    points = series.get("datapoints")
    if not isinstance(points, list):
        raise ProviderError(f"graphite series without datapoints: {_shown(series)}")
    values = []
    for point in points:
        value = point[0] if isinstance(point, list) and len(point) == 2 else False
        if value is None:
            values.append(math.nan)
        elif isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                values.append(float(value))
            except (ValueError, OverflowError):  # text, or an integer beyond float range
                raise ProviderError(
                    f"graphite datapoint is not a number: {_shown(point)}"
                ) from None
        else:
            raise ProviderError(f"graphite datapoint is not [value, timestamp]: {_shown(point)}")
    return values


def _one(series: list[list[float]]) -> list[float]:
    """The only series (``[]`` when none).

    Raises:
        ProviderError: several series.
    """
    if len(series) > 1:
        raise ProviderError(
            f"query returned {len(series)} series; a metric query must return exactly one "
            "(aggregate with sumSeries(), averageSeries() or similar)"
        )
    return series[0] if series else []


def last_value(series: list[list[float]]) -> float | None:
    """The last non-null value of the only series, or ``None`` for no data.

    Raises:
        ProviderError: several series.
    """
    for value in reversed(_one(series)):
        if not math.isnan(value):
            return value
    return None


def all_values(series: list[list[float]]) -> list[float]:
    """The values of the only series (``[]`` when none).

    Raises:
        ProviderError: several series.
    """
    return _one(series)


def _shown(value: Any) -> str:
    """A value as JSON, cut short, for messages."""
    return preview(json.dumps(value).encode())
