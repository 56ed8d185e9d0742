"""The ``web`` provider: any HTTP endpoint that answers JSON (Argo Rollouts' Web metric).

The template's query, rendered with the usual variables, is the request:

- ``method: GET``: the query is appended to ``address`` (a path and/or query
  string, e.g. ``/error-rate?service={{ target }}``);
- ``method: POST``: the query is the body, sent to ``address`` with
  ``contentType`` (``application/json`` unless set).

``jsonPath`` (:mod:`canaryd.config.jsonpath`) picks the value from the
answer. What it finds (docs/providers.md, "web"):

- a number, or a string holding one (``"0.25"``): the value;
- nothing (a key or index missing on the way), ``null``, ``[]`` or ``"NaN"``:
  ``None``, "no data";
- anything else (a boolean, an object, a list of values, ``"n/a"``):
  :class:`~canaryd.errors.ProviderError`.

Only a 2xx answer is read; 429 and 5xx are retried within the budget
(:mod:`canaryd.providers.base`), other statuses are errors, and redirects are
never followed. The endpoint has no range queries: ``canaryd check`` refuses
a ``compare:`` metric on a ``web`` provider, and a range query raises.
"""

from __future__ import annotations

import json
import math
from typing import Any

from yarl import URL

from canaryd.config.jsonpath import parse_path, select
from canaryd.config.models import WebProvider
from canaryd.errors import ProviderError
from canaryd.http import POOL_PER_HOST
from canaryd.providers.base import (
    HTTPProvider,
    Request,
    http_error,
    preview,
    status_error,
)
from canaryd.providers.headers import auth_headers, secret_text
from canaryd.providers.transport import Response

MAX_BODY_BYTES = 1024 * 1024
"""Answers larger than this are refused."""


class Web(HTTPProvider):
    """A :class:`~canaryd.providers.MetricsProvider` reading one value from a JSON answer.

    Args:
        cfg: the provider's configuration.
        pool: connections to the endpoint at most.
    """

    def __init__(self, cfg: WebProvider, *, pool: int = POOL_PER_HOST) -> None:
        self._cfg = cfg
        self._path = parse_path(cfg.jsonPath)
        super().__init__(
            "web",
            cfg,
            self._headers,
            pool=pool,
            max_body=MAX_BODY_BYTES,
            static=not cfg.secret_headers,
            secret_headers=frozenset(h.name.lower() for h in cfg.secret_headers),
        )

    async def query(self, query: str, *, budget: float) -> float | None:
        """The value at ``jsonPath`` in the answer to the request ``query`` describes.

        Raises:
            ProviderError: the request failed for good, or the value is not a number.
        """
        return await self.endpoint.call(self._request(query), budget, self._value)

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """Not supported: a web endpoint answers one value.

        Raises:
            ProviderError: always.
        """
        raise ProviderError("the web provider has no range queries; compare: needs another one")

    def _request(self, query: str) -> Request:
        """GET ``address`` + query, or POST the query as the body.

        Raises:
            ProviderError: a GET query that is not a path or query string of ASCII text.
        """
        if self._cfg.method == "POST":
            return Request("", query.encode(), b"POST", self._cfg.contentType.encode("latin-1"))
        text = query.strip()
        if text and not text.startswith(("/", "?")):
            raise ProviderError(f"a GET query starts with '/' or '?': {text[:60]!r}")
        # percent-encodes what may not appear in a request line (spaces, non-ASCII)
        return Request(str(URL(text, encoded=False)) if text else "", method=b"GET")

    def _value(self, resp: Response) -> float | None:
        """The number at ``jsonPath`` (``None`` for no data).

        Raises:
            TransientError: HTTP 429 or 5xx.
            ProviderError: another non-2xx status, not JSON, or not a number.
        """
        if not resp.complete:
            raise ProviderError(http_error("web", resp.status, resp.body, " too large"))
        if not 200 <= resp.status < 300:
            raise status_error("web", resp.status, resp.body)
        try:
            doc = json.loads(resp.body)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply
            raise ProviderError(http_error("web", resp.status, resp.body, ", not JSON")) from None
        try:
            found, value = select(doc, self._path)
        except ValueError as exc:
            raise ProviderError(f"jsonPath {self._cfg.jsonPath}: {exc}") from None
        return to_number(value) if found else None

    def _headers(self) -> dict[str, str]:
        """Configured headers plus the secret ones, read from their files.

        Raises:
            ProviderError: a secret file cannot be read.
        """
        headers = auth_headers(self._cfg.headers)
        for header in self._cfg.secret_headers:
            headers[header.name] = secret_text(header.value_file)
        return headers


def to_number(value: Any) -> float | None:
    """The number a JSON value holds (``None`` for null, ``[]`` and NaN).

    Raises:
        ProviderError: a boolean, object, non-empty list, or a string that is not a number.
    """
    if value is None or value == []:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ProviderError(f"jsonPath found {_shown(value)}, not a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ProviderError(f"jsonPath found {_shown(value)}, not a number") from None
    return None if math.isnan(number) else number


def _shown(value: Any) -> str:
    """A value as JSON, cut short, for messages."""
    return preview(json.dumps(value).encode())
