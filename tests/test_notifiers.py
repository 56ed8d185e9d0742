"""Alert rendering and delivery, checked against real HTTP receivers on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cloudevents.v1.http import from_http
from pydantic import SecretStr, ValidationError
from receiver import Receiver

from canaryd.config import AlertSpec, Notifier, Severity
from canaryd.core.events import EVENTS, Event
from canaryd.errors import WebhookError
from canaryd.http import HttpTransport, make_transport
from canaryd.notifiers import (
    ALERT_EVENTS,
    FORMATS,
    deliver,
    describe,
    passes,
    render,
    severity_of,
    wanted,
)
from canaryd.notifiers.text import number

T0 = 1714564800.5  # 2024-05-01T12:00:00.500Z
SECRET = SecretStr("s3cr3t-signing-key")
SECRET_PATH = "/services/T0SECRET/B0SECRET/XyZsecretTokenValue"


def ev(name: str, revision: str | None = "v2", phase: str = "Progressing", **fields: Any) -> Event:
    """Build an event for ``prod/web``."""
    return Event(name, "prod/web", revision, phase, T0, fields)


ROLLED_BACK = ev(
    "rollout.rolled_back",
    phase="Failed",
    reason="failed checks threshold reached",
    metric="request-success-rate",
    value=91.8,
    min=99,
    failedChecks=5,
    threshold=5,
    canaryWeight=0,
    primaryWeight=100,
)


@pytest.fixture
async def session() -> AsyncIterator[HttpTransport]:
    """One client session per test, closed afterwards."""
    async with make_transport() as s:
        yield s


async def send(
    session: HttpTransport,
    receiver: Receiver,
    kind: str,
    event: Event = ROLLED_BACK,
    *,
    key: str = "key-1",
    secret: SecretStr | None = None,
) -> dict[str, Any]:
    """Render ``event`` for ``kind``, deliver it to ``receiver`` and return the parsed JSON."""
    payload, content_type = render(kind, event, event_id=key, source="canaryd/test")
    notifier = Notifier(type=kind, url=receiver.url + "/hook")
    await deliver(session, notifier, payload, content_type, idempotency_key=key, secret=secret)
    body: dict[str, Any] = receiver.requests[-1].json
    return body


def verify_signature(header: str, body: bytes, secret: SecretStr) -> bool:
    """Check ``X-Canaryd-Signature`` the way a receiver would (docs/design.md, "Outgoing calls")."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    if abs(time.time() - int(parts["t"])) > 300:
        return False
    expected = hmac.new(
        secret.get_secret_value().encode(), parts["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def url_file(tmp_path: Path, url: str) -> str:
    """Write a chat webhook URL to a private file, as an operator would."""
    path = tmp_path / "webhook-url"
    path.write_text(url + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return str(path)


# ------------------------------------------------------------------ severity and filtering


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rollout.started", Severity.INFO),
        ("weight.advanced", Severity.INFO),
        ("check.failed", Severity.WARN),
        ("pre_rollout.failed", Severity.WARN),
        ("rollout.rolled_back", Severity.ERROR),
        ("gate.timed_out", Severity.ERROR),
        ("rollout.waiting", Severity.WARN),
        ("gate.waiting", Severity.WARN),
        ("rollout.promoted", Severity.INFO),
    ],
    ids=lambda v: str(v),
)
def test_severity_follows_flagger_then_event_level(name: str, expected: Severity) -> None:
    """Flagger's severity where Flagger alerts (waiting for approval is warn), else the
    vocabulary level: info, warning -> warn, error."""
    assert severity_of(ev(name)) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"reason": "failed checks threshold reached"}, Severity.ERROR),
        ({"webhook": "kill-switch"}, Severity.WARN),
        ({"manual": True}, Severity.WARN),
    ],
    ids=["threshold", "rollback-webhook", "operator-abort"],
)
def test_rollback_severity_depends_on_who_asked(fields: dict[str, Any], expected: Severity) -> None:
    """A rollback is error, but warn when a rollback webhook or an operator asked for it, as in
    Flagger ("Rolling back manual webhook invoked" is warn)."""
    assert severity_of(ev("rollout.rolled_back", phase="Failed", **fields)) == expected


