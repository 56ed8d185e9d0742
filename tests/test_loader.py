"""Configuration loader: positions, messages, includes, Flagger manifests, environment."""

from __future__ import annotations

import contextlib
import os
import textwrap
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from canaryd import config
from canaryd.config.loader import Loaded, load_config, summary
from canaryd.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "canaryd.example.yaml"

PRE = """\
providers: {prom: {type: prometheus}}
routers: {lb: {type: haproxy, socket: /s, backend: b, primary: p, canary: c}}
"""
"""Two lines defining one provider and one router; canary cases start on line 3."""


TWO_EACH = """\
providers:
  prom: {type: prometheus}
  thanos: {type: prometheus}
routers:
  lb: {type: haproxy, socket: /s, backend: b, primary: p, canary: c}
  mesh: {type: webhook, url: "http://m"}
"""
"""Two providers and two routers, so nothing can be defaulted."""


def write(directory: Path, name: str, text: str, mode: int = 0o644) -> Path:
    """Write a dedented file (creating directories) and return its path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    path.chmod(mode)
    return path


def problems(
    tmp_path: Path, text: str, environ: dict[str, str] | None = None, name: str = "c.yaml"
) -> list[str]:
    """The problems of loading ``text``, with the tmp directory stripped from file names."""
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    return [str(p).replace(f"{tmp_path}/", "") for p in info.value.problems]


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Loaded:
    """Load ``text`` as ``c.yaml``; it must be valid."""
    return load_config(write(tmp_path, "c.yaml", text), environ=environ or {})


def canary(analysis: str = "", **keys: str) -> str:
    """PRE plus one canary ``web`` (line 4) whose analysis keys start on line 7 (6 + keys)."""
    extra = "".join(f"    {k}: {v}\n" for k, v in keys.items())
    body = analysis or "stepWeight: 10"
    indented = textwrap.indent(textwrap.dedent(body), "      ")
    return f"{PRE}canaries:\n  - name: web\n    router: lb\n{extra}    analysis:\n{indented}\n"


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


def _model_keys(model: type[BaseModel], seen: set[str]) -> set[str]:
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        keys.add(info.alias or name)
        for arg in _types_in(info.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg.__name__ not in seen:
                seen.add(arg.__name__)
                keys |= _model_keys(arg, seen)
    return keys


def _types_in(tp: object) -> list[object]:
    out = [tp]
    for arg in typing.get_args(tp):
        out += _types_in(arg)
    return out


def test_example_mentions_every_key() -> None:
    """Every key of every config model appears in the example (secret files in comments)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    missing = sorted(k for k in _model_keys(config.Settings, set()) if f"{k}:" not in text)
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


# --------------------------------------------------------------------------- model rules

