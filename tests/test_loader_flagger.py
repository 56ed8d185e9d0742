"""Configuration loader: Flagger manifests map onto the model; differences are warned."""

from __future__ import annotations

from pathlib import Path

import pytest
from loader_helpers import PRE, canary, load, problems, write

from canaryd import config

TWO_EACH = """\
providers:
  prom: {type: prometheus}
  thanos: {type: prometheus}
routers:
  lb: {type: haproxy, socket: /s, backend: b, primary: p, canary: c}
  mesh: {type: webhook, url: "http://m"}
"""
"""Two providers and two routers, so nothing can be defaulted."""


# --------------------------------------------------------------------------- Flagger

FLAGGER_CANARY = """\
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
  labels: {app: podinfo}
spec:
  provider: istio
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo-v2}
  service: {port: 9898}
  skipAnalysis: false
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    sessionAffinity: {cookieName: flagger-cookie}
    metrics:
      - name: request-success-rate
        thresholdRange: {min: 99}
      - name: latency
        templateRef: {name: latency, namespace: istio-system}
        thresholdRange: {max: 500}
    alerts:
      - name: on-call
        severity: error
        providerRef: {name: on-call, namespace: flagger}
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: latency, namespace: istio-system}
spec:
  provider: {type: prometheus, address: "http://prom.example:9090", region: r}
  query: histogram_quantile(0.99, rate(x[{{ interval }}]))
---
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {name: on-call, namespace: flagger}
spec: {type: googlechat, address: "https://chat.example/x", channel: c, username: u}
"""


def test_flagger_manifests_map_onto_the_model(tmp_path: Path) -> None:
    """Canary, MetricTemplate and AlertProvider values land in the canaryd model."""
    write(tmp_path, "k8s/podinfo.yaml", FLAGGER_CANARY)
    loaded = load(tmp_path, PRE + "include: [k8s/*.yaml]\n")
    podinfo = loaded.settings.canary("test/podinfo")
    assert podinfo is not None
    assert (podinfo.target, podinfo.meshProvider, podinfo.router, podinfo.provider) == (
        "podinfo-v2",
        "istio",
        "lb",
        "prom",
    )
    assert (podinfo.analysis.interval, podinfo.analysis.weights) == (60.0, [10, 20, 30, 40, 50])
    ref = podinfo.analysis.metrics[1].templateRef
    assert ref is not None and (ref.name, ref.namespace) == ("latency", "istio-system")
    assert [(a.name, a.notifier, a.severity.value) for a in podinfo.alerts] == [
        ("on-call", "on-call", "error")
    ]
    assert loaded.settings.templates["latency"].provider == "latency-provider"
    assert (
        loaded.settings.providers["latency-provider"].model_dump()["address"]
        == "http://prom.example:9090"
    )
    notifier = loaded.settings.notifiers["on-call"]
    assert (notifier.type, notifier.url, notifier.channel, notifier.username) == (
        "gchat",
        "https://chat.example/x",
        "c",
        "u",
    )


def test_flagger_ignored_fields_in_one_warning(tmp_path: Path) -> None:
    """Kubernetes-only fields of every manifest are listed in a single warning."""
    write(tmp_path, "k8s/podinfo.yaml", FLAGGER_CANARY)
    loaded = load(tmp_path, PRE + "include: [k8s/*.yaml]\n")
    assert loaded.warnings == [
        f"Kubernetes-only fields ignored: {tmp_path}/k8s/podinfo.yaml: Canary/podinfo: "
        "metadata.labels, spec.targetRef.apiVersion, spec.targetRef.kind, spec.service.port, "
        "spec.analysis.sessionAffinity, "
        "spec.analysis.alerts[0].providerRef.namespace; "
        f"{tmp_path}/k8s/podinfo.yaml: MetricTemplate/latency: spec.provider.region"
    ]


