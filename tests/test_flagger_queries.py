"""canaryd's built-in queries are Flagger's: each mesh's two queries, rendered for the same inputs.

The expected strings below are Flagger's query text (``pkg/metrics/observers``)
with Flagger's template functions replaced by the inputs of :data:`INPUTS`.
Both sides are compared after removing whitespace and a trailing comma before
``}``: PromQL reads them the same.
"""

from __future__ import annotations

import re

import pytest

from canaryd.config.meshqueries import builtin_query, builtin_variables
from canaryd.config.templates import render, template_variables

INPUTS = {
    "namespace": "prod",
    "name": "web",
    "target": "podinfo",
    "service": "podinfo-svc",
    "ingress": "podinfo-ing",
    "route": "podinfo-route",
}

PODS = 'kubernetes_namespace="prod",kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
ISTIO = (
    'reporter="destination",destination_workload_namespace="prod",destination_workload=~"podinfo"'
)
NGINX = 'namespace="prod",ingress="podinfo-ing",canary!=""'
CONTOUR = 'envoy_cluster_name=~"prod_podinfo-svc-canary_[0-9a-zA-Z-]+"'
GLOO = 'envoy_cluster_name=~"prod-podinfo-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+"'
KUMA = 'service=~"podinfo-canary_prod_svc_[0-9a-zA-Z-]+"'
OSM = 'destination_namespace="prod",destination_kind="Deployment",destination_name="podinfo"'
TRAEFIK = 'service=~"prod-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd"'
SKIPPER = 'route=~"kube(ew)?_prod__podinfo_ing_canary__.*__podinfo_svc_canary(_[0-9]+)?"'
APISIX = 'route=~"prod_podinfo-route-podinfo-canary_.+"'
KNATIVE = 'envoy_cluster_name=~"prod/podinfo-route"'


def envoy(selector: str) -> tuple[str, str]:
    """Flagger's two queries over Envoy's upstream statistics for one cluster selector."""
    return (
        f'sum(rate(envoy_cluster_upstream_rq{{{selector},envoy_response_code!~"5.*"}}[1m]))'
        f"/sum(rate(envoy_cluster_upstream_rq{{{selector}}}[1m]))*100",
        f"histogram_quantile(0.99,sum(rate(envoy_cluster_upstream_rq_time_bucket{{{selector}}}"
        "[1m]))by(le))",
    )


HTTP = (
    f'sum(rate(http_request_duration_seconds_count{{{PODS},status!~"5.*"}}[1m]))'
    f"/sum(rate(http_request_duration_seconds_count{{{PODS}}}[1m]))*100",
    f"histogram_quantile(0.99,sum(rate(http_request_duration_seconds_bucket{{{PODS}}}[1m]))by(le))",
)

