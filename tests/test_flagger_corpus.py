"""Flagger manifests pass ``canaryd check`` with one provider and one router configured.

``tests/flagger_corpus/`` holds manifests written for these tests that together
use every field and variant of Flagger's published ``Canary``, ``MetricTemplate``
and ``AlertProvider`` examples (listed in :data:`PUBLISHED_FIELDS`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.cli import commands as cli
from canaryd.config import MIN_INTERVAL_ENV
from canaryd.config.loader import load_config

CORPUS = Path(__file__).parent / "flagger_corpus"
FILES = sorted(p.name for p in CORPUS.glob("*.yaml"))
MAIN = """\
providers: {prom: {type: prometheus, address: "http://127.0.0.1:9090"}}
routers: {lb: {type: haproxy, socket: /run/haproxy.sock, backend: web, primary: a, canary: b}}
include: [corpus/FILE]
"""

PUBLISHED_FIELDS = [
    "AlertProvider.spec.address",
    "AlertProvider.spec.channel",
    "AlertProvider.spec.proxy",
    "AlertProvider.spec.secretRef.name",
    "AlertProvider.spec.type",
    "AlertProvider.spec.username",
    "Canary.metadata.annotations.*",
    "Canary.spec.analysis.interval",
    "Canary.spec.analysis.iterations",
    "Canary.spec.analysis.match[].headers.*.exact",
    "Canary.spec.analysis.match[].headers.*.regex",
    "Canary.spec.analysis.maxWeight",
    "Canary.spec.analysis.metrics[].interval",
    "Canary.spec.analysis.metrics[].name",
    "Canary.spec.analysis.metrics[].templateRef.name",
    "Canary.spec.analysis.metrics[].templateRef.namespace",
    "Canary.spec.analysis.metrics[].templateVariables.*",
    "Canary.spec.analysis.metrics[].threshold",
    "Canary.spec.analysis.metrics[].thresholdRange.max",
    "Canary.spec.analysis.metrics[].thresholdRange.min",
    "Canary.spec.analysis.mirror",
    "Canary.spec.analysis.mirrorWeight",
    "Canary.spec.analysis.sessionAffinity.cookieName",
    "Canary.spec.analysis.sessionAffinity.maxAge",
    "Canary.spec.analysis.stepWeight",
    "Canary.spec.analysis.stepWeights[]",
    "Canary.spec.analysis.threshold",
    "Canary.spec.analysis.webhooks[].metadata.cmd",
    "Canary.spec.analysis.webhooks[].metadata.logCmdOutput",
    "Canary.spec.analysis.webhooks[].metadata.type",
    "Canary.spec.analysis.webhooks[].name",
    "Canary.spec.analysis.webhooks[].timeout",
    "Canary.spec.analysis.webhooks[].type",
    "Canary.spec.analysis.webhooks[].url",
    "Canary.spec.autoscalerRef.apiVersion",
    "Canary.spec.autoscalerRef.kind",
    "Canary.spec.autoscalerRef.name",
    "Canary.spec.autoscalerRef.primaryScalerQueries.*",
    "Canary.spec.autoscalerRef.primaryScalerReplicas.maxReplicas",
    "Canary.spec.autoscalerRef.primaryScalerReplicas.minReplicas",
    "Canary.spec.ingressRef.apiVersion",
    "Canary.spec.ingressRef.kind",
    "Canary.spec.ingressRef.name",
    "Canary.spec.progressDeadlineSeconds",
    "Canary.spec.provider",
    "Canary.spec.routeRef.apiVersion",
    "Canary.spec.routeRef.kind",
    "Canary.spec.routeRef.name",
    "Canary.spec.service.apex.annotations.*",
    "Canary.spec.service.backendTimeout",
    "Canary.spec.service.canary.annotations.*",
    "Canary.spec.service.corsPolicy.allowCredentials",
    "Canary.spec.service.corsPolicy.allowHeaders[]",
    "Canary.spec.service.corsPolicy.allowMethods[]",
    "Canary.spec.service.corsPolicy.allowOrigin[]",
    "Canary.spec.service.corsPolicy.maxAge",
    "Canary.spec.service.delegation",
    "Canary.spec.service.gatewayRefs[].group",
    "Canary.spec.service.gatewayRefs[].kind",
    "Canary.spec.service.gatewayRefs[].name",
    "Canary.spec.service.gatewayRefs[].namespace",
    "Canary.spec.service.gatewayRefs[].port",
    "Canary.spec.service.gateways[]",
    "Canary.spec.service.headers.request.add.*",
    "Canary.spec.service.headers.request.remove[]",
    "Canary.spec.service.headers.request.set.*",
    "Canary.spec.service.headers.response.add.*",
    "Canary.spec.service.headers.response.remove[]",
    "Canary.spec.service.headers.response.set.*",
    "Canary.spec.service.hosts[]",
    "Canary.spec.service.match[].uri.prefix",
    "Canary.spec.service.name",
    "Canary.spec.service.port",
    "Canary.spec.service.portDiscovery",
    "Canary.spec.service.portName",
    "Canary.spec.service.primary.annotations.*",
    "Canary.spec.service.retries.attempts",
    "Canary.spec.service.retries.perTryTimeout",
    "Canary.spec.service.retries.retryOn",
    "Canary.spec.service.rewrite.authority",
    "Canary.spec.service.rewrite.type",
    "Canary.spec.service.rewrite.uri",
    "Canary.spec.service.targetPort",
    "Canary.spec.service.timeout",
    "Canary.spec.service.trafficPolicy.tls.mode",
    "Canary.spec.skipAnalysis",
    "Canary.spec.targetRef.apiVersion",
    "Canary.spec.targetRef.kind",
    "Canary.spec.targetRef.name",
    "MetricTemplate.spec.provider.address",
    "MetricTemplate.spec.provider.insecureSkipVerify",
    "MetricTemplate.spec.provider.secretRef.name",
    "MetricTemplate.spec.provider.type",
    "MetricTemplate.spec.query",
]
"""Key paths used by Flagger's published manifests (docs/gitbook, artifacts/examples).