def test_flagger_mute_alert_disable_tls_and_rocket_are_supported(tmp_path: Path) -> None:
    """A Canary's muteAlert/disableTLS webhooks and a rocket AlertProvider map onto the model
    instead of being ignored or refused."""
    hooks = (
        "    webhooks:\n"
        "      - {name: gate, type: confirm-traffic-increase, url: 'https://g.example/',"
        " muteAlert: true, disableTLS: true}\n"
    )
    text = FLAGGER_CANARY.replace("    alerts:\n", hooks + "    alerts:\n").replace(
        "type: googlechat", "type: rocket"
    )
    write(tmp_path, "k8s/podinfo.yaml", text)
    loaded = load(tmp_path, PRE + "include: [k8s/*.yaml]\n")
    podinfo = loaded.settings.canary("test/podinfo")
    assert podinfo is not None
    (hook,) = podinfo.analysis.webhooks
    assert (hook.muteAlert, hook.disableTLS) == (True, True)
    assert loaded.settings.notifiers["on-call"].type == "rocket"
    assert "muteAlert" not in loaded.warnings[0] and "disableTLS" not in loaded.warnings[0]
    assert loaded.warnings[-1] == (
        "test/podinfo: webhook gate: disableTLS: its TLS certificate is not verified"
    )


@pytest.mark.parametrize(
    ("hooks", "alerts", "expected"),
    [
        ([{"name": "g", "type": "confirm-traffic-increase"}], [{}], ["g: waiting for approval"]),
        ([{"name": "g", "type": "confirm-traffic-increase", "muteAlert": True}], [{}], []),
        ([{"name": "g", "type": "confirm-traffic-increase"}], [{"severity": "error"}], []),
        ([{"name": "g", "type": "confirm-traffic-increase"}], [], []),
        ([{"name": "go", "type": "confirm-rollout"}], [{}], ["go: the start is alerted"]),
        ([{"name": "go", "type": "confirm-rollout"}], [{"severity": "warn"}], []),
        ([{"name": "e", "type": "event", "url": "http://x/"}], [], ["e: gets canaryd's events"]),
        ([{"name": "r", "type": "rollout", "url": "http://x/"}], [{"events": "all"}], []),
    ],
    ids=[
        "traffic-gate-alerted",
        "traffic-gate-muted",
        "traffic-gate-not-alerted",
        "no-alerts",
        "confirm-rollout",
        "confirm-rollout-start-not-alerted",
        "event-hook",
        "no-difference",
    ],
)
def test_check_names_each_difference_from_flagger_once(
    hooks: list[dict[str, object]], alerts: list[dict[str, object]], expected: list[str]
) -> None:
    """canaryd check says, one line each, where a canary's hooks and alerts deliberately behave
    differently from Flagger, and says nothing when they do not."""
    from canaryd.config.notes import flagger_differences

    spec = config.CanaryConfig.model_validate(
        {
            "name": "web",
            "router": "lb",
            "analysis": {"stepWeight": 10, "webhooks": hooks},
            "alerts": [{"name": f"a{i}", "notifier": "n", **a} for i, a in enumerate(alerts)],
        }
    )
    lines = flagger_differences(spec)
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(f"default/web: webhook {start}"), line


def test_flagger_template_reuses_provider_with_same_address(tmp_path: Path) -> None:
    """A MetricTemplate whose address matches an existing provider uses that provider."""
    write(tmp_path, "k8s/podinfo.yaml", FLAGGER_CANARY)
    main = PRE.replace(
        "{type: prometheus}", "{type: prometheus, address: 'http://prom.example:9090/'}"
    )
    loaded = load(tmp_path, main + "include: [k8s/*.yaml]\n")
    assert loaded.settings.templates["latency"].provider == "prom"
    assert list(loaded.settings.providers) == ["prom"]


