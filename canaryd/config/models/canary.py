"""Canary models: one canary and its alerts."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from canaryd.config.models.analysis import Analysis
from canaryd.config.models.base import Model, Name
from canaryd.config.models.notifiers import Severity
from canaryd.core.events import ALERTABLE


def _alert_events(value: str | list[str]) -> str | list[str]:
    if isinstance(value, str):
        if value not in ("flagger", "all"):
            raise ValueError("must be flagger, all or a list of event names")
        return value
    for name in value:
        if name not in ALERTABLE:
            raise ValueError(
                f"unknown alert event {name!r}; expected one of: {', '.join(sorted(ALERTABLE))}"
            )
    return value


AlertEvents = Annotated[str | list[str], AfterValidator(_alert_events)]
"""``flagger``, ``all`` or a list of alertable event names."""


class AlertSpec(Model):
    """Send this canary's events to a notifier, filtered by severity.

    ``events`` chooses which events: ``flagger`` (the default: the moments
    Flagger alerts on), ``all``, or a list of event names (docs/events.md,
    "Alerts"). ``severity`` filters them as in Flagger.
    """

    name: Name
    notifier: Name
    severity: Severity = Severity.INFO
    events: AlertEvents = "flagger"


SHARED_ANALYSES_MAX = 4096
"""Distinct analysis blocks remembered for sharing between canaries (and reloads)."""

_SHARED_ANALYSES: dict[str, Analysis] = {}


class CanaryConfig(Model):
    """One canary: what to analyse, with which provider, through which router."""

    name: Name
    namespace: Name = "default"
    target: str | None = None
    primaryTarget: str | None = None
    router: Name
    provider: Name | None = None
    meshProvider: str | None = None
    service: str | None = None
    ingress: str | None = None
    route: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    skipAnalysis: bool = False
    suspend: bool = False
    analysis: Analysis
    alerts: list[AlertSpec] = Field(default_factory=list)

    @field_validator("analysis", mode="wrap")
    @classmethod
    def _shared_analysis(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Analysis:
        """Canaries written from one template share one (immutable) analysis model.

        A validated analysis takes kilobytes; thousands of canaries with the same
        analysis block would otherwise hold thousands of equal copies.
        """
        if not isinstance(value, dict):
            return handler(value)  # type: ignore[no-any-return]
        try:
            key = json.dumps(value, allow_nan=False)  # key order kept: it shows in `match`
        except (TypeError, ValueError):  # not plain JSON data: no sharing
            return handler(value)  # type: ignore[no-any-return]
        shared = _SHARED_ANALYSES.get(key)
        if shared is None:
            shared = handler(value)
            if len(_SHARED_ANALYSES) >= SHARED_ANALYSES_MAX:
                _SHARED_ANALYSES.clear()
            _SHARED_ANALYSES[key] = shared
        return shared

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def target_name(self) -> str:
        """What built-in queries select on: ``target`` or, by default, the canary's name."""
        return self.target or self.name

    @property
    def service_name(self) -> str:
        """The ``service`` template variable: ``service`` or, as in Flagger, the target."""
        return self.service or self.target_name

    @property
    def ingress_name(self) -> str:
        """The ``ingress`` variable: ``ingress``, else ``variables.ingress``, else the target."""
        return self.ingress or self.variables.get("ingress") or self.target_name

    @property
    def route_name(self) -> str:
        """The ``route`` variable: ``route``, else ``variables.route``, else the target."""
        return self.route or self.variables.get("route") or self.target_name

    @property
    def primary_target_name(self) -> str:
        """What compare metrics select on for the primary: ``<target>-primary`` by default."""
        return self.primaryTarget or f"{self.target_name}-primary"
