"""Random API requests, property-based: methods, paths, tokens, types, bodies; never a 5xx."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import quote

import anyio
import pytest
from daemons import TOKEN, api_url, running_daemon, write_config
from fuzz_strategies import json_values
from hypothesis import given, settings
from hypothesis import strategies as st

# --------------------------------------------------------------------------- API requests

_segment = st.one_of(
    st.sampled_from(
        ["prod", "web", "default", "..", ".", "%2F", "%00", "a" * 300, "", "-", "%F0%9F"]
    ),
    st.text(min_size=1, max_size=12).map(lambda t: quote(t, safe="")),
)
_action = st.sampled_from(
    [
        "",
        "rollouts",
        "promote",
        "abort",
        "pause",
        "resume",
        "gates/rollout/approve",
        "gates/promotion/approve",
        "gates/nope/approve",
        "nope",
        "rollouts/x",
    ]
)
_body = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.builds(lambda d: json.dumps(d).encode(), json_values),
    st.fixed_dictionaries(
        {
            "revision": st.one_of(st.text(max_size=140), st.integers(), st.none(), st.just("v2")),
            "metadata": st.one_of(
                st.dictionaries(
                    st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=3
                ),
                st.text(max_size=3),
            ),
        },
        optional={"extra": json_values},
    ).map(lambda d: json.dumps(d).encode()),
    st.just(b"{" * 100_000),
    st.just(b'{"revision": "' + b"v" * 200_000 + b'"}'),
)
_auth = st.sampled_from(
    [
        None,
        f"Bearer {TOKEN}",
        "Bearer wrong",
        f"bearer {TOKEN}",
        f"Basic {TOKEN}",
        "Bearer",
        f"Bearer {TOKEN}x",
        "Bearer \u00e9",
    ]
)
_content_type = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "image/png",
    ]
)


def _request(
    port: int, method: str, path: str, body: bytes | None, headers: dict[str, str], chunked: bool
) -> tuple[int, bytes]:
    """One blocking HTTP request; (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if chunked and body is not None:
            conn.putrequest(method, path)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for i in range(0, len(body), 8192):
                part = body[i : i + 8192]
                conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.anyio
@pytest.mark.slow
async def test_random_api_requests_never_get_a_5xx(tmp_path: Path) -> None:
    """Random methods, paths, tokens, content types and bodies: never 5xx, errors are JSON."""
    cfg = write_config(
        tmp_path,
        [
            {
                "name": "web",
                "namespace": "prod",
                "router": "mesh",
                "analysis": {"stepWeight": 50, "interval": "1h"},
            }
        ],
        routers={"mesh": {"type": "webhook", "url": "http://127.0.0.1:9/routes"}},
    )
    port = int(api_url(cfg).rsplit(":", 1)[1])
    seen: list[int] = []

    @settings(max_examples=250, deadline=None, print_blob=True)
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
        ns=_segment,
        name=_segment,
        action=_action,
        body=_body,
        auth=_auth,
        content_type=_content_type,
        chunked=st.booleans(),
    )
    def probe(
        method: str,
        ns: str,
        name: str,
        action: str,
        body: bytes | None,
        auth: str | None,
        content_type: str | None,
        chunked: bool,
    ) -> None:
        path = f"/api/v1/canaries/{ns}/{name}" + (f"/{action}" if action else "")
        headers = {
            k: v
            for k, v in (("Authorization", auth), ("Content-Type", content_type))
            if v is not None
        }
        status, answer = _request(port, method, path, body, headers, chunked)
        seen.append(status)
        assert status < 500, (method, path, status, answer[:200])
        if status >= 400 and method != "HEAD":
            assert "error" in json.loads(answer), answer[:200]

    async with running_daemon(cfg):
        await anyio.to_thread.run_sync(probe)
    assert {401, 404} <= set(seen), sorted(set(seen))