MODEL_CASES = [
    (
        "threshold",
        canary("threshold: -1\nstepWeight: 10"),
        "c.yaml:7:7: canaries[0].analysis.threshold: must be >= 0 (got -1)",
    ),
    (
        "unknown-key-close",
        canary("stepWeigt: 10\niterations: 1"),
        "c.yaml:7:7: canaries[0].analysis.stepWeigt: unknown key 'stepWeigt'; "
        "did you mean 'stepWeight'?",
    ),
    (
        "unknown-key-far",
        PRE + "api: {zzz: 1}\n",
        "c.yaml:3:7: api.zzz: unknown key 'zzz'; valid keys: anonymous_read, max_body_bytes, "
        "token_env, token_file",
    ),
    (
        "unknown-key-in-union-member",
        "routers: {lb: {type: haproxy, socket: /s, backend: b, "
        "primary: p, canary: c, wieght: 1}}\n",
        "c.yaml:1:78: routers.lb.wieght: unknown key 'wieght'; valid keys: backend, canary, "
        "primary, promotion, socket, timeout, type",
    ),
    (
        "unknown-top-level-key",
        "provders: {}\n",
        "c.yaml:1:1: provders: unknown key 'provders'; did you mean 'providers'?",
    ),
    (
        "router-type",
        "routers:\n  r: {type: lighttpd}\n",
        "c.yaml:2:7: routers.r.type: unknown router type 'lighttpd'; "
        "expected one of: alb, caddy, consul, envoy, exec, haproxy, nginx, traefik, webhook",
    ),
    (
        "nginx-server-word",
        "routers:\n  r: {type: nginx, file: /f, upstream: web, primary: [a:80], "
        "canary: 'b:80; down'}\n",
        "c.yaml:2:62: routers.r.canary: 'b:80; down': one word without spaces, quotes, "
        "';', '{', '}' or '#'",
    ),
    (
        "envoy-admin-url",
        "routers:\n  r: {type: envoy, file: /f, route_config: web, primary: p, canary: c, "
        "admin: 'localhost:9901'}\n",
        "c.yaml:2:72: routers.r.admin: must be an http:// or https:// URL (got 'localhost:9901')",
    ),
    (
        "traefik-missing-service",
        "routers:\n  r: {type: traefik, file: /f, primary: p, canary: c}\n",
        "c.yaml:2:3: routers.r: missing key 'service'",
    ),
    (
        "router-missing-type",
        "routers:\n  r: {url: http://x}\n",
        "c.yaml:2:3: routers.r: missing key 'type'",
    ),
    (
        "provider-type",
        "providers:\n  p: {type: splunk}\n",
        "c.yaml:2:7: providers.p.type: unknown provider type 'splunk'; "
        "expected one of: cloudwatch, datadog, dynatrace, graphite, influxdb, newrelic, "
        "prometheus, web",
    ),
    (
        "notifier-type",
        "notifiers:\n  n: {type: pager, url: http://x}\n",
        "c.yaml:2:7: notifiers.n.type: unknown notifier type 'pager'; "
        "expected one of: cloudevents, "
        "discord, gchat, msteams, rocket, slack, webhook",
    ),
    (
        "router-missing-key",
        "routers:\n  r: {type: haproxy, socket: /s, backend: b, primary: p}\n",
        "c.yaml:2:3: routers.r: missing key 'canary'",
    ),
    (
        "provider-address",
        "providers:\n  p: {type: prometheus, address: 'prom:9090'}\n",
        "c.yaml:2:25: providers.p.address: must be an http:// or https:// URL (got 'prom:9090')",
    ),
    (
        "notifier-two-urls",
        "notifiers:\n  n: {type: slack, url: http://x, url_file: ''}\n",
        "c.yaml:2:3: notifiers.n: set exactly one of url or url_file",
    ),
    (
        "notifier-no-url",
        "notifiers:\n  n: {type: slack}\n",
        "c.yaml:2:3: notifiers.n: set exactly one of url or url_file",
    ),
    (
        "min-above-max",
        canary(
            "stepWeight: 10\nmetrics:\n"
            "  - {name: request-success-rate, thresholdRange: {min: 5, max: 1}}"
        ),
        "c.yaml:9:40: canaries[0].analysis.metrics[0].thresholdRange: "
        "min (5.0) is greater than max (1.0)",
    ),
    (
        "no-bounds",
        canary("stepWeight: 10\nmetrics:\n  - {name: request-success-rate}"),
        "c.yaml:9:11: canaries[0].analysis.metrics[0]: thresholdRange needs min, max or both "
        "(or the deprecated threshold)",
    ),
    (
        "ref-and-query",
        PRE
        + "templates: {t: {provider: prom, query: up}}\n"
        + canary(
            "stepWeight: 10\nmetrics:\n  - {name: m, templateRef: {name: t}, query: up, "
            "thresholdRange: {min: 1}}"
        ).removeprefix(PRE),
        "c.yaml:10:11: canaries[0].analysis.metrics[0]: set templateRef or query, not both",
    ),
    (
        "webhook-url",
        canary("stepWeight: 10\nwebhooks:\n  - {name: w, type: pre-rollout}"),
        "c.yaml:9:11: canaries[0].analysis.webhooks[0]: a pre-rollout webhook needs a url",
    ),
    (
        "gate-timeout",
        canary("stepWeight: 10\nwebhooks:\n  - {name: w, url: http://x, gateTimeout: 1m}"),
        "c.yaml:9:11: canaries[0].analysis.webhooks[0]: "
        "gateTimeout applies to confirm-* gates only",
    ),
    (
        "retries",
        canary("stepWeight: 10\nwebhooks:\n  - {name: w, url: http://x, retries: 11}"),
        "c.yaml:9:36: canaries[0].analysis.webhooks[0].retries: must be <= 10 (got 11)",
    ),
    (
        "webhook-type",
        canary("stepWeight: 10\nwebhooks:\n  - {name: w, url: http://x, type: pre}"),
        "c.yaml:9:36: canaries[0].analysis.webhooks[0].type: must be one of: confirm-rollout, "
        "pre-rollout, rollout, confirm-traffic-increase, confirm-promotion, post-rollout, "
        "rollback, event (got 'pre')",
    ),
    (
        "interval-zero",
        canary("interval: 0\nstepWeight: 10"),
        "c.yaml:7:7: canaries[0].analysis.interval: must be at least 0.01s (the floor; "
        "docs/flagger.md) (got 0)",
    ),
    (
        "interval-bad",
        canary("interval: soon\nstepWeight: 10"),
        "c.yaml:7:7: canaries[0].analysis.interval: invalid duration 'soon': expected e.g. 30s, "
        "1m, 1h30m or 500ms",
    ),
    (
        "interval-infinite",
        canary("interval: .inf\nstepWeight: 10"),
        "c.yaml:7:7: canaries[0].analysis.interval: must be a finite duration (got inf)",
    ),
    (
        "no-strategy",
        canary("threshold: 2"),
        "c.yaml:6:5: canaries[0].analysis: set stepWeight or stepWeights (canary), "
        "or iterations (blue/green, A/B)",
    ),
    (
        "match-without-iterations",
        canary("stepWeight: 10\nmatch: [{headers: {x: {exact: y}}}]"),
        "c.yaml:6:5: canaries[0].analysis: match (A/B testing) needs iterations > 0",
    ),
    (
        "duplicate-metrics",
        canary(
            "stepWeight: 10\nmetrics:\n"
            "  - {name: request-duration, thresholdRange: {max: 1}}\n"
            "  - {name: request-duration, thresholdRange: {max: 2}}"
        ),
        "c.yaml:6:5: canaries[0].analysis: metric names must be unique: request-duration",
    ),
    (
        "duplicate-webhooks",
        canary(
            "stepWeight: 10\nwebhooks:\n  - {name: w, url: http://x}\n  - {name: w, url: http://y}"
        ),
        "c.yaml:6:5: canaries[0].analysis: webhook names must be unique: w",
    ),
    (
        "steps-not-increasing",
        canary("stepWeights: [10, 10]"),
        "c.yaml:7:7: canaries[0].analysis.stepWeights: must be strictly increasing (10 then 10)",
    ),
    (
        "steps-empty",
        canary("stepWeights: []"),
        "c.yaml:7:7: canaries[0].analysis.stepWeights: must not be empty",
    ),
    (
        "step-zero",
        canary("stepWeights: [0, 10]"),
        "c.yaml:7:21: canaries[0].analysis.stepWeights[0]: must be >= 1 (got 0)",
    ),
    (
        "max-weight",
        canary("stepWeight: 10\nmaxWeight: 101"),
        "c.yaml:8:7: canaries[0].analysis.maxWeight: must be <= 100 (got 101)",
    ),
    (
        "weight-not-int",
        canary("stepWeight: 1.5"),
        "c.yaml:7:7: canaries[0].analysis.stepWeight: must be a whole number (got 1.5)",
    ),
    (
        "weight-text",
        canary("stepWeight: ten"),
        "c.yaml:7:7: canaries[0].analysis.stepWeight: must be an integer (got 'ten')",
    ),
    ("listen", PRE + "listen: 9879\n", "c.yaml:3:1: listen: must be a string (got 9879)"),
    (
        "listen-format",
        PRE + "listen: localhost\n",
        "c.yaml:3:1: listen: must be HOST:PORT, e.g. 127.0.0.1:9879 (got 'localhost')",
    ),
    (
        "state",
        PRE + "state: mysql://db\n",
        "c.yaml:3:1: state: must be sqlite:///ABSOLUTE/PATH, sqlite://RELATIVE/PATH or "
        "postgresql://… (got 'mysql://db')",
    ),
    (
        "log-level",
        PRE + "log: {level: verbose}\n",
        "c.yaml:3:7: log.level: must be one of: debug, info, warning, error (got 'verbose')",
    ),
    (
        "body-limit",
        PRE + "api: {max_body_bytes: 10}\n",
        "c.yaml:3:7: api.max_body_bytes: must be >= 1024 (got 10)",
    ),
    (
        "bool",
        "providers: {p: {type: prometheus, insecureSkipVerify: maybe}}\n",
        "c.yaml:1:35: providers.p.insecureSkipVerify: must be true or false (got 'maybe')",
    ),
    (
        "canary-name",
        canary(name="'web app'").replace("  - name: web\n", "  -\n"),
        "c.yaml:6:5: canaries[0].name: must be 1-253 characters of letters, digits, '-', '_' "
        "or '.' (got 'web app')",
    ),
    (
        "provider-name",
        "providers:\n  'prom 1': {type: prometheus}\n",
        "c.yaml:2:3: providers.prom 1: invalid name 'prom 1': must be 1-253 characters of "
        "letters, digits, '-', '_' or '.'",
    ),
    (
        "target-not-string",
        canary(target="5"),
        "c.yaml:6:5: canaries[0].target: must be a string (got 5)",
    ),
    (
        "on-no-data",
        canary(
            "stepWeight: 10\nmetrics:\n"
            "  - {name: request-duration, thresholdRange: {max: 1}, onNoData: skip}"
        ),
        "c.yaml:9:62: canaries[0].analysis.metrics[0].onNoData: must be one of: fail, pass, hold "
        "(got 'skip')",
    ),
    (
        "severity",
        PRE
        + "notifiers: {n: {type: slack, url: http://x}}\n"
        + canary(alerts="[{name: a, notifier: n, severity: loud}]").removeprefix(PRE),
        "c.yaml:7:37: canaries[0].alerts[0].severity: must be one of: info, warn, error "
        "(got 'loud')",
    ),
    (
        "missing-router",
        canary().replace("    router: lb\n", ""),
        "c.yaml:4:5: canaries[0]: missing key 'router'",
    ),
    (
        "canary-not-mapping",
        PRE + "canaries: [web]\n",
        "c.yaml:3:12: canaries[0]: must be a mapping (got 'web')",
    ),
    (
        "canaries-not-list",
        PRE + "canaries: {web: {}}\n",
        "c.yaml:3:1: canaries: must be a list of canaries (got a mapping)",
    ),
    (
        "providers-not-mapping",
        "providers: [prom]\n",
        "c.yaml:1:1: providers: must be a mapping of names to providers (got a list)",
    ),
    (
        "huge-number",
        canary("stepWeight: 1" + "0" * 40),
        "c.yaml:7:7: canaries[0].analysis.stepWeight: must be <= 100 (got a number of 41 digits)",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES]
)
def test_model_rule(tmp_path: Path, text: str, expected: str) -> None:
    """Each model rule is reported once, at the key it concerns, with a readable message."""
    assert problems(tmp_path, text) == [expected]


