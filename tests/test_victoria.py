"""VictoriaMetrics answers the Prometheus provider's instant and range queries (a real server)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from support import eventually
from victoria import start_victoria

from canaryd.providers.prometheus import Prometheus

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_victoria_metrics_instant_and_range(tmp_path: Path) -> None:
    """Imported samples come back through the Prometheus provider: a value, no data, a range."""
    server = start_victoria(tmp_path)
    try:
        t0 = (int(time.time()) - 120) // 10 * 10
        lines = [
            f'canaryd_vm_latency{{job="web"}} {v} {(t0 + 10 * i) * 1000}'
            for i, v in enumerate([100, 110, 130, 120])
        ]
        lines.append(f'canaryd_vm_latency{{job="api"}} 999 {t0 * 1000}')
        server.import_text("\n".join(lines) + "\n")
        async with Prometheus(server.provider_config()) as provider:
            got = await eventually(
                lambda: provider.query_range(
                    'canaryd_vm_latency{job="web"}', start=t0, end=t0 + 30, step=10, budget=5
                ),
                lambda v: len(v) == 4,
            )
            assert got == [100.0, 110.0, 130.0, 120.0]
            at = t0 + 30
            value = await provider.query(
                f'max_over_time(canaryd_vm_latency{{job="web"}}[45s] @ {at})', budget=5
            )
            assert value == 130.0
            assert await provider.query('canaryd_vm_latency{job="none"}', budget=5) is None
            assert math.isclose(
                await provider.query(f"sum(canaryd_vm_latency @ {t0})", budget=5) or 0, 1099.0
            )
    finally:
        server.stop()
