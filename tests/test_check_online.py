"""``canaryd check --online`` against a real Prometheus and a real HAProxy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
import yaml
from haproxy import HAProxyInstance
from prom import PrometheusServer, open_provider
from support import eventually

from canaryd.cli import main

pytestmark = pytest.mark.anyio

README = Path(__file__).resolve().parent.parent / "README.md"


def _config(
    tmp_path: Path, prometheus: PrometheusServer, haproxy: HAProxyInstance, **router: str
) -> dict[str, Any]:
    lb = {
        "type": "haproxy",
        "socket": str(haproxy.unix_socket),
        "backend": haproxy.backend,
        "primary": haproxy.primary,
        "canary": haproxy.canary,
        **router,
    }
    return {
        "listen": "127.0.0.1:0",
        "state": f"sqlite://{tmp_path}/state.db",
        "providers": {"prom": {"type": "prometheus", "address": prometheus.url}},
        "routers": {"lb": lb},
        "canaries": [],
    }


def _canary(*metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "web",
        "namespace": "prod",
        "router": "lb",
        "analysis": {"interval": "30s", "threshold": 2, "stepWeight": 10, "maxWeight": 50}
        | {"metrics": list(metrics)},
    }


async def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await anyio.to_thread.run_sync(main, ["check", "--online", "-c", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


async def _scraped(prometheus: PrometheusServer, query: str, bump: Any = None) -> None:
    """Wait until ``query`` has a value (calling ``bump`` before each try, if given)."""

    async def probe() -> float | None:
        if bump is not None:
            bump()
        return await p.query(query, budget=5.0)

    async with open_provider(prometheus.provider_config()) as p:
        await eventually(probe, lambda v: v is not None, within=30)


async def test_online_prints_each_query_with_its_value_or_no_data(
    tmp_path: Path,
    prometheus: PrometheusServer,
    haproxy: HAProxyInstance,
    unique_job: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each query is printed with its value, an empty answer as "no data"; the router is checked."""
    assert prometheus.app is not None
    prometheus.app.set("online_success", {"job": unique_job}, 99.5)
    present = f'max(online_success{{job="{unique_job}"}})'
    await _scraped(prometheus, present)
    cfg = _config(tmp_path, prometheus, haproxy)
    absent = f'max(online_success{{job="{unique_job}-absent"}})'
    cfg["canaries"] = [
        _canary(
            {"name": "success", "query": present, "thresholdRange": {"min": 99}},
            {"name": "empty", "query": absent, "thresholdRange": {"min": 1}},
        )
    ]
    path = tmp_path / "canaryd.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    code, out, err = await _check(path, capsys)
    assert (code, err) == (0, ""), out + err
    assert f"  {present}\n  = 99.5\n" in out
    assert f"  {absent}\n  = no data\n" in out
    assert re.search(r"router lb \(haproxy\): backend web: web-primary at 127\.0\.0\.1:\d+, ", out)


async def test_online_locates_a_broken_query_and_a_missing_server(
    tmp_path: Path,
    prometheus: PrometheusServer,
    haproxy: HAProxyInstance,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A query Prometheus refuses and a server HAProxy lacks are located problems; exit 1."""
    cfg = _config(tmp_path, prometheus, haproxy, canary="web-nope")
    cfg["canaries"] = [_canary({"name": "bad", "query": "sum(", "thresholdRange": {"min": 1}})]
    path = tmp_path / "canaryd.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    text = path.read_text().splitlines()
    query_line = next(i for i, line in enumerate(text, 1) if "sum(" in line)
    router_line = next(i for i, line in enumerate(text, 1) if line.strip() == "lb:")
    code, _, err = await _check(path, capsys)
    problems = err.splitlines()
    assert code == 1 and problems[-1] == "2 problem(s) found"
    assert re.match(rf"{re.escape(str(path))}:{query_line}:\d+: .*query: prod/web: ", problems[0])
    assert problems[1].startswith(f"{path}:{router_line}:")
    assert "web-nope: No such server" in problems[1]


async def test_the_readme_minimal_config_passes_online(
    tmp_path: Path,
    prometheus: PrometheusServer,
    haproxy: HAProxyInstance,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's minimal configuration passes ``check --online`` and its built-in queries
    select the HAProxy canary server (a value, not "no data", once HAProxy's series exist)."""
    block = README.read_text().split("## A minimal configuration", 1)[1]
    cfg = yaml.safe_load(block.split("```yaml\n", 1)[1].split("```", 1)[0])
    token = tmp_path / "api-token"
    token.write_text("t" * 32)
    token.chmod(0o600)
    cfg.update(state=f"sqlite://{tmp_path}/state.db", api={"token_file": str(token)})
    cfg["providers"]["prom"]["address"] = prometheus.url
    cfg["routers"]["lb"]["socket"] = str(haproxy.unix_socket)
    target = cfg["canaries"][0]["target"]
    app, served = prometheus.app, [0.0]
    assert app is not None

    def bump() -> None:  # counters that grow, as HAProxy's do under traffic
        served[0] += 100.0
        for code, count in (("2xx", served[0]), ("5xx", served[0] / 1000)):
            labels = {"job": "haproxy", "proxy": "web", "server": target, "code": code}
            app.set("haproxy_server_http_responses_total", labels, count)

    selector = f'haproxy_server_http_responses_total{{server="{target}",code="5xx"}}'
    await _scraped(prometheus, f"max(rate({selector}[1m])) > 0", bump)
    path = tmp_path / "canaryd.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    code, out, err = await _check(path, capsys)
    assert code == 0, err
    assert target == haproxy.canary
    success = out.split("metric request-success-rate", 1)[1].split("\n")[2]
    assert success.startswith("  = ") and success != "  = no data"
