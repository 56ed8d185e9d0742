"""Configuration loader: each model rule is located at its key with a readable message."""

from __future__ import annotations

from pathlib import Path

import pytest
from loader_helpers import PRE, canary, problems

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