# --------------------------------------------------------------------------- cross references

REF_CASES = [
    (
        "router",
        canary().replace("router: lb", "router: lbb"),
        "c.yaml:5:5: canaries[0].router: unknown router 'lbb'; did you mean 'lb'?",
    ),
    (
        "provider",
        canary(provider="thanos"),
        "c.yaml:6:5: canaries[0].provider: unknown provider 'thanos'; defined providers: prom",
    ),
    (
        "template",
        canary(
            "stepWeight: 10\nmetrics:\n"
            "  - {name: e, templateRef: {name: err}, thresholdRange: {max: 1}}"
        ),
        "c.yaml:9:35: canaries[0].analysis.metrics[0].templateRef.name: unknown template 'err'; "
        "no templates are defined",
    ),
    (
        "notifier",
        canary(alerts="[{name: a, notifier: slack}]"),
        "c.yaml:6:24: canaries[0].alerts[0].notifier: unknown notifier 'slack'; "
        "no notifiers are defined",
    ),
    (
        "metric-provider",
        canary(
            "stepWeight: 10\nmetrics:\n"
            "  - {name: request-duration, provider: p2, thresholdRange: {max: 1}}"
        ),
        "c.yaml:9:36: canaries[0].analysis.metrics[0].provider: unknown provider 'p2'; "
        "defined providers: prom",
    ),
    (
        "template-provider",
        PRE + "templates: {t: {provider: thanos, query: up}}\n",
        "c.yaml:3:17: templates.t.provider: unknown provider 'thanos'; defined providers: prom",
    ),
    (
        "builtin",
        canary("stepWeight: 10\nmetrics:\n  - {name: latency, thresholdRange: {max: 1}}"),
        "c.yaml:9:12: canaries[0].analysis.metrics[0].name: unknown metric 'latency': not built in "
        "(request-success-rate, request-duration); set templateRef or query",
    ),
    (
        "no-provider",
        canary(
            "stepWeight: 10\nmetrics:\n  - {name: request-duration, thresholdRange: {max: 1}}"
        ).replace(
            "providers: {prom: {type: prometheus}}",
            "providers: {a: {type: prometheus}, b: {type: prometheus}}",
        ),
        "c.yaml:9:11: canaries[0].analysis.metrics[0]: metric 'request-duration' has no provider "
        "(2 providers are defined); set provider on it or provider on the canary",
    ),
    (
        "duplicate-canary",
        canary() + "  - {name: web, router: lb, analysis: {iterations: 1}}\n",
        "c.yaml:8:5: canaries[1]: duplicate canary 'default/web' (first at c.yaml:4:5)",
    ),
    (
        "max-below-step",
        canary("stepWeight: 10\nmaxWeight: 5"),
        "c.yaml:8:7: canaries[0].analysis.maxWeight: maxWeight (5) is below stepWeight (10)",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in REF_CASES], ids=[c[0] for c in REF_CASES]
)
def test_reference_rule(tmp_path: Path, text: str, expected: str) -> None:
    """Each cross-reference or semantic rule is reported at the referring key."""
    assert problems(tmp_path, text) == [expected]


