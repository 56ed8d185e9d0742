"""A Datadog metrics API fake built from Datadog's documented requests and answers.

- ``GET /api/v1/query?from=<s>&to=<s>&query=<q>`` answers
  ``{"status": "ok", "res_type": "time_series", "series": [{"pointlist":
  [[ms, v], ...], ...}], ...}``; a series without points in the window is left
  out (no series at all is how Datadog says "no data").
- ``POST /api/v2/query/scalar`` and ``/api/v2/query/timeseries`` take
  ``{"data": {"type": "scalar_request"|"timeseries_request", "attributes":
  {"formulas": [{"formula": ...}], "queries": [{"name", "data_source",
  "query", "aggregator"}], "from": ms, "to": ms}}}`` and answer
  ``scalar_response`` columns / ``timeseries_response`` series, times, values.
- Keys go in ``DD-API-KEY`` and ``DD-APPLICATION-KEY``; a wrong one is
  ``403 {"errors": ["Forbidden"]}``. Errors are ``{"errors": [...]}``; a rate
  limit is ``429`` with ``X-RateLimit-Limit/-Period/-Remaining/-Reset/-Name``
  (:func:`rate_limited`).
"""

from __future__ import annotations

import ast
import json
import math
import operator
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from receiver import Request
from vendorfake import Canned, Points, VendorFake

API_KEY = "dd-api-key-0123456789abcdef"
APP_KEY = "dd-app-key-fedcba9876543210"

_AGGREGATE: dict[str, Callable[[list[float]], float]] = {
    "avg": lambda v: sum(v) / len(v),
    "sum": sum,
    "min": min,
    "max": max,
    "last": lambda v: v[-1],
}
_OPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: lambda a, b: a / b if b else math.nan,
}


def rate_limited(reset: int, *, remaining: int = 0) -> Canned:
    """Datadog's documented rate-limit answer: 429 with its ``X-RateLimit-*`` headers."""
    return Canned(
        429,
        {"errors": ["Too many requests"]},
        {
            "X-RateLimit-Limit": "300",
            "X-RateLimit-Period": "3600",
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Name": "metrics_query",
        },
    )


class DatadogFake(VendorFake):
    """The fake; ``bad`` holds query texts answered as unparseable (HTTP 400)."""

    def __init__(self) -> None:
        super().__init__()
        self.bad: set[str] = set()

    def authorize(self, request: Request) -> Canned | None:
        """403 unless both keys are right."""
        headers = request.headers
        if headers.get("DD-API-KEY") != API_KEY or headers.get("DD-APPLICATION-KEY") != APP_KEY:
            return Canned(403, {"errors": ["Forbidden"]})
        return None

    def answer(self, request: Request) -> Canned:
        """Route to the v1 or v2 handler."""
        if request.method == "GET" and request.path == "/api/v1/query":
            return self._v1(parse_qs(request.query))
        if request.method == "POST" and request.path in (
            "/api/v2/query/scalar",
            "/api/v2/query/timeseries",
        ):
            return self._v2(request.path.rsplit("/", 1)[1], request.json)
        return Canned(404, {"errors": ["Not found"]})

    def _v1(self, params: dict[str, list[str]]) -> Canned:
        try:
            start, end = int(params["from"][0]), int(params["to"][0])
            query = params["query"][0]
        except (KeyError, ValueError):
            return Canned(400, {"errors": ["The parameters 'from', 'to' and 'query' are required"]})
        if query in self.bad:
            return Canned(400, {"errors": [f"Error parsing query: \n unable to parse {query}"]})
        series = [
            {
                "metric": query.split("{")[0],
                "display_name": query.split("{")[0],
                "expression": query,
                "scope": "*",
                "aggr": None,
                "interval": 20,
                "length": len(points),
                "start": int(points[0][0] * 1000),
                "end": int(points[-1][0] * 1000),
                "unit": None,
                "tag_set": [],
                "pointlist": [[t * 1000, v] for t, v in points],
            }
            for points in self.window(query, start, end)
        ]
        return Canned(
            200,
            {
                "status": "ok",
                "res_type": "time_series",
                "resp_version": 1,
                "query": query,
                "from_date": start * 1000,
                "to_date": end * 1000,
                "series": series,
                "values": [],
                "times": [],
                "message": "",
                "group_by": [],
            },
        )

    def _v2(self, kind: str, doc: Any) -> Canned:
        try:
            data = doc["data"]
            assert data["type"] == f"{kind}_request"
            attributes = data["attributes"]
            formula = attributes["formulas"][0]["formula"]
            start, end = attributes["from"] / 1000, attributes["to"] / 1000
            queries = {q["name"]: q for q in attributes["queries"]}
        except (KeyError, TypeError, IndexError, AssertionError):
            return Canned(400, {"errors": ["invalid request body"]})
        if any(q["query"] in self.bad for q in queries.values()):
            return Canned(400, {"errors": ["Error parsing query"]})
        found = {name: self.window(q["query"], start, end) for name, q in queries.items()}
        if kind == "scalar":
            return self._scalar(formula, queries, found)
        return self._timeseries(formula, found)

    def _scalar(
        self, formula: str, queries: dict[str, Any], found: dict[str, list[Points]]
    ) -> Canned:
        groups = max((len(s) for s in found.values()), default=0)
        values: list[float | None] = []
        for i in range(groups):
            scalars = {}
            for name, series in found.items():
                numbers = [v for _, v in series[min(i, len(series) - 1)] if v is not None]
                aggregate = _AGGREGATE[queries[name].get("aggregator", "avg")]
                scalars[name] = aggregate(numbers) if numbers else math.nan
            value = evaluate(formula, scalars)
            values.append(None if math.isnan(value) else value)
        column = {"name": formula, "type": "number", "values": values, "meta": {"unit": [None]}}
        return Canned(
            200, {"data": {"type": "scalar_response", "attributes": {"columns": [column]}}}
        )

    def _timeseries(self, formula: str, found: dict[str, list[Points]]) -> Canned:
        times = sorted({t for series in found.values() for points in series for t, _ in points})
        groups = max((len(s) for s in found.values()), default=0)
        values = []
        for i in range(groups):
            rows = []
            for t in times:
                scalars = {}
                for name, series in found.items():
                    at = dict(series[min(i, len(series) - 1)]).get(t)
                    scalars[name] = math.nan if at is None else at
                value = evaluate(formula, scalars)
                rows.append(None if math.isnan(value) else value)
            values.append(rows)
        attributes = {
            "series": [{"group_tags": [], "query_index": 0, "unit": None} for _ in values],
            "times": [int(t * 1000) for t in times],
            "values": values,
        }
        return Canned(
            200, {"data": {"id": "0", "type": "timeseries_response", "attributes": attributes}}
        )


def evaluate(formula: str, scalars: dict[str, float]) -> float:
    """A formula of query names, numbers and + - * / (what the fake understands)."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Name):
            return scalars[node.id]
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        raise ValueError(f"formula not understood by the fake: {formula}")

    return walk(ast.parse(formula, mode="eval").body)


def dumps(doc: Any) -> bytes:
    """JSON bytes (for scripted raw answers)."""
    return json.dumps(doc).encode()
