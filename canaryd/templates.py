"""Query templates: Flagger's ``{{ var }}`` syntax and the built-in metrics.

Rendering is plain substitution, never code execution: ``{{ name }}`` (any
whitespace inside the braces, an optional Go-style leading dot as in
``{{ .name }}``) is replaced by the variable's value. The variables a canary
defines are ``namespace``, ``name``, ``target``, ``interval`` and
``variables.X`` for every entry ``X`` of the canary's (or metric's)
``variables``; see :func:`template_variables`. An unknown variable or an
unclosed ``{{`` is a :class:`~canaryd.errors.TemplateError`, never an empty string.

Built-in metrics (:data:`BUILTIN_METRICS`) need no template: their PromQL comes
from the canary's ``meshProvider`` (:func:`builtin_query`). The queries are
Flagger's, so the same dashboards and thresholds carry over:

- ``request-success-rate``: percent (0-100) of requests not answered with 5xx;
- ``request-duration``: p99 latency in milliseconds (``nginx`` and ``skipper``:
  mean latency, as in Flagger; ``haproxy``: see below).

Meshes whose queries need more than the standard variables:

- ``nginx`` selects on the ingress: set ``variables: {ingress: NAME}``;
- ``skipper`` needs ``variables.ingress`` too (route names are built from
  namespace, ingress and target, which must be made of word characters);
- ``apisix`` selects on the route: set ``variables: {route: NAME}``.

canaryd's own additions (no Flagger equivalent):

- ``prometheus``: a plain application instrumented the usual way, scraped with
  ``job="<target>"``: a counter ``http_requests_total{job, code}`` (``code`` is
  the HTTP status, e.g. ``"200"``) and a histogram
  ``http_request_duration_seconds_bucket{job, le}`` (seconds, as the Prometheus
  client libraries export it);
- ``envoy``: a standalone Envoy whose cluster for the canary is named
  ``<target>`` (Flagger's Crossover queries without the Kubernetes label);
- ``haproxy``: HAProxy's built-in exporter, canary server ``server="<target>"``.
  HAProxy exports no latency histogram, so ``request-duration`` is its average
  response time over the last 1024 requests, in milliseconds (not p99).

``gatewayapi`` has no built-in metrics (the series depend on the Gateway
implementation; Flagger has none either): use a template, or set
``meshProvider`` to the implementation (``istio``, ``contour``, ``envoy``, ...).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from canaryd.errors import TemplateError

BUILTIN_METRICS = ("request-success-rate", "request-duration")
"""Metric names that need no template: their query comes from the canary's meshProvider."""

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)?")


