"""The four demo scenarios and the timings of a demo rollout (pure data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Outcome = Literal["promoted", "rolled back", "unfinished"]

SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the canary (v2) does, and what canaryd is expected to decide.

    Attributes:
        name: ``healthy``, ``errors``, ``slow`` or ``no-traffic``.
        title: one line on what the canary does wrong (or right).
        proves: what the scenario shows about canaryd.
        error_rate: share of the canary's answers that are 500 (0..1).
        latency_ms: latency added to each of the canary's answers.
        latency_jitter_ms: plus a uniformly random 0..N ms.
        no_traffic: the canary gets no requests at all (its server is in maintenance).
        expect: the outcome canaryd should reach.
        expect_reason: how canaryd's rollback reason should begin (metric, then
            ``" "`` and a value, or ``": no data"``).
    """

    name: str
    title: str
    proves: str
    expect: Outcome
    expect_reason: str | None = None
    error_rate: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    no_traffic: bool = False


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "healthy",
            "v2 behaves like v1",
            "a good release walks 20% -> 40% -> 60% and is promoted without anyone watching",
            "promoted",
        ),
        Scenario(
            "errors",
            "v2 answers 10% of requests with HTTP 500",
            "errors confined to the canary are caught at 20% weight; traffic goes back to v1",
            "rolled back",
            f"{SUCCESS_RATE} ",
            error_rate=0.10,
        ),
        Scenario(
            "slow",
            "v2 takes 400-450 ms per request (v1: a few ms), and no errors",
            "a release that is only slow is rolled back on its p99 latency",
            "rolled back",
            f"{DURATION} ",
            latency_ms=400.0,
            latency_jitter_ms=50.0,
        ),
        Scenario(
            "no-traffic",
            "v2 is up but receives no requests (its server is in maintenance in the load balancer)",
            "no data is not a pass: a canary nobody uses is never promoted",
            "rolled back",
            f"{SUCCESS_RATE}: no data",
            no_traffic=True,
        ),
    )
}
"""Scenarios by name, in the order ``canaryd demo`` runs them."""


@dataclass(frozen=True, slots=True)
class Timings:
    """How fast a demo rollout goes.

    Attributes:
        interval: ``analysis.interval`` in seconds.
        metric_interval: the metrics' ``interval`` (PromQL range) in seconds.
        threshold: failed checks before rollback.
        step_weight: ``stepWeight``.
        max_weight: ``maxWeight``.
        rate: requests per second the load generator sends.
        min_success: ``request-success-rate`` bound (percent).
        max_duration: ``request-duration`` bound (ms).
        deadline: seconds a rollout may take before the demo gives up on it.
    """

    interval: float = 3.0
    metric_interval: float = 10.0
    threshold: int = 3
    step_weight: int = 20
    max_weight: int = 60
    rate: float = 80.0
    min_success: float = 99.0
    max_duration: float = 200.0
    deadline: float = 60.0
