"""The HAProxy router against a real HAProxy (and against fake runtime sockets for failures)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream
from haproxy import HAProxyInstance, count_responses, short_socket_dir
from support import refused_port
from traffic import assert_split, route, step_and_roll_back

from canaryd.config import HAProxyRouter
from canaryd.errors import RouterError
from canaryd.routers import Action
from canaryd.routers.haproxy import HAProxyRuntime, to_haproxy_weight
from canaryd.routers.haproxy_socket import parse_socket

REQUESTS = 400
"""Requests sent through the frontend to measure a split."""

TOLERANCE = 0.03
"""Allowed deviation of the measured canary share (roundrobin is near-exact)."""


def weights(instance: HAProxyInstance) -> tuple[str, str]:
    """Both servers' ``get weight`` answers, read independently of canaryd's client."""
    return (
        instance.command(f"get weight {instance.backend}/{instance.primary}").strip(),
        instance.command(f"get weight {instance.backend}/{instance.canary}").strip(),
    )


@pytest.mark.parametrize(
    ("percent", "weight"),
    [(0, 0), (1, 3), (20, 51), (50, 128), (80, 205), (99, 253), (100, 256)],
    ids=["0", "1", "20", "50", "80", "99", "100"],
)
def test_percent_maps_to_haproxy_weight(percent: int, weight: int) -> None:
    """A percentage becomes round(p * 256 / 100) on HAProxy's 0..256 scale."""
    assert to_haproxy_weight(percent) == weight


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("/run/haproxy/admin.sock", "/run/haproxy/admin.sock"),
        ("admin.sock", "admin.sock"),
        ("127.0.0.1:9999", ("127.0.0.1", 9999)),
        ("[::1]:9999", ("::1", 9999)),
    ],
    ids=["absolute-path", "relative-path", "ipv4", "ipv6"],
)
def test_socket_setting_is_a_path_or_host_port(value: str, address: str | tuple[str, int]) -> None:
    """A socket setting is a unix path unless it ends in :PORT."""
    assert parse_socket(value) == address


@pytest.mark.parametrize(
    "override",
    [{"backend": "web;shutdown sessions"}, {"canary": "web canary"}, {"primary": "a\\b"}],
    ids=["semicolon", "space", "backslash"],
)
def test_names_that_would_break_a_command_are_refused(override: dict[str, str]) -> None:
    """A backend or server name that would split or alter a runtime-API command is refused."""
    cfg = config("/run/haproxy/admin.sock", timeout=1.0).model_copy(update=override)

    with pytest.raises(RouterError, match=r"^haproxy: invalid backend or server name"):
        HAProxyRuntime(cfg)


@pytest.mark.anyio
async def test_weight_outside_percent_is_refused_before_any_command(tmp_path: Path) -> None:
    """A weight outside 0..100 percent is a RouterError; nothing is sent to HAProxy."""
    router = HAProxyRuntime(config(str(tmp_path / "absent.sock"), timeout=1.0))

    with pytest.raises(RouterError) as info:
        await router.apply(route("route", -20, 120))

    assert str(info.value) == "haproxy web: weight -20 is not a percentage (0..100)"


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("primary", "canary", "expected"),
    [
        (80, 20, ("205 (initial 256)", "51 (initial 0)")),
        (0, 100, ("0 (initial 256)", "256 (initial 0)")),
    ],
    ids=["20-percent-canary", "all-canary"],
)
async def test_route_splits_real_traffic(
    haproxy: HAProxyInstance, primary: int, canary: int, expected: tuple[str, str]
) -> None:
    """Weights set through the runtime API split real requests in the same proportion."""
    await HAProxyRuntime(haproxy.router_config()).apply(route("route", primary, canary))

    counts = await count_responses(haproxy.url, REQUESTS)

    assert weights(haproxy) == expected
    assert abs(counts["canary"] / REQUESTS - canary / 100) <= TOLERANCE
    assert counts["primary"] + counts["canary"] == REQUESTS


@pytest.mark.integration
@pytest.mark.anyio
async def test_rollback_returns_all_traffic_to_primary(haproxy: HAProxyInstance) -> None:
    """Rollback sets canary 0 / primary 100 whatever the request's weights, and traffic follows."""
    router = HAProxyRuntime(haproxy.router_config())
    await router.apply(route("route", 50, 50))

    await router.apply(route("rollback", 50, 50))

    assert weights(haproxy) == ("256 (initial 256)", "0 (initial 0)")
    assert await count_responses(haproxy.url, 100) == {"primary": 100}


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("tcp", [False, True], ids=["unix-socket", "tcp-socket"])
async def test_runtime_api_over_unix_and_tcp(haproxy: HAProxyInstance, tcp: bool) -> None:
    """The router works over the unix stats socket and over host:port."""
    await HAProxyRuntime(haproxy.router_config(tcp=tcp)).apply(route("route", 70, 30))

    assert weights(haproxy) == ("179 (initial 256)", "77 (initial 0)")


