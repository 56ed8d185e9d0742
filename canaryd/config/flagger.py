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

from collections.abc import Callable
from typing import Any

from canaryd.config.flaggermap import (
    ANNOTATIONS,
    API_VERSION,
    KINDS,
    PROVIDER_ANNOTATION,
    ROUTER_ANNOTATION,
    KeyPath,
    Mapped,
    unknown_key,
)
from canaryd.config.flaggerproviders import map_alert_provider, map_template

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


_MAPPERS: dict[str, Callable[[dict[str, Any], dict[str, Any], Mapped], None]] = {
    "Canary": _map_canary,
    "MetricTemplate": map_template,
    "AlertProvider": map_alert_provider,
}


def format_ignored(ignored: list[tuple[str, str, list[str]]]) -> str | None:
    """The one warning listing ignored fields: ``(file, "Kind/name", fields)`` triples."""
    parts = [f"{file}: {what}: {', '.join(fields)}" for file, what, fields in ignored if fields]
    return f"Kubernetes-only fields ignored: {'; '.join(parts)}" if parts else None
