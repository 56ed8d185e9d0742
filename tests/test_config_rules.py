"""Configs that would break judgement are refused where they are written; doubtful ones warned.

Floors, finite thresholds, URL schemes, Flagger's defaults (threshold 1, mesh
istio), query problems located at the key that causes them, and the warnings
``canaryd check`` prints (docs/flagger.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from canaryd.config import MIN_INTERVAL_ENV, PrometheusProvider
from canaryd.config.loader import Loaded, load_config
from canaryd.errors import ConfigError

PRE = """\
providers: {prom: {type: prometheus}}
routers: {lb: {type: haproxy, socket: /s, backend: b, primary: p, canary: c}}
"""
"""One provider and one router on lines 1-2."""


def write(tmp_path: Path, name: str, text: str) -> Path:
    """Write ``text`` to ``tmp_path/name`` and return its path."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    """The problems of loading ``text`` as ``c.yaml``, file names relative to ``tmp_path``."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "c.yaml", text), environ={})
    return [str(p).replace(f"{tmp_path}/", "") for p in info.value.problems]


def load(tmp_path: Path, text: str, name: str = "c.yaml") -> Loaded:
    """Load ``text``; it must be valid."""
    return load_config(write(tmp_path, name, text), environ={})


def warnings(loaded: Loaded, tmp_path: Path) -> list[str]:
    """The warnings, file names relative to ``tmp_path``."""
    return [w.replace(f"{tmp_path}/", "") for w in loaded.warnings]


def one(analysis: str, **keys: str) -> str:
    """PRE plus canary ``web``; the first analysis line is line 7 + len(keys)."""
    extra = "".join(f"    {k}: {v}\n" for k, v in keys.items())
    body = "".join(f"      {line}\n" for line in analysis.splitlines())
    return f"{PRE}canaries:\n  - name: web\n    router: lb\n{extra}    analysis:\n{body}"


@pytest.fixture
def real_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interval floor as in production (the suite lowers it for its fast daemons)."""
    monkeypatch.delenv(MIN_INTERVAL_ENV, raising=False)


@pytest.mark.usefixtures("real_floor")
@pytest.mark.parametrize(
    ("analysis", "expected"),
    [
        (
            "interval: 1ms\nstepWeight: 10",
            "c.yaml:7:7: canaries[0].analysis.interval: must be at least 1s (the floor; "
            "docs/flagger.md) (got '1ms')",
        ),
        (
            "stepWeight: 10\nmetrics:\n  - {name: request-duration, interval: 500ms, "
            "thresholdRange: {max: 1}}",
            "c.yaml:9:36: canaries[0].analysis.metrics[0].interval: must be at least 1s "
            "(the floor; docs/flagger.md) (got '500ms')",
        ),
        (
            "stepWeight: 10\nmetrics:\n  - {name: request-duration, thresholdRange: {min: .nan}}",
            "c.yaml:9:53: canaries[0].analysis.metrics[0].thresholdRange.min: "
            "must be a finite number (got nan)",
        ),
        (
            "stepWeight: 10\nmetrics:\n  - {name: request-duration, thresholdRange: {max: .inf}}",
            "c.yaml:9:53: canaries[0].analysis.metrics[0].thresholdRange.max: "
            "must be a finite number (got inf)",
        ),
        (
            "stepWeight: 10\nwebhooks:\n  - {name: w, url: http://x, timeout: 0}",
            "c.yaml:9:36: canaries[0].analysis.webhooks[0].timeout: must be greater than 0s "
            "(got 0)",
        ),
        (
            "stepWeight: 10\nwebhooks:\n  - {name: w, url: hooks.example/x}",
            "c.yaml:9:21: canaries[0].analysis.webhooks[0].url: must be an http:// or https:// "
            "URL (got 'hooks.example/x')",
        ),
    ],
    ids=["interval-1ms", "metric-interval", "nan-min", "inf-max", "timeout-0", "url-scheme"],
)
def test_values_that_break_judgement_are_refused(
    tmp_path: Path, analysis: str, expected: str
) -> None:
    """Each refused value is reported at its FILE:LINE:COL with the key path."""
    assert problems(tmp_path, one(analysis)) == [expected]


@pytest.mark.usefixtures("real_floor")
def test_one_second_interval_is_accepted(tmp_path: Path) -> None:
    """The floor itself is allowed."""
    loaded = load(tmp_path, one("interval: 1s\nstepWeight: 10"))
    assert loaded.settings.canaries[0].analysis.interval == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "notifiers:\n  chat: {type: slack, url: hooks.slack.com/services/x}\n",
            "c.yaml:4:23: notifiers.chat.url: must be an http:// or https:// URL "
            "(got 'hooks.slack.com/services/x')",
        ),
        (
            "notifiers:\n  chat: {type: slack, url: 'https://x', timeout: 0s}\n",
            "c.yaml:4:41: notifiers.chat.timeout: must be greater than 0s (got '0s')",
        ),
        (
            "outbox: {pollInterval: 0}\n",
            "c.yaml:3:10: outbox.pollInterval: must be greater than 0s (got 0)",
        ),
    ],
    ids=["notifier-url", "notifier-timeout", "outbox-poll"],
)
def test_notifier_and_outbox_values_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    """A notifier URL without a scheme and zero timeouts are refused where written."""
    assert problems(tmp_path, PRE + text) == [expected]


def test_router_url_needs_a_scheme(tmp_path: Path) -> None:
    """A webhook router URL without http(s):// is refused."""
    text = "providers: {prom: {type: prometheus}}\nrouters: {mesh: {type: webhook, url: mesh/x}}\n"
    assert problems(tmp_path, text) == [
        "c.yaml:2:33: routers.mesh.url: must be an http:// or https:// URL (got 'mesh/x')"
    ]


