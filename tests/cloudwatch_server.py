"""CloudWatch for tests: moto's server mode (``moto_server``) on a free 127.0.0.1 port.

::

    with start_moto() as server:
        cfg = server.provider_config()          # endpoint_url set, region us-east-1
        await put_metric(server, "App", "Errors", {"app": "web"}, [(t, 3.0), ...])

moto answers the CloudWatch API as AWS documents it (it is the AWS SDKs' own
test double); data is put with ``PutMetricData`` through aiobotocore, as a
test's application would. The credentials are the fake ones moto accepts,
given through the environment (the first link of the standard chain).

The server itself is tests/moto_server.py's (shared with the ALB router's
tests). Without moto the test is skipped, or fails under ``CI=true``
(``moto[server]`` is in the ``test`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from moto_server import REGION, run_moto

from canaryd.config import CloudWatchProvider

__all__ = ["FAKE_CREDENTIALS", "REGION", "MotoServer", "put_metric", "start_moto"]

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


@contextmanager
def start_moto() -> Iterator[MotoServer]:
    """moto's server (tests/moto_server.py) for CloudWatch; missing moto fails under CI=true."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        message = "moto[server] is not installed (pip install -e '.[test]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with run_moto() as url:
        yield MotoServer(url)


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