def test_same_name_in_other_namespace_is_fine(tmp_path: Path) -> None:
    """Canaries are unique by namespace/name, so one name may appear in two namespaces."""
    text = canary() + "  - {name: web, namespace: prod, router: lb, analysis: {iterations: 1}}\n"
    assert [c.key for c in load(tmp_path, text).settings.canaries] == ["default/web", "prod/web"]


def test_metric_provider_from_template_or_single_provider(tmp_path: Path) -> None:
    """A metric needs no provider of its own when its template or the only provider gives one."""
    text = (
        canary(
            "stepWeight: 10\nmetrics:\n"
            "  - {name: request-duration, thresholdRange: {max: 1}}\n"
            "  - {name: e, templateRef: {name: t}, thresholdRange: {max: 1}}"
        )
        + "templates: {t: {provider: prom, query: up}}\n"
    )
    assert len(load(tmp_path, text).settings.canaries[0].analysis.metrics) == 2


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    """Type errors, unknown keys and broken references come out together, in file order."""
    text = canary("threshold: -1\nstepWeigt: 10\niterations: 2", provider="nope") + (
        "notifiers: {n: {type: slack}}\nlisten: nowhere\n"
    )
    assert problems(tmp_path, text) == [
        "c.yaml:6:5: canaries[0].provider: unknown provider 'nope'; defined providers: prom",
        "c.yaml:8:7: canaries[0].analysis.threshold: must be >= 0 (got -1)",
        "c.yaml:9:7: canaries[0].analysis.stepWeigt: unknown key 'stepWeigt'; "
        "did you mean 'stepWeight'?",
        "c.yaml:11:13: notifiers.n: set exactly one of url or url_file",
        "c.yaml:12:1: listen: must be HOST:PORT, e.g. 127.0.0.1:9879 (got 'nowhere')",
    ]