# --------------------------------------------------------------------------- located queries


def test_unknown_mesh_of_a_canary_is_reported_at_its_meshprovider(tmp_path: Path) -> None:
    """A canary's bad meshProvider is reported at that key, not at <config>:0:0."""
    text = one(
        "stepWeight: 10\nmetrics:\n  - {name: request-duration, thresholdRange: {max: 1}}",
        meshProvider="consul",
    )
    found = problems(tmp_path, text)
    assert len(found) == 1
    assert found[0].startswith(
        "c.yaml:6:5: canaries[0].meshProvider: default/web: unknown meshProvider 'consul'"
    )


def test_unknown_top_level_mesh_is_reported_at_its_key(tmp_path: Path) -> None:
    """The top-level meshProvider is blamed when a canary without one uses a built-in."""
    text = "meshProvider: consul\n" + one(
        "stepWeight: 10\nmetrics:\n  - {name: request-duration, thresholdRange: {max: 1}}"
    )
    found = problems(tmp_path, text)
    assert len(found) == 1
    assert found[0].startswith("c.yaml:1:1: meshProvider: default/web: unknown meshProvider")


def test_unknown_template_variable_is_reported_at_the_template_query(tmp_path: Path) -> None:
    """A template naming an undefined variable is reported at the template's query."""
    text = (
        PRE
        + "templates:\n  t: {provider: prom, query: 'x{a=\"{{ variables.app }}\"}'}\n"
        + "canaries:\n  - name: web\n    router: lb\n    analysis:\n      stepWeight: 10\n"
        + "      metrics:\n        - {name: e, templateRef: {name: t}, thresholdRange: {max: 1}}\n"
    )
    found = problems(tmp_path, text)
    assert len(found) == 1
    assert found[0].startswith(
        "c.yaml:4:23: templates.t.query: default/web: unknown variable 'variables.app'"
    )


def test_unknown_variable_in_an_inline_query_is_reported_at_the_query(tmp_path: Path) -> None:
    """An inline query naming an undefined variable is reported at its ``query`` key."""
    text = one(
        "stepWeight: 10\nmetrics:\n"
        "  - {name: e, query: 'x{a=\"{{ nope }}\"}', thresholdRange: {max: 1}}"
    )
    found = problems(tmp_path, text)
    assert len(found) == 1
    assert found[0].startswith("c.yaml:9:21: canaries[0].analysis.metrics[0].query: default/web:")


