"""Flagger manifests mapped onto canaryd's configuration (docs/design.md, "Configuration").

Included files may hold Flagger manifests (``apiVersion: flagger.app/v1beta1``):

- ``Canary`` becomes one ``canaries`` entry: ``metadata.name``/``namespace``,
  ``spec.targetRef.name`` -> ``target``, ``spec.provider`` -> ``meshProvider``,
  ``spec.analysis`` -> ``analysis`` and ``spec.analysis.alerts[]`` -> ``alerts``
  (``providerRef.name`` names the notifier). canaryd's ``router``/``provider``
  come from the annotations ``canaryd.io/router``/``canaryd.io/provider``, or
  default to the only router/provider defined (resolved by the loader).
- ``MetricTemplate`` becomes ``templates[name]``; its ``spec.provider`` becomes
  a provider of the mapped type (:data:`TEMPLATE_PROVIDER_TYPES`), reused when
  one of that type with the same address exists; without an address, the only
  provider of that type.
  Datadog, CloudWatch, New Relic and Dynatrace templates become a provider of
  that type, reused when an equal one exists; their ``secretRef`` keys are
  files of ``secrets/NAME/`` next to the manifest (docs/providers.md,
  "Flagger MetricTemplates").
- ``AlertProvider`` becomes ``notifiers[name]`` (``spec.address`` -> ``url``).

Kubernetes-only fields are collected in :attr:`Mapped.ignored` (the loader
turns them into one warning). Everything here is pure: it maps plain data and
reports problems as paths *inside the manifest*; the loader turns those paths
into file positions.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
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

_FLAGGER_PROVIDER_KEYS = ("address", "insecureSkipVerify", "region", "secretRef", "type")

_CANARY_SPEC_K8S = (
    "autoscalerRef",
    "progressDeadlineSeconds",
    "revertOnDeletion",
    "upstreamRef",
)
_CANARY_SPEC_FLAGS = ("skipAnalysis", "suspend")
_CANARY_SPEC_REFS = {"ingressRef": "ingress", "routeRef": "route", "service": "service"}
"""Kubernetes references whose ``name`` becomes a template variable (docs/flagger.md)."""
_ANALYSIS_K8S = (
    "canaryReadyThreshold",
    "mirror",
    "mirrorWeight",
    "primaryReadyThreshold",
    "sessionAffinity",
)
_WEBHOOK_K8S: tuple[str, ...] = ()  # muteAlert and disableTLS are supported
_TEMPLATE_PROVIDER_K8S = ("region",)
_ALERT_PROVIDER_K8S = ("certSecretRef", "proxy")


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


def map_manifest(doc: dict[str, Any]) -> Mapped:
    """Map one Flagger manifest onto a canaryd config entry.

    Args:
        doc: the manifest (a YAML document with ``apiVersion``/``kind``).

    Returns:
        The mapping; problems are listed in it, never raised.
    """
    kind = doc.get("kind")
    out = Mapped(kind=kind if isinstance(kind, str) else "?")
    if doc.get("apiVersion") != API_VERSION:
        out.problem(
            ("apiVersion",) if "apiVersion" in doc else (),
            f"unsupported apiVersion {doc.get('apiVersion')!r}; expected {API_VERSION}",
        )
        return out
    mapper = _MAPPERS.get(out.kind)
    if mapper is None:
        out.problem(("kind",), f"unknown kind {kind!r}; expected one of: {', '.join(KINDS)}")
        return out
    for key in doc:
        if key not in ("apiVersion", "kind", "metadata", "spec"):
            if key == "status":
                out.ignored.append("status")
            else:
                out.problem(
                    (key,), unknown_key(str(key), ("apiVersion", "kind", "metadata", "spec"))
                )
    meta = _mapping(doc, ("metadata",), out)
    spec = _mapping(doc, ("spec",), out)
    if meta is None or spec is None:
        return out
    out.name = _metadata(meta, out)
    if out.name is not None:
        mapper(spec, meta, out)
    return out


def _mapping(parent: dict[str, Any], path: KeyPath, out: Mapped) -> dict[str, Any] | None:
    """The mapping at ``parent[path[-1]]``, or ``None`` after recording why it is unusable."""
    key = path[-1]
    value = parent.get(key) if isinstance(key, str) else None
    if key not in parent:
        out.problem(path[:-1], f"missing key {key!r}")
        return None
    if not isinstance(value, dict):
        out.problem(path, "must be a mapping")
        return None
    return value


def _metadata(meta: dict[str, Any], out: Mapped) -> str | None:
    """Check ``metadata``: returns the name; records ignored and unknown annotations."""
    for key, value in meta.items():
        if key == "annotations" and isinstance(value, dict):
            for ann in value:
                if not str(ann).startswith("canaryd.io/"):
                    out.ignored.append(f"metadata.annotations.{ann}")
                elif ann not in ANNOTATIONS:
                    out.problem(
                        ("metadata", "annotations", ann),
                        f"unknown annotation {ann!r}; expected one of: {', '.join(ANNOTATIONS)}",
                    )
        elif key not in ("name", "namespace"):
            out.ignored.append(f"metadata.{key}")
    name = meta.get("name")
    if "name" not in meta:
        out.problem(("metadata",), "missing key 'name'")
        return None
    if not isinstance(name, str) or not name:
        out.problem(("metadata", "name"), "must be a non-empty string")
        return None
    return name


def _annotation(meta: dict[str, Any], name: str) -> Any:
    annotations = meta.get("annotations")
    return annotations.get(name) if isinstance(annotations, dict) else None


def _map_canary(spec: dict[str, Any], meta: dict[str, Any], out: Mapped) -> None:
    """``Canary`` -> ``canaries[]``."""
    out.section = "canaries"
    entry: dict[str, Any] = {"name": out.name}
    out.moves += [((), ("spec",)), (("name",), ("metadata", "name"))]
    if "namespace" in meta:
        entry["namespace"] = meta["namespace"]
        out.moves.append((("namespace",), ("metadata", "namespace")))
    _canary_refs(meta, entry, out)
    for key, value in spec.items():
        _canary_key(str(key), value, spec, entry, out)
    if "analysis" not in entry:
        # Flagger skips the analysis of a Canary without one (Canary.SkipAnalysis)
        entry["analysis"] = {"iterations": 1}
        entry["skipAnalysis"] = True
        out.moves.append((("analysis",), ("spec",)))
    out.entry = entry


def _canary_key(
    key: str, value: Any, spec: dict[str, Any], entry: dict[str, Any], out: Mapped
) -> None:
    """Map one key of a Canary's ``spec``."""
    if key in _CANARY_SPEC_K8S:
        out.ignored.append(f"spec.{key}")
    elif key in _CANARY_SPEC_FLAGS:
        entry[key] = value
        out.moves.append(((key,), ("spec", key)))
    elif key == "metricsServer":
        message = "built-in metrics query the canary's provider, not metricsServer"
        out.differences.append((("spec", key), message))
    elif key in _CANARY_SPEC_REFS:
        _reference(key, value, entry, out)
    elif key == "provider":
        _mesh(value, spec, entry, out)
    elif key == "targetRef":
        _target(value, entry, out)
    elif key == "analysis" or (key == "canaryAnalysis" and "analysis" not in spec):
        _analysis(value, entry, out, key)
    elif key == "canaryAnalysis":
        out.ignored.append("spec.canaryAnalysis (spec.analysis is set)")
    else:
        valid = (*_CANARY_SPEC_K8S, *_CANARY_SPEC_FLAGS, *_CANARY_SPEC_REFS, "metricsServer")
        valid_all = (*valid, "analysis", "canaryAnalysis", "provider", "targetRef")
        out.problem(("spec", key), unknown_key(key, valid_all))