FLAGGER = {
    "apisix": (
        f'sum(rate(apisix_http_status{{{APISIX},code!~"5.."}}[1m]))'
        f"/sum(rate(apisix_http_status{{{APISIX}}}[1m]))*100",
        f'histogram_quantile(0.99,sum(rate(apisix_http_latency_bucket{{type=~"request",{APISIX}}}'
        "[1m]))by(le))",
    ),
    "appmesh": envoy(PODS),
    "contour": envoy(CONTOUR),
    "gatewayapi": HTTP,
    "gloo": envoy(GLOO),
    "istio": (
        f'sum(rate(istio_requests_total{{{ISTIO},response_code!~"5.*"}}[1m]))'
        f"/sum(rate(istio_requests_total{{{ISTIO}}}[1m]))*100",
        f"histogram_quantile(0.99,sum(rate(istio_request_duration_milliseconds_bucket{{{ISTIO}}}"
        "[1m]))by(le))",
    ),
    "knative": envoy(KNATIVE),
    "kubernetes": HTTP,
    "kuma": envoy(KUMA),
    "linkerd": (
        'sum(rate(response_total{namespace="prod",deployment=~"podinfo",'
        'classification!="failure",direction="inbound"}[1m]))'
        '/sum(rate(response_total{namespace="prod",deployment=~"podinfo",direction="inbound"}'
        "[1m]))*100",
        'histogram_quantile(0.99,sum(rate(response_latency_ms_bucket{namespace="prod",'
        'deployment=~"podinfo",direction="inbound"}[1m]))by(le))',
    ),
    "nginx": (
        f'sum(rate(nginx_ingress_controller_requests{{{NGINX},status!~"5.*"}}[1m]))'
        f"/sum(rate(nginx_ingress_controller_requests{{{NGINX}}}[1m]))*100",
        f"sum(rate(nginx_ingress_controller_response_duration_seconds_sum{{{NGINX}}}[1m]))"
        f"/sum(rate(nginx_ingress_controller_response_duration_seconds_count{{{NGINX}}}[1m]))"
        "*1000",
    ),
    "osm": (
        f'sum(rate(osm_request_total{{{OSM},response_code!~"5.*"}}[1m]))'
        f"/sum(rate(osm_request_total{{{OSM}}}[1m]))*100",
        f"histogram_quantile(0.99,sum(rate(osm_request_duration_ms_bucket{{{OSM}}}[1m]))by(le))",
    ),
    "skipper": (
        f'sum(rate(skipper_response_duration_seconds_bucket{{{SKIPPER},code!~"5..",le="+Inf"}}'
        f'[1m]))/sum(rate(skipper_response_duration_seconds_bucket{{{SKIPPER},le="+Inf"}}[1m]))'
        "*100",
        f"sum(rate(skipper_serve_route_duration_seconds_sum{{{SKIPPER}}}[1m]))"
        f"/sum(rate(skipper_serve_route_duration_seconds_count{{{SKIPPER}}}[1m]))*1000",
    ),
    "traefik": (
        f"sum(rate(traefik_service_request_duration_seconds_bucket"
        f'{{{TRAEFIK},code!~"5..",le="+Inf"}}[1m]))'
        f"/sum(rate(traefik_service_request_duration_seconds_bucket"
        f'{{{TRAEFIK},le="+Inf"}}[1m]))*100',
        f"histogram_quantile(0.99,sum(rate(traefik_service_request_duration_seconds_bucket"
        f"{{{TRAEFIK}}}[1m]))by(le))*1000",
    ),
}


def normalised(query: str) -> str:
    """The query without whitespace and without a comma right before ``}``."""
    return re.sub(r"\s+", "", query).replace(",}", "}")


def rendered(metric: str, mesh: str) -> str:
    """The built-in query of ``mesh`` rendered for :data:`INPUTS` over one minute."""
    values = template_variables(
        namespace=INPUTS["namespace"],
        name=INPUTS["name"],
        target=INPUTS["target"],
        interval=60,
        service=INPUTS["service"],
        ingress=INPUTS["ingress"],
        route=INPUTS["route"],
    )
    return render(builtin_query(metric, mesh), builtin_variables(mesh, values))


@pytest.mark.parametrize("mesh", sorted(FLAGGER), ids=sorted(FLAGGER))
def test_success_rate_query_is_flaggers(mesh: str) -> None:
    """request-success-rate renders to Flagger's query for the mesh."""
    assert normalised(rendered("request-success-rate", mesh)) == normalised(FLAGGER[mesh][0])


@pytest.mark.parametrize("mesh", sorted(FLAGGER), ids=sorted(FLAGGER))
def test_duration_query_is_flaggers(mesh: str) -> None:
    """request-duration renders to Flagger's query for the mesh."""
    assert normalised(rendered("request-duration", mesh)) == normalised(FLAGGER[mesh][1])


@pytest.mark.parametrize(
    ("mesh", "same_as"),
    [("gatewayapi:v1beta1", "kubernetes"), ("gloo:v1", "gloo"), ("appmesh:v1beta2", "appmesh")],
    ids=["gatewayapi-version", "gloo-version", "appmesh-version"],
)
def test_flagger_provider_prefixes(mesh: str, same_as: str) -> None:
    """Flagger's versioned provider names pick the same observer as the bare name."""
    for metric in ("request-success-rate", "request-duration"):
        assert builtin_query(metric, mesh) == builtin_query(metric, same_as)