def alert(severity: str = "info", events: Any = "flagger") -> AlertSpec:
    """An alert on notifier ``n`` with the given filters."""
    return AlertSpec(name="a", notifier="n", severity=Severity(severity), events=events)


@pytest.mark.parametrize(
    ("spec", "event", "expected"),
    [
        (alert(), ev("rollout.started"), True),
        (alert(), ev("rollout.waiting", gate="confirm-rollout"), True),
        (alert(), ev("gate.waiting", gate="confirm-promotion"), True),
        (alert(), ev("rollout.promoted"), True),
        (alert(), ev("rollout.rolled_back"), True),
        (alert(), ev("weight.advanced"), False),
        (alert(), ev("check.failed"), False),
        (alert(), ev("router.failed"), False),
        (alert(), ev("analysis.tick"), False),
        (alert("warn"), ev("gate.waiting", gate="confirm-promotion"), True),
        (alert("warn"), ev("rollout.started"), False),
        (alert("error"), ev("rollout.rolled_back", webhook="stop"), False),
        (alert(), ev("gate.waiting", gate="confirm-promotion", muteAlert=True), False),
        (alert(events="all"), ev("weight.advanced"), True),
        (alert(events="all"), ev("check.failed"), True),
        (alert(events="all"), ev("analysis.tick"), False),
        (alert(events="all"), ev("rollout.waiting", gate="confirm-rollout", muteAlert=True), False),
        (alert(events=["weight.advanced"]), ev("weight.advanced"), True),
        (alert(events=["weight.advanced"]), ev("rollout.rolled_back"), False),
        (alert("warn", ["weight.advanced"]), ev("weight.advanced"), False),
    ],
    ids=[
        "default-started",
        "default-waiting",
        "default-gate-waiting",
        "default-promoted",
        "default-rolled-back",
        "default-no-weight-steps",
        "default-no-check-failed",
        "default-no-router-failed",
        "default-no-ticks",
        "warn-waiting",
        "warn-not-started",
        "error-not-manual-rollback",
        "muted",
        "all-weight-steps",
        "all-check-failed",
        "all-no-ticks",
        "all-muted",
        "list-listed",
        "list-unlisted",
        "list-and-severity",
    ],
)
def test_alert_selection(spec: AlertSpec, event: Event, expected: bool) -> None:
    """By default an alert sends Flagger's events; ``all`` or a list widen or pick them; the
    severity filter applies on top, and a muted waiting event is never sent."""
    assert wanted(spec, event) is expected


@pytest.mark.parametrize(
    ("events", "message"),
    [
        (["weight.advance"], "unknown alert event 'weight.advance'"),
        (["analysis.tick"], "unknown alert event 'analysis.tick'"),
        ("some", "must be flagger, all or a list of event names"),
    ],
    ids=["typo", "not-alertable", "bad-word"],
)
def test_alert_events_setting_is_validated(events: Any, message: str) -> None:
    """An events setting naming anything but flagger, all or alertable events is refused."""
    with pytest.raises(ValidationError, match=message):
        alert(events=events)


@pytest.mark.parametrize(
    ("filter_", "name", "expected"),
    [
        (Severity.INFO, "rollout.promoted", True),
        (Severity.INFO, "check.failed", True),
        (Severity.INFO, "rollout.rolled_back", True),
        (Severity.WARN, "rollout.promoted", False),
        (Severity.WARN, "check.failed", True),
        (Severity.WARN, "rollout.rolled_back", True),
        (Severity.ERROR, "rollout.promoted", False),
        (Severity.ERROR, "check.failed", False),
        (Severity.ERROR, "rollout.rolled_back", True),
    ],
    ids=lambda v: str(v),
)
def test_severity_filter(filter_: Severity, name: str, expected: bool) -> None:
    """info lets everything through, warn lets warn and error, error only error."""
    assert passes(filter_, ev(name)) is expected


def test_alert_events_are_vocabulary_without_ticks() -> None:
    """Every alert event is in the vocabulary, the required ones are there, ticks are not."""
    required = {
        "rollout.started",
        "rollout.waiting",
        "gate.waiting",
        "weight.advanced",
        "iteration.advanced",
        "check.failed",
        "pre_rollout.failed",
        "rollout.rolled_back",
        "rollout.promoted",
        "gate.timed_out",
        "router.failed",
    }
    assert EVENTS.keys() >= ALERT_EVENTS
    assert required <= ALERT_EVENTS
    assert "analysis.tick" not in ALERT_EVENTS


