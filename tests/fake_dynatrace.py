"""A Dynatrace metrics API v2 fake built from Dynatrace's documented requests and answers.

``GET /api/v2/metrics/query?metricSelector=..&resolution=..&from=<ms>&to=<ms>``
with ``Authorization: Api-Token <token>`` answers::

    {"totalCount": 1, "nextPageKey": null, "resolution": "Inf",
     "result": [{"metricId": "<selector>", "dataPointCountRatio": ..., "dimensionCountRatio": ...,
                 "data": [{"dimensions": [], "dimensionMap": {}, "timestamps": [ms],
                           "values": [v]}]}]}

``resolution=Inf`` gives one value per series for the whole window (the fake:
the mean of its non-null points); other resolutions one value per point. A
selector without data has ``"data": []``. Errors are ``{"error": {"code": ...,
"message": ...}}``; a missing or wrong token is 401; rate limits are 429 with
``Retry-After`` (seconds) and ``X-RateLimit-Reset`` (microseconds since the epoch).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

from receiver import Request
from vendorfake import Canned, Points, VendorFake

TOKEN = "dt0c01.ABCDEFGHIJKLMNOPQRSTUVWX.0123456789ABCDEF"


def error(code: int, message: str) -> Canned:
    """Dynatrace's documented error answer."""
    return Canned(code, {"error": {"code": code, "message": message}})


def rate_limited(seconds: float) -> Canned:
    """A 429 with both rate-limit headers, the reset ``seconds`` from now."""
    reset = int((time.time() + seconds) * 1e6)
    return Canned(
        429,
        {"error": {"code": 429, "message": "Too Many Requests"}},
        {"Retry-After": "", "X-RateLimit-Limit": "50", "X-RateLimit-Reset": str(reset)},
    )


class DynatraceFake(VendorFake):
    """The fake; ``bad`` holds selectors answered as invalid (HTTP 400)."""

    def __init__(self) -> None:
        super().__init__()
        self.bad: set[str] = set()

    def authorize(self, request: Request) -> Canned | None:
        """401 unless the Api-Token is right."""
        if request.headers.get("Authorization") != f"Api-Token {TOKEN}":
            return error(401, "Missing authorization parameter.")
        return None

    def answer(self, request: Request) -> Canned:
        """Evaluate a documented metrics query."""
        if request.method != "GET" or request.path != "/api/v2/metrics/query":
            return error(404, "Not found")
        params = {k: v[0] for k, v in parse_qs(request.query).items()}
        try:
            selector, resolution = params["metricSelector"], params["resolution"]
            start, end = int(params["from"]) / 1000, int(params["to"]) / 1000
        except (KeyError, ValueError):
            return error(400, "Constraints violated.")
        if selector in self.bad:
            return error(400, f"The metric selector is invalid: {selector}")
        data = [self._series(points, resolution) for points in self.window(selector, start, end)]
        return Canned(
            200,
            {
                "totalCount": 1,
                "nextPageKey": None,
                "resolution": resolution,
                "result": [
                    {
                        "metricId": selector,
                        "dataPointCountRatio": 1.0e-6,
                        "dimensionCountRatio": 1.0e-5,
                        "data": data,
                    }
                ],
            },
        )

    @staticmethod
    def _series(points: Points, resolution: str) -> dict[str, Any]:
        if resolution == "Inf":
            numbers = [v for _, v in points if v is not None]
            value = sum(numbers) / len(numbers) if numbers else None
            stamps, values = [int(points[-1][0] * 1000)], [value]
        else:
            stamps, values = [int(t * 1000) for t, _ in points], [v for _, v in points]
        return {"dimensions": [], "dimensionMap": {}, "timestamps": stamps, "values": values}
