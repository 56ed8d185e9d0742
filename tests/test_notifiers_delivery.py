"""Alert delivery to real HTTP receivers on 127.0.0.1: signatures, keys, errors, secrets."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from pathlib import Path

import pytest
from notifier_helpers import ROLLED_BACK, send
from pydantic import SecretStr
from receiver import Receiver

from canaryd.config import Notifier
from canaryd.errors import WebhookError
from canaryd.http import HttpTransport
from canaryd.notifiers import FORMATS, deliver, render

SECRET = SecretStr("s3cr3t-signing-key")
SECRET_PATH = "/services/T0SECRET/B0SECRET/XyZsecretTokenValue"


def verify_signature(header: str, body: bytes, secret: SecretStr) -> bool:
    """Check ``X-Canaryd-Signature`` the way a receiver would (docs/design.md, "Outgoing calls")."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    if abs(time.time() - int(parts["t"])) > 300:
        return False
    expected = hmac.new(
        secret.get_secret_value().encode(), parts["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def url_file(tmp_path: Path, url: str) -> str:
    """Write a chat webhook URL to a private file, as an operator would."""
    path = tmp_path / "webhook-url"
    path.write_text(url + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return str(path)


# ------------------------------------------------------------------ delivery


@pytest.mark.anyio
@pytest.mark.parametrize("kind", sorted(FORMATS), ids=sorted(FORMATS))
async def test_delivery_is_signed_with_idempotency_key(session: HttpTransport, kind: str) -> None:
    """Every format is POSTed with its content type, the Idempotency-Key and a valid signature."""
    async with Receiver() as r:
        await send(session, r, kind, key=f"idem-{kind}", secret=SECRET)
    (req,) = r.requests
    assert (req.method, req.path) == ("POST", "/hook")
    assert req.headers["Content-Type"] == FORMATS[kind][1]
    assert req.headers["Idempotency-Key"] == f"idem-{kind}"
    assert verify_signature(req.headers["X-Canaryd-Signature"], req.body, SECRET)
    assert not verify_signature(req.headers["X-Canaryd-Signature"], req.body + b" ", SECRET)


@pytest.mark.anyio
async def test_no_secret_no_signature(session: HttpTransport) -> None:
    """Without a secret no signature header is sent."""
    async with Receiver() as r:
        await send(session, r, "webhook")
    assert "X-Canaryd-Signature" not in r.requests[0].headers


@pytest.mark.anyio
async def test_retries_keep_the_idempotency_key(session: HttpTransport) -> None:
    """Each call is one attempt; a caller retrying with the same key sends the same key."""
    payload, content_type = render("slack", ROLLED_BACK)
    async with Receiver(statuses=[503, 503, 200]) as r:
        notifier = Notifier(type="slack", url=r.url + "/hook")
        outcomes = []
        for _ in range(3):
            try:
                await deliver(
                    session, notifier, payload, content_type, idempotency_key="same", secret=None
                )
                outcomes.append("ok")
            except WebhookError:
                outcomes.append("failed")
    assert outcomes == ["failed", "failed", "ok"]
    assert [q.headers["Idempotency-Key"] for q in r.requests] == ["same"] * 3
    assert len({q.body for q in r.requests}) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "body"),
    [(400, "invalid_blocks"), (404, "no_service"), (500, "x" * 500), (503, "")],
    ids=["400", "404", "500-long-body", "503-empty"],
)
async def test_non_2xx_is_webhook_error(session: HttpTransport, status: int, body: str) -> None:
    """A non-2xx answer raises WebhookError with the status and the first bytes of the body."""
    async with Receiver(statuses=[status], body=body) as r:
        with pytest.raises(WebhookError) as info:
            await send(session, r, "slack")
    message = str(info.value)
    assert f"HTTP {status}" in message
    assert body[:200] in message
    assert "x" * 201 not in message
    assert len(r.requests) == 1


@pytest.mark.anyio
async def test_url_file_secret_never_in_error(session: HttpTransport, tmp_path: Path) -> None:
    """A URL read from url_file is used, and neither it nor its token leaks into errors."""
    async with Receiver(statuses=[403], body=f"bad token for {SECRET_PATH}") as r:
        secret_url = r.url + SECRET_PATH
        notifier = Notifier(type="slack", url_file=url_file(tmp_path, secret_url))
        payload, content_type = render("slack", ROLLED_BACK)
        with pytest.raises(WebhookError) as info:
            await deliver(
                session, notifier, payload, content_type, idempotency_key="k", secret=None
            )
    assert r.requests[0].path == SECRET_PATH
    message = str(info.value)
    assert "HTTP 403" in message
    assert "127.0.0.1" in message
    assert "T0SECRET" not in message
    assert "XyZsecretTokenValue" not in message


@pytest.mark.anyio
async def test_unreachable_receiver_hides_url(session: HttpTransport, tmp_path: Path) -> None:
    """A refused connection is a WebhookError naming the host only."""
    async with Receiver() as r:
        secret_url = r.url + SECRET_PATH
    notifier = Notifier(type="discord", url_file=url_file(tmp_path, secret_url))
    payload, content_type = render("discord", ROLLED_BACK)
    with pytest.raises(WebhookError) as info:
        await deliver(session, notifier, payload, content_type, idempotency_key="k", secret=None)
    assert "XyZsecretTokenValue" not in str(info.value)
    assert "discord notifier" in str(info.value)


@pytest.mark.anyio
async def test_timeout_is_webhook_error(session: HttpTransport) -> None:
    """A receiver slower than notifier.timeout gives a WebhookError after one attempt."""
    payload, content_type = render("webhook", ROLLED_BACK)
    async with Receiver(delay=30) as r:
        notifier = Notifier(type="webhook", url=r.url + "/hook", timeout=0.2)
        with pytest.raises(WebhookError, match=r"no answer within 0\.2s"):
            await deliver(
                session, notifier, payload, content_type, idempotency_key="k", secret=None
            )
    assert len(r.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("mode", [0o644, None], ids=["world-readable", "missing"])
async def test_bad_url_file_is_webhook_error(
    session: HttpTransport, tmp_path: Path, mode: int | None
) -> None:
    """An unreadable or world-readable url_file is a WebhookError, not a crash."""
    path = tmp_path / "url"
    if mode is not None:
        path.write_text("http://127.0.0.1:1/x", encoding="utf-8")
        os.chmod(path, mode)
    notifier = Notifier(type="slack", url_file=str(path))
    with pytest.raises(WebhookError, match="slack notifier"):
        await deliver(session, notifier, {}, "application/json", idempotency_key="k", secret=None)
