"""The file-based routers' shared parts: atomic writes, restore on failure, the factory."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web

from canaryd.config import EnvoyRouter, NginxRouter, RouterConfig, TraefikRouter
from canaryd.errors import RouterError
from canaryd.http import make_transport
from canaryd.routers import build_router
from canaryd.routers.envoy import EnvoyFileRouter
from canaryd.routers.files import (
    TEMP_SUFFIX,
    api_auth,
    apply_file,
    get_json,
    preview,
    run_command,
    write_atomic,
)
from canaryd.routers.nginx import NginxFileRouter
from canaryd.routers.traefik import TraefikFileRouter


def leftovers(directory: Path) -> list[str]:
    """Temporary files the atomic write left behind."""
    return [p.name for p in directory.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path: Path) -> None:
    """The file holds the new bytes, readable by the proxy's user, and no temp file remains."""
    path = tmp_path / "web.conf"
    path.write_text("old")
    old_inode = path.stat().st_ino

    write_atomic(path, b"new")

    assert path.read_bytes() == b"new"
    assert path.stat().st_ino != old_inode  # a rename, not an in-place edit
    assert path.stat().st_mode & 0o777 == 0o644
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
@pytest.mark.parametrize("existed", [True, False], ids=["file-existed", "new-file"])
async def test_failed_activation_restores_previous_file(tmp_path: Path, existed: bool) -> None:
    """When activation fails the old content is back (or the new file is gone)."""
    path = tmp_path / "web.conf"
    if existed:
        path.write_bytes(b"old")

    async def refuse() -> None:
        assert path.read_bytes() == b"new"  # the proxy saw the new file
        raise RouterError("proxy: refused")

    with pytest.raises(RouterError, match=r"^proxy: refused$"):
        await apply_file("proxy", path, b"new", refuse)

    assert (path.read_bytes() if path.exists() else None) == (b"old" if existed else None)


@pytest.mark.anyio
async def test_cancelled_activation_restores_previous_file(tmp_path: Path) -> None:
    """A timeout around the apply (cancellation) still puts the old file back."""
    path = tmp_path / "web.conf"
    path.write_bytes(b"old")

    with anyio.move_on_after(0.2):
        await apply_file("proxy", path, b"new", anyio.sleep_forever)

    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs mounted for the test (needs root; CI runs as root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mounting a tmpfs needs root")
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "full"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(path: Path) -> None:
    """Write to ``path`` until the filesystem is full.

    Raises:
        AssertionError: it never filled up.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for _ in range(1024):
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return
        raise
    finally:
        os.close(fd)
    raise AssertionError("the tmpfs did not fill up")


@pytest.mark.anyio
async def test_full_disk_keeps_old_file_and_names_the_cause(tiny_tmpfs: Path) -> None:
    """On a really full filesystem the write fails, the old file stays, no temp file remains."""
    path = tiny_tmpfs / "web.conf"
    path.write_bytes(b"old")
    fill(tiny_tmpfs / "filler")
    activated = False

    async def activate() -> None:
        nonlocal activated
        activated = True

    with pytest.raises(RouterError) as info:
        await apply_file("nginx", path, b"n" * 8192, activate)

    assert str(info.value) == f"nginx {path}: cannot write: no space left on device"
    assert path.read_bytes() == b"old"
    assert not activated
    assert leftovers(tiny_tmpfs) == []


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
@pytest.mark.anyio
async def test_command_failure_quotes_its_output() -> None:
    """A failing command's output (stderr first) is the error; a missing one is named."""
    with pytest.raises(RouterError, match=r"^nginx: second line; boom$"):
        await run_command("nginx", ["sh", "-c", "echo boom; echo second line >&2; exit 1"], 5)
    with pytest.raises(RouterError, match=r"^nginx: cannot run /nonexistent/nginx: no such file"):
        await run_command("nginx", ["/nonexistent/nginx", "-t"], 5)


def test_preview_escapes_control_characters() -> None:
    """A proxy's message cannot move a terminal's cursor: control characters are escaped."""
    assert preview("bad\x1b[2Jthing\nnext") == "bad\\x1b[2Jthing; next"


@pytest.mark.anyio
async def test_factory_builds_each_file_router(tmp_path: Path) -> None:
    """The config's type picks the NGINX, Envoy or Traefik router."""
    common = {"file": str(tmp_path / "f"), "primary": "p", "canary": "c"}
    configs: list[tuple[RouterConfig, type]] = [
        (NginxRouter(type="nginx", upstream="web", **common), NginxFileRouter),
        (EnvoyRouter(type="envoy", route_config="web", **common), EnvoyFileRouter),
        (TraefikRouter(type="traefik", service="web", **common), TraefikFileRouter),
    ]
    async with make_transport() as session:
        for cfg, kind in configs:
            assert isinstance(build_router("r", cfg, session), kind)


def test_traefik_password_readable_by_others_is_refused(tmp_path: Path) -> None:
    """The API password comes from a file that others cannot read; otherwise a RouterError."""
    secret = tmp_path / "pw"
    secret.write_text("s3cret")
    secret.chmod(0o644)
    cfg = TraefikRouter(
        type="traefik",
        file="/f",
        service="web",
        primary="p",
        canary="c",
        username="canaryd",
        password_file=str(secret),
    )

    with pytest.raises(RouterError, match="readable by others") as info:
        TraefikFileRouter(cfg, None)  # type: ignore[arg-type]

    assert "s3cret" not in str(info.value)


@pytest.mark.anyio
async def test_admin_api_redirect_is_not_followed() -> None:
    """A redirecting admin API is an error naming where it points; the target is never asked."""
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPFound("/elsewhere")

    app = web.Application()
    app.router.add_get("/{tail:.*}", redirect)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    url = f"{base}/api/http/services/web@file"
    try:
        async with make_transport() as session:
            with pytest.raises(RouterError) as info:
                await get_json("traefik", session, url, 2.0)
    finally:
        await runner.cleanup()

    assert str(info.value) == (
        f"traefik {url}: HTTP 302 redirect to {base}/… (redirects are not followed)"
    )
    assert hits == ["/api/http/services/web@file"]


def test_api_auth_is_basic_auth_from_the_password_file(tmp_path: Path) -> None:
    """With a username the admin-API header is basic auth with the file's password; else none."""
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)

    assert api_auth("traefik", "ops", str(secret)) == "Basic b3BzOnMzY3JldA=="
    assert api_auth("traefik", None, str(secret)) is None


def test_api_auth_refuses_a_password_file_others_can_read(tmp_path: Path) -> None:
    """A password file readable by others is a RouterError naming the proxy, username or not."""
    secret = tmp_path / "password"
    secret.write_text("s3cret")
    secret.chmod(0o644)

    with pytest.raises(RouterError, match=r"^nginx plus: secret file .* is readable by others"):
        api_auth("nginx plus", None, str(secret))
