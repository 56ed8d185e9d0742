"""Security at the API: who may steer rollouts, request size, the listen address."""

from __future__ import annotations

import hmac
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from daemons import TOKEN, api_url, client_for, running_daemon, write_config
from security_helpers import KEY, MESH, one_canary
from structlog.testing import capture_logs

from canaryd.config import Settings
from canaryd.core.analysis import CanaryState, Phase
from canaryd.service.openapi import document

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- the token

MUTATING = [
    path.replace("{ns}", "prod").replace("{name}", "web").replace("{gate}", "promotion")
    for path, ops in document()["paths"].items()
    if "post" in ops
]
BAD_AUTH = {
    "none": None,
    "wrong": "Bearer not-the-token",
    "token-plus-one": f"Bearer {TOKEN}x",
    "token-prefix": f"Bearer {TOKEN[:-1]}",
    "other-scheme": f"Basic {TOKEN}",
    "token-alone": TOKEN,
    "empty-bearer": "Bearer ",
}


@pytest.mark.parametrize("path", MUTATING, ids=[p.rsplit("/web/", 1)[1] for p in MUTATING])
async def test_every_mutating_endpoint_refuses_requests_without_the_token(
    tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """401 with a challenge for every bad Authorization; the token never echoed; state unchanged."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the API calls it
    cfg = write_config(tmp_path, one_canary(), routers=MESH)
    body = json.dumps({"revision": "v2"})
    answers = []
    with capture_logs() as logs:
        async with running_daemon(cfg) as daemon, aiohttp.ClientSession() as session:
            for case, auth in BAD_AUTH.items():
                headers = {"Content-Type": "application/json"}
                if auth is not None:
                    headers["Authorization"] = auth
                async with session.post(api_url(cfg) + path, data=body, headers=headers) as resp:
                    answers.append(
                        (case, resp.status, resp.headers.get("WWW-Authenticate"), await resp.text())
                    )
            state = daemon.runners[KEY].state
    for case, status, challenge, text in answers:
        assert (status, challenge) == (401, 'Bearer realm="canaryd"'), (case, status, text)
        assert "error" in json.loads(text) and TOKEN[:8] not in text, (case, text)
    assert state == CanaryState(), "a refused request changed the canary"
    assert TOKEN[:8] not in repr(list(logs))
    assert compared and all(b == TOKEN.encode() for _, b in compared), (
        "not compared in constant time"
    )


async def test_the_right_token_is_accepted(tmp_path: Path) -> None:
    """The same requests with the token go through (so the refusals above are about the token)."""
    cfg = write_config(tmp_path, one_canary(), routers=MESH)
    async with running_daemon(cfg), client_for(cfg) as client:
        started = await client.post(f"{KEY}/rollouts", {"revision": "v2"})
        paused = await client.post(f"{KEY}/pause", {})
    assert (started["revision"], paused["phase"]) == ("v2", "Paused")


# --------------------------------------------------------------------------- request size


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_request_bodies_beyond_the_limit_are_refused_with_413(
    tmp_path: Path, chunked: bool
) -> None:
    """A body over api.max_body_bytes is a JSON 413, declared or streamed, and starts nothing."""
    cfg = write_config(
        tmp_path,
        one_canary(),
        routers=MESH,
        api={"token_file": str(tmp_path / "api-token"), "max_body_bytes": 2048},
    )
    body = json.dumps({"revision": "v2", "metadata": {"pad": "x" * 4096}}).encode()

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with running_daemon(cfg) as daemon, aiohttp.ClientSession() as session:
        data: Any = stream() if chunked else body
        async with session.post(
            f"{api_url(cfg)}/api/v1/canaries/{KEY}/rollouts", data=data, headers=headers
        ) as resp:
            status, answer = resp.status, await resp.json()
        state = daemon.runners[KEY].state
    assert status == 413 and "larger than 2048 bytes" in answer["error"], (status, answer)
    assert state.phase is Phase.INITIALIZED


# --------------------------------------------------------------------------- listen address


def test_api_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    """Without ``listen`` (file or environment) the API address is 127.0.0.1:9879."""
    from canaryd.config.loader import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("routers: {mesh: {type: webhook, url: 'http://127.0.0.1:9/'}}\n")
    loaded = load_config(cfg, environ={})
    assert loaded.settings.listen_host_port == ("127.0.0.1", 9879)
    assert Settings.model_fields["listen"].default == "127.0.0.1:9879"


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_default_listen_accepts_loopback_connections_only(tmp_path: Path) -> None:
    """A daemon with the default address answers on 127.0.0.1 and not on the machine's address."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 9879)) == 0:
            pytest.skip("something else listens on 127.0.0.1:9879, the default port")
    cfg = write_config(tmp_path, one_canary(), routers=MESH)
    text = cfg.read_text()
    cfg.write_text("\n".join(line for line in text.splitlines() if not line.startswith("listen:")))
    other = _non_loopback_address()
    async with running_daemon(cfg):
        with socket.create_connection(("127.0.0.1", 9879), timeout=2):
            pass
        if other is not None:
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((other, 9879)) != 0, f"the API answers on {other}"
