"""New Relic NRQL through NerdGraph, ``POST /graphql`` (docs/providers.md, "New Relic").

An instant query without a ``SINCE`` clause gets ``SINCE <lookback> seconds
ago`` appended, as Flagger appends its interval; a range query gets ``SINCE
<start> UNTIL <end> TIMESERIES <step> seconds`` (and must not set its own).

What an answer means:

- no result row, or a row whose value is ``null``: no data (note that
  ``count(*)`` over nothing is ``0``, a value);
- one row: its value, the column named ``result`` or else its only column
  (``percentile()``'s one-entry object included);
- several rows (``FACET``): an error;
- GraphQL ``errors``: an error naming them; ``TIMEOUT``/``SERVER_ERROR`` ones
  and HTTP 429/5xx are retried within the check's budget.
"""

from __future__ import annotations

import json
import re
from typing import Any

from canaryd.config.models import NewRelicProvider
from canaryd.errors import ProviderError
from canaryd.http import POOL_PER_HOST
from canaryd.providers import vendor
from canaryd.providers.base import (
    JSON,
    HTTPProvider,
    Request,
    TransientError,
    is_transient,
)
from canaryd.providers.headers import secret_text
from canaryd.providers.transport import Response

NAME = "newrelic"

GRAPHQL = (
    "query($account: Int!, $nrql: Nrql!, $timeout: Seconds) "
    "{ actor { account(id: $account) { nrql(query: $nrql, timeout: $timeout) { results } } } }"
)
"""The NerdGraph document of every query; account and NRQL go as variables, never spliced."""

_SINCE = re.compile(r"\bSINCE\b", re.IGNORECASE)

_NOT_VALUES = frozenset({"beginTimeSeconds", "endTimeSeconds", "facet", "comparison"})
"""Columns of a result row that describe it rather than hold its value."""

_TRANSIENT_CLASSES = frozenset({"TIMEOUT", "SERVER_ERROR"})
"""NerdGraph ``errorClass`` values worth another attempt."""


class NewRelic(HTTPProvider):
    """A :class:`~canaryd.providers.MetricsProvider` backed by NerdGraph's NRQL field."""

    def __init__(self, cfg: NewRelicProvider, *, pool: int = POOL_PER_HOST) -> None:
        self._cfg = cfg
        super().__init__(
            NAME,
            cfg,
            self._headers,
            pool=pool,
            max_body=vendor.MAX_BODY_BYTES,
            secret_headers=frozenset({"api-key"}),
        )

    async def query(self, query: str, *, budget: float) -> float | None:
        """One number; ``None`` for no data.

        Raises:
            ProviderError: the query failed, or answered several rows.
        """
        nrql = _one_line(query)
        if not _SINCE.search(nrql):
            nrql += f" SINCE {round(self._cfg.lookback)} seconds ago"
        return await vendor.call(self.endpoint, self._request(nrql), budget, _instant)

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """One series between ``start`` and ``end`` in time order.

        Raises:
            ProviderError: the query sets its own ``SINCE``, failed, or answered a ``FACET``.
        """
        nrql = _one_line(query)
        if _SINCE.search(nrql):
            raise ProviderError("a newrelic query compared over time must not set SINCE")
        nrql += (
            f" SINCE {int(start * 1000)} UNTIL {int(end * 1000)}"
            f" TIMESERIES {max(1, round(step))} seconds"
        )
        return await vendor.call(self.endpoint, self._request(nrql), budget, _range)

    def _request(self, nrql: str) -> Request:
        """The GraphQL request; the account id is read here when it lives in a file."""
        account = self._cfg.account_id
        if account is None:
            account = _account(self._cfg.account_id_file)
        variables = {"account": account, "nrql": nrql, "timeout": max(1, int(self._cfg.timeout))}
        body = json.dumps({"query": GRAPHQL, "variables": variables}).encode()
        return Request("/graphql", body, content_type=JSON)

    def _headers(self) -> dict[str, str]:
        """``API-Key``, read from its file on every request.

        Raises:
            ProviderError: the key file cannot be read.
        """
        return {"API-Key": secret_text(self._cfg.api_key_file)}


def _one_line(query: str) -> str:
    """The NRQL on one line (a clause is appended after it); spaces inside kept."""
    return " ".join(line.strip() for line in query.splitlines() if line.strip())


def _account(path: str | None) -> int:
    """The account id in a secret file.

    Raises:
        ProviderError: unreadable, or not a number (the message does not show it).
    """
    value = secret_text(path)
    if not value.isdigit():
        raise ProviderError(f"newrelic account_id_file {path} does not hold an account number")
    return int(value)


def _results(resp: Response) -> list[Any]:
    """The NRQL result rows of an answer.

    Raises:
        TransientError: HTTP 429/5xx, or NerdGraph errors of a transient class.
        ProviderError: any other failure.
    """
    vendor.check_rate_limit(NAME, resp)
    doc = vendor.decode(NAME, resp)
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if errors:
        errors = errors if isinstance(errors, list) else [errors]
        messages = [e.get("message", e) if isinstance(e, dict) else e for e in errors]
        classes = {
            str((e.get("extensions") or {}).get("errorClass", ""))
            for e in errors
            if isinstance(e, dict) and isinstance(e.get("extensions") or {}, dict)
        }
        text = "; ".join(map(str, messages))
        if is_transient(resp.status) or classes & _TRANSIENT_CLASSES:
            raise TransientError(f"newrelic error: {text}")
        raise ProviderError(f"newrelic error: {text}")
    if resp.status != 200:
        raise vendor.fail(NAME, resp, vendor.shape(NAME, doc).args[0])
    try:
        results = doc["data"]["actor"]["account"]["nrql"]["results"]
    except (KeyError, TypeError):
        raise vendor.shape(NAME, doc) from None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise vendor.shape(NAME, results)
    return results


def row_value(row: dict[str, Any]) -> float | None:
    """The value of one result row: ``result``, else its only value column.

    Raises:
        ProviderError: several value columns, or a value that is not a number.
    """
    if "result" in row:
        value = row["result"]
    else:
        columns = [k for k in row if k not in _NOT_VALUES]
        if len(columns) != 1:
            raise ProviderError(
                f"newrelic answered {len(columns)} columns ({', '.join(columns)}); "
                "select exactly one value"
            )
        value = row[columns[0]]
    if isinstance(value, dict) and len(value) == 1:  # percentile(x, 95) -> {"95": v}
        value = next(iter(value.values()))
    return vendor.number(value, NAME)


def _instant(resp: Response) -> float | None:
    rows = _results(resp)
    if len(rows) > 1:
        raise vendor.several(NAME, len(rows), "drop FACET and TIMESERIES")
    return row_value(rows[0]) if rows else None


def _range(resp: Response) -> list[float]:
    rows = _results(resp)
    if any("facet" in row for row in rows):
        raise ProviderError("newrelic query returned facets; a compared query must not FACET")
    return vendor.series_values([row_value(row) for row in rows], NAME)
