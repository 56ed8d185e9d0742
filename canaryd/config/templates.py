"""Query templates: Flagger's Go-template subset and the built-in metrics.

Rendering never executes code. :func:`render` supports the template language
Flagger's documents and examples use (docs/flagger.md, "Templates"): the
variables ``name``, ``namespace``, ``target``, ``service``, ``ingress``,
``route``, ``interval`` and ``variables.X`` (also spelled ``.name``),
``printf``, ``index variables "X"``, ``$x :=`` assignments, ``{{-``/``-}}``
trimming and comments. An unknown variable or an unclosed ``{{`` is a
:class:`~canaryd.errors.TemplateError`, never an empty string.

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
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from canaryd.errors import TemplateError

BUILTIN_METRICS = ("request-success-rate", "request-duration")
"""Metric names that need no template: their query comes from the canary's meshProvider."""

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)?")


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


def render(template: str, variables: Mapping[str, str]) -> str:
    """Render a query template: Flagger's Go-template subset, without code execution.

    An action ``{{ ... }}`` (``{{-`` and ``-}}`` trim the whitespace beside
    it, ``{{/* ... */}}`` is a comment) holds one of:

    - a variable: ``name``, ``.name`` or ``variables.X`` (``X`` from the
      canary's or metric's ``variables``);
    - ``printf "FORMAT" ARG...`` (verbs ``%s``, ``%v``, ``%d``, ``%q``, ``%%``);
    - ``index variables "X"``;
    - a string literal, or ``$x`` of an earlier ``{{ $x := ... }}``.

    Args:
        template: the query text.
        variables: flat mapping of defined names (``variables.X`` keys included),
            as built by :func:`template_variables`.

    Returns:
        The query with every action replaced.

    Raises:
        TemplateError: an unclosed ``{{``, an action outside the subset, or an
            unknown variable (the message lists the defined ones).
    """
    out: list[str] = []
    local: dict[str, str] = {}
    pos = 0
    while (start := template.find("{{", pos)) >= 0:
        end = template.find("}}", start + 2)
        if end < 0:
            raise TemplateError(f"unclosed '{{{{' at {_where(template, start)}")
        text, inner = template[pos:start], template[start + 2 : end]
        pos = end + 2
        if inner.startswith("-") and inner[1:2].isspace():
            text, inner = text.rstrip(), inner[1:]
        if inner.endswith("-") and inner[-2:-1].isspace():
            inner = inner[:-1]
            pos = len(template) - len(template[pos:].lstrip())
        out.append(text)
        out.append(_action(inner, variables, local, _where(template, start)))
    out.append(template[pos:])
    return "".join(out)


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|:=|\S+')
_VERB = re.compile(r"%[-+# 0-9.]*[a-zA-Z%]")


def _action(inner: str, variables: Mapping[str, str], local: dict[str, str], where: str) -> str:
    """The output of one action; an assignment stores its value and outputs nothing."""
    body = inner.strip()
    if body.startswith("/*") and body.endswith("*/"):
        return ""
    words = _TOKEN.findall(body)
    if len(words) >= 3 and words[1] == ":=" and re.fullmatch(r"\$\w+", words[0]):
        local[words[0]] = _call(words[2:], inner, variables, local, where)
        return ""
    return _call(words, inner, variables, local, where)


def _call(
    words: list[str],
    inner: str,
    variables: Mapping[str, str],
    local: dict[str, str],
    where: str,
) -> str:
    """Evaluate a command: one operand, ``printf`` or ``index variables "X"``."""
    if words and words[0] == "printf" and len(words) >= 2:
        args = [_operand(w, inner, variables, local, where) for w in words[1:]]
        return _printf(args[0], args[1:], where)
    if len(words) == 3 and words[0] == "index" and words[1] == "variables":
        key = _operand(words[2], inner, variables, local, where)
        return _lookup(f"variables.{key}", variables, where)
    if len(words) == 1:
        return _operand(words[0], inner, variables, local, where)
    raise TemplateError(
        f"{{{{{inner}}}}} at {where} is not supported; use a variable such as "
        "{{ target }} or {{ variables.X }}, printf or index (see docs/flagger.md)"
    )


def _operand(
    word: str, inner: str, variables: Mapping[str, str], local: dict[str, str], where: str
) -> str:
    """A string literal, a ``$local`` or a template variable."""
    if word.startswith("`") and word.endswith("`") and len(word) >= 2:
        return word[1:-1]
    if word.startswith('"') and word.endswith('"') and len(word) >= 2:
        return re.sub(r"\\(.)", r"\1", word[1:-1])
    if word.startswith("$"):
        if word not in local:
            raise TemplateError(f"undefined {word} at {where}")
        return local[word]
    name = word.removeprefix(".")
    if not _VARIABLE.fullmatch(name):
        raise TemplateError(
            f"{{{{{inner}}}}} at {where} is not a variable name; only "
            "{{ name }} and {{ variables.X }} placeholders are supported"
        )
    return _lookup(name, variables, where)


def _printf(fmt: str, args: list[str], where: str) -> str:
    """Go's ``printf`` for string arguments."""
    rest = iter(args)

    def verb(match: re.Match[str]) -> str:
        if match.group() == "%%":
            return "%"
        value = next(rest, None)
        if value is None:
            return f"%!{match.group()[-1]}(MISSING)"
        return repr(value).replace("'", '"') if match.group().endswith("q") else value

    text = _VERB.sub(verb, fmt)
    if next(rest, None) is not None:
        raise TemplateError(f"printf at {where} has more arguments than verbs")
    return text


def _lookup(name: str, variables: Mapping[str, str], where: str) -> str:
    """The value of one variable."""
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
    service: str | None = None,
    ingress: str | None = None,
    route: str | None = None,
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
        service: the ``service`` variable (default: ``target``, as in Flagger).
        ingress: the ``ingress`` variable (default: ``target``).
        route: the ``route`` variable (default: ``target``).
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
        "service": service or target,
        "ingress": ingress or target,
        "route": route or target,
        "interval": interval_text(interval, provider_type),
    }
    values.update({f"variables.{k}": v for k, v in (variables or {}).items()})
    return values


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
