"""Outbox failures: dead letters, removed targets, unrenderable messages, no secret in errors.

Most tests drive the dispatcher one poll at a time (``drain_once``) with a
clock the test moves forward, so retries and dead letters need no waiting;
messages come from real runner decisions or are written to the store directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog
from outbox_helpers import (
    SECRET,
    audited,
    config,
    dispatcher,
    drain,
    keys,
    message,
    put,
    rows,
    services,
    verify,
)
from receiver import Receiver
from support import refused_port

from canaryd.core.analysis import CanaryState
from canaryd.http import HttpTransport
from canaryd.service.dispatcher import Dispatcher
from canaryd.service.runtime import CanaryRunner
from canaryd.service.store import OutboxMessage, SqliteStore, StateStore
from canaryd.testing import FakeClock as Clock

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- dead letters


@pytest.mark.parametrize("outage", ["503", "refused"], ids=["answering-503", "connection-refused"])
async def test_receiver_down_past_max_age_dead_letters_are_counted_and_logged(
    tmp_path: Path, store: StateStore, session: HttpTransport, outage: str
) -> None:
    """Past maxAge a message is dead, counted and logged (notification.failed); the next goes."""
    async with Receiver([503], body="overloaded, try later") as down, Receiver() as up:
        url = down.url if outage == "503" else f"http://127.0.0.1:{refused_port()}"
        cfg = config(
            tmp_path,
            [
                {
                    "name": "web",
                    "analysis": {
                        "webhooks": [
                            {"name": "audit", "type": "event", "url": url},
                            {"name": "other", "type": "event", "url": up.url},
                        ]
                    },
                }
            ],
            outbox={"maxAge": "30s"},
        )
        await put(store, message("prod/web", 0), message("prod/web", 1, "hook:other"))
        clock = Clock()
        d = dispatcher(services(cfg, store, session), clock)
        with structlog.testing.capture_logs() as logs:
            await d.drain_once()
            clock.advance(31.0)
            await d.drain_once()  # past maxAge: dead
            await d.drain_once()  # the next message is no longer held
    dead = [e for e in logs if e["event"] == "notification.failed"]
    assert [(e["log_level"], e["dead_letter"], e["target"]) for e in dead] == [
        ("error", True, "hook:audit")
    ]
    assert d.counters == {"sent": 1, "failed": 2, "dead": 1}
    status = [(s, a) for _, s, a, _ in rows(store)]
    assert status == [("dead", 2), ("sent", 1)]
    error = rows(store)[0][3] or ""
    expected = "HTTP 503: overloaded, try later" if outage == "503" else "127.0.0.1:"
    assert expected in error and dead[0]["error"] == error


@pytest.mark.parametrize(
    ("target", "removed", "reason"),
    [
        ("alert:oncall", "alert", "alert oncall of prod/gone is no longer configured"),
        ("alert:oncall", "notifier", "notifier chat (alert oncall) is no longer configured"),
        ("hook:audit", "webhook", "webhook audit of prod/gone is no longer configured"),
    ],
    ids=["alert", "notifier", "webhook"],
)
async def test_message_whose_target_was_removed_is_dead_lettered_at_once(
    tmp_path: Path,
    store: StateStore,
    session: HttpTransport,
    target: str,
    removed: str,
    reason: str,
) -> None:
    """A message for a target removed from the config dies on first sight with a clear reason."""
    canary: dict[str, Any] = {
        "name": "gone",
        "alerts": [] if removed == "alert" else [{"name": "oncall", "notifier": "chat"}],
        "analysis": {"webhooks": []},
    }
    notifiers = {} if removed == "notifier" else {"chat": {"type": "slack", "url": "http://x/"}}
    cfg = config(tmp_path, [canary], notifiers=notifiers)
    await put(store, message("prod/gone", 0, target))
    d = dispatcher(services(cfg, store, session))
    with structlog.testing.capture_logs() as logs:
        await d.drain_once()
    assert rows(store)[0][1] == "dead"
    assert rows(store)[0][3] == f"target removed from the configuration: {reason}"
    assert d.counters["dead"] == 1
    assert [e["event"] for e in logs] == ["notification.failed"]


async def test_messages_of_a_canary_removed_for_a_while_wait_for_it_until_max_age(
    tmp_path: Path, store: SqliteStore, session: HttpTransport
) -> None:
    """A message of a canary not configured at the moment waits (no dead letter) and goes out
    once a reload adds the canary back; one whose canary stays away dies at maxAge."""
    async with Receiver() as r:
        back = config(tmp_path, audited(["web"], r.url))
        current = {"svc": services(config(tmp_path, []), store, session)}
        clock = Clock()
        d = Dispatcher(lambda: current["svc"], store, clock)
        await put(store, message("prod/web", 0), message("prod/gone", 0))
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):  # removed: both wait
                await d.drain_once()
                clock.advance(1.0)
            assert [s for _, s, _, _ in rows(store)] == ["pending", "pending"]
            current["svc"] = services(back, store, session)  # prod/web added back
            await drain(d, clock, lambda: len(r.requests) == 1)
            clock.advance(60.0)  # past maxAge: prod/gone is dead
            await drain(d, clock, lambda: rows(store)[1][1] == "dead")
    assert keys(r.requests) == ["prod/web:r1:0:0:hook:audit"]
    assert [s for _, s, _, _ in rows(store)] == ["sent", "dead"]
    assert "canary prod/gone is no longer configured" in (rows(store)[1][3] or "")
    assert d.counters["dead"] == 1
    assert {e["event"] for e in logs} >= {"notification.waiting", "notification.failed"}


async def test_unrenderable_message_is_retried_without_stopping_the_dispatcher(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A stored alert that cannot be rendered fails like a delivery; other canaries still go out."""
    async with Receiver() as r:
        cfg = config(
            tmp_path,
            [
                {"name": "web", "alerts": [{"name": "oncall", "notifier": "chat"}]},
                *audited(["api"], r.url),
            ],
            notifiers={"chat": {"type": "slack", "url": r.url + "/slack"}},
        )
        broken = OutboxMessage("prod/web", "prod/web:r1:1:0:alert:oncall", "alert:oncall", {})
        await put(store, broken, message("prod/api", 0))
        d = dispatcher(services(cfg, store, session))
        await d.drain_once()
    assert [(s, e) for _, s, _, e in rows(store)] == [
        ("pending", "unexpected KeyError: 'event'"),
        ("sent", None),
    ]
    assert [q.path for q in r.requests] == ["/api"]