# --------------------------------------------------------------------------- defaults, warnings


def test_threshold_defaults_to_one(tmp_path: Path) -> None:
    """Without threshold (or with 0) a canary tolerates no failed check, as in Flagger."""
    loaded = load(
        tmp_path,
        one("stepWeight: 10") + "  - name: b\n    router: lb\n    analysis:\n"
        "      stepWeight: 10\n      threshold: 0\n",
    )
    assert [c.analysis.threshold for c in loaded.settings.canaries] == [1, 1]


def test_duration_without_unit_is_warned_about(tmp_path: Path) -> None:
    """``interval: 10`` loads as 10 s and is warned about where it is written."""
    loaded = load(tmp_path, one("interval: 10\nstepWeight: 10"))
    assert loaded.settings.canaries[0].analysis.interval == 10.0
    assert warnings(loaded, tmp_path) == [
        "c.yaml:7:7: canaries[0].analysis.interval: 10 has no unit: read as 10s; write e.g. 10s"
    ]


def test_iterations_with_weights_is_warned_about(tmp_path: Path) -> None:
    """iterations with stepWeight is blue/green: the weights are ignored, and check says so."""
    loaded = load(tmp_path, one("interval: 1m\niterations: 5\nstepWeight: 10"))
    assert warnings(loaded, tmp_path) == [
        "c.yaml:8:7: canaries[0].analysis.iterations: iterations makes this a blue/green "
        "(or A/B) rollout: stepWeight ignored, as in Flagger"
    ]


def test_a_config_without_canaries_is_warned_about(tmp_path: Path) -> None:
    """A configuration that defines no canary loads, with a warning."""
    assert warnings(load(tmp_path, PRE), tmp_path) == [
        "c.yaml:1:1: <root>: defines no canary: nothing will be analysed"
    ]


def test_deprecated_metric_threshold_is_read_as_flagger_reads_it(tmp_path: Path) -> None:
    """A metric's threshold is the success rate's minimum and other metrics' maximum."""
    text = one(
        "interval: 1m\nstepWeight: 10\nmetrics:\n"
        "  - {name: request-success-rate, threshold: 99}\n"
        "  - {name: request-duration, threshold: 500}\n"
        "  - {name: request-duration-2, query: q, threshold: 1, thresholdRange: {max: 7}}"
    )
    loaded = load(tmp_path, text)
    ranges = [m.thresholdRange for m in loaded.settings.canaries[0].analysis.metrics]
    assert [(r.min, r.max) for r in ranges if r is not None] == [
        (99.0, None),
        (None, 500.0),
        (None, 7.0),
    ]
    assert warnings(loaded, tmp_path) == [
        "c.yaml:10:40: canaries[0].analysis.metrics[0].threshold: threshold is deprecated "
        "(Flagger); read as thresholdRange.min",
        "c.yaml:11:36: canaries[0].analysis.metrics[1].threshold: threshold is deprecated "
        "(Flagger); read as thresholdRange.max",
        "c.yaml:12:48: canaries[0].analysis.metrics[2].threshold: threshold is deprecated "
        "and ignored next to thresholdRange, as in Flagger",
    ]


def test_suite_floor_is_lowered_only_by_its_variable() -> None:
    """The test suite runs with the documented variable set; production has no such variable."""
    assert os.environ.get(MIN_INTERVAL_ENV) == "0.01"


# --------------------------------------------------------------------------- Flagger manifests

CANARY = """\
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: web, namespace: prod}
spec:
  targetRef: {name: web}
  analysis:
    interval: INTERVAL
    stepWeight: 10
    metrics:
      - {name: request-success-rate, thresholdRange: {min: 99}}
"""


def manifest(tmp_path: Path, text: str, main: str = PRE) -> Loaded:
    """Load ``main`` including the manifest ``k8s.yaml``."""
    write(tmp_path, "k8s.yaml", text)
    return load(tmp_path, main + "include: [k8s.yaml]\n")


