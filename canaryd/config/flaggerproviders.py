"""Flagger ``MetricTemplate`` and ``AlertProvider`` manifests (docs/providers.md).

A ``MetricTemplate`` becomes ``templates[name]`` and a provider of the mapped type
(found among the configured ones by :func:`find_provider`/:func:`find_same`, or
created); an ``AlertProvider`` becomes ``notifiers[name]``. Pure, like
:mod:`canaryd.config.flagger`.
"""

from __future__ import annotations

from typing import Any

from canaryd.config.flaggermap import (
    NOTIFIER_TYPES,
    SAAS_TYPES,
    SECRET_KEYS,
    TEMPLATE_PROVIDER_TYPES,
    KeyPath,
    Mapped,
    unknown_key,
)

_FLAGGER_PROVIDER_KEYS = ("address", "insecureSkipVerify", "region", "secretRef", "type")

_TEMPLATE_PROVIDER_K8S = ("region",)
_ALERT_PROVIDER_K8S = ("certSecretRef", "proxy")


def map_template(spec: dict[str, Any], meta: dict[str, Any], out: Mapped) -> None:
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
            _secret_ref(item, out)
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
            _secret_ref(item, out)
        elif key in _FLAGGER_PROVIDER_KEYS:
            if key != "type":
                out.ignored.append(f"spec.provider.{key}")  # not used by this type
        else:
            out.problem((*here, key), unknown_key(str(key), _FLAGGER_PROVIDER_KEYS))
    if kind in SECRET_KEYS and "secretRef" not in value:
        out.problem(here, f"missing key 'secretRef' ({kind} reads its keys from a secret)")
    out.provider_entry = provider


def _secret_ref(item: Any, out: Mapped) -> None:
    """``spec.provider.secretRef``: the secret's name, or a problem when it has none."""
    name = item.get("name") if isinstance(item, dict) else None
    if not isinstance(name, str) or not name:
        out.problem(("spec", "provider", "secretRef"), "must be a mapping with a name")
    else:
        out.secret_ref = name


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


def map_alert_provider(spec: dict[str, Any], meta: dict[str, Any], out: Mapped) -> None:
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
