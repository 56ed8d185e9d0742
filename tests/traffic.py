"""Counting where real requests land behind a proxy (shared by the router tests).

The backends behind every proxy under test answer with their own name
(``primary`` / ``canary``, see :func:`haproxy.named_backend`); these helpers send
real requests through the proxy's frontend, each on a new connection, and check
the measured canary share against the weight canaryd set.
"""

from __future__ import annotations

from collections import Counter

from haproxy import count_responses

REQUESTS = 200
"""Requests sent through the proxy per measured step."""

TOLERANCE = 7
"""Allowed deviation of the measured canary share, in percentage points (0 and 100 exact)."""

STEPS = (0, 20, 50, 100)
"""Canary weights every proxy's router is driven through."""


def share_error(counts: Counter[str], canary: int) -> str | None:
    """Why ``counts`` does not match a ``canary`` percent split, or None if it does.

    0 and 100 percent must be exact; other weights within :data:`TOLERANCE` points.
    """
    total = sum(counts.values())
    unexpected = set(counts) - {"primary", "canary"}
    if unexpected or total == 0:
        return f"answers other than primary/canary: {dict(counts)}"
    measured = 100 * counts["canary"] / total
    allowed = 0 if canary in (0, 100) else TOLERANCE
    if abs(measured - canary) > allowed:
        return f"canary got {measured:.1f}% of {total} requests, weight {canary}% (±{allowed})"
    return None


async def assert_split(url: str, canary: int, requests: int = REQUESTS) -> Counter[str]:
    """Send ``requests`` GETs to ``url`` and assert the canary share is ``canary`` percent.

    Raises:
        AssertionError: the measured share is off (see :func:`share_error`).
    """
    counts = await count_responses(url, requests)
    error = share_error(counts, canary)
    assert error is None, error
    return counts