@pytest.mark.integration
@pytest.mark.anyio
async def test_verify_only_promotion_changes_nothing(haproxy: HAProxyInstance) -> None:
    """With promotion: verify, promote only checks both servers exist; nothing changes."""
    router = HAProxyRuntime(haproxy.router_config().model_copy(update={"promotion": "verify"}))
    await router.apply(route("route", 60, 40))

    await router.apply(route("promote", 0, 100))

    assert weights(haproxy) == ("154 (initial 256)", "102 (initial 0)")
    assert addresses(haproxy)[0] != addresses(haproxy)[1]


def addresses(instance: HAProxyInstance) -> tuple[str, str]:
    """(primary, canary) ``addr:port`` from ``show servers state``, read independently."""
    rows = instance.command(f"show servers state {instance.backend}").splitlines()[2:]
    found = {r.split()[3]: f"{r.split()[4]}:{r.split()[18]}" for r in rows if r.strip()}
    return found[instance.primary], found[instance.canary]


@pytest.mark.integration
@pytest.mark.anyio
async def test_promotion_moves_real_traffic_to_the_new_version(haproxy: HAProxyInstance) -> None:
    """After promote and the move back to the primary, every request reaches the new version."""
    router = HAProxyRuntime(haproxy.router_config())
    await router.apply(route("route", 50, 50))

    await router.apply(route("promote", 50, 50))
    await router.apply(route("route", 100, 0))

    assert addresses(haproxy)[0] == addresses(haproxy)[1]
    assert weights(haproxy) == ("256 (initial 256)", "0 (initial 0)")
    await assert_split(haproxy.url, 100)  # the "canary" backend is the new version


@pytest.mark.integration
@pytest.mark.anyio
async def test_promotion_is_idempotent(haproxy: HAProxyInstance) -> None:
    """Promoting twice (a retried decision) leaves the same address and weights."""
    router = HAProxyRuntime(haproxy.router_config())

    await router.apply(route("promote", 100, 0))
    first = addresses(haproxy), weights(haproxy)
    await router.apply(route("promote", 100, 0))

    assert (addresses(haproxy), weights(haproxy)) == first
    assert first[0][0] == first[0][1]


@pytest.mark.integration
@pytest.mark.anyio
async def test_rollback_after_promotion_is_refused_not_reported(haproxy: HAProxyInstance) -> None:
    """After an address promotion a rollback is a RouterError: the old version is gone."""
    router = HAProxyRuntime(haproxy.router_config())
    await router.apply(route("promote", 50, 50))
    canary_address = addresses(haproxy)[1]

    with pytest.raises(RouterError) as info:
        await router.apply(route("rollback", 50, 50))

    assert str(info.value) == (
        f"haproxy web/web-primary: cannot roll back: the primary server already points at the "
        f"canary's address {canary_address} (promoted); redeploy the old version to restore it"
    )
    assert weights(haproxy) == ("128 (initial 256)", "128 (initial 0)")


@pytest.mark.integration
@pytest.mark.anyio
async def test_route_steps_and_rollback_split_real_traffic(haproxy: HAProxyInstance) -> None:
    """0/20/50/100 percent and a rollback land within 7 points of the weight (0/100 exact)."""
    router = HAProxyRuntime(haproxy.router_config())

    await step_and_roll_back(router, haproxy.url)


@pytest.mark.integration
@pytest.mark.anyio
async def test_refused_apply_keeps_the_previous_split(haproxy: HAProxyInstance) -> None:
    """An apply HAProxy refuses names HAProxy's text and leaves the previous split serving."""
    await HAProxyRuntime(haproxy.router_config()).apply(route("route", 80, 20))
    broken = haproxy.router_config().model_copy(update={"canary": "web-gone"})

    with pytest.raises(RouterError, match=r"^haproxy web/web-gone: No such server\.$"):
        await HAProxyRuntime(broken).apply(route("route", 50, 50))

    assert weights(haproxy) == ("205 (initial 256)", "51 (initial 0)")
    await assert_split(haproxy.url, 20)


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize("action", ["route", "promote"], ids=["route", "promote"])
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"canary": "web-nope"}, "haproxy web/web-nope: No such server."),
        ({"backend": "nope"}, "haproxy nope/web-primary: No such backend."),
    ],
    ids=["unknown-server", "unknown-backend"],
)
async def test_unknown_names_report_haproxys_text(
    haproxy: HAProxyInstance, action: Action, override: dict[str, str], message: str
) -> None:
    """HAProxy's own error text names what is missing in the RouterError."""
    update = {**override, "promotion": "verify"}  # address promotion: see the next test
    cfg = haproxy.router_config().model_copy(update=update)

    with pytest.raises(RouterError) as info:
        await HAProxyRuntime(cfg).apply(route(action))

    assert str(info.value) == message


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"canary": "web-nope"}, "haproxy web/web-nope: No such server."),
        ({"backend": "nope"}, "haproxy nope: Can't find backend."),
    ],
    ids=["unknown-server", "unknown-backend"],
)
async def test_address_promotion_reports_haproxys_text(
    haproxy: HAProxyInstance, override: dict[str, str], message: str
) -> None:
    """Promoting with unknown names is a RouterError with HAProxy's text; nothing moves."""
    cfg = haproxy.router_config().model_copy(update=override)

    with pytest.raises(RouterError) as info:
        await HAProxyRuntime(cfg).apply(route("promote", 100, 0))

    assert str(info.value) == message
    assert addresses(haproxy)[0] != addresses(haproxy)[1]


