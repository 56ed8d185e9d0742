"""Analysis webhooks: Flagger's payload plus weights, retries, manual gates, real receivers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from receiver import Receiver, self_signed

from canaryd.config import CanaryConfig, WebhookSpec
from canaryd.core.analysis import CanaryState, Phase
from canaryd.core.events import Event
from canaryd.http import make_transport
from canaryd.service.webhooks import call, event_payload, longest_call
from canaryd.testing import FakeHttp, answer

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

URL = "https://hooks.example/load"
"""Where the fake-HTTP tests post (nothing listens: the transport is a fake)."""


def hook(url: str | None, **kw: object) -> WebhookSpec:
    """A webhook spec of the given url (None: a manual gate)."""
    data: dict[str, object] = {"name": "load", "type": "rollout", "url": url, "timeout": "2s"}
    if url is None:
        data["type"] = "confirm-promotion"
    data.update(kw)
    return WebhookSpec.model_validate(data)


async def test_payload_carries_flagger_fields_and_weights() -> None:
    """The body has Flagger's fields plus revision, weights, iteration, failedChecks, threshold."""
    http = FakeHttp()
    result = await call(http, SPEC, STATE, hook(URL, metadata={"cmd": "hey"}), "k1")
    assert result.ok
    body = json.loads(http.requests[0].body or b"")
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
    assert http.requests[0].headers["Idempotency-Key"] == "k1"


async def test_retries_until_2xx_with_the_same_key() -> None:
    """retries: 2 calls a failing receiver again, with one idempotency key, until a 2xx."""
    http = FakeHttp([answer(503), answer(500), answer(200)])
    result = await call(http, SPEC, STATE, hook(URL, retries=2), "k2")
    assert result.ok
    assert [q.headers["Idempotency-Key"] for q in http.requests] == ["k2", "k2", "k2"]


async def test_failure_reports_status_and_body() -> None:
    """A non-2xx after the retries fails with the status and the first bytes of the body."""
    http = FakeHttp([answer(500, b"load test failed")])
    result = await call(http, SPEC, STATE, hook(URL, retries=1), "k3")
    assert (result.ok, result.detail) == (False, "HTTP 500: load test failed")
    assert len(http.requests) == 2


async def test_manual_gate_waits_for_approval() -> None:
    """A gate without url never opens by itself; it says how to open it."""
    async with make_transport() as s:
        result = await call(s, SPEC, STATE, hook(None), "k4")
    assert (result.ok, result.detail) == (False, "waiting for manual approval (canaryd approve)")


@pytest.mark.parametrize(
    ("name", "event_type"),
    [
        ("gate.waiting", "Warning"),
        ("check.failed", "Warning"),
        ("rollout.rolled_back", "Warning"),
        ("weight.advanced", "Normal"),
        ("rollout.promoted", "Normal"),
    ],
    ids=lambda v: str(v),
)
def test_event_hook_gets_flaggers_event_metadata(name: str, event_type: str) -> None:
    """An event hook's metadata has Flagger's eventMessage, eventType and timestamp (ms, a
    string); the hook's own metadata keeps its other keys but cannot override these three."""
    event = Event(name, "prod/web", "v2.4.1", "Progressing", 1714564800.5, {"gate": "x"})
    spec = hook("http://x", type="event", metadata={"eventType": "mine", "team": "sre"})
    body = event_payload(SPEC, STATE, spec, event)
    message = body["metadata"].pop("eventMessage")
    assert message.startswith("prod/web v2.4.1: ")
    assert body["metadata"] == {
        "team": "sre",
        "ticket": "OPS-7",
        "eventType": event_type,
        "timestamp": "1714564800500",
    }
    assert (body["name"], body["namespace"], body["type"]) == ("web", "prod", "event")


async def test_disable_tls_reaches_a_self_signed_hook(tmp_path: Path) -> None:
    """disableTLS: true calls an HTTPS hook whose certificate does not verify; without it the
    call fails on the certificate and never reaches the receiver."""
    async with Receiver(tls=self_signed(tmp_path)) as r, make_transport() as s:
        strict = await call(s, SPEC, STATE, hook(r.url), "k5")
        lax = await call(s, SPEC, STATE, hook(r.url, disableTLS=True), "k6")
    assert not strict.ok and "Certificate" in strict.detail
    assert lax.ok
    assert [q.headers["Idempotency-Key"] for q in r.requests] == ["k6"]


@pytest.mark.parametrize(
    ("timeout", "retries", "expected"),
    [("10s", 0, 10.0), ("3m", 0, 180.0), ("3m", 2, 540.0 + 2 * 2.2)],
    ids=["default", "helm-test", "with-retries"],
)
def test_longest_call_covers_every_attempt_and_backoff(
    timeout: str, retries: int, expected: float
) -> None:
    """A hook's longest call is its timeout per attempt plus the longest backoff between them."""
    assert longest_call(hook("http://x", timeout=timeout, retries=retries)) == pytest.approx(
        expected
    )