Maps of free keys are written ``.*``; ``metadata.name``/``namespace`` are left out.
"""

PUBLISHED_PROVIDERS = {
    "apisix",
    "appmesh:v1beta2",
    "contour",
    "gatewayapi:v1",
    "gloo",
    "istio",
    "knative",
    "kubernetes",
    "kuma",
    "linkerd",
    "nginx",
    "osm",
    "skipper",
    "traefik",
}
"""``spec.provider`` values of the examples and tutorials (some as their versioned spelling)."""


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the corpus (secret files mode 600), checked with the real floors."""
    monkeypatch.delenv(MIN_INTERVAL_ENV, raising=False)
    shutil.copytree(CORPUS, tmp_path / "corpus")
    for secret in (tmp_path / "corpus" / "secrets").rglob("*"):
        if secret.is_file():
            secret.chmod(0o600)
    return tmp_path


@pytest.mark.parametrize("name", FILES, ids=FILES)
def test_manifest_passes_canaryd_check(
    corpus: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``canaryd check`` accepts the file with one provider and one router, printing OK."""
    config = corpus / "c.yaml"
    config.write_text(MAIN.replace("FILE", name), encoding="utf-8")
    code = cli.main(["check", "-c", str(config)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("config OK: ")


def _walk(value: Any, path: str, out: set[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{path}.{key}", out)
    elif isinstance(value, list):
        for item in value:
            _walk(item, f"{path}[]", out)
    else:
        out.add(path)


def _generalised(path: str) -> str:
    """A key path with free map keys written ``*``."""
    path = re.sub(r"\.annotations\..*", ".annotations.*", path)
    path = re.sub(r"\.headers\.(request|response)\.(add|set)\..*", r".headers.\1.\2.*", path)
    path = re.sub(r"match\[\]\.headers\.[^.]+\.", "match[].headers.*.", path)
    return re.sub(r"(templateVariables|primaryScalerQueries)\..*", r"\1.*", path)


def _corpus_documents() -> list[dict[str, Any]]:
    docs = []
    for name in FILES:
        text = (CORPUS / name).read_text(encoding="utf-8")
        docs += [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    return docs


def test_corpus_uses_every_published_field() -> None:
    """Every key path of Flagger's published manifests appears somewhere in the corpus."""
    seen: set[str] = set()
    for doc in _corpus_documents():
        _walk(doc, str(doc["kind"]), seen)
    analysis = {p.replace(".canaryAnalysis.", ".analysis.") for p in seen}
    assert sorted(set(PUBLISHED_FIELDS) - {_generalised(p) for p in analysis}) == []


def test_corpus_uses_every_published_provider() -> None:
    """The corpus has a Canary for each spec.provider of the examples, and one without."""
    providers = [d["spec"].get("provider") for d in _corpus_documents() if d["kind"] == "Canary"]
    assert set(providers) >= PUBLISHED_PROVIDERS
    assert None in providers


def test_corpus_maps_onto_flaggers_behaviour(corpus: Path) -> None:
    """A few mapped values: default mesh istio, skipAnalysis/suspend, refs as variables."""
    config = corpus / "c.yaml"
    config.write_text(MAIN.replace("FILE", "*.yaml"), encoding="utf-8")
    settings = load_config(config, environ={}).settings
    cart, kuma = settings.canary("store/cart"), settings.canary("store/cart-kuma")
    assert cart is not None and (cart.meshProvider, cart.skipAnalysis) == ("istio", True)
    assert kuma is not None and kuma.suspend
    plain = settings.canary("store/cart-plain")
    assert plain is not None and plain.skipAnalysis  # Flagger skips a Canary without analysis
    skipper = settings.canary("edge/shop-skipper")
    assert skipper is not None and (skipper.ingress, skipper.service) == (
        "shop-ingress",
        "shop-svc",
    )
    apisix = settings.canary("edge/shop-apisix")
    assert apisix is not None and apisix.route_name == "shop-route"
    blog = settings.canary("web/blog")
    assert blog is not None
    ranges = [m.thresholdRange for m in blog.analysis.metrics][:2]
    assert [(r.min, r.max) for r in ranges if r is not None] == [(97.0, None), (None, 400.0)]
    datadog = settings.templates["cart-errors-datadog"].provider  # secretRef: files
    assert settings.providers[datadog].model_dump(include={"type", "api_key_file"}) == {
        "type": "datadog",
        "api_key_file": str(corpus / "corpus" / "secrets" / "datadog" / "datadog_api_key"),
    }


def test_every_mapped_field_is_in_the_moving_from_flagger_doc() -> None:
    """docs/flagger.md names every manifest field the mapping knows."""
    from canaryd.config import flagger, flaggermap, flaggerproviders

    doc = (Path(__file__).parent.parent / "docs" / "flagger.md").read_text(encoding="utf-8")
    known = [
        *flagger._CANARY_SPEC_K8S,
        *flagger._CANARY_SPEC_FLAGS,
        *flagger._CANARY_SPEC_REFS,
        *flagger._ANALYSIS_K8S,
        *flagger._WEBHOOK_K8S,
        *flaggerproviders._TEMPLATE_PROVIDER_K8S,
        *flaggerproviders._ALERT_PROVIDER_K8S,
        *flaggermap.NOTIFIER_TYPES,
        "metricsServer",
        "canaryAnalysis",
        "secretRef",
        "headers",
        "insecureSkipVerify",
    ]
    quoted = " ".join(re.findall(r"`([^`]+)`", doc))
    assert [
        key for key in known if not re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", quoted)
    ] == []