# ------------------------------------------------------------------ wording


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            ROLLED_BACK,
            "prod/web v2: rolled back: request-success-rate 91.8 < min 99 (5/5 failed checks)",
        ),
        (
            ev(
                "check.failed", metric="latency", value=612.25, max=500, failedChecks=2, threshold=5
            ),
            "prod/web v2: check failed: latency 612.25 > max 500 (2/5 failed checks)",
        ),
        (
            ev("check.failed", None, metric="latency", error="prometheus: HTTP 503"),
            "prod/web: check failed: latency: prometheus: HTTP 503",
        ),
        (
            ev("check.failed", metric="latency", value=None, max=500),
            "prod/web v2: check failed: latency: no data (max 500)",
        ),
        (
            ev("gate.waiting", gate="confirm-promotion"),
            "prod/web v2: waiting for approval: confirm-promotion",
        ),
        (
            ev("weight.advanced", canaryWeight=20, primaryWeight=80),
            "prod/web v2: weight advanced: canary 20%",
        ),
        (ev("iteration.advanced", iteration=3), "prod/web v2: iteration advanced: iteration 3"),
        (ev("rollout.promoted", phase="Succeeded"), "prod/web v2: promoted"),
        (
            ev("pre_rollout.failed", reason="smoke-test: HTTP 500: boom"),
            "prod/web v2: pre-rollout hook failed: smoke-test: HTTP 500: boom",
        ),
    ],
    ids=[
        "rolled-back",
        "above-max",
        "error",
        "no-data",
        "gate",
        "weight",
        "iteration",
        "promoted",
        "pre-rollout",
    ],
)
def test_describe(event: Event, expected: str) -> None:
    """The one-line summary names the canary, revision, what happened and why."""
    assert describe(event) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (99, "99"),
        (99.0, "99"),
        (91.8, "91.8"),
        (0.00123, "0.00123"),
        (1234.56789, "1234.57"),
        (float("nan"), "NaN"),
        (None, "no data"),
    ],
    ids=["int", "whole-float", "decimal", "small", "rounded", "nan", "none"],
)
def test_number_formatting(value: float | None, expected: str) -> None:
    """Metric values are shown without float noise."""
    assert number(value) == expected


def test_render_rejects_unknown_type_and_event() -> None:
    """An unknown notifier type or event name is a ValueError, not a silent default."""
    with pytest.raises(ValueError, match="notifier type"):
        render("pagerduty", ROLLED_BACK)
    with pytest.raises(ValueError, match="unknown event"):
        render("slack", ev("rollout.exploded"))


# ------------------------------------------------------------------ payload shapes


