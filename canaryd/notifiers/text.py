"""Pure text helpers shared by every alert format: titles, facts, numbers, clipping.

Nothing here does I/O. Every format builds its message from the same three
pieces so that Slack, Teams, Discord and Google Chat say the same thing:

- :func:`title`: ``"Rolled back"``, with the gate name for gate events;
- :func:`describe`: the one-line summary
  (``"prod/web v2: rolled back: request-success-rate 91.8 < min 99 (5/5 failed checks)"``);
- :func:`facts`: ordered ``(label, value)`` pairs (canary, revision, phase,
  weights, failed checks, metric, value and bound, reason...).

and the lines they make: :func:`heading` (emoji and title), :func:`summary`
(emoji and description), :func:`footer` (``canaryd · <event> · <time>``) and
Flagger's event metadata (:func:`flagger_metadata`, also sent by ``event``
webhooks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from canaryd.config.models import Severity
from canaryd.core.alerts import severity_of as severity_of
from canaryd.core.events import Event

ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """Per-notifier settings a format may use; each format ignores what it cannot express.

    Attributes:
        channel: Slack channel override (legacy incoming webhooks only).
        username: display name override (Slack legacy webhooks, Discord).
        event_id: stable id of the message (CloudEvents ``id``); the idempotency key.
        source: CloudEvents ``source``; defaults to ``canaryd/<hostname>``.
    """

    channel: str | None = None
    username: str | None = None
    event_id: str | None = None
    source: str | None = None

    def sender(self) -> dict[str, str]:
        """``channel`` and ``username`` as message keys, those that are set (Slack's shape)."""
        keys = {"channel": self.channel, "username": self.username}
        return {key: value for key, value in keys.items() if value}


_TITLES: dict[str, str] = {
    "rollout.started": "Rollout started",
    "rollout.waiting": "Waiting for approval to start",
    "gate.waiting": "Waiting for approval",
    "gate.approved": "Gate approved",
    "gate.timed_out": "Gate timed out",
    "weight.advanced": "Weight advanced",
    "iteration.advanced": "Iteration advanced",
    "check.failed": "Check failed",
    "pre_rollout.failed": "Pre-rollout hook failed",
    "rollout.promoting": "Promoting",
    "rollout.promoted": "Promoted",
    "rollout.rolled_back": "Rolled back",
    "rollback.pending": "Rollback not applied yet",
    "rollout.paused": "Paused",
    "rollout.resumed": "Resumed",
    "router.failed": "Router failed",
}

EMOJI: dict[Severity, str] = {
    Severity.INFO: "ℹ️",  # noqa: RUF001 - the information-source emoji, on purpose
    Severity.WARN: "⚠️",
    Severity.ERROR: "🚨",
}
"""Unicode emoji per severity (Slack, Discord, Google Chat render them all)."""

PROMOTED_EMOJI = "✅"

COLOURS: dict[Severity, int] = {
    Severity.INFO: 0x2F81F7,
    Severity.WARN: 0xF0A020,
    Severity.ERROR: 0xD1242F,
}
"""RGB colour per severity; a promotion is shown in :data:`PROMOTED_COLOUR`."""

PROMOTED_COLOUR = 0x1F883D


def emoji(event: Event) -> str:
    """The emoji that leads the event's title."""
    if event.name == "rollout.promoted":
        return PROMOTED_EMOJI
    return EMOJI[severity_of(event)]


def colour(event: Event) -> int:
    """The RGB colour of the event's card or embed."""
    if event.name == "rollout.promoted":
        return PROMOTED_COLOUR
    return COLOURS[severity_of(event)]


def title(event: Event) -> str:
    """Short human title, e.g. ``Rolled back`` or ``Waiting for approval: confirm-promotion``."""
    text = _TITLES.get(event.name) or event.name.replace("_", " ").replace(".", " ").capitalize()
    gate = event.fields.get("gate")
    if gate and event.name.startswith("gate."):
        text = f"{text}: {gate}"
    return text


def heading(event: Event) -> str:
    """The emoji and the title: the first line of every card, embed and attachment."""
    return f"{emoji(event)} {title(event)}"


def summary(event: Event) -> str:
    """The emoji and :func:`describe`'s line: a message's text beside its card."""
    return f"{emoji(event)} {describe(event)}"


def footer(event: Event) -> str:
    """``canaryd · rollout.rolled_back · <time>``: the small print under a card."""
    return f"canaryd · {event.name} · {rfc3339(event.time)}"


def flagger_metadata(event: Event) -> dict[str, str]:
    """Flagger's event-webhook ``metadata``: the summary, ``Normal``/``Warning``, Unix ms."""
    return {
        "eventMessage": describe(event),
        "eventType": "Normal" if severity_of(event) is Severity.INFO else "Warning",
        "timestamp": str(int(event.time * 1000)),
    }


def rfc3339(ts: float) -> str:
    """Unix time as RFC 3339 in UTC with milliseconds, e.g. ``2024-05-01T12:00:00.000Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def number(value: Any) -> str:
    """Format a metric value for people: ``99``, ``91.8``, ``0.00123``, ``no data``."""
    if value is None:
        return "no data"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def bound(fields: dict[str, Any]) -> str | None:
    """The failing value against its bound: ``91.8 < min 99``, ``612 > max 500``.

    Returns ``None`` when the event carries no value and no bound.
    """
    value, lo, hi = fields.get("value"), fields.get("min"), fields.get("max")
    if value is None and lo is None and hi is None:
        return None
    v, vmin, vmax = _as_float(value), _as_float(lo), _as_float(hi)
    if v is not None and vmin is not None and v < vmin:
        return f"{number(value)} < min {number(lo)}"
    if v is not None and vmax is not None and v > vmax:
        return f"{number(value)} > max {number(hi)}"
    limits = " ".join(f"{k} {number(b)}" for k, b in (("min", lo), ("max", hi)) if b is not None)
    return f"{number(value)} ({limits})" if limits else number(value)


def failure(fields: dict[str, Any]) -> str | None:
    """What failed, in a few words: the metric with its bound, else the error or reason."""
    metric = fields.get("metric")
    why = fields.get("error") or fields.get("reason")
    measured = bound(fields)
    if metric and measured and fields.get("error") is None:
        sep = ": " if fields.get("value") is None else " "
        return f"{metric}{sep}{measured}"
    if metric and why:
        return f"{metric}: {why}"
    if why:
        return str(why)
    return str(metric) if metric else None


def weights(fields: dict[str, Any]) -> str | None:
    """``primary 80% / canary 20%`` when the event carries weights."""
    primary, canary = fields.get("primaryWeight"), fields.get("canaryWeight")
    if primary is None and canary is None:
        return None
    parts = [
        f"{k} {number(v)}%" for k, v in (("primary", primary), ("canary", canary)) if v is not None
    ]
    return " / ".join(parts)


def checks(fields: dict[str, Any]) -> str | None:
    """``3/5`` failed checks against the threshold, when known."""
    failed, threshold = fields.get("failedChecks"), fields.get("threshold")
    if failed is None:
        return None
    return f"{number(failed)}/{number(threshold)}" if threshold is not None else number(failed)


def _progress(event: Event) -> str | None:
    if event.name == "weight.advanced":
        canary = event.fields.get("canaryWeight")
        return f"canary {number(canary)}%" if canary is not None else None
    if event.name == "iteration.advanced" and event.fields.get("iteration") is not None:
        return f"iteration {number(event.fields['iteration'])}"
    return None


def describe(event: Event) -> str:
    """One human line used by every format.

    Example: ``prod/web v2: rolled back: request-success-rate 91.8 < min 99 (5/5 failed checks)``.
    """
    head = f"{event.canary} {event.revision}" if event.revision else event.canary
    what = title(event)
    text = f"{head}: {what[:1].lower()}{what[1:]}"
    detail = failure(event.fields) or _progress(event)
    if detail:
        text += f": {detail}"
    counted = checks(event.fields)
    if counted:
        text += f" ({counted} failed checks)"
    return text


def facts(event: Event) -> list[tuple[str, str]]:
    """Ordered ``(label, value)`` pairs for cards and fields; absent values are left out."""
    f = event.fields
    metric_value = bound(f) if f.get("metric") else None
    pairs: list[tuple[str, str | None]] = [
        ("Canary", event.canary),
        ("Revision", event.revision),
        ("Phase", event.phase),
        ("Weights", weights(f)),
        ("Failed checks", checks(f)),
        ("Iteration", number(f["iteration"]) if f.get("iteration") is not None else None),
        ("Gate", str(f["gate"]) if f.get("gate") else None),
        ("Metric", str(f["metric"]) if f.get("metric") else None),
        ("Value", metric_value),
        ("Error", str(f["error"]) if f.get("error") else None),
        ("Reason", str(f["reason"]) if f.get("reason") else None),
    ]
    return [(label, value) for label, value in pairs if value]


def clip(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, ending with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + ELLIPSIS if limit > 0 else ""


def clip_escaped(text: str, limit: int, entities: dict[str, str]) -> str:
    """Escape ``text`` (``entities`` maps a character to its escape) and clip it to ``limit``.

    Clipping happens between escapes, never inside one (``&am…`` would break markup).
    """
    escaped = [entities.get(ch, ch) for ch in text]
    if sum(map(len, escaped)) <= limit:
        return "".join(escaped)
    out: list[str] = []
    used = 0
    for piece in escaped:
        if used + len(piece) > limit - 1:
            break
        out.append(piece)
        used += len(piece)
    return "".join(out) + ELLIPSIS
