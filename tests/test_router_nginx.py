"""The NGINX router against a real NGINX: real requests counted per split, failed applies."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from proxies import find_nginx, free_port, port_open, require, run_proxy
from support import eventually
from traffic import assert_split, in_front_of_backends, route, step_and_roll_back

from canaryd.config import NginxRouter
from canaryd.errors import RouterError
from canaryd.routers.nginx import NginxFileRouter, _workers, render_upstream, split_weights

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {dir}/canaryd/*.conf;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://web; }}
    }}
}}
"""


class Nginx:
    """A real NGINX in a temp dir whose ``upstream web`` lives in canaryd's include file."""

    def __init__(self, binary: str, directory: Path, backends: tuple[int, int]) -> None:
        """Write nginx.conf and a first include file (all traffic to the primary)."""
        self.binary, self.dir, self.backends = binary, directory, backends
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.conf = directory / "nginx.conf"
        self.log = directory / "nginx.log"
        self.error_log = directory / "error.log"
        self.include = directory / "canaryd" / "web.conf"
        for sub in ("canaryd", "tmp"):
            (directory / sub).mkdir()
        self.conf.write_text(NGINX_CONF.format(dir=directory, port=self.port))
        self.include.write_text(render_upstream(self.router_config(), "prod/web", 100, 0))
        self._stack = contextlib.ExitStack()

    def router_config(self, **override: Any) -> NginxRouter:
        """An ``nginx`` router config entry for this instance."""
        entry: dict[str, Any] = {
            "type": "nginx",
            "file": str(self.include),
            "upstream": "web",
            "primary": f"127.0.0.1:{self.backends[0]}",
            "canary": f"127.0.0.1:{self.backends[1]}",
            "nginx_bin": self.binary,
            "conf": str(self.conf),
            "pid_path": str(self.dir / "nginx.pid"),
            "timeout": 5.0,
        }
        return NginxRouter.model_validate(entry | override)

    def start(self) -> None:
        """Start the master in the foreground and wait until it accepts connections."""
        argv = [self.binary, "-c", str(self.conf), "-p", str(self.dir), "-e", "stderr"]
        self._stack.enter_context(run_proxy(argv, self.log, lambda: port_open(self.port)))

    def stop(self) -> None:
        """Stop NGINX (and wait for it)."""
        self._stack.close()


@pytest.fixture
async def nginx(tmp_path: Path) -> AsyncIterator[Nginx]:
    """A running NGINX in front of two real backends ("primary" and "canary")."""
    binary = require(find_nginx(), "nginx (apt-get install nginx)")
    async with in_front_of_backends(lambda d, b: Nginx(binary, d, b), tmp_path) as proxy:
        yield proxy


@pytest.mark.parametrize(
    ("split", "servers", "weights"),
    [((80, 20), (1, 1), (4, 1)), ((50, 50), (2, 1), (1, 2)), ((0, 100), (1, 1), (0, 1))],
    ids=["80-20", "two-primaries", "all-canary"],
)
def test_percent_split_becomes_reduced_server_weights(
    split: tuple[int, int], servers: tuple[int, int], weights: tuple[int, int]
) -> None:
    """Each side's total weight is proportional to its percent, reduced by the common divisor."""
    assert split_weights(*split, *servers) == weights


def test_side_at_zero_percent_is_left_out(tmp_path: Path) -> None:
    """NGINX refuses weight=0, so a side at 0 % has no server line at all."""
    cfg = Nginx("nginx", tmp_path, (1001, 1002)).router_config()

    text = render_upstream(cfg, "prod/web", 100, 0)

    assert "server 127.0.0.1:1001 weight=1;" in text
    assert "1002" not in text


def test_directives_and_server_options_go_into_the_block(tmp_path: Path) -> None:
    """The operator's upstream directives and server parameters are kept in canaryd's block."""
    cfg = Nginx("nginx", tmp_path, (1001, 1002)).router_config(
        directives=["keepalive 16", "zone web 64k"], server_options="max_fails=3 fail_timeout=5s"
    )

    text = render_upstream(cfg, "prod/web", 50, 50)

    assert "    keepalive 16;\n    zone web 64k;\n" in text
    assert "server 127.0.0.1:1002 weight=1 max_fails=3 fail_timeout=5s;" in text