# --------------------------------------------------------------------------- secrets


def test_secret_file_missing(tmp_path: Path) -> None:
    """A secret file that does not exist is a problem naming the resolved path."""
    assert problems(tmp_path, "api: {token_file: token}\n") == [
        "c.yaml:1:7: api.token_file: cannot read secret file token: No such file or directory"
    ]


def test_secret_file_readable_by_others(tmp_path: Path) -> None:
    """A world-readable secret file is a problem that shows the chmod fixing it."""
    write(tmp_path, "token", "s3cret", mode=0o644)
    path = write(tmp_path, "c.yaml", "api: {token_file: token}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert [str(p) for p in info.value.problems] == [
        f"{path}:1:7: api.token_file: secret file {tmp_path}/token is readable by others; "
        f"run: chmod o-r {tmp_path}/token"
    ]


def test_secret_file_relative_to_config(tmp_path: Path) -> None:
    """A relative *_file path is resolved against the directory of the file naming it."""
    write(tmp_path, "secrets/token", "s3cret", mode=0o600)
    loaded = load(tmp_path, "api: {token_file: secrets/token}\n")
    assert loaded.settings.api.token_file == str(tmp_path / "secrets" / "token")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "api: {token_env: API_TOKEN}\n",
            "c.yaml:1:7: api.token_env: environment variable API_TOKEN is not set",
        ),
        (
            "routers: {m: {type: webhook, url: http://x, secret_file: k, secret_env: HOME}}\n",
            "c.yaml:1:61: routers.m.secret_env: set secret_file or secret_env, not both",
        ),
    ],
    ids=["env-unset", "file-and-env"],
)
def test_secret_env(tmp_path: Path, text: str, expected: str) -> None:
    """Secret variables must be set in the given environment, and not doubled by a file."""
    write(tmp_path, "k", "key", mode=0o600)
    assert problems(tmp_path, text, environ={"HOME": "/"}) == [expected]


