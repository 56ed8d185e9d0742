"""Property-based run of schemathesis against a live daemon: no 5xx, nothing off-schema."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from daemons import TOKEN, api_url, daemon_process, write_config
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from service_helpers import canary

from canaryd.service.openapi import document

pytestmark = pytest.mark.slow  # a real daemon and hundreds of generated requests

schema = schemathesis.openapi.from_dict(document()).exclude(operation_id="streamEvents")
"""Every operation but the event stream, which never ends by design (tests/test_live.py)."""


@schemathesis.check
def no_server_error_but_the_routers(ctx: Any, response: Any, case: Any) -> bool | None:
    """``not_a_server_error``, except the documented 502 of a command the router refused (the
    router here is unreachable on purpose)."""
    if response.status_code == 502 and '"router refused the command: ' in response.text:
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [
    no_server_error_but_the_routers,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
UNREACHABLE = "http://127.0.0.1:9"
"""Provider and router address that refuses connections: ticks fail fast, the API is the point."""


def _wait_ready(url: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1.0) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"canaryd at {url} not ready within {within:g}s")


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``canaryd run`` subprocess on 127.0.0.1 with canaries prod/web and prod/api."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    config = write_config(
        tmp,
        [canary(interval="1h"), canary("api", manual_promotion=True, interval="1h")],
        providers={"prom": {"type": "prometheus", "address": UNREACHABLE, "timeout": "1s"}},
        routers={"lb": {"type": "webhook", "url": UNREACHABLE, "timeout": "1s"}},
    )
    with daemon_process(config, tmp / "canaryd.log") as proc:
        url = api_url(config)
        _wait_ready(url)
        yield url
        proc.terminate()
        assert proc.wait(timeout=30) == 0


@schema.parametrize()
@settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case[Any], live_url: str) -> None:
    """Generated requests to every operation get documented statuses and bodies, never 5xx."""
    case.call_and_validate(
        base_url=live_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=CHECKS,
        timeout=10,
    )
