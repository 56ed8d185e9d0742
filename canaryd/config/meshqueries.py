"""Built-in metrics: Flagger's PromQL for each ``meshProvider`` (docs/flagger.md).

Built-in metrics (:data:`BUILTIN_METRICS`) need no template: their PromQL comes
from the canary's ``meshProvider`` (:func:`builtin_query`) and is Flagger's, so
the same dashboards and thresholds carry over (``tests/test_flagger_queries.py``
compares each mesh's two queries with Flagger's text):

- ``request-success-rate``: percent (0-100) of requests not answered with 5xx;
- ``request-duration``: p99 latency in milliseconds (``nginx`` and ``skipper``:
  mean latency, as in Flagger; ``haproxy``: see below).

``contour`` and ``skipper`` select on ``service``, ``nginx`` and ``skipper`` on
``ingress``, ``apisix`` and ``knative`` on ``route``; each defaults to the
target, as in Flagger. Skipper's variables are encoded as Skipper names routes
(:func:`builtin_variables`). ``kubernetes`` and ``gatewayapi`` use Flagger's
HTTP observer (the application's own histogram).

canaryd's own additions (no Flagger equivalent):

- ``prometheus``: a plain application instrumented the usual way, scraped with
  ``job="<target>"``: a counter ``http_requests_total{job, code}`` (``code`` is
  the HTTP status, e.g. ``"200"``) and a histogram
  ``http_request_duration_seconds_bucket{job, le}`` (seconds, as the Prometheus
  client libraries export it);
- ``envoy``: a standalone Envoy whose cluster for the canary is named
  ``<target>`` (Flagger's Crossover queries without the Kubernetes label), its
  statistics scraped from the admin API's ``/stats/prometheus``;
- ``traefik-file``: Traefik's file provider, canary service ``<target>@file``
  (Flagger's ``traefik`` queries, which only match Kubernetes CRD service
  names, with that selector);
- ``haproxy``: HAProxy's built-in exporter, canary server ``server="<target>"``.
  HAProxy exports no latency histogram, so ``request-duration`` is its average
  response time over the last 1024 requests, in milliseconds (not p99).

The queries are templates for :func:`canaryd.config.templates.render`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from canaryd.errors import TemplateError

BUILTIN_METRICS = ("request-success-rate", "request-duration")
"""Metric names that need no template: their query comes from the canary's meshProvider."""


def _ratio(series: str, selector: str, ok: str, extra: str = "", *, ok_first: bool = False) -> str:
    """``sum(rate(ok)) / sum(rate(all)) * 100`` for one counter and its selector.

    ``extra`` is appended to the denominator's selector (the numerator's ``ok``
    repeats it); ``ok_first`` puts ``ok`` before the selector's last matcher,
    where Flagger's Linkerd query has it.
    """
    if ok_first:
        head, _, last = selector.rpartition(",")
        ok_selector = f"{head},{ok},{last}"
    else:
        ok_selector = f"{selector},{ok}"
    all_selector = f"{selector},{extra}" if extra else selector
    return (
        f"sum(rate({series}{{{ok_selector}}}[{{{{ interval }}}}]))\n"
        f"/\nsum(rate({series}{{{all_selector}}}[{{{{ interval }}}}]))\n* 100"
    )


def _p99(bucket: str, selector: str, scale: str = "") -> str:
    """``histogram_quantile(0.99, ...)`` over one histogram, optionally scaled to ms."""
    query = (
        f"histogram_quantile(0.99, sum(rate({bucket}{{{selector}}}[{{{{ interval }}}}])) by (le))"
    )
    return f"{query} * {scale}" if scale else query


def _mean_ms(prefix: str, selector: str) -> str:
    """Mean latency in ms from a summary's ``_sum`` and ``_count`` in seconds."""
    return (
        f"sum(rate({prefix}_sum{{{selector}}}[{{{{ interval }}}}]))\n"
        f"/\nsum(rate({prefix}_count{{{selector}}}[{{{{ interval }}}}]))\n* 1000"
    )


def _mesh(success: str, duration: str) -> dict[str, str]:
    return {"request-success-rate": success, "request-duration": duration}


_ISTIO = (
    'reporter="destination",destination_workload_namespace="{{ namespace }}",'
    'destination_workload=~"{{ target }}"'
)
_LINKERD = 'namespace="{{ namespace }}",deployment=~"{{ target }}"'
_NGINX = 'namespace="{{ namespace }}",ingress="{{ ingress }}",canary!=""'
_CONTOUR = 'envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+"'
_GLOO = (
    'envoy_cluster_name=~"{{ namespace }}-{{ target }}-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+"'
)
_KUMA = 'service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+"'
_PODS = (
    'kubernetes_namespace="{{ namespace }}",'
    'kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
)
_OSM = (
    'destination_namespace="{{ namespace }}",destination_kind="Deployment",'
    'destination_name="{{ target }}"'
)
_TRAEFIK = 'service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd"'
_SKIPPER = (
    'route=~"kube(ew)?_{{ namespace }}__{{ ingress }}_canary__.*__{{ service }}_canary(_[0-9]+)?"'
)
_APISIX = 'route=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+"'
_KNATIVE = 'envoy_cluster_name=~"{{ namespace }}/{{ route }}"'
_ENVOY = 'envoy_cluster_name="{{ target }}"'
_TRAEFIK_FILE = 'service="{{ target }}@file"'
_HAPROXY = 'server="{{ target }}"'
_PROMETHEUS = 'job="{{ target }}"'