@pytest.mark.anyio
async def test_slack_blocks(session: HttpTransport) -> None:
    """Slack gets a header, a summary, and fields with revision, weights, checks and bound."""
    async with Receiver() as r:
        msg = await send(session, r, "slack")
    blocks = msg["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "🚨 Rolled back", "emoji": True},
    }
    fields = [f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", [])]
    assert "*Revision*\nv2" in fields
    assert "*Weights*\nprimary 100% / canary 0%" in fields
    assert "*Failed checks*\n5/5" in fields
    assert "*Metric*\nrequest-success-rate" in fields
    assert "*Value*\n91.8 &lt; min 99" in fields
    assert "rolled back: request-success-rate 91.8 &lt; min 99" in msg["text"]


def test_slack_channel_and_username() -> None:
    """Channel and username overrides are passed to Slack when configured."""
    payload, _ = render("slack", ROLLED_BACK, channel="#deploys", username="canaryd")
    assert (payload["channel"], payload["username"]) == ("#deploys", "canaryd")


def test_slack_limits() -> None:
    """Oversized texts are clipped to Block Kit limits without breaking an escape."""
    event = ev(
        "gate.timed_out",
        gate="g" * 300,
        metric="m",
        value=1,
        min=2,
        iteration=4,
        error="<" * 5000,
        reason="&" * 5000,
        failedChecks=1,
        threshold=2,
        canaryWeight=10,
        primaryWeight=90,
    )
    payload, _ = render("slack", event)
    header, summary, section = payload["blocks"][:3]
    assert len(header["text"]["text"]) == 150
    assert len(summary["text"]["text"]) <= 3000
    assert summary["text"]["text"].endswith("&lt;…")
    assert len(section["fields"]) == 10
    assert all(len(f["text"]) <= 2000 for f in section["fields"])


@pytest.mark.anyio
async def test_teams_adaptive_card(session: HttpTransport) -> None:
    """Teams gets a message with one Adaptive Card: coloured title, summary and a FactSet."""
    async with Receiver() as r:
        msg = await send(session, r, "msteams")
    assert msg["type"] == "message"
    (attachment,) = msg["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    title, summary, facts = card["body"][:3]
    assert (title["text"], title["color"]) == ("🚨 Rolled back", "Attention")
    assert "91.8 < min 99" in summary["text"]
    assert {"title": "Value", "value": "91.8 < min 99"} in facts["facts"]
    assert {"title": "Revision", "value": "v2"} in facts["facts"]


@pytest.mark.anyio
async def test_discord_embed(session: HttpTransport) -> None:
    """Discord gets one red embed with fields, a timestamp, and mentions disabled."""
    event = ev(
        "check.failed", metric="http_5xx_ratio", value=0.07, max=0.01, failedChecks=1, threshold=5
    )
    async with Receiver(statuses=[204], body="") as r:
        msg = await send(session, r, "discord", event)
    (embed,) = msg["embeds"]
    assert embed["title"] == "⚠️ Check failed"
    assert embed["color"] == 0xF0A020
    assert embed["timestamp"] == "2024-05-01T12:00:00.500Z"
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Metric"] == r"http\_5xx\_ratio"
    assert fields["Value"] == "0.07 > max 0.01"
    assert fields["Failed checks"] == "1/5"
    assert msg["allowed_mentions"] == {"parse": []}


@pytest.mark.anyio
async def test_rocket_attachment(session: HttpTransport) -> None:
    """Rocket.Chat gets a summary line and one Slack-style attachment: colour bar, the canary as
    name.namespace, title, facts as fields and the time; channel and username when set."""
    async with Receiver() as r:
        payload, _ = render("rocket", ROLLED_BACK, channel="#deploys", username="canaryd")
        notifier = Notifier(type="rocket", url=r.url + "/hooks/abc/def")
        await deliver(
            session, notifier, payload, "application/json", idempotency_key="k", secret=None
        )
    msg = r.requests[0].json
    assert msg["text"] == "🚨 " + describe(ROLLED_BACK)
    assert (msg["channel"], msg["username"], msg["icon_emoji"]) == (
        "#deploys",
        "canaryd",
        ":rocket:",
    )
    (att,) = msg["attachments"]
    assert (att["color"], att["author_name"], att["title"]) == (
        "#D1242F",
        "web.prod",
        "🚨 Rolled back",
    )
    assert att["ts"] == "2024-05-01T12:00:00.500Z"
    fields = {f["title"]: (f["value"], f["short"]) for f in att["fields"]}
    assert fields["Value"] == ("91.8 < min 99", True)
    assert fields["Failed checks"] == ("5/5", True)


def test_rocket_mentions_and_limits() -> None:
    """An @all in an event's text notifies nobody on Rocket.Chat, and long texts are clipped."""
    event = ev("check.failed", reason="@all " + "x" * 9000, metric="m" * 3000)
    msg = render("rocket", event)[0]
    assert "@all" not in msg["text"] and "@\u200ball" in msg["text"]
    assert len(msg["text"]) <= 5000
    assert all(len(f["value"]) <= 1000 for f in msg["attachments"][0]["fields"])
    assert "channel" not in msg and "username" not in msg


def test_discord_total_limit() -> None:
    """A Discord embed stays within 6000 characters however long the texts are."""
    event = ev("rollout.rolled_back", reason="r" * 9000, error="e" * 9000, metric="m" * 9000)
    embed = render("discord", event)[0]["embeds"][0]
    total = len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"])
    total += sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
    assert total <= 6000
    assert all(len(f["value"]) <= 1024 for f in embed["fields"])


@pytest.mark.anyio
async def test_gchat_card(session: HttpTransport) -> None:
    """Google Chat gets a text line and a cardsV2 card with an HTML-escaped bound."""
    async with Receiver() as r:
        msg = await send(session, r, "gchat")
    assert r.requests[0].headers["Content-Type"] == "application/json; charset=UTF-8"
    assert msg["text"].startswith("🚨 prod/web v2: rolled back")
    (card,) = msg["cardsV2"]
    assert card["card"]["header"] == {"title": "🚨 Rolled back", "subtitle": "prod/web v2"}
    widgets = card["card"]["sections"][0]["widgets"]
    texts = {
        w["decoratedText"]["topLabel"]: w["decoratedText"]["text"]
        for w in widgets
        if "decoratedText" in w
    }
    assert texts["Value"] == "91.8 &lt; min 99"
    assert texts["Weights"] == "primary 100% / canary 0%"


@pytest.mark.anyio
async def test_generic_webhook_json(session: HttpTransport) -> None:
    """The generic webhook gets a flat JSON object with Flagger-compatible keys."""
    async with Receiver() as r:
        msg = await send(session, r, "webhook")
    assert msg["event"] == "rollout.rolled_back"
    assert (msg["level"], msg["severity"]) == ("error", "error")
    assert (msg["canary"], msg["namespace"], msg["name"]) == ("prod/web", "prod", "web")
    assert (msg["revision"], msg["phase"], msg["time"]) == (
        "v2",
        "Failed",
        "2024-05-01T12:00:00.500Z",
    )
    assert msg["fields"]["value"] == 91.8
    assert (msg["canaryWeight"], msg["primaryWeight"], msg["failedChecks"]) == (0, 100, 5)
    assert msg["metadata"] == {
        "eventMessage": describe(ROLLED_BACK),
        "eventType": "Warning",
        "timestamp": "1714564800500",
    }


def test_generic_webhook_is_strict_json() -> None:
    """NaN values become null so receivers with strict JSON parsers accept the payload."""
    payload, _ = render("webhook", ev("check.failed", metric="m", value=float("nan"), min=1))
    assert payload["fields"]["value"] is None


@pytest.mark.anyio
async def test_cloudevents_structured(session: HttpTransport) -> None:
    """A CloudEvent parsed back with the SDK has the right type, source, subject, id and data."""
    async with Receiver(statuses=[202]) as r:
        await send(session, r, "cloudevents", key="outbox-42")
    req = r.requests[0]
    assert req.headers["Content-Type"] == "application/cloudevents+json"
    event = from_http(dict(req.headers), req.body)
    assert event["specversion"] == "1.0"
    assert event["type"] == "io.canaryd.rollout.rolled_back"
    assert event["source"] == "canaryd/test"
    assert event["subject"] == "prod/web"
    assert event["id"] == "outbox-42"
    assert event["time"] == "2024-05-01T12:00:00.500Z"
    assert event["datacontenttype"] == "application/json"
    assert event.data["event"] == "rollout.rolled_back"


def test_cloudevents_defaults() -> None:
    """Without an id or source, the CloudEvent gets a stable id and canaryd/<hostname>."""
    first = render("cloudevents", ROLLED_BACK)[0]
    again = render("cloudevents", ROLLED_BACK)[0]
    assert first["id"] == again["id"]
    assert first["source"].startswith("canaryd/")


# ------------------------------------------------------------------ delivery


@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(FORMATS), ids=sorted(FORMATS))
async def test_delivery_is_signed_with_idempotency_key(session: HttpTransport, kind: str) -> None:
    """Every format is POSTed with its content type, the Idempotency-Key and a valid signature."""
    async with Receiver() as r:
        await send(session, r, kind, key=f"idem-{kind}", secret=SECRET)
    (req,) = r.requests
    assert (req.method, req.path) == ("POST", "/hook")
    assert req.headers["Content-Type"] == FORMATS[kind][1]
    assert req.headers["Idempotency-Key"] == f"idem-{kind}"
    assert verify_signature(req.headers["X-Canaryd-Signature"], req.body, SECRET)
    assert not verify_signature(req.headers["X-Canaryd-Signature"], req.body + b" ", SECRET)


@pytest.mark.anyio
async def test_no_secret_no_signature(session: HttpTransport) -> None:
    """Without a secret no signature header is sent."""
    async with Receiver() as r:
        await send(session, r, "webhook")
    assert "X-Canaryd-Signature" not in r.requests[0].headers


@pytest.mark.anyio
async def test_retries_keep_the_idempotency_key(session: HttpTransport) -> None:
    """Each call is one attempt; a caller retrying with the same key sends the same key."""
    payload, content_type = render("slack", ROLLED_BACK)
    async with Receiver(statuses=[503, 503, 200]) as r:
        notifier = Notifier(type="slack", url=r.url + "/hook")
        outcomes = []
        for _ in range(3):
            try:
                await deliver(
                    session, notifier, payload, content_type, idempotency_key="same", secret=None
                )
                outcomes.append("ok")
            except WebhookError:
                outcomes.append("failed")
    assert outcomes == ["failed", "failed", "ok"]
    assert [q.headers["Idempotency-Key"] for q in r.requests] == ["same"] * 3
    assert len({q.body for q in r.requests}) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "body"),
    [(400, "invalid_blocks"), (404, "no_service"), (500, "x" * 500), (503, "")],
    ids=["400", "404", "500-long-body", "503-empty"],
)
async def test_non_2xx_is_webhook_error(session: HttpTransport, status: int, body: str) -> None:
    """A non-2xx answer raises WebhookError with the status and the first bytes of the body."""
    async with Receiver(statuses=[status], body=body) as r:
        with pytest.raises(WebhookError) as info:
            await send(session, r, "slack")
    message = str(info.value)
    assert f"HTTP {status}" in message
    assert body[:200] in message
    assert "x" * 201 not in message
    assert len(r.requests) == 1


