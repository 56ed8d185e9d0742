"""The Prometheus provider against a scripted stand-in: retries, caps and time budgets."""

from __future__ import annotations

import re
import time

import pytest
from prom import open_provider
from prom_standin import OK_42, Reply, StandIn
from prom_standin import stand_in as stand_in
from support import refused_port

from canaryd.config import PrometheusProvider
from canaryd.errors import ProviderError
from canaryd.providers.prometheus import MAX_BODY_BYTES


def prom_error(kind: str, message: str) -> bytes:
    """Prometheus's error JSON."""
    return f'{{"status":"error","errorType":"{kind}","error":"{message}"}}'.encode()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "first",
    [
        (503, b"upstream overloaded", 0.0),
        (429, b"slow down", 0.0),
        (502, b"<html>bad gateway</html>", 0.0),
        (503, prom_error("timeout", "query timed out in query execution"), 0.0),
        (500, prom_error("internal", "boom"), 0.0),
    ],
    ids=["503", "429", "502-html", "503-prometheus-timeout", "500-prometheus-internal"],
)
async def test_transient_failure_is_retried(stand_in: StandIn, first: Reply) -> None:
    """A transient failure followed by success yields the value after a retry."""
    stand_in.script = [first, (200, OK_42, 0.0)]
    async with open_provider(stand_in.config()) as prov:
        assert await prov.query("up", budget=5) == 42.0
        assert (prov.stats.attempts, prov.stats.retries, prov.stats.failures) == (2, 1, 0)
    assert len(stand_in.requests) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            (400, prom_error("bad_data", "1:5: parse error: unexpected end of input"), 0.0),
            "prometheus bad_data: 1:5: parse error: unexpected end of input",
        ),
        (
            (422, prom_error("execution", "expanding series: too many samples"), 0.0),
            "prometheus execution: expanding series: too many samples",
        ),
        (
            (503, prom_error("bad_data", "1:1: parse error: x"), 0.0),
            "prometheus bad_data: 1:1: parse error: x",
        ),
        (
            (200, b"<html>oops</html>", 0.0),
            "prometheus answered HTTP 200, not Prometheus JSON: <html>oops</html>",
        ),
        (
            (404, b"404 page not found", 0.0),
            "prometheus answered HTTP 404, not Prometheus JSON: 404 page not found",
        ),
        ((401, b"", 0.0), "prometheus answered HTTP 401, not Prometheus JSON"),
        (
            (200, b"x" * 300, 0.0),
            "prometheus answered HTTP 200, not Prometheus JSON: " + "x" * 200,
        ),
        (
            (200, b'{"status":"success","data":{"resultType":"vector","result":[{}]}}', 0.0),
            "prometheus answered an unexpected result: null",
        ),
    ],
    ids=[
        "400-bad-data",
        "422-execution",
        "503-bad-data",
        "200-garbage",
        "404-text",
        "401-empty",
        "long-garbage-preview-200-bytes",
        "vector-without-value",
    ],
)
async def test_permanent_failure_is_not_retried(
    stand_in: StandIn, reply: Reply, message: str
) -> None:
    """Prometheus errors about the query and non-Prometheus answers fail at once, exactly."""
    stand_in.script = [reply, (200, OK_42, 0.0)]
    async with open_provider(stand_in.config()) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=5)
    assert str(err.value) == message
    assert len(stand_in.requests) == 1


@pytest.mark.anyio
async def test_oversized_body_is_refused(stand_in: StandIn) -> None:
    """A 10 MB answer is cut after 1 MiB and refused with its status and first bytes."""
    stand_in.script = [(200, b"9" * 10_000_000, 0.0)]
    async with open_provider(stand_in.config()) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=5)
    assert str(err.value) == (
        f"prometheus answered HTTP 200 with more than {MAX_BODY_BYTES} bytes: " + "9" * 200
    )


@pytest.mark.anyio
async def test_persistent_503_gives_up_within_budget(stand_in: StandIn) -> None:
    """Retries stop inside the budget; the error says how many attempts and the last cause."""
    stand_in.script = [(503, b"overloaded", 0.0)]
    started = time.monotonic()
    async with open_provider(stand_in.config(timeout=0.2)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0
    match = re.fullmatch(
        r"gave up after (\d+) attempts in \d+\.\ds \(budget 1s\): "
        r"prometheus answered HTTP 503: overloaded",
        str(err.value),
    )
    assert match, str(err.value)
    assert int(match[1]) == len(stand_in.requests) >= 3


@pytest.mark.anyio
async def test_slow_answer_times_out_within_budget(stand_in: StandIn) -> None:
    """An answer slower than the timeout is abandoned; all attempts fit in the budget."""
    stand_in.script = [(200, OK_42, 30.0)]
    started = time.monotonic()
    async with open_provider(stand_in.config(timeout=0.3)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=1.0)
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 1.0
    assert re.fullmatch(
        r"gave up after 2 attempts in 0\.\ds \(budget 1s\): "
        r"prometheus did not answer within 0\.3s",
        str(err.value),
    ), str(err.value)


@pytest.mark.anyio
async def test_budget_below_timeout_makes_one_attempt(stand_in: StandIn) -> None:
    """With a budget shorter than the timeout, one attempt (bounded by the budget) is made."""
    stand_in.script = [(503, b"", 0.0)]
    async with open_provider(stand_in.config(timeout=5.0)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=0.5)
    assert re.fullmatch(
        r"gave up after 1 attempt in 0\.\ds \(budget 0\.5s\): prometheus answered HTTP 503",
        str(err.value),
    ), str(err.value)
    assert len(stand_in.requests) == 1


@pytest.mark.anyio
async def test_connection_refused_is_retried_then_reported(anyio_backend: str) -> None:
    """Nothing listening is transient: retried, then reported with the host, not the path."""
    port = refused_port()
    cfg = PrometheusProvider(
        type="prometheus", address=f"http://127.0.0.1:{port}/prom", timeout=0.2
    )
    async with open_provider(cfg) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=0.6)
    text = str(err.value)
    assert re.match(r"gave up after \d+ attempts in 0\.\ds \(budget 0\.6s\): cannot reach ", text)
    assert f"cannot reach prometheus at http://127.0.0.1:{port}/…: ConnectionRefusedError" in text
