"""InfluxDB provider: InfluxQL over ``/query`` (the default) or Flux over ``/api/v2/query``.

InfluxQL is what InfluxDB 1.x serves, and what 2.x and InfluxDB Cloud serve
through their v1-compatibility API; Flux (``language: flux``) is 2.x's own
language and the one Flagger's ``influxdb`` provider speaks.

What an answer means for a metric check (docs/providers.md, "InfluxDB"):

- exactly one series (InfluxQL) or table (Flux) with one value column: the
  value of its last row whose value is not null (NaN counts as null);
- no series or table, no rows, or only null values: ``None``, "no data";
- several series (a ``GROUP BY`` tag), tables, value columns or statements:
  :class:`~canaryd.errors.ProviderError`;
- a statement error (unknown database, a syntax error: InfluxDB answers them
  with HTTP 200) or a Flux error is raised at once; HTTP 429 and 5xx, timeouts
  and connection errors are retried within the budget
  (:mod:`canaryd.providers.base`).

Range queries (``compare:``) get the window as bind parameters, ``$timeRangeStart``
and ``$timeRangeStop`` (RFC 3339 times) in InfluxQL, and as the record ``v``
(``v.timeRangeStart``, ``v.timeRangeStop``, ``v.windowPeriod``) defined before
a Flux query, as InfluxDB's own UI does; they return every row's value, null as NaN.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from datetime import UTC, datetime
from typing import Any

from canaryd.config.models import InfluxDBProvider
from canaryd.errors import ProviderError
from canaryd.http import POOL_PER_HOST
from canaryd.providers.base import (
    FORM,
    JSON,
    HTTPProvider,
    Request,
    TransientError,
    http_error,
    is_transient,
    json_or_none,
    preview,
    query_string,
    status_error,
)
from canaryd.providers.headers import auth_headers, secret_text
from canaryd.providers.transport import Response

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Answers larger than this are refused."""

FLUX_DIALECT = {"header": True, "delimiter": ",", "annotations": ["datatype", "group", "default"]}
"""The annotated CSV asked of Flux: the ``#datatype`` row tells numbers from strings."""

_NUMERIC = frozenset({"double", "long", "unsignedLong"})


class InfluxDB(HTTPProvider):
    """A :class:`~canaryd.providers.MetricsProvider` backed by InfluxDB.

    Args:
        cfg: the provider's configuration.
        pool: connections to InfluxDB at most.
    """

    def __init__(self, cfg: InfluxDBProvider, *, pool: int = POOL_PER_HOST) -> None:
        self._cfg = cfg
        flux = cfg.language == "flux"
        super().__init__(
            "influxdb",
            cfg,
            self._headers,
            pool=pool,
            max_body=MAX_BODY_BYTES,
            static=not (cfg.token_file or cfg.username),
            accept="application/csv" if flux else "application/json",
        )

    async def query(self, query: str, *, budget: float) -> float | None:
        """The last non-null value of the query's single series, or ``None`` for no data.

        Raises:
            ProviderError: the request failed for good, InfluxDB rejected the
                query, or the answer is not exactly one series of one value column.
        """
        rows = await self.endpoint.call(self._request(query), budget, self._parse)
        return last_value(rows)

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """Every value of the query's single series over the window, null as NaN.

        Raises:
            ProviderError: the request failed for good, or not exactly one series.
        """
        window = (_rfc3339(start), _rfc3339(end), step)
        rows = await self.endpoint.call(self._request(query, window), budget, self._parse)
        return [math.nan if v is None else v for v in rows]

    def _request(self, query: str, window: tuple[str, str, float] | None = None) -> Request:
        """The HTTP request of a query (``window``: start, stop, step of a range query).

        Raises:
            ProviderError: the org file cannot be read.
        """
        cfg = self._cfg
        if cfg.language == "flux":
            if window is not None:
                start, stop, step = window
                query = (
                    f"option v = {{timeRangeStart: {start}, timeRangeStop: {stop}, "
                    f"windowPeriod: {max(1, round(step))}s}}\n{query}"
                )
            body = json.dumps({"query": query, "type": "flux", "dialect": FLUX_DIALECT})
            org = [("org", self._org())] if cfg.org or cfg.org_file else []
            return Request("/api/v2/query" + query_string(org), body.encode(), b"POST", JSON)
        form = [("q", query), ("epoch", "s")]
        form += [("db", cfg.database)] if cfg.database else []
        form += [("rp", cfg.retentionPolicy)] if cfg.retentionPolicy else []
        if window is not None:
            params = {"timeRangeStart": window[0], "timeRangeStop": window[1]}
            form.append(("params", json.dumps(params)))
        return Request("/query", query_string(form)[1:].encode(), b"POST", FORM)

    def _parse(self, resp: Response) -> list[float | None]:
        """The rows' values of the one series or table of an answer."""
        return flux_rows(resp) if self._cfg.language == "flux" else influxql_rows(resp)

    def _org(self) -> str:
        """The organization, from ``org`` or ``org_file`` (read on every query).

        Raises:
            ProviderError: the org file cannot be read.
        """
        if self._cfg.org:
            return self._cfg.org
        return secret_text(self._cfg.org_file)

    def _headers(self) -> dict[str, str]:
        cfg = self._cfg
        return auth_headers(
            cfg.headers,
            token_file=cfg.token_file,
            username=cfg.username,
            password_file=cfg.password_file,
            scheme="Token",
        )


