"""Configuration loader: the shipped example loads and exercises every key and type."""

from __future__ import annotations

from pathlib import Path

from loader_helpers import model_keys

from canaryd import config
from canaryd.config.loader import load_config, summary

ROOT = Path(__file__).resolve().parent.parent


EXAMPLE = ROOT / "config" / "canaryd.example.yaml"


# --------------------------------------------------------------------------- the example


def test_example_config_loads() -> None:
    """The shipped example loads, includes the Flagger file and warns once about k8s fields."""
    loaded = load_config(EXAMPLE, environ={"PATH": "/usr/bin"})
    assert summary(loaded) == (
        "config OK: 5 canaries, 2 providers, 5 routers, 8 notifiers, 3 templates (2 files)"
    )
    assert [Path(f).name for f in loaded.files] == ["canaryd.example.yaml", "flagger-canary.yaml"]
    assert len(loaded.warnings) == 4  # ignored fields, two differences from Flagger, disableTLS
    assert loaded.warnings[0].startswith("Kubernetes-only fields ignored: ")
    assert [w.split(": ")[:3] for w in loaded.warnings[1:3]] == [
        ["differs from Flagger", "prod/web", "webhook approve-start"],
        ["differs from Flagger", "prod/web", "webhook audit-log"],
    ]
    assert loaded.warnings[3] == (
        "prod/web: webhook audit-log: disableTLS: its TLS certificate is not verified"
    )
    assert loaded.warnings[0].endswith(
        "flagger-canary.yaml: Canary/podinfo: metadata.labels, spec.targetRef.apiVersion, "
        "spec.targetRef.kind, spec.autoscalerRef, spec.progressDeadlineSeconds, spec.service.port, "
        "spec.service.targetPort, "
        "spec.analysis.alerts[0].providerRef.namespace"
    )
    strategies = {c.key: c.analysis.strategy for c in loaded.settings.canaries}
    assert strategies == {
        "prod/web": "canary",
        "prod/api": "blue-green",
        "default/checkout": "ab",
        "prod/search": "canary",
        "test/podinfo": "canary",
    }


def test_example_mentions_every_key() -> None:
    """Every key of every config model appears in the example (secret files in comments)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = sorted(k for k in model_keys(config.Settings, set()) if f"{k}:" not in text)
    assert missing == []


def test_example_exercises_every_type() -> None:
    """The example uses every router type, every notifier type and every webhook type."""
    s = load_config(EXAMPLE, environ={"PATH": "/usr/bin"}).settings
    assert {r.type for r in s.routers.values()} == {
        "haproxy",
        "webhook",
        "nginx",
        "envoy",
        "traefik",
    }
    assert {n.type for n in s.notifiers.values()} == {
        "slack",
        "msteams",
        "discord",
        "gchat",
        "rocket",
        "webhook",
        "cloudevents",
    }
    hooks = [w for c in s.canaries for w in c.analysis.webhooks]
    assert {w.type for w in hooks} == set(config.WebhookType)
    assert any(w.url is None and w.gateTimeout == 3600 for w in hooks)
    metrics = [m for c in s.canaries for m in c.analysis.metrics]
    assert {m.onNoData for m in metrics} == set(config.OnNoData)
