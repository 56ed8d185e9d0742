"""One Flagger manifest mapped onto canaryd's configuration: its vocabulary and result.

:class:`Mapped` is what :func:`canaryd.config.flagger.map_manifest` returns; the
constants name the manifests, annotations, provider and notifier types canaryd
understands (docs/flagger.md).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

KeyPath = tuple[str | int, ...]
"""Path of a value in a YAML document: mapping keys and sequence indexes."""

API_VERSION = "flagger.app/v1beta1"
KINDS = ("AlertProvider", "Canary", "MetricTemplate")
ROUTER_ANNOTATION = "canaryd.io/router"
PROVIDER_ANNOTATION = "canaryd.io/provider"
ANNOTATIONS = (PROVIDER_ANNOTATION, ROUTER_ANNOTATION)

NOTIFIER_TYPES = {
    "slack": "slack",
    "msteams": "msteams",
    "discord": "discord",
    "gchat": "gchat",
    "googlechat": "gchat",
    "rocket": "rocket",
}
"""Flagger AlertProvider types canaryd can deliver to, and their canaryd name."""

TEMPLATE_PROVIDER_TYPES: dict[str, dict[str, Any]] = {
    "prometheus": {"type": "prometheus"},
    "graphite": {"type": "graphite"},
    "influxdb": {"type": "influxdb", "language": "flux"},  # Flagger's influxdb speaks Flux
}
"""Flagger MetricTemplate provider types canaryd queries, and the canaryd provider they become."""

SECRET_KEYS = {
    "datadog": {
        "api_key_file": "datadog_api_key",
        "application_key_file": "datadog_application_key",
    },
    "newrelic": {"api_key_file": "newrelic_query_key", "account_id_file": "newrelic_account_id"},
    "dynatrace": {"api_token_file": "dynatrace_token"},
}
"""The Flagger secret keys of each SaaS provider type, by the canaryd setting reading them."""

SECRET_FILES = sorted({setting for keys in SECRET_KEYS.values() for setting in keys})

SAAS_TYPES = ("cloudwatch", "datadog", "dynatrace", "newrelic")
"""Flagger MetricTemplate provider types mapped onto canaryd's SaaS providers (same names)."""


@dataclass
class Mapped:
    """One manifest mapped onto the canaryd model.

    Attributes:
        kind: the manifest's kind.
        name: ``metadata.name`` (``None`` when missing).
        section: where :attr:`entry` goes: ``canaries``, ``templates`` or
            ``notifiers``; ``None`` when the manifest could not be mapped.
        entry: the canaryd config entry.
        moves: ``(path in entry, path in manifest)`` pairs: positions of the
            manifest subtree are reported for the entry subtree.
        ignored: Kubernetes-only fields, as dotted manifest paths.
        problems: ``(path in manifest, message)`` pairs.
        suppress: entry paths whose model errors are already covered by a problem.
        needs_router: the canary's router is the only one defined (no annotation).
        prometheus_address: a MetricTemplate's provider address (find or create).
        provider_entry: the provider to create when no provider has that address.
        provider_type: the canaryd provider type a MetricTemplate's provider maps to.
        secret_ref: a MetricTemplate's ``secretRef`` name (mapped to secret files).
        unsupported: why the manifest is kept out of the configuration (a warning),
            e.g. a MetricTemplate for a provider type canaryd does not query.
        differences: ``(path in manifest, message)`` of the deliberate differences
            from Flagger this manifest meets (one warning line each).
    """

    kind: str
    name: str | None = None
    section: str | None = None
    entry: dict[str, Any] = field(default_factory=dict)
    moves: list[tuple[KeyPath, KeyPath]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    problems: list[tuple[KeyPath, str]] = field(default_factory=list)
    suppress: list[KeyPath] = field(default_factory=list)
    needs_router: bool = False
    prometheus_address: str | None = None
    provider_entry: dict[str, Any] | None = None
    provider_type: str = "prometheus"
    secret_ref: str | None = None
    unsupported: str | None = None
    differences: list[tuple[KeyPath, str]] = field(default_factory=list)

    def problem(self, path: KeyPath, message: str) -> None:
        """Record a problem at ``path`` of the manifest."""
        self.problems.append((path, message))


def is_manifest(doc: object) -> bool:
    """Whether a YAML document looks like a Kubernetes manifest (has ``apiVersion`` or ``kind``)."""
    return isinstance(doc, dict) and ("apiVersion" in doc or "kind" in doc)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""`` when none is close."""
    options = sorted(choices)
    lowered = {c.lower(): c for c in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean {lowered[close[0]]!r}?" if close else ""


def unknown_key(key: str, choices: Iterable[str]) -> str:
    """The message for a key that is not valid at its place."""
    options = sorted(choices)
    hint = did_you_mean(key, options)
    return f"unknown key {key!r}" + (hint or f"; valid keys: {', '.join(options)}")