def _rfc3339(t: float) -> str:
    """Unix seconds as an RFC 3339 UTC time, to the millisecond."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def last_value(rows: list[float | None]) -> float | None:
    """The last value that is neither null nor NaN, or ``None`` for no data."""
    for value in reversed(rows):
        if value is not None and not math.isnan(value):
            return value
    return None


def _check_status(resp: Response, message: str | None) -> None:
    """Raise for an answer that is not a complete HTTP 200.

    Raises:
        TransientError: HTTP 429 or 5xx.
        ProviderError: any other status, or a body cut at the size cap.
    """
    if not resp.complete:
        raise ProviderError(http_error("influxdb", resp.status, resp.body, " too large"))
    if resp.status == 200:
        return
    if not message:
        raise status_error("influxdb", resp.status, resp.body)
    kind = TransientError if is_transient(resp.status) else ProviderError
    raise kind(f"influxdb answered HTTP {resp.status}: {preview(message.encode())}")


# --------------------------------------------------------------------------- InfluxQL


def influxql_rows(resp: Response) -> list[float | None]:
    """The values of the only series of an InfluxQL answer (``[]`` for none).

    Raises:
        TransientError: HTTP 429 or 5xx.
        ProviderError: an error, several statements, series or value columns.
    """
    doc = json_or_none(resp.body)
    error = doc.get("error") if isinstance(doc, dict) else None
    _check_status(resp, error if isinstance(error, str) else None)
    results = doc.get("results") if isinstance(doc, dict) else None
    if error is not None or not isinstance(results, list) or not results:
        raise ProviderError(f"influxdb answered something other than query JSON: {_shown(doc)}")
    if len(results) > 1:
        raise ProviderError(f"query holds {len(results)} statements; a metric query is one")
    result = results[0]
    if not isinstance(result, dict):
        raise ProviderError(f"influxdb answered an unexpected result: {_shown(result)}")
    if "error" in result:
        raise ProviderError(f"influxdb: {result['error']}")
    series = result.get("series", [])
    if not isinstance(series, list):
        raise ProviderError(f"influxdb answered an unexpected result: {_shown(result)}")
    if len(series) > 1:
        raise ProviderError(
            f"query returned {len(series)} series; a metric query must return exactly one "
            "(drop the GROUP BY tag, or select on it)"
        )
    return _series_values(series[0]) if series else []


def _series_values(series: Any) -> list[float | None]:
    """The value column of one InfluxQL series, row by row.

    Raises:
        ProviderError: not one value column besides ``time``, or a value that is not a number.
    """
    columns = series.get("columns") if isinstance(series, dict) else None
    rows = series.get("values", []) if isinstance(series, dict) else None
    if not isinstance(columns, list) or not isinstance(rows, list):
        raise ProviderError(f"influxdb answered an unexpected series: {_shown(series)}")
    fields = [i for i, c in enumerate(columns) if c != "time"]
    if len(fields) != 1:
        raise ProviderError(
            f"query returned {len(fields)} value columns ({', '.join(map(str, columns))}); "
            "a metric query selects exactly one"
        )
    at = fields[0]
    if not all(isinstance(row, list) and len(row) == len(columns) for row in rows):
        raise ProviderError(f"influxdb rows do not match the columns: {_shown(series)}")
    return [_number(row[at]) for row in rows]


def _number(value: Any) -> float | None:
    """A JSON value as a float (``None`` for null).

    Raises:
        ProviderError: a string, boolean, list or object.
    """
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an integer beyond float range
            return float(value)
    raise ProviderError(f"influxdb value is not a number: {_shown(value)}")


# --------------------------------------------------------------------------- Flux


def flux_rows(resp: Response) -> list[float | None]:
    """The ``_value`` column of the only table of a Flux answer (annotated CSV).

    Raises:
        TransientError: HTTP 429 or 5xx.
        ProviderError: a Flux error, several tables, no ``_value`` column, not numbers.
    """
    if resp.status != 200:
        doc = json_or_none(resp.body)
        message = doc.get("message") if isinstance(doc, dict) else None
        _check_status(resp, message if isinstance(message, str) else None)
    _check_status(resp, None)
    try:
        tables = _flux_tables(resp.body.decode("utf-8", "replace"))
    except csv.Error as exc:
        raise ProviderError(f"influxdb answered CSV that cannot be read: {exc}") from None
    if len(tables) > 1:
        raise ProviderError(
            f"query returned {len(tables)} tables; a metric query must return exactly one "
            "(group() them, or filter on the tag)"
        )
    return next(iter(tables.values()), [])


def _flux_tables(text: str) -> dict[tuple[str, str], list[float | None]]:
    """``_value`` of every row of an annotated CSV answer, by (result, table).

    Raises:
        ProviderError: an error table, a table without ``_value``, a value not a number.
    """
    tables: dict[tuple[str, str], list[float | None]] = {}
    header: list[str] | None = None
    types: list[str] = []
    for row in csv.reader(text.splitlines()):
        if not row:  # a blank line ends a block: annotations and header follow
            header, types = None, []
        elif row[0] == "#datatype":
            types = row
        elif row[0].startswith("#"):
            continue
        elif header is None:
            header = row
            if "_value" not in header and "error" not in header:
                raise ProviderError(f"flux table without a _value column: {','.join(header)}")
        elif "error" in header:
            raise ProviderError(f"influxdb flux error: {_cell(row, header, 'error')}")
        else:
            at = header.index("_value")
            kind = types[at] if at < len(types) else ""
            key = (_cell(row, header, "result"), _cell(row, header, "table"))
            tables.setdefault(key, []).append(_flux_number(_cell(row, header, "_value"), kind))
    return tables


def _cell(row: list[str], header: list[str], name: str) -> str:
    """The cell of column ``name`` ('' when absent)."""
    at = header.index(name) if name in header else -1
    return row[at] if 0 <= at < len(row) else ""


def _flux_number(text: str, kind: str) -> float | None:
    """A ``_value`` cell as a float; empty is null.

    Raises:
        ProviderError: the column is not numeric, or the cell is not a number.
    """
    if text == "":
        return None
    if kind and kind not in _NUMERIC:
        raise ProviderError(
            f"flux _value is of type {kind}, not a number: {preview(text.encode())}"
        )
    try:
        return float(text)
    except ValueError:
        raise ProviderError(f"flux _value is not a number: {preview(text.encode())}") from None


def _shown(value: Any) -> str:
    """A value as JSON, cut short, for messages."""
    return preview(json.dumps(value).encode())
