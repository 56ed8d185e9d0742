"""CloudWatch for tests: moto's server mode (``moto_server``) on a free 127.0.0.1 port.

::

    with start_moto(tmp_path) as server:
        cfg = server.provider_config()          # endpoint_url set, region us-east-1
        await put_metric(server, "App", "Errors", {"app": "web"}, [(t, 3.0), ...])

moto answers the CloudWatch API as AWS documents it (it is the AWS SDKs' own
test double); data is put with ``PutMetricData`` through aiobotocore, as a
test's application would. The credentials are the fake ones moto accepts,
given through the environment (the first link of the standard chain).

Without ``moto_server`` the test is skipped, or fails under ``CI=true``
(``pip install 'moto[server]'``, in the ``test`` extra).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from daemons import free_port

from canaryd.config import CloudWatchProvider

REGION = "us-east-1"
START_TIMEOUT = 30.0

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}
"""AWS's documented example keys: moto accepts any."""


@dataclass(frozen=True)
class MotoServer:
    """A running moto server."""

    url: str

    def provider_config(self, **extra: Any) -> CloudWatchProvider:
        """A cloudwatch provider config pointing at this server."""
        return CloudWatchProvider.model_validate(
            {"type": "cloudwatch", "region": REGION, "endpoint_url": self.url, **extra}
        )


def find_moto_server() -> str:
    """The ``moto_server`` executable (beside this Python first); fail in CI, skip elsewhere."""
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return str(beside)
    found = shutil.which("moto_server")
    if found:
        return found
    message = "moto_server is not installed (pip install 'moto[server]')"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def start_moto(log_dir: Path) -> Iterator[MotoServer]:
    """Run ``moto_server`` on 127.0.0.1 until the block ends."""
    binary = find_moto_server()
    port = free_port()
    log = (log_dir / "moto.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_ready(proc, port, log_dir / "moto.log")
        yield MotoServer(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    import socket

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"moto_server did not listen within {START_TIMEOUT:g}s")


async def put_metric(
    server: MotoServer,
    namespace: str,
    name: str,
    dimensions: dict[str, str],
    points: list[tuple[float, float]],
) -> None:
    """``PutMetricData`` of ``(unix_seconds, value)`` points, as an application would."""
    from aiobotocore.session import AioSession

    session = AioSession()
    async with session.create_client(
        "cloudwatch", region_name=REGION, endpoint_url=server.url
    ) as client:
        await client.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                    "Timestamp": datetime.fromtimestamp(t, UTC),
                    "Value": value,
                    "Unit": "Count",
                }
                for t, value in points
            ],
        )
