"""Query templates: rendering, the built-in metrics per mesh, and their values in Prometheus."""

from __future__ import annotations

import pytest
from prom import PrometheusServer, histogram_samples, open_provider
from support import eventually

from canaryd.config.meshqueries import BUILTIN_METRICS, MESH_PROVIDERS, builtin_query
from canaryd.config.templates import (
    interval_text,
    promql_duration,
    render,
    template_variables,
)
from canaryd.errors import TemplateError

VARIABLES = template_variables(
    namespace="prod",
    name="web",
    target="web-canary",
    interval=60,
    variables={"env": "eu", "ingress": "web-ingress", "route": "web-route"},
)
DEFINED = (
    "ingress, interval, name, namespace, route, service, target, variables.env, "
    "variables.ingress, variables.route"
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('up{job="{{ target }}"}', 'up{job="web-canary"}'),
        ("{{namespace}}/{{name}}", "prod/web"),
        ("{{   target\t}}", "web-canary"),
        ("{{ .name }}", "web"),
        ("{{ variables.env }}", "eu"),
        ("rate(x[{{ interval }}])", "rate(x[1m])"),
        ('sum(\n  x{ns="{{ namespace }}"}\n)', 'sum(\n  x{ns="prod"}\n)'),
        ('no placeholders {a="b"}', 'no placeholders {a="b"}'),
        ("{{ target }}}", "web-canary}"),
        ("{{ service }}|{{ ingress }}|{{ route }}", "web-canary|web-canary|web-canary"),
        ('{{ printf "%s_%s-%d" namespace target name }}', "prod_web-canary-web"),
        ('{{- $r := printf "a%sb" namespace -}}\n x{r="{{ $r }}"}', 'x{r="aprodb"}'),
        ('{{ index variables "env" }}', "eu"),
        ("a  {{- target -}}  b", "aweb-canaryb"),
        ('{{/* a comment */}}{{ "lit" }}{{ `raw` }}', "litraw"),
        ('{{ printf "%q 100%%" target }}', '"web-canary" 100%'),
    ],
    ids=[
        "selector",
        "no-spaces",
        "odd-whitespace",
        "go-style-dot",
        "variables-x",
        "interval",
        "multiline",
        "no-placeholders",
        "brace-after",
        "service-ingress-route",
        "printf",
        "assignment",
        "index",
        "trim-markers",
        "comment-and-literals",
        "printf-q-percent",
    ],
)
def test_render_substitutes_variables(template: str, expected: str) -> None:
    """Every ``{{ var }}`` spelling is replaced by its value and nothing else changes."""
    assert render(template, VARIABLES) == expected


def test_render_does_not_render_values() -> None:
    """A value that looks like a placeholder is inserted literally (one pass, no injection)."""
    assert render("{{ name }}", {"name": "{{ target }}"}) == "{{ target }}"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (
            'x{a="{{ foo }}"}',
            f"unknown variable 'foo' at line 1, column 6; defined: {DEFINED}",
        ),
        (
            "sum(\n  {{ variables.missing }}",
            f"unknown variable 'variables.missing' at line 2, column 3; defined: {DEFINED}",
        ),
        ("x\n  {{ target ", "unclosed '{{' at line 2, column 3"),
        (
            "{{ .Values | quote }}",
            "{{ .Values | quote }} at line 1, column 1 is not supported; use a variable such as "
            "{{ target }} or {{ variables.X }}, printf or index (see docs/flagger.md)",
        ),
        (
            "{{}}",
            "{{}} at line 1, column 1 is not supported; use a variable such as "
            "{{ target }} or {{ variables.X }}, printf or index (see docs/flagger.md)",
        ),
        ("{{ $route }}", "undefined $route at line 1, column 1"),
        (
            '{{ printf "%s" target name }}',
            "printf at line 1, column 1 has more arguments than verbs",
        ),
        (
            '{{ index variables "nope" }}',
            f"unknown variable 'variables.nope' at line 1, column 1; defined: {DEFINED}",
        ),
    ],
    ids=[
        "unknown",
        "unknown-variables-x",
        "unclosed",
        "expression",
        "empty",
        "undefined-local",
        "printf-extra-argument",
        "index-missing",
    ],
)
def test_render_errors_name_the_problem(template: str, message: str) -> None:
    """Unknown variables, unclosed braces and expressions are TemplateErrors that say where."""
    with pytest.raises(TemplateError) as err:
        render(template, VARIABLES)
    assert str(err.value) == message


def test_unknown_variable_with_nothing_defined() -> None:
    """With no variables at all the message says so."""
    with pytest.raises(TemplateError) as err:
        render("{{ x }}", {})
    assert str(err.value) == "unknown variable 'x' at line 1, column 1; defined: none"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(60, "1m"), (90, "1m30s"), (30, "30s"), (0.5, "500ms"), (3600, "1h"), (86400 + 1, "1d1s")],
    ids=["1m", "1m30s", "30s", "500ms", "1h", "1d1s"],
)
def test_promql_duration(seconds: float, text: str) -> None:
    """Intervals in seconds render as PromQL durations."""
    assert promql_duration(seconds) == text


def test_promql_duration_rejects_zero() -> None:
    """A zero interval cannot be a PromQL range."""
    with pytest.raises(TemplateError, match="interval must be at least 1ms, got 0s"):
        promql_duration(0)


def test_template_variables_are_flat() -> None:
    """Canary fields and extra variables become one flat mapping for render()."""
    assert template_variables(
        namespace="n", name="a", target="t", interval=30, variables={"k": "v"}
    ) == {
        "namespace": "n",
        "name": "a",
        "target": "t",
        "service": "t",
        "ingress": "t",
        "route": "t",
        "interval": "30s",
        "variables.k": "v",
    }


