"""The Prometheus provider against a real Prometheus: values, no data, series, ranges."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prom import PrometheusServer, open_provider, seed_openmetrics
from support import eventually

from canaryd.errors import ProviderError

SEVERAL = "a metric query must return exactly one (aggregate with sum() or similar)"

# --------------------------------------------------------------------------- real Prometheus


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("42", 42.0),
        ("1e308 * 1.5 / 1.5", 1e308),
        ("1/0", math.inf),
        ("-1/0", -math.inf),
        ("scalar(vector(3.25))", 3.25),
    ],
    ids=["scalar", "huge", "plus-inf", "minus-inf", "scalar-function"],
)
async def test_scalar_answers_are_values(
    prometheus: PrometheusServer, query: str, expected: float
) -> None:
    """A scalar answer, Inf and huge numbers included, is returned as a float."""
    async with open_provider(prometheus.provider_config()) as prov:
        assert await prov.query(query, budget=5) == expected


@pytest.mark.integration
@pytest.mark.anyio
async def test_single_series_vector_is_its_value(
    prometheus: PrometheusServer, unique_job: str
) -> None:
    """A vector with one series answers that series' value once it has been scraped."""
    assert prometheus.app is not None
    prometheus.app.set("canaryd_test_value", {"job": unique_job}, 7.25)
    async with open_provider(prometheus.provider_config()) as prov:
        q = f'canaryd_test_value{{job="{unique_job}"}}'
        assert await eventually(lambda: prov.query(q, budget=2), lambda v: v is not None) == 7.25


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    "query",
    ['canaryd_never_exported{job="nobody"}', "0/0", "vector(0) / 0"],
    ids=["empty-vector", "nan-scalar", "nan-vector"],
)
async def test_no_data_is_none(prometheus: PrometheusServer, query: str) -> None:
    """An empty vector or a NaN value means "no data": None, not an error."""
    async with open_provider(prometheus.provider_config()) as prov:
        assert await prov.query(query, budget=5) is None


@pytest.mark.integration
@pytest.mark.anyio
async def test_scraped_nan_sample_is_none(prometheus: PrometheusServer, unique_job: str) -> None:
    """A series whose scraped value is NaN counts as no data."""
    assert prometheus.app is not None
    prometheus.app.set("canaryd_test_nan", {"job": unique_job}, math.nan)
    async with open_provider(prometheus.provider_config()) as prov:
        q = f'canaryd_test_nan{{job="{unique_job}"}}'
        await eventually(lambda: prov.query(f"count({q})", budget=2), lambda v: v == 1)
        assert await prov.query(q, budget=5) is None


@pytest.mark.integration
@pytest.mark.anyio
async def test_several_series_is_an_error(prometheus: PrometheusServer, unique_job: str) -> None:
    """A query answering three series fails with a message saying how many and what to do."""
    assert prometheus.app is not None
    prometheus.app.set_many(
        ("canaryd_test_multi", {"job": unique_job, "path": p}, 1.0) for p in ("/a", "/b", "/c")
    )
    async with open_provider(prometheus.provider_config()) as prov:
        q = f'canaryd_test_multi{{job="{unique_job}"}}'
        await eventually(lambda: prov.query(f"count({q})", budget=2), lambda v: v == 3)
        with pytest.raises(ProviderError) as err:
            await prov.query(q, budget=5)
    assert str(err.value) == f"query returned 3 series; {SEVERAL}"


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "sum(rate(x[1m])",
            'prometheus bad_data: invalid parameter "query": 1:16: parse error: '
            "unclosed left parenthesis",
        ),
        (
            "up[1m]",
            "query returned a range vector; a metric query must return a scalar or an instant "
            "vector (wrap the [range] selector in a function such as rate())",
        ),
        ('"text"', "query returned a string; a metric query must return a number"),
    ],
    ids=["bad-promql", "range-vector", "string"],
)
async def test_unusable_query_is_an_error_without_retry(
    prometheus: PrometheusServer, query: str, message: str
) -> None:
    """Bad PromQL carries Prometheus's own text; wrong result types say what is expected."""
    async with open_provider(prometheus.provider_config()) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query(query, budget=5)
        assert prov.stats.attempts == 1
    assert str(err.value) == message


@pytest.mark.integration
@pytest.mark.anyio
async def test_query_range_returns_one_series_values(
    prometheus: PrometheusServer, unique_job: str
) -> None:
    """A range query over one series returns one value per step, in time order."""
    assert prometheus.app is not None
    prometheus.app.set("canaryd_test_range", {"job": unique_job}, 2.5)
    q = f'canaryd_test_range{{job="{unique_job}"}}'
    async with open_provider(prometheus.provider_config()) as prov:
        await eventually(lambda: prov.query(q, budget=2), lambda v: v is not None)
        now = time.time()
        values = await prov.query_range(q, start=now, end=now + 2, step=1, budget=5)
    assert values == [2.5, 2.5, 2.5]


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "check"),
    [
        ('canaryd_never_exported{job="nobody"}', lambda v: v == []),
        ("0/0", lambda v: len(v) == 3 and all(math.isnan(x) for x in v)),
    ],
    ids=["no-series-is-empty", "nan-is-kept"],
)
async def test_query_range_edge_cases(
    prometheus: PrometheusServer, query: str, check: Callable[[list[float]], bool]
) -> None:
    """No series gives an empty list; NaN values are kept as float('nan')."""
    now = time.time()
    async with open_provider(prometheus.provider_config()) as prov:
        assert check(await prov.query_range(query, start=now - 2, end=now, step=1, budget=5))


@pytest.mark.integration
@pytest.mark.anyio
async def test_query_range_several_series_is_an_error(prometheus: PrometheusServer) -> None:
    """A range query answering two series fails with how many came back."""
    q = 'label_replace(vector(1), "s", "a", "", "") or label_replace(vector(2), "s", "b", "", "")'
    now = time.time()
    async with open_provider(prometheus.provider_config()) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query_range(q, start=now - 2, end=now, step=1, budget=5)
    assert str(err.value) == f"range query returned 2 series; {SEVERAL}"


@pytest.mark.integration
@pytest.mark.anyio
async def test_seeded_history_is_served_exactly(tmp_path: Path) -> None:
    """OpenMetrics history written with promtool comes back value for value."""
    from prom import start_prometheus

    t0 = 1_700_000_000
    values = [1.0, 2.5, 4.0, 8.0, 16.0]
    text = "# TYPE canaryd_seeded gauge\n" + "".join(
        f'canaryd_seeded{{job="seeded"}} {v} {t0 + 10 * i}\n' for i, v in enumerate(values)
    )
    data = seed_openmetrics(text, tmp_path / "data")
    server = start_prometheus(tmp_path, data_dir=data)
    try:
        async with open_provider(server.provider_config()) as prov:
            got = await prov.query_range(
                'canaryd_seeded{job="seeded"}', start=t0, end=t0 + 40, step=10, budget=5
            )
    finally:
        server.stop()
    assert got == values