def _mesh(value: Any, spec: dict[str, Any], entry: dict[str, Any], out: Mapped) -> None:
    """``spec.provider`` -> ``meshProvider``."""
    entry["meshProvider"] = value
    out.moves.append((("meshProvider",), ("spec", "provider")))
    if value == "knative" and "routeRef" not in spec:
        message = (
            "{{ route }} is the target's name (set canaryd's route), "
            "not the latest Knative revision"
        )
        out.differences.append((("spec", "provider"), message))


def _reference(key: str, value: Any, entry: dict[str, Any], out: Mapped) -> None:
    """``service``/``ingressRef``/``routeRef``: the name becomes a template variable."""
    if not isinstance(value, dict):
        out.problem(("spec", key), "must be a mapping")
        return
    for item in value:
        if item == "name":
            entry[_CANARY_SPEC_REFS[key]] = value["name"]
            out.moves.append(((_CANARY_SPEC_REFS[key],), ("spec", key, "name")))
        else:
            out.ignored.append(f"spec.{key}.{item}")


def _canary_refs(meta: dict[str, Any], entry: dict[str, Any], out: Mapped) -> None:
    """``router``/``provider`` from the annotations, else marked for defaulting."""
    for key, annotation in (("router", ROUTER_ANNOTATION), ("provider", PROVIDER_ANNOTATION)):
        value = _annotation(meta, annotation)
        if value is not None:
            entry[key] = value
            out.moves.append(((key,), ("metadata", "annotations", annotation)))
        else:
            out.moves.append(((key,), ("metadata",)))
    out.needs_router = "router" not in entry