def _ratio(series: str, selector: str, ok: str) -> str:
    """``sum(rate(ok)) / sum(rate(all)) * 100`` for one counter and its selector."""
    ok_selector = f"{selector},{ok}" if selector else ok
    return (
        f"sum(rate({series}{{{ok_selector}}}[{{{{ interval }}}}]))\n"
        f"/\nsum(rate({series}{{{selector}}}[{{{{ interval }}}}]))\n* 100"
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
_LINKERD = 'namespace="{{ namespace }}",deployment=~"{{ target }}",direction="inbound"'
_NGINX = 'namespace="{{ namespace }}",ingress="{{ variables.ingress }}"'
_CONTOUR = 'envoy_cluster_name=~"{{ namespace }}_{{ target }}-canary_[0-9a-zA-Z-]+"'
_GLOO = 'envoy_cluster_name=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+"'
_KUMA = 'service=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+"'
_APPMESH = (
    'kubernetes_namespace="{{ namespace }}",'
    'kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
)
_OSM = (
    'destination_namespace="{{ namespace }}",destination_kind="Deployment",'
    'destination_name="{{ target }}"'
)
_TRAEFIK = 'service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd"'
_SKIPPER = (
    'route=~"kube(ew)?_{{ namespace }}__{{ variables.ingress }}_canary__.*__'
    '{{ target }}_canary(_[0-9]+)?"'
)
_APISIX = 'route=~"{{ namespace }}_{{ variables.route }}-{{ target }}-canary_.+"'
_ENVOY = 'envoy_cluster_name="{{ target }}"'
_HAPROXY = 'server="{{ target }}"'
_PROMETHEUS = 'job="{{ target }}"'

_QUERIES: dict[str, dict[str, str]] = {
    "apisix": _mesh(
        _ratio("apisix_http_status", _APISIX, 'code!~"5.."'),
        _p99("apisix_http_latency_bucket", f'type=~"request",{_APISIX}'),
    ),
    "appmesh": _mesh(
        _ratio("envoy_cluster_upstream_rq", _APPMESH, 'envoy_response_code!~"5.*"'),
        _p99("envoy_cluster_upstream_rq_time_bucket", _APPMESH),
    ),
    "contour": _mesh(
        _ratio("envoy_cluster_upstream_rq", _CONTOUR, 'envoy_response_code!~"5.*"'),
        _p99("envoy_cluster_upstream_rq_time_bucket", _CONTOUR),
    ),
    "envoy": _mesh(
        _ratio("envoy_cluster_upstream_rq", _ENVOY, 'envoy_response_code!~"5.*"'),
        _p99("envoy_cluster_upstream_rq_time_bucket", _ENVOY),
    ),
    "gloo": _mesh(
        _ratio("envoy_cluster_upstream_rq", _GLOO, 'envoy_response_code!~"5.*"'),
        _p99("envoy_cluster_upstream_rq_time_bucket", _GLOO),
    ),
    "haproxy": _mesh(
        _ratio("haproxy_server_http_responses_total", _HAPROXY, 'code!="5xx"'),
        f"max(haproxy_server_response_time_average_seconds{{{_HAPROXY}}}) * 1000",
    ),
    "istio": _mesh(
        _ratio("istio_requests_total", _ISTIO, 'response_code!~"5.*"'),
        _p99("istio_request_duration_milliseconds_bucket", _ISTIO),
    ),
    "kuma": _mesh(
        _ratio("envoy_cluster_upstream_rq", _KUMA, 'envoy_response_code!~"5.*"'),
        _p99("envoy_cluster_upstream_rq_time_bucket", _KUMA),
    ),
    "linkerd": _mesh(
        _ratio("response_total", _LINKERD, 'classification!="failure"'),
        _p99("response_latency_ms_bucket", _LINKERD),
    ),
    "nginx": _mesh(
        _ratio("nginx_ingress_controller_requests", _NGINX, 'status!~"5.*"'),
        _mean_ms("nginx_ingress_controller_ingress_upstream_latency_seconds", _NGINX),
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
        _ratio("skipper_response_duration_seconds_bucket", f'{_SKIPPER},le="+Inf"', 'code!~"5.."'),
        _mean_ms("skipper_serve_route_duration_seconds", _SKIPPER),
    ),
    "traefik": _mesh(
        _ratio(
            "traefik_service_request_duration_seconds_bucket",
            f'{_TRAEFIK},le="+Inf"',
            'code!~"5.."',
        ),
        _p99("traefik_service_request_duration_seconds_bucket", _TRAEFIK, "1000"),
    ),
}

MESH_PROVIDERS: tuple[str, ...] = tuple(sorted(_QUERIES))
"""meshProvider values with built-in metrics (Flagger's ``name:version`` spelling is accepted)."""

_WITHOUT_BUILTINS = {
    "gatewayapi": (
        "the series depend on the Gateway implementation; use a template, or set "
        "meshProvider to the implementation (e.g. istio, contour, envoy)"
    ),
}


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
    if name in _WITHOUT_BUILTINS:
        raise TemplateError(
            f"meshProvider {mesh!r} has no built-in metrics: {_WITHOUT_BUILTINS[name]}"
        )
    if name not in _QUERIES:
        raise TemplateError(
            f"unknown meshProvider {mesh!r}; supported: {', '.join(MESH_PROVIDERS)}"
        )
    return _QUERIES[name][metric]


def render(template: str, variables: Mapping[str, str]) -> str:
    """Substitute ``{{ var }}`` placeholders with their values.

    Args:
        template: query text with ``{{ name }}``, ``{{ .name }}`` or
            ``{{ variables.X }}`` placeholders (any whitespace inside the braces).
        variables: flat mapping of defined names (``variables.X`` keys included),
            as built by :func:`template_variables`.

    Returns:
        The query with every placeholder replaced.

    Raises:
        TemplateError: a ``{{`` is not closed, a placeholder is not a plain
            variable name, or it names a variable that is not defined (the
            message lists the defined ones).
    """
    out: list[str] = []
    pos = 0
    while (start := template.find("{{", pos)) >= 0:
        end = template.find("}}", start + 2)
        if end < 0:
            raise TemplateError(f"unclosed '{{{{' at {_where(template, start)}")
        out.append(template[pos:start])
        out.append(_lookup(template[start + 2 : end], variables, _where(template, start)))
        pos = end + 2
    out.append(template[pos:])
    return "".join(out)


def _lookup(expr: str, variables: Mapping[str, str], where: str) -> str:
    """The value of one placeholder's inner text."""
    name = expr.strip().removeprefix(".").strip()
    if not _VARIABLE.fullmatch(name):
        raise TemplateError(
            f"{{{{{expr}}}}} at {where} is not a variable name; only "
            "{{ name }} and {{ variables.X }} placeholders are supported"
        )
    if name not in variables:
        defined = ", ".join(sorted(variables)) or "none"
        raise TemplateError(f"unknown variable {name!r} at {where}; defined: {defined}")
    return variables[name]


def _where(text: str, index: int) -> str:
    """``line L, column C`` (1-based) of an index into ``text``."""
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line}, column {column}"