@pytest.mark.integration
@pytest.mark.anyio
async def test_directives_pass_nginx_test_and_split_traffic(nginx: Nginx) -> None:
    """A block with keepalive and a zone passes the real nginx -t and still splits 50/50."""
    cfg = nginx.router_config(
        directives=["keepalive 4", "zone web 64k"], server_options="max_fails=2"
    )

    await NginxFileRouter(cfg).apply(route("route", 50, 50))

    await assert_split(nginx.url, 50)


@pytest.mark.integration
@pytest.mark.anyio
async def test_steps_and_rollback_split_real_traffic(nginx: Nginx) -> None:
    """0/20/50/100 % and rollback, each measured with real requests through NGINX."""
    router = NginxFileRouter(nginx.router_config())

    await step_and_roll_back(router, nginx.url)


@pytest.mark.integration
@pytest.mark.anyio
async def test_failed_test_restores_file_and_keeps_split(nginx: Nginx) -> None:
    """A config ``nginx -t`` rejects is not reloaded: NGINX's message, old file, old split."""
    await NginxFileRouter(nginx.router_config()).apply(route("route", 80, 20))
    before = nginx.include.read_bytes()
    bad = NginxFileRouter(nginx.router_config(canary="no-such-host.invalid:80"))

    with pytest.raises(RouterError) as info:
        await bad.apply(route("route", 50, 50))

    assert str(info.value).startswith(
        'nginx: [emerg] host not found in upstream "no-such-host.invalid:80" in '
    )
    assert nginx.include.read_bytes() == before
    await assert_split(nginx.url, 20)


@pytest.mark.integration
@pytest.mark.anyio
async def test_proxy_down_restores_file(nginx: Nginx) -> None:
    """With NGINX stopped the reload fails with its message; the file keeps the old split."""
    router = NginxFileRouter(nginx.router_config())
    await router.apply(route("route", 80, 20))
    before = nginx.include.read_bytes()
    nginx.stop()

    with pytest.raises(RouterError) as info:
        await router.apply(route("route", 50, 50))

    assert str(info.value).startswith("nginx: [error] "), info.value
    assert "nginx.pid" in str(info.value)
    assert nginx.include.read_bytes() == before
    nginx.start()
    await assert_split(nginx.url, 20)


@pytest.mark.integration
@pytest.mark.anyio
async def test_test_command_timeout_restores_file(nginx: Nginx) -> None:
    """A test command that hangs is killed after the timeout; file and split stay as they were."""
    await NginxFileRouter(nginx.router_config()).apply(route("route", 80, 20))
    before = nginx.include.read_bytes()
    slow = NginxFileRouter(nginx.router_config(test_command=["sleep", "30"], timeout=0.5))

    with pytest.raises(RouterError, match=r"^nginx: sleep did not finish within 0\.5s$"):
        await slow.apply(route("route", 50, 50))

    assert nginx.include.read_bytes() == before
    await assert_split(nginx.url, 20)


@pytest.mark.integration
@pytest.mark.anyio
async def test_reload_that_never_takes_effect_is_an_error(nginx: Nginx) -> None:
    """A reload command that signals nothing is caught by the worker check, and undone."""
    await NginxFileRouter(nginx.router_config()).apply(route("route", 80, 20))
    before = nginx.include.read_bytes()
    noop = NginxFileRouter(nginx.router_config(reload_command=["true"], timeout=0.5))

    with pytest.raises(RouterError, match=r"^nginx reload not confirmed within 0\.5s: no new"):
        await noop.apply(route("route", 50, 50))

    assert nginx.include.read_bytes() == before
    await assert_split(nginx.url, 20)


def reloads(log: Path) -> list[int]:
    """For each SIGHUP in NGINX's error log, the first worker started after it (0: none yet)."""
    workers: list[int] = []
    for line in log.read_text().splitlines():
        started = re.search(r"start worker process (\d+)$", line)
        if "(SIGHUP) received" in line:
            workers.append(0)
        elif started and workers and not workers[-1]:
            workers[-1] = int(started[1])
    return workers