def unreachable(kind: str, tmp_path: Path) -> str:
    """A socket setting nothing listens on."""
    if kind == "missing-unix-socket":
        return str(short_socket_dir(tmp_path) / "absent.sock")
    return f"127.0.0.1:{refused_port()}"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "reason"),
    [("missing-unix-socket", "no such socket"), ("refused-tcp-port", "connection refused")],
    ids=["missing-unix-socket", "refused-tcp-port"],
)
async def test_unreachable_socket_is_a_router_error(tmp_path: Path, kind: str, reason: str) -> None:
    """A socket nobody listens on gives a RouterError naming it, after bounded retries."""
    socket = unreachable(kind, tmp_path)
    router = HAProxyRuntime(config(socket, timeout=0.5))
    started = time.monotonic()

    with pytest.raises(RouterError) as info:
        await router.apply(route())

    assert str(info.value) == f"haproxy {socket}: {reason} (after 3 attempts)"
    assert time.monotonic() - started < router.budget


def config(socket: str, timeout: float) -> HAProxyRouter:
    """A router config for backend web with the usual server names."""
    return HAProxyRouter(
        type="haproxy",
        socket=socket,
        backend="web",
        primary="web-primary",
        canary="web-canary",
        timeout=timeout,
    )


@asynccontextmanager
async def fake_runtime(path: Path, answer: Callable[[str], bytes | None]) -> AsyncIterator[None]:
    """A unix socket server answering each command with ``answer(line)``; None: never answer."""

    async def handle(stream: SocketStream) -> None:
        async with stream:
            reply = answer((await stream.receive()).decode().strip())
            if reply is None:
                await anyio.sleep_forever()
            else:
                await stream.send(reply)

    listener = await anyio.create_unix_listener(path)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield
        tg.cancel_scope.cancel()


def http_server(line: str) -> bytes:
    """Someone pointed the router at an HTTP port."""
    return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


def wrong_weight(line: str) -> bytes:
    """Accepts every ``set weight`` but reports weight 7 afterwards."""
    return b"\n" if line.startswith("set ") else b"7 (initial 256)\n\n"


STATE_HEADER = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_port\n"


def address_ignored(line: str) -> bytes:
    """Answers ``set server ... addr`` like HAProxy but never changes the address."""
    if line.startswith("show servers state"):
        rows = "3 web 1 web-primary 10.0.0.1 2 80\n3 web 2 web-canary 10.0.0.2 2 80\n\n"
        return (STATE_HEADER + rows).encode()
    if line.startswith("set server"):
        return b"IP changed from '10.0.0.1' to '10.0.0.2' by 'stats socket command'\n\n"
    return b"256 (initial 256)\n\n"


@pytest.mark.anyio
async def test_promoted_address_is_read_back(tmp_path: Path) -> None:
    """A primary address that did not change after set server addr is an error quoting HAProxy."""
    path = short_socket_dir(tmp_path) / "fake.sock"
    async with fake_runtime(path, address_ignored):
        with pytest.raises(RouterError) as info:
            await HAProxyRuntime(config(str(path), timeout=1.0)).apply(route("promote", 100, 0))

    assert str(info.value) == (
        "haproxy web/web-primary: IP changed from '10.0.0.1' to '10.0.0.2' "
        "by 'stats socket command'"
    )


def says_nothing(line: str) -> bytes:
    """Closes every connection without a word."""
    return b""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (http_server, "haproxy web/web-primary: HTTP/1.1 400 Bad Request"),
        (wrong_weight, "haproxy web/web-primary: weight is 7 after set weight 205"),
        (says_nothing, "haproxy web/web-primary: empty answer to get weight"),
    ],
    ids=["garbage", "read-back-mismatch", "empty-answer"],
)
async def test_unexpected_answers_are_router_errors(
    tmp_path: Path, answer: Callable[[str], bytes], message: str
) -> None:
    """An answer that is not HAProxy's success is a RouterError quoting it, not a traceback."""
    path = short_socket_dir(tmp_path) / "fake.sock"
    async with fake_runtime(path, answer):
        with pytest.raises(RouterError) as info:
            await HAProxyRuntime(config(str(path), timeout=1.0)).apply(route())

    assert str(info.value) == message


@pytest.mark.anyio
async def test_silent_socket_fails_within_budget(tmp_path: Path) -> None:
    """A socket that accepts but never answers gives a RouterError within timeout * 3."""
    path = short_socket_dir(tmp_path) / "fake.sock"
    router = HAProxyRuntime(config(str(path), timeout=0.3))
    started = time.monotonic()

    async with fake_runtime(path, lambda line: None):
        with pytest.raises(RouterError, match=rf"^haproxy {path}: no answer within 0\.\d+s"):
            await router.apply(route())

    assert time.monotonic() - started < router.budget + 0.5