def _target(value: Any, entry: dict[str, Any], out: Mapped) -> None:
    if not isinstance(value, dict):
        out.problem(("spec", "targetRef"), "must be a mapping")
        return
    for key in value:
        if key == "name":
            entry["target"] = value["name"]
            out.moves.append((("target",), ("spec", "targetRef", "name")))
        else:
            out.ignored.append(f"spec.targetRef.{key}")


def _analysis(value: Any, entry: dict[str, Any], out: Mapped, spelling: str = "analysis") -> None:
    """``spec.analysis`` -> ``analysis`` (minus Kubernetes-only keys) and ``alerts``.

    ``spelling`` is ``canaryAnalysis`` for Flagger's deprecated spelling.
    """
    out.moves.append((("analysis",), ("spec", spelling)))
    if not isinstance(value, dict):
        entry["analysis"] = value
        return
    analysis: dict[str, Any] = {}
    for key, item in value.items():
        if key in _ANALYSIS_K8S:
            out.ignored.append(f"spec.analysis.{key}")
        elif key == "alerts":
            _alerts(item, entry, out, spelling)
        elif key == "webhooks" and isinstance(item, list):
            analysis[key] = [_webhook(i, hook, out) for i, hook in enumerate(item)]
        else:
            analysis[key] = item
    entry["analysis"] = analysis


def _webhook(index: int, hook: Any, out: Mapped) -> Any:
    if not isinstance(hook, dict):
        return hook
    for key in _WEBHOOK_K8S:
        if key in hook:
            out.ignored.append(f"spec.analysis.webhooks[{index}].{key}")
    return {k: v for k, v in hook.items() if k not in _WEBHOOK_K8S}


def _alerts(value: Any, entry: dict[str, Any], out: Mapped, key: str = "analysis") -> None:
    """``analysis.alerts[]`` ({name, severity, providerRef}) -> ``alerts[]`` (notifier=ref name)."""
    out.moves.append((("alerts",), ("spec", key, "alerts")))
    if not isinstance(value, list):
        entry["alerts"] = value
        return
    alerts: list[Any] = []
    for i, alert in enumerate(value):
        here: KeyPath = ("spec", key, "alerts", i)
        if not isinstance(alert, dict):
            alerts.append(alert)
            continue
        mapped = {k: v for k, v in alert.items() if k != "providerRef"}
        ref = alert.get("providerRef")
        if isinstance(ref, dict):
            for key in ref:
                if key == "name":
                    mapped["notifier"] = ref["name"]
                    out.moves.append((("alerts", i, "notifier"), (*here, "providerRef", "name")))
                else:
                    out.ignored.append(f"spec.analysis.alerts[{i}].providerRef.{key}")
        elif ref is not None:
            out.problem((*here, "providerRef"), "must be a mapping")
        else:
            out.problem(here, "missing key 'providerRef'")
            out.suppress.append(("alerts", i, "notifier"))
        alerts.append(mapped)
    entry["alerts"] = alerts