def test_flagger_canary_without_provider_gets_istio(tmp_path: Path) -> None:
    """A pasted Canary without spec.provider uses Flagger's default mesh, istio."""
    loaded = manifest(tmp_path, CANARY.replace("INTERVAL", "1m"))
    assert loaded.settings.canaries[0].meshProvider == "istio"


def test_config_mesh_provider_is_the_default_for_flagger_canaries(tmp_path: Path) -> None:
    """A meshProvider set in the config is the default of pasted Canaries too."""
    loaded = manifest(tmp_path, CANARY.replace("INTERVAL", "1m"), "meshProvider: linkerd\n" + PRE)
    canary = loaded.settings.canaries[0]
    assert (canary.meshProvider or loaded.settings.meshProvider) == "linkerd"


def test_short_interval_in_a_manifest_is_a_difference_line(tmp_path: Path) -> None:
    """Flagger runs intervals below 10s every 10s; check says canaryd does not, in one line."""
    loaded = manifest(tmp_path, CANARY.replace("INTERVAL", "5s"))
    assert warnings(loaded, tmp_path) == [
        "k8s.yaml:7:5: spec.analysis.interval: differs from Flagger: Flagger runs an interval "
        "below 10s every 10s; canaryd every 5s (docs/flagger.md)"
    ]


def test_metrics_server_is_a_difference_line(tmp_path: Path) -> None:
    """spec.metricsServer is not used, and check says so where it is written."""
    text = CANARY.replace("INTERVAL", "1m").replace(
        "  targetRef:", "  metricsServer: http://prom.example:9090\n  targetRef:"
    )
    assert warnings(manifest(tmp_path, text), tmp_path) == [
        "k8s.yaml:5:3: spec.metricsServer: differs from Flagger: built-in metrics query the "
        "canary's provider, not metricsServer (docs/flagger.md)"
    ]


TEMPLATE = """\
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: lat, namespace: prod}
spec:
  provider:
    type: prometheus
    address: https://prom.example
    headers: {X-Scope-OrgID: [team-a]}
    secretRef: {name: prom}
  query: max(x{ns="{{ namespace }}"})
"""


def secret(tmp_path: Path, name: str, text: str) -> None:
    """Write ``secrets/prom/<name>`` readable by its owner only."""
    path = write(tmp_path, f"secrets/prom/{name}", text)
    path.chmod(0o600)


def test_template_secret_ref_token_and_headers(tmp_path: Path) -> None:
    """secretRef's token file becomes the bearer token; headers are kept, one value each."""
    secret(tmp_path, "token", "t0k\n")
    provider = manifest(tmp_path, TEMPLATE).settings.providers["lat-provider"]
    assert isinstance(provider, PrometheusProvider)
    assert provider.bearer_token_file == str(tmp_path / "secrets/prom/token")
    assert provider.headers == {"X-Scope-OrgID": "team-a"}


def test_template_secret_ref_basic_auth(tmp_path: Path) -> None:
    """secretRef's username and password files become basic auth."""
    secret(tmp_path, "username", "reader\n")
    secret(tmp_path, "password", "pw\n")
    provider = manifest(tmp_path, TEMPLATE).settings.providers["lat-provider"]
    assert isinstance(provider, PrometheusProvider)
    assert (provider.username, provider.password_file) == (
        "reader",
        str(tmp_path / "secrets/prom/password"),
    )


def test_template_secret_ref_without_files_is_refused(tmp_path: Path) -> None:
    """A secretRef is never dropped silently: without its files the manifest is refused."""
    write(tmp_path, "k8s.yaml", TEMPLATE)
    found = problems(tmp_path, PRE + "include: [k8s.yaml]\n")
    assert found == [
        "k8s.yaml:9:5: spec.provider.secretRef: secretRef 'prom': put the secret's keys in "
        "files: secrets/prom/token, or secrets/prom/username and secrets/prom/password "
        "(docs/flagger.md)"
    ]


