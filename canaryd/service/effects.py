"""What a decision's effects become outside the core: recorded routes and outbox messages.

Pure functions of the canary's config and a :class:`~canaryd.core.analysis.Decision`:
the routes a decision records before sending them (:func:`route_to_dict`), and the
alerts, event webhooks and post-rollout hooks it puts in the outbox
(:func:`outbox_messages`), delivered later by the dispatcher (docs/design.md, "A tick").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canaryd.config.models import CanaryConfig, WebhookType
from canaryd.core.analysis import Decision, Emit, Route, RunHooks
from canaryd.service.store import OutboxMessage, event_to_dict
from canaryd.service.webhooks import event_payload
from canaryd.service.webhooks import payload as webhook_payload


def route_to_dict(route: Route) -> dict[str, Any]:
    """A route as recorded with the decision that sends it."""
    return {
        "action": route.action,
        "primaryWeight": route.primary_weight,
        "canaryWeight": route.canary_weight,
        "match": [dict(m) for m in route.match],
    }


def route_from_dict(data: Mapping[str, Any]) -> Route:
    """A route recorded by :func:`route_to_dict`."""
    return Route(
        data["action"],
        int(data["primaryWeight"]),
        int(data["canaryWeight"]),
        tuple(data.get("match", ())),
    )


def router_error(decision: Decision) -> str:
    """The router's error in a decision that recorded a refused rollback."""
    return next(
        (
            str(e.event.fields.get("error"))
            for e in decision.effects
            if isinstance(e, Emit) and e.event.name in ("router.failed", "rollback.pending")
        ),
        "the router refused it",
    )


def rollback_why(decision: Decision) -> tuple[str, Mapping[str, Any]]:
    """The reason and ``rollout.rolled_back`` fields of a decision that rolls back."""
    for effect in decision.effects:
        if isinstance(effect, Emit) and effect.event.name == "rollout.rolled_back":
            return decision.state.reason or "", effect.event.fields
    return decision.state.reason or "", decision.state.rollback_fields


def outbox_messages(spec: CanaryConfig, decision: Decision, version: int) -> list[OutboxMessage]:
    """Alerts, event webhooks and post-rollout hooks caused by a decision."""
    from canaryd.core.alerts import wanted

    out: list[OutboxMessage] = []
    prefix = f"{spec.key}:{decision.state.rollout_id}:{version}"
    hooks = spec.analysis.webhooks
    for n, effect in enumerate(decision.effects):
        if isinstance(effect, RunHooks):
            for hook in (h for h in hooks if h.type == effect.type):
                out.append(
                    OutboxMessage(
                        spec.key,
                        f"{prefix}:{n}:hook:{hook.name}",
                        f"hook:{hook.name}",
                        webhook_payload(spec, decision.state, hook),
                    )
                )
        if not isinstance(effect, Emit):
            continue  # event webhooks get every event, analysis.tick included
        event = effect.event
        for hook in (h for h in hooks if h.type == WebhookType.EVENT):
            body = event_payload(spec, decision.state, hook, event)
            body["event"] = event_to_dict(event)
            out.append(
                OutboxMessage(spec.key, f"{prefix}:{n}:hook:{hook.name}", f"hook:{hook.name}", body)
            )
        for a in (a for a in spec.alerts if wanted(a, event)):
            body = event_to_dict(event)
            out.append(
                OutboxMessage(spec.key, f"{prefix}:{n}:alert:{a.name}", f"alert:{a.name}", body)
            )
    return out
