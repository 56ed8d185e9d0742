"""Analysis webhooks: Flagger's payload plus weights, retries, manual gates, real receivers."""

from __future__ import annotations

import aiohttp
import pytest
from receiver import Receiver

from canaryd.analysis import CanaryState, Phase
from canaryd.config import CanaryConfig, WebhookSpec
from canaryd.webhooks import call

pytestmark = pytest.mark.anyio

SPEC = CanaryConfig.model_validate(
    {
        "name": "web",
        "namespace": "prod",
        "router": "lb",
        "analysis": {"stepWeight": 10, "threshold": 4},
    }
)
STATE = CanaryState(
    phase=Phase.PROGRESSING,
    revision="v2.4.1",
    rollout_id="r1",
    metadata={"ticket": "OPS-7"},
    canary_weight=20,
    primary_weight=80,
    failed_checks=1,
    iteration=0,
)


def hook(url: str | None, **kw: object) -> WebhookSpec:
    """A webhook spec of the given url (None: a manual gate)."""
    data: dict[str, object] = {"name": "load", "type": "rollout", "url": url, "timeout": "2s"}
    if url is None:
        data["type"] = "confirm-promotion"
    data.update(kw)
    return WebhookSpec.model_validate(data)


async def test_payload_carries_flagger_fields_and_weights() -> None:
    """The body has Flagger's fields plus revision, weights, iteration, failedChecks, threshold."""
    async with Receiver() as r, aiohttp.ClientSession() as s:
        result = await call(s, SPEC, STATE, hook(r.url, metadata={"cmd": "hey"}), "k1")
    assert result.ok
    body = r.requests[0].json
    checksum = body.pop("checksum")
    assert len(checksum) == 16
    assert body == {
        "name": "web",
        "namespace": "prod",
        "phase": "Progressing",
        "metadata": {"cmd": "hey", "ticket": "OPS-7"},
        "type": "rollout",
        "revision": "v2.4.1",
        "canaryWeight": 20,
        "primaryWeight": 80,
        "iteration": 0,
        "failedChecks": 1,
        "threshold": 4,
    }
    assert r.requests[0].headers["Idempotency-Key"] == "k1"


async def test_retries_until_2xx_with_the_same_key() -> None:
    """retries: 2 calls a failing receiver again, with one idempotency key, until a 2xx."""
    async with Receiver(statuses=[503, 500, 200]) as r, aiohttp.ClientSession() as s:
        result = await call(s, SPEC, STATE, hook(r.url, retries=2), "k2")
    assert result.ok
    assert [q.headers["Idempotency-Key"] for q in r.requests] == ["k2", "k2", "k2"]


async def test_failure_reports_status_and_body() -> None:
    """A non-2xx after the retries fails with the status and the first bytes of the body."""
    async with Receiver(statuses=[500], body="load test failed") as r, aiohttp.ClientSession() as s:
        result = await call(s, SPEC, STATE, hook(r.url, retries=1), "k3")
    assert (result.ok, result.detail) == (False, "HTTP 500: load test failed")
    assert len(r.requests) == 2


async def test_manual_gate_waits_for_approval() -> None:
    """A gate without url never opens by itself; it says how to open it."""
    async with aiohttp.ClientSession() as s:
        result = await call(s, SPEC, STATE, hook(None), "k4")
    assert (result.ok, result.detail) == (False, "waiting for manual approval (canaryd approve)")