def _envoy(selector: str) -> dict[str, str]:
    """Flagger's queries over Envoy's upstream cluster statistics."""
    return _mesh(
        _ratio("envoy_cluster_upstream_rq", selector, 'envoy_response_code!~"5.*"'),
        _p99("envoy_cluster_upstream_rq_time_bucket", selector),
    )


_HTTP = _mesh(
    _ratio("http_request_duration_seconds_count", _PODS, 'status!~"5.*"'),
    _p99("http_request_duration_seconds_bucket", _PODS),
)
"""Flagger's ``HttpObserver`` (``kubernetes`` and ``gatewayapi``): the application's histogram."""

_QUERIES: dict[str, dict[str, str]] = {
    "apisix": _mesh(
        _ratio("apisix_http_status", _APISIX, 'code!~"5.."'),
        _p99("apisix_http_latency_bucket", f'type=~"request",{_APISIX}'),
    ),
    "appmesh": _envoy(_PODS),
    "contour": _envoy(_CONTOUR),
    "envoy": _envoy(_ENVOY),
    "gatewayapi": _HTTP,
    "gloo": _envoy(_GLOO),
    "haproxy": _mesh(
        _ratio("haproxy_server_http_responses_total", _HAPROXY, 'code!="5xx"'),
        f"max(haproxy_server_response_time_average_seconds{{{_HAPROXY}}}) * 1000",
    ),
    "istio": _mesh(
        _ratio("istio_requests_total", _ISTIO, 'response_code!~"5.*"'),
        _p99("istio_request_duration_milliseconds_bucket", _ISTIO),
    ),
    "knative": _envoy(_KNATIVE),
    "kubernetes": _HTTP,
    "kuma": _envoy(_KUMA),
    "linkerd": _mesh(
        _ratio(
            "response_total",
            f'{_LINKERD},direction="inbound"',
            'classification!="failure"',
            ok_first=True,
        ),
        _p99("response_latency_ms_bucket", f'{_LINKERD},direction="inbound"'),
    ),
    "nginx": _mesh(
        _ratio("nginx_ingress_controller_requests", _NGINX, 'status!~"5.*"'),
        _mean_ms("nginx_ingress_controller_response_duration_seconds", _NGINX),
    ),
    "osm": _mesh(
        _ratio("osm_request_total", _OSM, 'response_code!~"5.*"'),
        _p99("osm_request_duration_ms_bucket", _OSM),
    ),
    "prometheus": _mesh(
        _ratio("http_requests_total", _PROMETHEUS, 'code!~"5.."'),
        _p99("http_request_duration_seconds_bucket", _PROMETHEUS, "1000"),
    ),
    "skipper": _mesh(
        _ratio(
            "skipper_response_duration_seconds_bucket",
            _SKIPPER,
            'code!~"5..",le="+Inf"',
            'le="+Inf"',
        ),
        _mean_ms("skipper_serve_route_duration_seconds", _SKIPPER),
    ),
    "traefik": _mesh(
        _ratio(
            "traefik_service_request_duration_seconds_bucket",
            _TRAEFIK,
            'code!~"5..",le="+Inf"',
            'le="+Inf"',
        ),
        _p99("traefik_service_request_duration_seconds_bucket", _TRAEFIK, "1000"),
    ),
    "traefik-file": _mesh(
        _ratio(
            "traefik_service_request_duration_seconds_bucket",
            _TRAEFIK_FILE,
            'code!~"5..",le="+Inf"',
            'le="+Inf"',
        ),
        _p99("traefik_service_request_duration_seconds_bucket", _TRAEFIK_FILE, "1000"),
    ),
}

MESH_PROVIDERS: tuple[str, ...] = tuple(sorted(_QUERIES))
"""meshProvider values with built-in metrics (Flagger's ``name:version`` spelling is accepted)."""


def _mesh_name(mesh: str) -> str:
    """Map Flagger spellings (``appmesh:v1beta2``, ``smi:linkerd``) to a mesh name."""
    kind, _, rest = mesh.strip().lower().partition(":")
    return rest if kind == "smi" and rest else kind


def builtin_query(metric: str, mesh: str) -> str:
    """Return the PromQL template of a built-in metric for a mesh provider.

    Args:
        metric: ``request-success-rate`` or ``request-duration``.
        mesh: a meshProvider name from :data:`MESH_PROVIDERS`; Flagger's
            ``name:version`` forms (``appmesh:v1beta2``, ``smi:linkerd``) are accepted.

    Returns:
        A template for :func:`render` (it uses ``{{ interval }}`` and selectors).

    Raises:
        TemplateError: the metric is not a built-in or the mesh has no built-ins.
    """
    if metric not in BUILTIN_METRICS:
        raise TemplateError(
            f"unknown built-in metric {metric!r}; built-ins: {', '.join(BUILTIN_METRICS)} "
            "(other metrics need templateRef or query)"
        )
    name = _mesh_name(mesh)
    if name not in _QUERIES:
        raise TemplateError(
            f"unknown meshProvider {mesh!r}; supported: {', '.join(MESH_PROVIDERS)}"
        )
    return _QUERIES[name][metric]


def builtin_variables(mesh: str, values: Mapping[str, str]) -> dict[str, str]:
    """The variables a mesh's built-in queries see (Skipper's route-name encoding).

    Skipper names routes with every non-word character of the namespace,
    ingress, service and target replaced by ``_``; Flagger encodes the
    variables the same way before rendering (see docs/flagger.md).
    """
    out = dict(values)
    if _mesh_name(mesh) == "skipper":
        for key in ("name", "namespace", "target", "service", "ingress"):
            if key in out:
                out[key] = re.sub(r"\W", "_", out[key])
    return out
