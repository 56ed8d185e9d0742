"""Dynatrace metrics API v2, ``GET /api/v2/metrics/query`` (docs/providers.md, "Dynatrace").

The query text is a metric selector. An instant query asks for
``resolution=Inf`` over the last ``lookback`` seconds, as Flagger does: one
value for the whole window.

What an answer means:

- no ``result``, no ``data`` series, or no non-null value: no data;
- one series: its most recent non-null value;
- several metrics or several dimension tuples: an error (aggregate with
  ``:splitBy()``);
- ``{"error": {...}}``: an error naming its message; HTTP 429 is retried after
  ``Retry-After`` (or ``X-RateLimit-Reset``, microseconds since the epoch)
  when that falls within the check's budget.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from canaryd.config.models import DynatraceProvider
from canaryd.http import POOL_PER_HOST
from canaryd.providers import vendor
from canaryd.providers.base import HTTPProvider, Request
from canaryd.providers.headers import secret_text
from canaryd.providers.transport import Response

NAME = "dynatrace"


class Dynatrace(HTTPProvider):
    """A :class:`~canaryd.providers.MetricsProvider` backed by Dynatrace's metrics API v2."""

    def __init__(self, cfg: DynatraceProvider, *, pool: int = POOL_PER_HOST) -> None:
        self._cfg = cfg
        super().__init__(
            NAME,
            cfg,
            self._headers,
            pool=pool,
            max_body=vendor.MAX_BODY_BYTES,
        )

    async def query(self, query: str, *, budget: float) -> float | None:
        """One number over the last ``lookback`` seconds; ``None`` for no data.

        Raises:
            ProviderError: the query failed, or answered several series.
        """
        end = time.time()
        request = _request(query, end - self._cfg.lookback, end, "Inf")
        return await vendor.call(self.endpoint, request, budget, self._instant)

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """One series between ``start`` and ``end`` in time order (``step`` in whole minutes).

        Raises:
            ProviderError: the query failed, or answered several series.
        """
        resolution = f"{max(1, round(step / 60))}m"
        request = _request(query, start, end, resolution)
        return await vendor.call(self.endpoint, request, budget, self._range)

    def _headers(self) -> dict[str, str]:
        """``Authorization: Api-Token``, read from its file on every request.

        Raises:
            ProviderError: the token file cannot be read.
        """
        return {"Authorization": f"Api-Token {secret_text(self._cfg.api_token_file)}"}

    def _series(self, resp: Response) -> list[Any] | None:
        """The values of the answer's single series (``None`` without one).

        Raises:
            TransientError: HTTP 429/5xx.
            ProviderError: any other failure, or several series.
        """
        vendor.check_rate_limit(NAME, resp, reset_is_epoch_us=True)
        doc = vendor.decode(NAME, resp)
        error = doc.get("error") if isinstance(doc, dict) else None
        if resp.status != 200 or error is not None:
            text = error.get("message", error) if isinstance(error, dict) else error
            raise vendor.fail(NAME, resp, str(text or vendor.shape(NAME, doc).args[0]))
        result = doc.get("result") if isinstance(doc, dict) else None
        if not isinstance(result, list):
            raise vendor.shape(NAME, doc)
        if len(result) > 1:
            raise vendor.several(NAME, len(result), "select one metric")
        if result and not isinstance(result[0], dict):
            raise vendor.shape(NAME, result[0])
        data = result[0].get("data", []) if result else []
        if not isinstance(data, list):
            raise vendor.shape(NAME, result[0])
        if len(data) > 1:
            raise vendor.several(NAME, len(data), "aggregate the dimensions with :splitBy()")
        values = data[0].get("values") if data and isinstance(data[0], dict) else None
        if data and not isinstance(values, list):
            raise vendor.shape(NAME, data[0])
        return values or None

    def _instant(self, resp: Response) -> float | None:
        values = self._series(resp)
        return None if values is None else vendor.last_value(values, NAME)

    def _range(self, resp: Response) -> list[float]:
        values = self._series(resp)
        return [] if values is None else vendor.series_values(values, NAME)


def _request(selector: str, start: float, end: float, resolution: str) -> Request:
    """``GET /api/v2/metrics/query`` with the selector and window (milliseconds)."""
    params = urlencode(
        {
            "metricSelector": selector.strip(),
            "resolution": resolution,
            "from": int(start * 1000),
            "to": int(end * 1000),
        }
    )
    return Request(f"/api/v2/metrics/query?{params}", method=b"GET")