@pytest.mark.anyio
async def test_url_file_secret_never_in_error(session: HttpTransport, tmp_path: Path) -> None:
    """A URL read from url_file is used, and neither it nor its token leaks into errors."""
    async with Receiver(statuses=[403], body=f"bad token for {SECRET_PATH}") as r:
        secret_url = r.url + SECRET_PATH
        notifier = Notifier(type="slack", url_file=url_file(tmp_path, secret_url))
        payload, content_type = render("slack", ROLLED_BACK)
        with pytest.raises(WebhookError) as info:
            await deliver(
                session, notifier, payload, content_type, idempotency_key="k", secret=None
            )
    assert r.requests[0].path == SECRET_PATH
    message = str(info.value)
    assert "HTTP 403" in message
    assert "127.0.0.1" in message
    assert "T0SECRET" not in message
    assert "XyZsecretTokenValue" not in message


@pytest.mark.anyio
async def test_unreachable_receiver_hides_url(session: HttpTransport, tmp_path: Path) -> None:
    """A refused connection is a WebhookError naming the host only."""
    async with Receiver() as r:
        secret_url = r.url + SECRET_PATH
    notifier = Notifier(type="discord", url_file=url_file(tmp_path, secret_url))
    payload, content_type = render("discord", ROLLED_BACK)
    with pytest.raises(WebhookError) as info:
        await deliver(session, notifier, payload, content_type, idempotency_key="k", secret=None)
    assert "XyZsecretTokenValue" not in str(info.value)
    assert "discord notifier" in str(info.value)


@pytest.mark.anyio
async def test_timeout_is_webhook_error(session: HttpTransport) -> None:
    """A receiver slower than notifier.timeout gives a WebhookError after one attempt."""
    payload, content_type = render("webhook", ROLLED_BACK)
    async with Receiver(delay=30) as r:
        notifier = Notifier(type="webhook", url=r.url + "/hook", timeout=0.2)
        with pytest.raises(WebhookError, match=r"no answer within 0\.2s"):
            await deliver(
                session, notifier, payload, content_type, idempotency_key="k", secret=None
            )
    assert len(r.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("mode", [0o644, None], ids=["world-readable", "missing"])
async def test_bad_url_file_is_webhook_error(
    session: HttpTransport, tmp_path: Path, mode: int | None
) -> None:
    """An unreadable or world-readable url_file is a WebhookError, not a crash."""
    path = tmp_path / "url"
    if mode is not None:
        path.write_text("http://127.0.0.1:1/x", encoding="utf-8")
        os.chmod(path, mode)
    notifier = Notifier(type="slack", url_file=str(path))
    with pytest.raises(WebhookError, match="slack notifier"):
        await deliver(session, notifier, {}, "application/json", idempotency_key="k", secret=None)
