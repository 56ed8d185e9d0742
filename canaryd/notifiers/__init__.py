"""Alerts: which events become alerts, how each notifier type renders them, one delivery.

Rendering is pure: :func:`render` turns an :class:`~canaryd.core.events.Event` into
``(payload, content_type)`` for a notifier type, and the outbox stores that.
:func:`deliver` makes exactly one signed POST of a stored payload; retries,
backoff and ordering belong to the outbox dispatcher, not here.

Formats, one module each: :mod:`.slack` (Block Kit), :mod:`.msteams`
(Adaptive Card), :mod:`.discord` (embed), :mod:`.gchat` (cardsV2),
:mod:`.rocket` (Rocket.Chat, Slack-style attachment), :mod:`.webhook` (generic
JSON, Flagger-compatible keys), :mod:`.cloudevents` (CloudEvents 1.0, structured
mode). Shared wording lives in :mod:`.text`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final

import anyio.to_thread
from pydantic import SecretStr

from canaryd.config.models import Notifier, read_secret
from canaryd.core.alerts import passes as passes
from canaryd.core.alerts import severity_of as severity_of
from canaryd.core.alerts import wanted as wanted
from canaryd.core.events import ALERTABLE, EVENTS, Event
from canaryd.errors import SecretError, WebhookError
from canaryd.http import HttpTransport, post_json
from canaryd.notifiers import cloudevents, discord, gchat, msteams, rocket, slack, webhook
from canaryd.notifiers.text import RenderOptions, describe
from canaryd.redact import redact, redact_url

__all__ = [
    "ALERT_EVENTS",
    "FORMATS",
    "RenderOptions",
    "deliver",
    "describe",
    "notifier_url",
    "passes",
    "render",
    "severity_of",
    "wanted",
]

ALERT_EVENTS: Final = ALERTABLE
"""Events that can become chat alerts (``events: all``); see
:data:`canaryd.core.events.ALERTABLE`."""

Renderer = Callable[[Event, RenderOptions], dict[str, Any]]

FORMATS: Final[dict[str, tuple[Renderer, str]]] = {
    "slack": (slack.render, slack.CONTENT_TYPE),
    "msteams": (msteams.render, msteams.CONTENT_TYPE),
    "discord": (discord.render, discord.CONTENT_TYPE),
    "gchat": (gchat.render, gchat.CONTENT_TYPE),
    "rocket": (rocket.render, rocket.CONTENT_TYPE),
    "webhook": (webhook.render, webhook.CONTENT_TYPE),
    "cloudevents": (cloudevents.render, cloudevents.CONTENT_TYPE),
}
"""Notifier ``type`` -> (renderer, content type), keyed like :class:`~canaryd.config.Notifier`."""


def render(
    notifier_type: str,
    event: Event,
    *,
    channel: str | None = None,
    username: str | None = None,
    event_id: str | None = None,
    source: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Render ``event`` for a notifier type.

    Args:
        notifier_type: a :class:`~canaryd.config.Notifier` ``type``.
        event: the event; its name must be in the vocabulary.
        channel: Slack channel override (legacy webhooks).
        username: Slack / Discord display name override.
        event_id: stable message id, used as the CloudEvents ``id``; pass the
            idempotency key. Without it a hash of the event is used.
        source: CloudEvents ``source``; defaults to ``canaryd/<hostname>``.

    Returns:
        The JSON payload and its content type.

    Raises:
        ValueError: unknown notifier type or event name.
    """
    if event.name not in EVENTS:
        raise ValueError(f"unknown event {event.name!r}")
    try:
        renderer, content_type = FORMATS[notifier_type]
    except KeyError:
        raise ValueError(f"unknown notifier type {notifier_type!r}") from None
    options = RenderOptions(channel=channel, username=username, event_id=event_id, source=source)
    return renderer(event, options), content_type


def notifier_url(notifier: Notifier) -> str:
    """The notifier's URL, from ``url`` or read from ``url_file`` (a secret).

    Raises:
        WebhookError: ``url_file`` cannot be read, is readable by others, or is empty.
    """
    if notifier.url is not None:
        return notifier.url
    try:
        secret = read_secret(notifier.url_file)
    except SecretError as exc:
        raise WebhookError(f"{notifier.type} notifier: {exc}") from exc
    url = secret.get_secret_value() if secret is not None else ""
    if not url:
        raise WebhookError(f"{notifier.type} notifier: url_file {notifier.url_file} is empty")
    return url


async def deliver(
    http: HttpTransport,
    notifier: Notifier,
    payload: dict[str, Any],
    content_type: str,
    *,
    idempotency_key: str,
    secret: SecretStr | None,
) -> None:
    """POST a rendered payload to the notifier once (no retries: the outbox retries).

    The request carries ``Idempotency-Key`` and, with a ``secret``,
    ``X-Canaryd-Signature``; it times out after ``notifier.timeout``.

    Raises:
        WebhookError: the URL cannot be read, the receiver cannot be reached or
            does not answer in time, or it answers with a non-2xx status (the
            message has the status and the first bytes of the body). The
            message names the receiver's host only, never the URL.
    """
    url = await anyio.to_thread.run_sync(notifier_url, notifier)
    try:
        answer = await post_json(
            http,
            url,
            payload,
            timeout=notifier.timeout,
            idempotency_key=idempotency_key,
            secret=secret,
            content_type=content_type,
        )
    except WebhookError as exc:
        raise WebhookError(f"{notifier.type} notifier {redact(str(exc), url)}") from exc
    if not answer.ok:
        where = redact_url(url)
        # scrub the whole body before the preview is cut: a cut token would survive in part
        body = redact(answer.body.decode("utf-8", "replace"), url).encode()
        raise WebhookError(
            f"{notifier.type} notifier {where}: {dataclasses.replace(answer, body=body).describe()}"
        )
