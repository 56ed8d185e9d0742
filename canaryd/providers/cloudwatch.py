"""Amazon CloudWatch ``GetMetricData`` (docs/providers.md, "CloudWatch").

The query text is Flagger's: a JSON list of ``MetricDataQuery`` objects
(``Id`` plus ``MetricStat`` or ``Expression``; intermediate ones with
``"ReturnData": false``). Requests are made and signed by ``aiobotocore``
(botocore underneath) with the standard credential chain: environment,
shared files (``profile``), container or instance role. botocore's own
retries are off: the provider retries within the check's budget like every
other provider (:mod:`canaryd.providers.base`).

What an answer means:

- no returned query, or a returned query without values (NaN included): no data;
- one returned query: its most recent value (an instant query covers the last
  ``lookback`` seconds, as Flagger's ten intervals do);
- several returned queries: an error (set ``"ReturnData": false`` on all but one);
- throttling, ``InternalError`` status and HTTP 5xx: retried; other errors
  (bad query, access denied, no credentials) fail at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from datetime import UTC, datetime
from typing import Any

import anyio

from canaryd.config.models import CloudWatchProvider
from canaryd.errors import ProviderError
from canaryd.providers import vendor
from canaryd.providers.base import Endpoint, TransientError, open_endpoint

NAME = "cloudwatch"

MAX_PAGES = 10
"""``NextToken`` pages followed at most for one range query."""

_THROTTLING = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"}
)


class CloudWatch:
    """A :class:`~canaryd.providers.MetricsProvider` backed by CloudWatch ``GetMetricData``."""

    def __init__(self, cfg: CloudWatchProvider) -> None:
        self._cfg = cfg
        address = cfg.endpoint_url or f"https://monitoring.{cfg.region}.amazonaws.com"
        # botocore makes the requests; the endpoint provides the retry and budget
        # shell shared by every provider, and its counters (its pool stays unused).
        self.endpoint: Endpoint = open_endpoint(
            NAME, address, dict, timeout=cfg.timeout, limit=1, max_body=1
        )
        self.stats = self.endpoint.stats
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock = anyio.Lock()

    async def aclose(self) -> None:
        """Close the botocore client."""
        await self._stack.aclose()
        self._client = None
        await self.endpoint.aclose()

    async def query(self, query: str, *, budget: float) -> float | None:
        """The most recent value over the last ``lookback`` seconds; ``None`` for no data.

        Raises:
            ProviderError: the query is not valid JSON, failed, or returned several series.
        """
        queries = parse_query(query)
        end = time.time()
        args = _args(queries, end - self._cfg.lookback, end, "TimestampDescending")
        values = await self.endpoint.retrying(lambda limit: self._fetch(args, limit, 1), budget)
        return next((v for v in values if not math.isnan(v)), None)

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """The values of the returned query between ``start`` and ``end``, oldest first.

        The period between points is the queries' own (``MetricStat.Period``).

        Raises:
            ProviderError: the query is not valid JSON, failed, or returned several series.
        """
        args = _args(parse_query(query), start, end, "TimestampAscending")
        return await self.endpoint.retrying(
            lambda limit: self._fetch(args, limit, MAX_PAGES), budget
        )

    async def _fetch(self, args: dict[str, Any], limit: float, pages: int) -> list[float]:
        """One attempt: ``GetMetricData`` (up to ``pages`` pages) within ``limit`` seconds.

        Raises:
            TransientError: throttled, a 5xx, a network failure or timeout.
            ProviderError: any other failure.
        """
        self.endpoint.stats.attempts += 1
        # Created once, outside the attempt's timeout: a creation cut short would leave
        # a half-open client (botocore bounds its own credential look-ups to ~1s each).
        try:
            client = await self._get_client()
        except ProviderError:
            raise
        except Exception as exc:  # e.g. a profile the shared files do not have
            raise classify(exc) from None
        values: list[float] = []
        try:
            with anyio.fail_after(limit):
                token: str | None = None
                for _ in range(pages):
                    page = await client.get_metric_data(
                        **args, **({"NextToken": token} if token else {})
                    )
                    values += result_values(page)
                    token = page.get("NextToken")
                    if not token:
                        break
        except TimeoutError:
            raise TransientError(f"cloudwatch did not answer within {limit:g}s") from None
        except ProviderError:
            raise
        except Exception as exc:  # botocore's tree has no common base worth naming
            raise classify(exc) from None
        return values

    async def _get_client(self) -> Any:
        """The botocore client, created on first use (credentials resolved then).

        Raises:
            ProviderError: aiobotocore is not installed.
        """
        async with self._lock:
            if self._client is None:
                self._client = await self._stack.enter_async_context(self._new_client())
        return self._client

    def _new_client(self) -> Any:
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import AioSession
        except ImportError:  # pragma: no cover - installed with the cloudwatch extra
            raise ProviderError(
                "the cloudwatch provider needs aiobotocore: pip install 'canaryd[cloudwatch]'"
            ) from None
        cfg = self._cfg
        config = AioConfig(
            connect_timeout=cfg.timeout,
            read_timeout=cfg.timeout,
            retries={"total_max_attempts": 1},
        )
        session = AioSession(profile=cfg.profile)
        return session.create_client(
            "cloudwatch", region_name=cfg.region, endpoint_url=cfg.endpoint_url, config=config
        )


def parse_query(query: str) -> list[dict[str, Any]]:
    """The ``MetricDataQueries`` of a query text (a JSON list of objects with an ``Id``).

    Raises:
        ProviderError: not JSON, or not a non-empty list of objects with an ``Id``.
    """
    try:
        queries = json.loads(query)
    except (ValueError, RecursionError) as exc:
        raise ProviderError(f"cloudwatch query is not JSON: {exc}") from None
    if (
        not isinstance(queries, list)
        or not queries
        or not all(isinstance(q, dict) and isinstance(q.get("Id"), str) for q in queries)
    ):
        raise ProviderError(
            "cloudwatch query must be a JSON list of MetricDataQuery objects, each with an Id"
        )
    return queries


def _args(queries: list[dict[str, Any]], start: float, end: float, scan: str) -> dict[str, Any]:
    return {
        "MetricDataQueries": queries,
        "StartTime": datetime.fromtimestamp(start, UTC),
        "EndTime": datetime.fromtimestamp(end, UTC),
        "ScanBy": scan,
    }


def result_values(page: dict[str, Any]) -> list[float]:
    """The values of a ``GetMetricData`` page's single result (``[]`` without one).

    Raises:
        TransientError: the result's status is ``InternalError``.
        ProviderError: several results, a ``Forbidden`` status, or an odd shape.
    """
    results = page.get("MetricDataResults")
    if not isinstance(results, list):
        raise vendor.shape(NAME, str(page)[:200])
    if len(results) > 1:
        raise vendor.several(NAME, len(results), 'set "ReturnData": false on all but one')
    if not results:
        return []
    result = results[0]
    status = result.get("StatusCode")
    messages = "; ".join(str(m.get("Value", m)) for m in result.get("Messages") or [])
    if status == "InternalError":
        raise TransientError(f"cloudwatch result status InternalError {messages}".strip())
    if status == "Forbidden":
        raise ProviderError(f"cloudwatch result status Forbidden {messages}".strip())
    return [float(v) for v in result.get("Values") or []]


def classify(exc: Exception) -> ProviderError:
    """A botocore failure as a transient or permanent :class:`ProviderError`.

    The message names the error's code and text; botocore's messages carry no
    credentials (requests are signed, secrets never sent).
    """
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        NoCredentialsError,
        ParamValidationError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(error.get("Code", ""))
        text = f"cloudwatch {code or 'error'} (HTTP {status}): {error.get('Message', '')}"
        transient = code in _THROTTLING or status == 429 or status >= 500
        return (TransientError if transient else ProviderError)(text)
    if isinstance(exc, NoCredentialsError):
        return ProviderError(
            "no AWS credentials found (environment, shared files or instance role: "
            "see docs/providers.md)"
        )
    if isinstance(exc, ParamValidationError):
        return ProviderError(f"cloudwatch query rejected: {' '.join(str(exc).split())}")
    if isinstance(exc, ConnectionError | HTTPClientError | OSError):
        return TransientError(f"cannot reach cloudwatch: {exc}")
    return ProviderError(f"cloudwatch request failed: {type(exc).__name__}: {exc}")