def _map_template(spec: dict[str, Any], meta: dict[str, Any], out: Mapped) -> None:
    """``MetricTemplate`` -> ``templates[name]`` (+ a provider found or created later)."""
    out.section = "templates"
    entry: dict[str, Any] = {}
    out.moves.append(((), ("spec",)))
    if isinstance(meta.get("namespace"), str):
        entry["namespace"] = meta["namespace"]
        out.moves.append((("namespace",), ("metadata", "namespace")))
    for key, value in spec.items():
        if key == "query":
            entry["query"] = value
            out.moves.append((("query",), ("spec", "query")))
        elif key == "provider":
            _template_provider(value, out)
        else:
            out.problem(("spec", key), unknown_key(str(key), ("provider", "query")))
    out.moves.append((("provider",), ("spec", "provider") if "provider" in spec else ("spec",)))
    out.entry = entry


def _template_provider(value: Any, out: Mapped) -> None:
    """A MetricTemplate's provider (of TEMPLATE_PROVIDER_TYPES); secretRef mapped to files."""
    here: KeyPath = ("spec", "provider")
    if not isinstance(value, dict):
        out.problem(here, "must be a mapping")
        return
    if value.get("type") in SAAS_TYPES:
        _saas_provider(str(value["type"]), value, out)
        return
    provider: dict[str, Any] = {"type": "prometheus"}
    for key, item in value.items():
        if key == "type":
            if isinstance(item, str) and item in TEMPLATE_PROVIDER_TYPES:
                provider.update(TEMPLATE_PROVIDER_TYPES[item])
                out.provider_type = provider["type"]
            else:
                expected = ", ".join(sorted((*TEMPLATE_PROVIDER_TYPES, *SAAS_TYPES)))
                out.unsupported = (
                    f"MetricTemplate {out.name}: provider type {item!r} is not supported "
                    f"(canaryd queries: {expected}); a canary that uses it is refused"
                )
        elif key in ("address", "insecureSkipVerify"):
            provider[key] = item
        elif key == "headers":
            provider["headers"] = _headers(item, out)
            out.moves.append((("headers",), (*here, "headers")))
        elif key == "secretRef":
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not name:
                out.problem((*here, key), "must be a mapping with a name")
            else:
                out.secret_ref = name
        elif key in _TEMPLATE_PROVIDER_K8S:
            out.ignored.append(f"spec.provider.{key}")
        else:
            valid = ("address", "headers", "insecureSkipVerify", "type", "secretRef", "region")
            out.problem((*here, key), unknown_key(str(key), valid))
    address = provider.get("address")
    if isinstance(address, str):
        out.prometheus_address = address
        out.provider_entry = provider


def _saas_provider(kind: str, value: dict[str, Any], out: Mapped) -> None:
    """A datadog/cloudwatch/newrelic/dynatrace ``spec.provider`` (docs/providers.md).

    The provider is created whether or not an address is set (each type has a
    default, or needs none); ``secretRef`` becomes files (configmerge).
    """
    here: KeyPath = ("spec", "provider")
    provider: dict[str, Any] = {"type": kind}
    out.provider_type = kind
    used = ("region",) if kind == "cloudwatch" else ("address", "insecureSkipVerify")
    for key, item in value.items():
        if key in used:
            provider[key] = _nerdgraph(item) if kind == "newrelic" and key == "address" else item
        elif key == "secretRef" and kind in SECRET_KEYS:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not name:
                out.problem((*here, key), "must be a mapping with a name")
            else:
                out.secret_ref = name
        elif key in _FLAGGER_PROVIDER_KEYS:
            if key != "type":
                out.ignored.append(f"spec.provider.{key}")  # not used by this type
        else:
            out.problem((*here, key), unknown_key(str(key), _FLAGGER_PROVIDER_KEYS))
    if kind in SECRET_KEYS and "secretRef" not in value:
        out.problem(here, f"missing key 'secretRef' ({kind} reads its keys from a secret)")
    out.provider_entry = provider