def test_supported_meshes() -> None:
    """The meshes Flagger has observers for, plus canaryd's envoy, haproxy, prometheus and
    traefik-file (Traefik's file provider outside Kubernetes)."""
    assert MESH_PROVIDERS == (
        "apisix",
        "appmesh",
        "contour",
        "envoy",
        "gatewayapi",
        "gloo",
        "haproxy",
        "istio",
        "knative",
        "kubernetes",
        "kuma",
        "linkerd",
        "nginx",
        "osm",
        "prometheus",
        "skipper",
        "traefik",
        "traefik-file",
    )


ALL = [(mesh, metric) for mesh in MESH_PROVIDERS for metric in BUILTIN_METRICS]
ALL_IDS = [f"{mesh}-{metric}" for mesh, metric in ALL]


@pytest.mark.parametrize(("mesh", "metric"), ALL, ids=ALL_IDS)
def test_every_mesh_has_both_builtins(mesh: str, metric: str) -> None:
    """Each built-in renders for each mesh, over the metric's interval, without leftovers."""
    query = render(builtin_query(metric, mesh), VARIABLES)
    assert "{{" not in query
    assert "[1m]" in query or mesh == "haproxy"


@pytest.mark.parametrize(
    ("mesh", "same_as"),
    [("appmesh:v1beta2", "appmesh"), ("smi:linkerd", "linkerd"), ("Istio", "istio")],
    ids=["appmesh-version", "smi-linkerd", "case"],
)
def test_flagger_mesh_spellings(mesh: str, same_as: str) -> None:
    """Flagger's ``name:version`` and ``smi:mesh`` spellings select the same queries."""
    for metric in BUILTIN_METRICS:
        assert builtin_query(metric, mesh) == builtin_query(metric, same_as)


@pytest.mark.parametrize(
    ("metric", "mesh", "message"),
    [
        (
            "request-success-rate",
            "consul",
            f"unknown meshProvider 'consul'; supported: {', '.join(MESH_PROVIDERS)}",
        ),
        (
            "error-rate",
            "istio",
            "unknown built-in metric 'error-rate'; built-ins: request-success-rate, "
            "request-duration (other metrics need templateRef or query)",
        ),
    ],
    ids=["unknown-mesh", "unknown-metric"],
)
def test_builtin_query_errors(metric: str, mesh: str, message: str) -> None:
    """Unknown meshes list the supported ones; unknown built-ins list the built-ins."""
    with pytest.raises(TemplateError) as err:
        builtin_query(metric, mesh)
    assert str(err.value) == message


@pytest.mark.integration
@pytest.mark.anyio
async def test_every_builtin_is_valid_promql(prometheus: PrometheusServer) -> None:
    """Prometheus parses every rendered built-in; with no such series they mean "no data"."""
    async with open_provider(prometheus.provider_config()) as prov:
        for mesh, metric in ALL:
            assert (
                await prov.query(render(builtin_query(metric, mesh), VARIABLES), budget=5) is None
            )


@pytest.mark.integration
@pytest.mark.anyio
async def test_prometheus_mesh_builtins_measure_the_app(
    prometheus: PrometheusServer, unique_job: str
) -> None:
    """With 90 of 100 requests non-5xx and p99 at 375ms, the built-ins answer 90 and 375."""
    app = prometheus.app
    assert app is not None
    job = {"job": unique_job}
    bounds = (0.05, 0.1, 0.25, 0.5, 1.0)

    def traffic(ok: float, errors: float, buckets: tuple[float, ...], total: float) -> None:
        histogram = dict(zip(bounds, buckets, strict=True))
        app.set_many(  # one call, so one scrape sees all of it
            [
                ("http_requests_total", {**job, "code": "200"}, ok),
                ("http_requests_total", {**job, "code": "503"}, errors),
                *histogram_samples("http_request_duration_seconds", job, histogram, total),
            ]
        )

    traffic(0, 0, (0, 0, 0, 0, 0), 0)
    variables = template_variables(namespace="prod", name="web", target=unique_job, interval=10)
    success = render(builtin_query("request-success-rate", "prometheus"), variables)
    duration = render(builtin_query("request-duration", "prometheus"), variables)
    async with open_provider(prometheus.provider_config()) as prov:
        seen = f'count(http_requests_total{{job="{unique_job}"}})'
        await eventually(lambda: prov.query(seen, budget=2), lambda v: v == 2)
        assert await prov.query(success, budget=5) is None  # no traffic yet: 0/0
        # 100 requests: 90 answered 200, 10 answered 503; 98 within 250ms, all within 500ms
        traffic(90, 10, (50, 90, 98, 100, 100), 12.5)
        rate = await eventually(lambda: prov.query(success, budget=2), lambda v: v is not None)
        p99 = await prov.query(duration, budget=5)
    assert rate == pytest.approx(90.0)
    assert p99 == pytest.approx(375.0)


@pytest.mark.parametrize(
    ("seconds", "kind", "expected"),
    [
        (90, "prometheus", "1m30s"),
        (90, "web", "1m30s"),
        (60, "graphite", "1min"),
        (5400, "graphite", "1h30min"),
        (0.5, "graphite", "1s"),
        (90, "influxdb", "90s"),
        (3600, "influxdb", "1h"),
        (0.5, "influxdb", "500ms"),
    ],
    ids=["promql", "web", "graphite-min", "graphite-compound", "graphite-no-ms", "influx-90s",
         "influx-hour", "influx-ms"],
)  # fmt: skip
def test_interval_is_written_in_the_providers_language(
    seconds: float, kind: str, expected: str
) -> None:
    """{{ interval }} reads as a duration of the provider's language (Graphite: 1min, not 1m)."""
    assert interval_text(seconds, kind) == expected