def test_template_ref_is_looked_up_by_namespace_and_name(tmp_path: Path) -> None:
    """templateRef {name, namespace} finds the MetricTemplate of that namespace."""
    other = TEMPLATE.replace(
        "    headers: {X-Scope-OrgID: [team-a]}\n    secretRef: {name: prom}\n", ""
    )
    text = (
        other
        + "---\n"
        + CANARY.replace("INTERVAL", "1m").replace(
            "      - {name: request-success-rate, thresholdRange: {min: 99}}",
            "      - {name: lat, templateRef: {name: lat, namespace: prod}, "
            "thresholdRange: {max: 1}}",
        )
    )
    loaded = manifest(tmp_path, text)
    from canaryd.config.queries import resolve_metrics

    [metric] = resolve_metrics(loaded.settings, loaded.settings.canaries[0])
    assert metric.query == 'max(x{ns="prod"})'


def test_template_ref_namespace_selects_among_templates_of_one_name(tmp_path: Path) -> None:
    """Two MetricTemplates named alike in two namespaces: each canary gets its namespace's."""
    base = TEMPLATE.replace(
        "    headers: {X-Scope-OrgID: [team-a]}\n    secretRef: {name: prom}\n", ""
    )
    other = base.replace("namespace: prod}", "namespace: dev}").replace("max(x", "min(x")
    canary = CANARY.replace("INTERVAL", "1m").replace(
        "      - {name: request-success-rate, thresholdRange: {min: 99}}",
        "      - {name: lat, templateRef: {name: lat}, thresholdRange: {max: 1}}",
    )
    dev = canary.replace("{name: web, namespace: prod}", "{name: web, namespace: dev}")
    loaded = manifest(tmp_path, "---\n".join([other, base, canary, dev]))
    from canaryd.config.queries import resolve_metrics

    queries = [resolve_metrics(loaded.settings, c)[0].query for c in loaded.settings.canaries]
    assert queries == ['max(x{ns="prod"})', 'min(x{ns="dev"})']


def test_template_ref_to_another_namespace_is_refused(tmp_path: Path) -> None:
    """A templateRef whose namespace holds no such template is a located problem."""
    base = TEMPLATE.replace(
        "    headers: {X-Scope-OrgID: [team-a]}\n    secretRef: {name: prom}\n", ""
    )
    canary = CANARY.replace("INTERVAL", "1m").replace(
        "      - {name: request-success-rate, thresholdRange: {min: 99}}",
        "      - {name: lat, templateRef: {name: lat, namespace: dev}, thresholdRange: {max: 1}}",
    )
    write(tmp_path, "k8s.yaml", base + "---\n" + canary)
    found = problems(tmp_path, PRE + "include: [k8s.yaml]\n")
    assert len(found) == 1
    assert found[0].startswith(
        "k8s.yaml:19:21: spec.analysis.metrics[0].templateRef: prod/web: metric lat: "
        "template 'lat' is not defined in namespace 'dev'"
    )


def test_url_file_without_a_scheme_is_refused_without_showing_it(tmp_path: Path) -> None:
    """A notifier's url_file must hold an http(s) URL; the problem never shows the URL."""
    url = write(tmp_path, "slack-url", "hooks.slack.com/services/T0/B0/SECRET\n")
    url.chmod(0o600)
    found = problems(tmp_path, PRE + "notifiers:\n  chat: {type: slack, url_file: slack-url}\n")
    assert found == [
        "c.yaml:4:23: notifiers.chat.url_file: the URL in slack-url must start "
        "with http:// or https://"
    ]
    assert "SECRET" not in found[0]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("nul", None, "contains a NUL byte"),
        ("latin1", b"caf\xe9-token\n", "is not UTF-8 text"),
    ],
    ids=["nul-in-path", "not-utf8"],
)
def test_unreadable_secrets_are_secret_errors(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    """A secret path with a NUL byte or a secret file that is not UTF-8 is a SecretError."""
    from canaryd.config.models import read_secret
    from canaryd.errors import SecretError

    path = tmp_path / name
    if content is None:
        target = str(path) + "\x00x"
    else:
        path.write_bytes(content)
        path.chmod(0o600)
        target = str(path)
    with pytest.raises(SecretError, match=message):
        read_secret(target)
