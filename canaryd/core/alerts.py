"""Which alert sends which event, and at what severity: pure rules over the config models.

The notifiers render what these rules let through; ``canaryd check`` reads them to
say where canaryd's alerts differ from Flagger's (docs/events.md, "Alerts").
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from canaryd.config.models import AlertSpec, Severity
from canaryd.core.events import ALERTABLE, FLAGGER_ALERTS, Event


def severity_of(event: Event) -> Severity:
    """An event's alert severity: Flagger's for the events Flagger alerts on, else its level.

    Waiting for approval is ``warn``; a rollback is ``error``, or ``warn`` when a
    ``rollback`` webhook or an operator asked for it (as Flagger's "manual webhook
    invoked"). Other events: ``debug``/``info`` are info, ``warning`` is warn,
    ``error`` is error (docs/events.md, "Alerts").

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    level = event.level
    if event.name == "rollout.rolled_back" and (
        event.fields.get("webhook") or event.fields.get("manual")
    ):
        return Severity.WARN
    if event.name in FLAGGER_ALERTS:
        return Severity(FLAGGER_ALERTS[event.name])
    if level == "error":
        return Severity.ERROR
    if level == "warning":
        return Severity.WARN
    return Severity.INFO


_RANK: Final = {Severity.INFO: 0, Severity.WARN: 1, Severity.ERROR: 2}


def passes(filter: Severity, event: Event) -> bool:
    """Whether an alert with severity filter ``filter`` lets ``event`` through.

    ``info`` lets everything through, ``warn`` lets warn and error, ``error`` only error.

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    return _RANK[severity_of(event)] >= _RANK[filter]


def wanted(alert: AlertSpec, event: Event) -> bool:
    """Whether ``alert`` sends ``event``: chosen by its ``events``, let through by its severity.

    ``events: flagger`` (the default) chooses the events Flagger alerts on, ``all``
    every alertable event, a list the events named. A waiting event whose closing
    webhook has ``muteAlert`` is never sent (docs/events.md, "Alerts").

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    if event.fields.get("muteAlert"):
        return False
    chosen: Collection[str] = alert.events
    if chosen == "flagger":
        chosen = FLAGGER_ALERTS.keys()
    elif chosen == "all":
        chosen = ALERTABLE
    return event.name in chosen and passes(alert.severity, event)