def test_flagger_annotations_choose_router_and_provider(tmp_path: Path) -> None:
    """The canaryd.io/router and canaryd.io/provider annotations pick among several."""
    text = FLAGGER_CANARY.replace(
        "  labels: {app: podinfo}\n",
        "  annotations: {canaryd.io/router: mesh, canaryd.io/provider: thanos}\n",
    )
    write(tmp_path, "k8s/podinfo.yaml", text)
    podinfo = load(tmp_path, TWO_EACH + "include: [k8s/*.yaml]\n").settings.canaries[0]
    assert (podinfo.router, podinfo.provider) == ("mesh", "thanos")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "kind: Canary",
            "kind: Deployment",
            [
                "k8s.yaml:2:1: kind: unknown kind 'Deployment'; expected one of: AlertProvider, "
                "Canary, MetricTemplate"
            ],
        ),
        (
            "apiVersion: flagger.app/v1beta1\nkind: Canary",
            "apiVersion: flagger.app/v1alpha3\nkind: Canary",
            [
                "k8s.yaml:1:1: apiVersion: unsupported apiVersion "
                "'flagger.app/v1alpha3'; expected flagger.app/v1beta1"
            ],
        ),
        (
            "    threshold: 5",
            "    threshold: -1",
            ["k8s.yaml:14:5: spec.analysis.threshold: must be >= 0 (got -1)"],
        ),
        (
            "type: googlechat",
            "type: pagerduty",
            [
                "k8s.yaml:39:8: spec.type: unknown notifier type 'pagerduty'; "
                "expected one of: discord, "
                "gchat, googlechat, msteams, rocket, slack"
            ],
        ),
        (
            'address: "https://chat.example/x"',
            "secretRef: {name: s}",
            [
                "k8s.yaml:39:26: spec.secretRef: secretRef 's': put the webhook address in the "
                "file secrets/s/address, or set spec.address (docs/flagger.md)"
            ],
        ),
        (
            "  analysis:\n",
            "  anlysis:\n",
            ["k8s.yaml:12:3: spec.anlysis: unknown key 'anlysis'; did you mean 'analysis'?"],
        ),
        (
            "providerRef: {name: on-call, namespace: flagger}",
            "providerRef: {name: pager}",
            [
                "k8s.yaml:27:23: spec.analysis.alerts[0].providerRef.name: "
                "unknown notifier 'pager'; "
                "defined notifiers: on-call"
            ],
        ),
        (
            "{type: prometheus, address",
            "{type: splunk, address",
            [
                "k8s.yaml:22:23: spec.analysis.metrics[1].templateRef.name: unknown template "
                "'latency'; no templates are defined"
            ],
        ),
        (
            "metadata:\n  name: podinfo\n",
            "metadata:\n  nam: podinfo\n",
            ["k8s.yaml:3:1: metadata: missing key 'name'"],
        ),
        (
            "  labels: {app: podinfo}\n",
            "  annotations: {canaryd.io/routr: lb}\n",
            [
                "k8s.yaml:6:17: metadata.annotations.canaryd.io/routr: unknown annotation "
                "'canaryd.io/routr'; expected one of: canaryd.io/provider, canaryd.io/router"
            ],
        ),
    ],
    ids=[
        "kind",
        "api-version",
        "analysis-value",
        "notifier-type",
        "address",
        "spec-key",
        "alert-ref",
        "template-provider-type",
        "no-name",
        "annotation",
    ],
)
def test_flagger_problems(tmp_path: Path, old: str, new: str, expected: list[str]) -> None:
    """Problems in manifests are located at the manifest's own keys."""
    write(tmp_path, "k8s.yaml", FLAGGER_CANARY.replace(old, new, 1))
    assert problems(tmp_path, PRE + "include: [k8s.yaml]\n") == expected


def test_flagger_router_and_provider_ambiguous(tmp_path: Path) -> None:
    """Without annotations, a Canary needs exactly one router (and provider) to default to."""
    write(tmp_path, "k8s.yaml", FLAGGER_CANARY)
    assert problems(tmp_path, TWO_EACH + "include: [k8s.yaml]\n") == [
        "k8s.yaml:3:1: metadata: cannot choose a router: 2 routers are defined (lb, mesh); "
        "set annotation canaryd.io/router",
        "k8s.yaml:19:9: spec.analysis.metrics[0]: metric 'request-success-rate' has no "
        "provider (3 providers are defined); set provider on it or annotation canaryd.io/provider",
    ]


@pytest.mark.parametrize(
    ("keys", "warnings"),
    [
        (
            "stepWeight: 10\nstepWeights: [10, 20]",
            [
                "default/web: stepWeight and stepWeights are both set: steps of 10% up to 20% "
                "(the last of stepWeights), as in Flagger"
            ],
        ),
        (
            "stepWeights: [10, 20]\nmaxWeight: 5",
            ["default/web: maxWeight 5 is ignored: stepWeights go up to 20%, as in Flagger"],
        ),
        (
            "stepWeight: 30\nmaxWeight: 70",
            [
                "differs from Flagger: default/web: the last step stops at 70% where Flagger "
                "would overshoot to 90% (stepWeight 30)"
            ],
        ),
        ("stepWeight: 10\nmaxWeight: 50", []),
    ],
    ids=["both-step-kinds", "maxWeight-with-stepWeights", "step-overshoot", "plain"],
)
def test_weight_keys_flagger_reads_differently_are_warned(
    tmp_path: Path, keys: str, warnings: list[str]
) -> None:
    """Weight keys Flagger reads differently (stepWeight with stepWeights, maxWeight with
    stepWeights, a step overshooting the maximum) load with one warning line each."""
    assert load(tmp_path, canary(keys)).warnings == warnings