# --------------------------------------------------------------------------- files and YAML


UNKNOWN_TOP = (
    "valid keys: api, canaries, ha, history, include, listen, log, meshProvider, notifiers, "
    "outbox, providers, routers, state, templates"
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b"listen: [1,\n",
            [
                "c.yaml:2:1: <yaml>: expected the node content, but found "
                "'<stream end>' (while parsing a flow node)"
            ],
        ),
        (
            b"api:\n\ttoken_env: X\n",
            ["c.yaml:2:1: <yaml>: a tab character cannot indent YAML; use spaces"],
        ),
        (
            b"listen: \x00\x01\x02",
            ["c.yaml:1:9: <yaml>: not a text file: character #x0000 is not allowed"],
        ),
        (b"listen: \xff\xfe", ["c.yaml:1:9: <file>: not UTF-8 text (byte 0xff)"]),
        (
            b"- a\n- b\n",
            ["c.yaml:1:1: <root>: the top level must be a mapping of keys (got a list)"],
        ),
        (
            b"just text",
            ["c.yaml:1:1: <root>: the top level must be a mapping of keys (got 'just text')"],
        ),
        (
            b"log: {level: info}\nlog: {level: debug}\n",
            ["c.yaml:2:1: log: duplicate key 'log' (first on line 1); remove one"],
        ),
        (b"listen: !secret x\n", ["c.yaml:1:9: listen: unsupported tag !secret"]),
        (
            b"qq: &a [*a]\n",
            [
                f"c.yaml:1:1: qq: unknown key 'qq'; {UNKNOWN_TOP}",
                "c.yaml:1:5: qq[0]: an alias refers to a value that contains it",
            ],
        ),
        (
            b"api: {max_body_bytes: !!int nope}\n",
            ["c.yaml:1:23: api.max_body_bytes: invalid value 'nope' for tag tag:yaml.org,2002:int"],
        ),
        (
            b"zz: " + b"[" * 80 + b"]" * 80 + b"\n",
            [
                f"c.yaml:1:1: zz: unknown key 'zz'; {UNKNOWN_TOP}",
                "c.yaml:1:69: zz" + "[0]" * 64 + ": nested more than 64 levels deep",
            ],
        ),
    ],
    ids=[
        "syntax",
        "tab",
        "binary",
        "not-utf8",
        "list",
        "scalar",
        "duplicate-key",
        "tag",
        "recursive-alias",
        "bad-int-tag",
        "deep",
    ],
)
def test_bad_yaml(tmp_path: Path, content: bytes, expected: list[str]) -> None:
    """Malformed files are located problems, never tracebacks."""
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert [str(p).replace(f"{tmp_path}/", "") for p in info.value.problems] == expected


@pytest.mark.parametrize(
    "content",
    ["", "# only a comment\n", "---\n", "~\n"],
    ids=["empty", "comment", "empty-document", "null"],
)
def test_empty_file_is_default_config(tmp_path: Path, content: str) -> None:
    """An empty file is a valid configuration with every default and no canaries."""
    loaded = load(tmp_path, content)
    assert loaded.settings.canaries == []
    assert summary(loaded) == (
        "config OK: 0 canaries, 0 providers, 0 routers, 0 notifiers, 0 templates (1 file)"
    )


