"""Alert formats: Slack, Teams, Discord, Rocket.Chat, Google Chat, webhook, CloudEvents."""

from __future__ import annotations

import pytest
from cloudevents.v1.http import from_http
from notifier_helpers import ROLLED_BACK, ev, send
from receiver import Receiver

from canaryd.config import Notifier
from canaryd.http import HttpTransport
from canaryd.notifiers import deliver, describe, render

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
