"""Notes ``canaryd check`` prints about a canary: deliberate differences from Flagger in what
its webhooks and alerts do, and webhooks whose TLS certificate is not verified."""

from __future__ import annotations

from canaryd.config.models import CanaryConfig, WebhookType
from canaryd.core.alerts import wanted
from canaryd.core.events import Event


def _alerted(spec: CanaryConfig, name: str) -> bool:
    """Whether any alert of the canary sends event ``name`` (by its events and severity)."""
    event = Event(name, spec.key, None, "Progressing", 0.0, {})
    return any(wanted(a, event) for a in spec.alerts)


def flagger_differences(spec: CanaryConfig) -> list[str]:
    """One line per deliberate difference from Flagger that changes what this canary's
    webhooks and alerts do, for ``canaryd check`` (docs/flagger.md, "Deliberate differences")."""
    out = []
    for hook in spec.analysis.webhooks:
        where = f"{spec.key}: webhook {hook.name}"
        if (
            hook.type is WebhookType.CONFIRM_TRAFFIC_INCREASE
            and not hook.muteAlert
            and _alerted(spec, "gate.waiting")
        ):
            out.append(
                f"{where}: waiting for approval is alerted once per wait, not on every tick "
                "the gate stays closed as in Flagger"
            )
        if hook.type is WebhookType.CONFIRM_ROLLOUT and _alerted(spec, "rollout.started"):
            out.append(
                f"{where}: the start is alerted when the rollout is submitted, before this "
                "gate opens; Flagger alerts it once the gate opens"
            )
        if hook.type is WebhookType.EVENT:
            out.append(
                f"{where}: gets canaryd's events (one per tick included) with canaryd's "
                "wording in metadata.eventMessage, not Flagger's Kubernetes event texts"
            )
    return out


def unverified_tls(spec: CanaryConfig) -> list[str]:
    """One line per webhook of the canary whose TLS certificate is not verified (``disableTLS``),
    for ``canaryd check`` and the daemon's ``config.warning`` at start and reload."""
    return [
        f"{spec.key}: webhook {h.name}: disableTLS: its TLS certificate is not verified"
        for h in spec.analysis.webhooks
        if h.disableTLS
    ]