def test_missing_file(tmp_path: Path) -> None:
    """A missing main file is one problem at line 0."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", environ={})
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}/nope.yaml:0:0: <file>: cannot read: No such file or directory"
    ]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A directory given as the config is a problem, not a crash."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}:0:0: <file>: cannot read: Is a directory"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    """A file without read permission is a problem."""
    path = write(tmp_path, "c.yaml", "listen: 127.0.0.1:1\n", mode=0o000)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert [str(p) for p in info.value.problems] == [
        f"{path}:0:0: <file>: cannot read: Permission denied"
    ]


def test_merge_keys_and_anchors(tmp_path: Path) -> None:
    """YAML anchors and merge keys work; explicit keys win over merged ones."""
    text = PRE + textwrap.dedent("""\
        canaries:
          - &first
            name: web
            router: lb
            analysis: &analysis {interval: 10s, threshold: 3, stepWeight: 10}
          - <<: *first
            name: api
            analysis:
              <<: *analysis
              threshold: 7
    """)
    found = [
        (c.name, c.router, c.analysis.interval, c.analysis.threshold)
        for c in load(tmp_path, text).settings.canaries
    ]
    assert found == [("web", "lb", 10.0, 3), ("api", "lb", 10.0, 7)]


# --------------------------------------------------------------------------- includes


def test_include_merges_sections(tmp_path: Path) -> None:
    """Included files add providers, routers, templates and canaries; canaries are concatenated."""
    write(tmp_path, "conf.d/a.yaml", "providers: {thanos: {type: prometheus}}\n")
    write(tmp_path, "conf.d/b.yaml", canary().replace("web", "api").removeprefix(PRE))
    loaded = load(tmp_path, canary() + "include: ['conf.d/*.yaml']\n")
    assert [c.name for c in loaded.settings.canaries] == ["web", "api"]
    assert sorted(loaded.settings.providers) == ["prom", "thanos"]
    assert loaded.files == [
        f"{tmp_path}/c.yaml",
        f"{tmp_path}/conf.d/a.yaml",
        f"{tmp_path}/conf.d/b.yaml",
    ]
    assert loaded.settings.include == ["conf.d/*.yaml"]


def test_problem_in_included_file_is_located_there(tmp_path: Path) -> None:
    """A problem in an included canary names the included file and its own index."""
    write(tmp_path, "more.yaml", "canaries:\n  - {name: api, router: lb, analysis: {}}\n")
    assert problems(tmp_path, canary() + "include: [more.yaml]\n") == [
        "more.yaml:2:29: canaries[0].analysis: set stepWeight or stepWeights (canary), "
        "or iterations (blue/green, A/B)"
    ]


@pytest.mark.parametrize(
    ("files", "main", "expected"),
    [
        (
            {"a.yaml": "providers: {prom: {type: prometheus}}\n"},
            PRE + "include: [a.yaml]\n",
            ["a.yaml:1:13: providers.prom: duplicate provider 'prom' (first at c.yaml:1:13)"],
        ),
        (
            {"a.yaml": "listen: 127.0.0.1:1\n"},
            "include: [a.yaml]\n",
            ["a.yaml:1:1: listen: may only be set in the main configuration file"],
        ),
        (
            {"a.yaml": "routrs: {}\n"},
            "include: [a.yaml]\n",
            ["a.yaml:1:1: routrs: unknown key 'routrs'; did you mean 'routers'?"],
        ),
        (
            {},
            "include: [conf.d/*.yaml]\n",
            ["c.yaml:1:11: include[0]: no file matches 'conf.d/*.yaml' (relative to {tmp})"],
        ),
        (
            {"a.yaml": "include: [c.yaml]\n"},
            "include: [a.yaml]\n",
            ["a.yaml:1:1: include: include cycle: c.yaml -> a.yaml -> c.yaml"],
        ),
        (
            {"a.yaml": "include: [a.yaml]\n"},
            "include: a.yaml\n",
            ["a.yaml:1:1: include: include cycle: c.yaml -> a.yaml -> a.yaml"],
        ),
        (
            {},
            "include: {a: b}\n",
            ["c.yaml:1:1: include: must be a list of file globs (got a mapping)"],
        ),
        (
            {"a.yaml": "[1]\n"},
            "include: [a.yaml]\n",
            ["a.yaml:1:1: <root>: the top level must be a mapping of keys (got a list)"],
        ),
    ],
    ids=[
        "duplicate-name",
        "scalar-in-include",
        "unknown-key",
        "no-match",
        "cycle",
        "self",
        "not-a-list",
        "bad-included-file",
    ],
)
def test_include_problems(
    tmp_path: Path, files: dict[str, str], main: str, expected: list[str]
) -> None:
    """Include problems are reported at the include entry or in the included file."""
    for name, text in files.items():
        write(tmp_path, name, text)
    found = problems(tmp_path, main)
    assert found == [e.replace("{tmp}", str(tmp_path)) for e in expected]


def test_include_diamond_reads_each_file_once(tmp_path: Path) -> None:
    """A file reached through two includes (no cycle) is read and merged once."""
    write(tmp_path, "d/shared.yaml", "providers: {prom: {type: prometheus}}\n")
    write(tmp_path, "d/a.yaml", "include: [shared.yaml]\n")
    loaded = load(tmp_path, "include: [d/a.yaml, d/shared.yaml]\n")
    assert len(loaded.files) == 3
    assert list(loaded.settings.providers) == ["prom"]


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


# --------------------------------------------------------------------------- environment


def test_env_overrides_nested_key(tmp_path: Path) -> None:
    """CANARYD_A__B__C overrides a nested file value (names are case-insensitive)."""
    env = {
        "CANARYD_PROVIDERS__PROM__ADDRESS": "http://thanos:9090",
        "CANARYD_PROVIDERS__PROM__INSECURESKIPVERIFY": "true",
        "CANARYD_LOG__LEVEL": "debug",
    }
    settings = load(tmp_path, canary(), environ=env).settings
    assert settings.providers["prom"].model_dump()["address"] == "http://thanos:9090"
    assert settings.providers["prom"].model_dump()["insecureSkipVerify"] is True
    assert settings.log.level == "debug"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"CANARYD_LISTEN": "nowhere"},
            "<env CANARYD_LISTEN>:0:0: listen: must be HOST:PORT, e.g. 127.0.0.1:9879 "
            "(got 'nowhere')",
        ),
        (
            {"CANARYD_PROVIDERS__PROM__TIMEOUT": "soon"},
            "<env CANARYD_PROVIDERS__PROM__TIMEOUT>:0:0: providers.prom.timeout: "
            "invalid duration 'soon': expected e.g. 30s, 1m, 1h30m or 500ms",
        ),
        (
            {"CANARYD_CANARIES": "[{oops"},
            "<env CANARYD_CANARIES>:0:0: canaries: CANARYD_CANARIES must hold JSON for this key",
        ),
        (
            {"CANARYD_CANARIES": "[{}]"},
            "<env CANARYD_CANARIES>:0:0: canaries[0]: missing key 'name'",
        ),
    ],
    ids=["scalar", "nested", "not-json", "json-replaces-list"],
)
def test_env_bad_value(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    """Problems from environment values are located at <env NAME>:0:0, naming the variable."""
    assert problems(tmp_path, canary(), environ=env)[:1] == [expected]


def test_explicit_environ_ignores_process_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit environ replaces os.environ, and os.environ is used when none is given."""
    monkeypatch.setenv("CANARYD_LISTEN", "127.0.0.1:1234")
    path = write(tmp_path, "c.yaml", "listen: 127.0.0.1:9879\n")
    assert load_config(path, environ={}).settings.listen == "127.0.0.1:9879"
    assert load_config(path).settings.listen == "127.0.0.1:1234"


