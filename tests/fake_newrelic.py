"""A New Relic NerdGraph fake built from New Relic's documented requests and answers.

``POST /graphql`` with ``API-Key`` and a JSON body ``{"query": ..., "variables":
{...}}`` whose query reads ``actor { account(id) { nrql(query) { results } } }``.
The answer is ``{"data": {"actor": {"account": {"nrql": {"results": [...]}}}}}``;
result rows are objects named by their function (``{"count": 3}``,
``{"average.duration": 0.2}``) or alias; ``TIMESERIES`` rows carry
``beginTimeSeconds``/``endTimeSeconds``. Errors come as GraphQL ``errors``
(HTTP 200, ``extensions.errorClass``); a wrong key is ``401`` with ``errors``.

The fake evaluates what it serves from the series the test puts under the NRQL
text without its ``SINCE`` clause: ``SINCE N seconds ago`` gives the latest
point in the window (``column`` names it), ``SINCE a UNTIL b TIMESERIES s
seconds`` one row per point.
"""

from __future__ import annotations

import re
import time
from typing import Any

from receiver import Request
from vendorfake import Canned, VendorFake

API_KEY = "NRAK-0123456789ABCDEFGHIJKLMNOPQ"
ACCOUNT = 1234567

_AGO = re.compile(r"^(?P<q>.*) SINCE (?P<n>\d+) seconds ago$", re.IGNORECASE)
_SERIES = re.compile(r"^(?P<q>.*) SINCE (?P<a>\d+) UNTIL (?P<b>\d+) TIMESERIES (?P<s>\d+) seconds$")


def graphql_error(message: str, error_class: str) -> Canned:
    """NerdGraph's documented error answer: HTTP 200 with ``errors`` and a null field."""
    return Canned(
        200,
        {
            "data": {"actor": {"account": {"nrql": None}}},
            "errors": [
                {
                    "message": message,
                    "path": ["actor", "account", "nrql"],
                    "extensions": {"errorClass": error_class},
                }
            ],
        },
    )


def results(rows: list[dict[str, Any]]) -> Canned:
    """A successful NRQL answer with these result rows."""
    return Canned(200, {"data": {"actor": {"account": {"nrql": {"results": rows}}}}})


class NewRelicFake(VendorFake):
    """The fake; ``column`` is the name of the value column of instant answers."""

    def __init__(self) -> None:
        super().__init__()
        self.column = "result"

    def authorize(self, request: Request) -> Canned | None:
        """401 with a GraphQL error unless the user key is right."""
        if request.headers.get("API-Key") != API_KEY:
            return Canned(401, {"errors": [{"message": "Invalid API key"}]})
        return None

    def answer(self, request: Request) -> Canned:
        """Evaluate the NRQL of a documented NerdGraph request."""
        doc = request.json
        if request.path != "/graphql" or request.method != "POST" or not isinstance(doc, dict):
            return Canned(404, {"errors": [{"message": "Not found"}]})
        variables = doc.get("variables") or {}
        if "nrql(" not in str(doc.get("query")) or "results" not in str(doc.get("query")):
            return graphql_error("Cannot query field", "INVALID_INPUT")
        if variables.get("account") != ACCOUNT:
            return graphql_error("Account not found or not authorized", "FORBIDDEN")
        nrql = str(variables.get("nrql", ""))
        if match := _AGO.match(nrql):
            end = time.time()
            found = self.window(match["q"], end - int(match["n"]), end)
            return results([{self.column: points[-1][1]} for points in found])
        if match := _SERIES.match(nrql):
            start, end = int(match["a"]) / 1000, int(match["b"]) / 1000
            found = self.window(match["q"], start, end)
            if not found:
                return results([])
            return results(
                [{"beginTimeSeconds": t, "endTimeSeconds": t, self.column: v} for t, v in found[0]]
            )
        return graphql_error(
            f"NRQL Syntax Error: Error at line 1 position 1, {nrql!r}", "INVALID_INPUT"
        )