def _nerdgraph(address: Any) -> Any:
    """Flagger's New Relic address is the Insights API's; canaryd asks NerdGraph on ``api.``."""
    if isinstance(address, str):
        return address.replace("://insights-api.", "://api.", 1)
    return address


def _headers(value: Any, out: Mapped) -> Any:
    """Flagger's ``http.Header`` (name -> list of values) as canaryd's name -> one value."""
    if not isinstance(value, dict):
        return value
    joined: dict[Any, Any] = {}
    for name, item in value.items():
        if isinstance(item, list) and all(isinstance(v, str) for v in item):
            joined[name] = ", ".join(item)
        else:
            joined[name] = item
    return joined


def _map_alert_provider(spec: dict[str, Any], meta: dict[str, Any], out: Mapped) -> None:
    """``AlertProvider`` -> ``notifiers[name]``."""
    out.section = "notifiers"
    entry: dict[str, Any] = {}
    out.moves.append(((), ("spec",)))
    for key, value in spec.items():
        if key == "type":
            _notifier_type(value, entry, out)
        elif key == "address":
            entry["url"] = value
            out.moves.append((("url",), ("spec", "address")))
        elif key in ("channel", "username"):
            entry[key] = value
            out.moves.append(((key,), ("spec", key)))
        elif key == "secretRef" and isinstance(value, dict) and isinstance(value.get("name"), str):
            out.secret_ref = value["name"]
        elif key in _ALERT_PROVIDER_K8S:
            out.ignored.append(f"spec.{key}")
        else:
            valid = ("address", "channel", "type", "username", "secretRef", *_ALERT_PROVIDER_K8S)
            out.problem(("spec", key), unknown_key(str(key), valid))
    if "address" not in spec and out.secret_ref is None:
        out.problem(("spec",), "missing key 'address'")
        out.suppress.append(())
    if "type" not in spec:
        out.problem(("spec",), "missing key 'type'")
        out.suppress.append(())
    out.entry = entry


def _notifier_type(value: Any, entry: dict[str, Any], out: Mapped) -> None:
    if value in NOTIFIER_TYPES:
        entry["type"] = NOTIFIER_TYPES[value]
        out.moves.append((("type",), ("spec", "type")))
    else:
        expected = ", ".join(sorted(NOTIFIER_TYPES))
        out.problem(
            ("spec", "type"), f"unknown notifier type {value!r}; expected one of: {expected}"
        )
        out.suppress.append(())


_MAPPERS: dict[str, Callable[[dict[str, Any], dict[str, Any], Mapped], None]] = {
    "Canary": _map_canary,
    "MetricTemplate": _map_template,
    "AlertProvider": _map_alert_provider,
}


def find_same(providers: dict[str, Any], entry: dict[str, Any]) -> str | None:
    """The name of a provider whose entry equals ``entry``, if any."""
    return next((str(name) for name, p in providers.items() if p == entry), None)


def find_provider(providers: dict[str, Any], address: str, kind: str = "prometheus") -> str | None:
    """The name of a ``kind`` provider with this address (trailing ``/`` ignored), if any."""
    wanted = address.rstrip("/")
    for name, provider in providers.items():
        if (
            isinstance(provider, dict)
            and provider.get("type") == kind
            and isinstance(provider.get("address"), str)
            and provider["address"].rstrip("/") == wanted
        ):
            return str(name)
    return None


def format_ignored(ignored: list[tuple[str, str, list[str]]]) -> str | None:
    """The one warning listing ignored fields: ``(file, "Kind/name", fields)`` triples."""
    parts = [f"{file}: {what}: {', '.join(fields)}" for file, what, fields in ignored if fields]
    return f"Kubernetes-only fields ignored: {'; '.join(parts)}" if parts else None