# --------------------------------------------------------------------------- summary


def test_summary_singular(tmp_path: Path) -> None:
    """The summary line uses singular nouns for one of a kind."""
    text = canary() + "notifiers: {n: {type: slack, url: http://x}}\n"
    text += "templates: {t: {provider: prom, query: up}}\n"
    assert summary(load(tmp_path, text)) == (
        "config OK: 1 canary, 1 provider, 1 router, 1 notifier, 1 template (1 file)"
    )


# --------------------------------------------------------------------------- never a traceback

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["prometheus", "haproxy", "webhook", "slack", "10s", "lb", "prom", "x_file"]),
)
_keys = st.one_of(
    st.sampled_from(
        sorted(
            _model_keys(config.Settings, set())
            | {"apiVersion", "kind", "metadata", "spec", "include", "flagger.app/v1beta1"}
        )
    ),
    st.text(max_size=8),
)
_trees = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=30,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(alphabet=st.sampled_from([*"ab:- \n\t[]{}&*!|>'\"#%@`,?~0.", "\x00"]), max_size=80)
)
@pytest.mark.slow
def test_random_text_never_crashes(tmp_path: Path, text: str) -> None:
    """Arbitrary YAML-ish text either loads or raises ConfigError, nothing else."""
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(ConfigError):
        load_config(path, environ={})


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    top=st.dictionaries(_keys, _trees, max_size=6),
    flagger=st.booleans(),
)
@pytest.mark.slow
def test_random_structures_never_crash(
    tmp_path: Path, top: dict[str, object], flagger: bool
) -> None:
    """Random nested structures dumped to YAML either load or raise ConfigError."""
    if flagger:
        top = {"apiVersion": "flagger.app/v1beta1", **top}
        write(tmp_path, "inc.yaml", yaml.safe_dump(top))
        text = "include: [inc.yaml]\n"
    else:
        text = yaml.safe_dump(top)
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(ConfigError):
        load_config(path, environ={})


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