def serving_only(nginx: Nginx, worker: int) -> bool:
    """True when ``worker`` is the only worker of the master that still accepts connections."""
    master = int((nginx.dir / "nginx.pid").read_text())
    live = [pid for pid, title in _workers(master).items() if "shutting down" not in title]
    return live == [worker]


@pytest.mark.integration
@pytest.mark.anyio
async def test_unconfirmed_reload_is_reloaded_back(nginx: Nginx, tmp_path: Path) -> None:
    """A reload that was sent but not confirmed: file restored and NGINX reloaded with it again."""
    await NginxFileRouter(nginx.router_config()).apply(route("route", 80, 20))
    before = nginx.include.read_bytes()
    sent = len(reloads(nginx.error_log))
    stranger = tmp_path / "other.pid"  # a master without workers: the reload is never confirmed
    stranger.write_text(str(os.getpid()))
    router = NginxFileRouter(nginx.router_config(pid_path=str(stranger), timeout=1.0))

    with pytest.raises(RouterError, match=r"^nginx reload not confirmed within 1s: no new worker"):
        await router.apply(route("route", 50, 50))

    assert nginx.include.read_bytes() == before
    await eventually(
        lambda: len(reloads(nginx.error_log)) == sent + 2 and reloads(nginx.error_log)[-1] > 0
    )
    await eventually(lambda: serving_only(nginx, reloads(nginx.error_log)[-1]))
    await assert_split(nginx.url, 20)


@pytest.mark.integration
@pytest.mark.anyio
async def test_canaries_sharing_nginx_do_not_test_each_others_files(nginx: Nginx) -> None:
    """Two canaries on one NGINX at once: a bad file fails only its own apply."""
    good = NginxFileRouter(nginx.router_config())
    bad = NginxFileRouter(
        nginx.router_config(
            file=str(nginx.include.with_name("api.conf")),
            upstream="api",
            canary="no-such-host.invalid:80",
        )
    )
    errors: list[str] = []

    async def apply_bad() -> None:
        with pytest.raises(RouterError) as info:
            await bad.apply(route("route", 50, 50))
        errors.append(str(info.value))

    async with anyio.create_task_group() as tg:
        tg.start_soon(apply_bad)
        tg.start_soon(good.apply, route("route", 50, 50))

    assert len(errors) == 1
    assert "no-such-host.invalid" in errors[0]
    assert not nginx.include.with_name("api.conf").exists()
    await assert_split(nginx.url, 50)


@pytest.mark.integration
@pytest.mark.anyio
async def test_promote_points_the_primary_at_the_canary_for_real_traffic(nginx: Nginx) -> None:
    """After promote, primary 100 % sends every request to the new version; rollback is refused."""
    router = NginxFileRouter(nginx.router_config())
    await router.apply(route("route", 50, 50))

    await router.apply(route("promote", 50, 50))
    await router.apply(route("promote", 50, 50))  # idempotent
    await router.apply(route("route", 100, 0))

    counts = await assert_split(nginx.url, 100)  # every answer from the canary's backend
    assert counts["canary"] == sum(counts.values())
    with pytest.raises(RouterError, match=r"^nginx web: cannot roll back: the primary's servers"):
        await router.apply(route("rollback", 100, 0))
    await assert_split(nginx.url, 100)


@pytest.mark.integration
@pytest.mark.anyio
async def test_promotion_verify_only_sets_weights(nginx: Nginx) -> None:
    """With promotion: verify, promote then primary 100 % leaves the old version serving."""
    router = NginxFileRouter(nginx.router_config(promotion="verify"))

    await router.apply(route("promote", 50, 50))
    await router.apply(route("route", 100, 0))

    await assert_split(nginx.url, 0)
    await router.apply(route("rollback", 100, 0))


def test_address_promotion_is_refused_for_nginx_plus() -> None:
    """promotion: address set on an NGINX Plus (api) entry is a config error, not ignored."""
    entry = {"type": "nginx", "api": "http://127.0.0.1:8080/api/9", "upstream": "web"}
    entry |= {"primary": "10.0.0.1:80", "canary": "10.0.0.2:80"}
    NginxRouter.model_validate(entry)  # the default is fine: the API sets weights only
    with pytest.raises(ValueError, match="promotion: address needs file"):
        NginxRouter.model_validate(entry | {"promotion": "address"})