def template_variables(
    *,
    namespace: str,
    name: str,
    target: str,
    interval: float,
    variables: Mapping[str, str] | None = None,
    provider_type: str = "prometheus",
) -> dict[str, str]:
    """Build the variables a query template can use.

    Args:
        namespace: the canary's namespace.
        name: the canary's name.
        target: what built-in queries select on (``CanaryConfig.target_name``).
        interval: the metric's interval in seconds, rendered as a duration of
            the query language of ``provider_type`` (:func:`interval_text`).
        variables: the canary's and metric's extra variables (``variables.X``).
        provider_type: the type of the provider the query goes to.

    Returns:
        A flat mapping for :func:`render`.

    Raises:
        TemplateError: the interval is not a positive duration.
    """
    values = {
        "namespace": namespace,
        "name": name,
        "target": target,
        "interval": interval_text(interval, provider_type),
    }
    values.update({f"variables.{k}": v for k, v in (variables or {}).items()})
    return values


def promql_duration(seconds: float) -> str:
    """Format seconds as a PromQL duration: ``60`` is ``1m``, ``90`` is ``1m30s``.

    Raises:
        TemplateError: the duration is not positive or is below one millisecond.
    """
    ms = round(seconds * 1000)
    if ms <= 0:
        raise TemplateError(f"interval must be at least 1ms, got {seconds:g}s")
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts)


def interval_text(seconds: float, provider_type: str) -> str:
    """``{{ interval }}`` as the provider's query language writes a duration.

    PromQL's ``1m30s`` everywhere (``web`` included), except where the language
    cannot read it (docs/providers.md): Graphite writes minutes ``min``
    (``1min30s``; it reads ``1m`` as an error) and has no milliseconds (rounded
    up to a second); InfluxQL takes one unit only, so InfluxDB gets the largest
    unit that is exact (``90s``, ``1m``, ``500ms``), which Flux reads too.

    Raises:
        TemplateError: the duration is not positive or is below one millisecond.
    """
    text = promql_duration(seconds)
    if provider_type == "graphite":
        whole = promql_duration(max(1, math.ceil(seconds)))
        return re.sub(r"(\d+)m(?!s)", r"\1min", whole)
    if provider_type == "influxdb":
        ms = round(seconds * 1000)
        for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            if ms % size == 0:
                return f"{ms // size}{unit}"
        return f"{ms}ms"
    return text