# --------------------------------------------------------------------------- secrets and errors


async def test_failure_shows_status_and_body_but_never_a_signed_url_or_secret(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Stored errors and log lines name the status and the answer's first bytes, not URL tokens."""
    hook_path, hook_query = "/audit/T0KEN-in-the-path", "sig=abcdef0123456789&exp=99"
    chat_path = "/services/T000/B000/XXXXchat-tokenXXXX"
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o600)
    url_file = tmp_path / "chat-url"
    async with Receiver([500]) as hooks, Receiver([500]) as chat:
        hooks.body = f"no such hook {hook_path}?{hook_query}".encode()
        chat.body = f"no such hook {chat_path}".encode()
        url_file.write_text(chat.url + chat_path)
        url_file.chmod(0o600)
        hook = {
            "name": "audit",
            "type": "event",
            "url": f"{hooks.url}{hook_path}?{hook_query}",
            "secret_file": str(secret_file),
        }
        cfg = config(
            tmp_path,
            [
                {"name": "web", "analysis": {"webhooks": [hook]}},
                {"name": "api", "alerts": [{"name": "oncall", "notifier": "chat"}]},
            ],
            notifiers={"chat": {"type": "slack", "url_file": str(url_file)}},
        )
        svc = services(cfg, store, session)
        for canary in cfg.canaries:
            await CanaryRunner(canary, CanaryState(), svc).start_rollout("v2", {})
        clock = Clock()
        d = dispatcher(svc, clock)
        with structlog.testing.capture_logs() as logs:
            await d.drain_once()
            clock.advance(1.0)
            await d.drain_once()  # the retries
    hook_error, alert_error = (e or "" for _, _, _, e in rows(store))
    assert hook_error == f"webhook audit {hooks.url}/…: HTTP 500: no such hook /…"
    assert alert_error == f"slack notifier {chat.url}/…: HTTP 500: no such hook /…"
    logged = " ".join(str(e) for e in logs)
    assert logged.count("HTTP 500") == 4
    for leak in ("T0KEN", "abcdef0123456789", "chat-token", "T000", SECRET):
        assert leak not in hook_error + alert_error + logged
    assert len(hooks.requests) == 2 and all(verify(q, SECRET) for q in hooks.requests)


async def test_unreachable_chat_url_from_url_file_never_reaches_the_error(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A connection error of a url_file notifier names its host only."""
    port = refused_port()
    url_file = tmp_path / "chat-url"
    url_file.write_text(f"http://127.0.0.1:{port}/services/T000/B000/XXXXchat-tokenXXXX")
    url_file.chmod(0o600)
    cfg = config(
        tmp_path,
        [{"name": "web", "alerts": [{"name": "oncall", "notifier": "chat"}]}],
        notifiers={"chat": {"type": "slack", "url_file": str(url_file)}},
    )
    runner = CanaryRunner(cfg.canaries[0], CanaryState(), services(cfg, store, session))
    await runner.start_rollout("v2", {})
    await dispatcher(runner.services).drain_once()
    error = rows(store)[0][3] or ""
    assert f"127.0.0.1:{port}" in error and "chat-token" not in error and "T000" not in error
