"""The outbox and its dispatcher against real HTTP receivers on 127.0.0.1.

Most tests drive the dispatcher one poll at a time (``drain_once``) with a
clock the test moves forward, so retries and dead letters need no waiting;
messages come from real runner decisions or are written to the store directly.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from postgres import query
from receiver import Receiver, Request, self_signed
from support import free_port, refused_port

from canaryd.config import Settings
from canaryd.core.analysis import CanaryState, Phase
from canaryd.http import HttpTransport
from canaryd.service.dispatcher import Dispatcher
from canaryd.service.runtime import CanaryRunner
from canaryd.service.services import Services
from canaryd.service.store import OutboxMessage, SqliteStore, StateStore
from canaryd.service.supervisor import flush_outbox
from canaryd.testing import FakeClock as Clock
from canaryd.testing import FakeProvider, FakeRouter

pytestmark = pytest.mark.anyio

SECRET = "s3cret-signing-key"


# --------------------------------------------------------------------------- fakes and helpers


def config(tmp_path: Path, canaries: list[dict[str, Any]], **top: Any) -> Settings:
    """A config of ``canaries`` (each a partial canary) with a fake provider and router."""
    full = []
    for c in canaries:
        analysis = {
            "interval": "1s",
            "threshold": 1,
            "stepWeight": 25,
            "maxWeight": 50,
            "metrics": [{"name": "sr", "query": "sr", "thresholdRange": {"min": 99}}],
            **c.pop("analysis", {}),
        }
        full.append({"namespace": "prod", "router": "lb", "analysis": analysis, **c})
    outbox = {"maxAge": "60s", "initialBackoff": "10ms", "maxBackoff": "50ms", "pollInterval": 0.05}
    return Settings.model_validate(
        {
            "state": f"sqlite://{tmp_path}/state.db",
            "providers": {"prom": {"type": "prometheus"}},
            "routers": {"lb": {"type": "webhook", "url": "http://127.0.0.1:9/"}},
            "outbox": {**outbox, **top.pop("outbox", {})},
            "canaries": full,
            **top,
        }
    )


def audited(names: list[str], url: str, **hook: Any) -> list[dict[str, Any]]:
    """Canaries ``prod/<name>`` whose ``event`` webhook ``audit`` posts to ``url/<name>``."""
    return [
        {
            "name": n,
            "analysis": {
                "webhooks": [{"name": "audit", "type": "event", "url": f"{url}/{n}", **hook}]
            },
        }
        for n in names
    ]


def services(
    cfg: Settings,
    store: StateStore,
    session: HttpTransport,
    provider: FakeProvider | None = None,
) -> Services:
    """Services with fakes at the provider and router seams."""
    return Services(cfg, session, {"prom": provider or FakeProvider()}, {"lb": FakeRouter()}, store)


def dispatcher(svc: Services, clock: Callable[[], float] = time.time) -> Dispatcher:
    """A dispatcher over ``svc``'s store."""
    return Dispatcher(lambda: svc, svc.store, clock)


def message(key: str, n: int, target: str = "hook:audit") -> OutboxMessage:
    """The ``n``-th message of canary ``key``; its hook payload names both."""
    return OutboxMessage(key, f"{key}:r1:{n}:0:{target}", target, {"canary": key, "n": n})


async def put(store: StateStore, *messages: OutboxMessage) -> None:
    """Write messages the way the runtime does: each with a decision, in this order."""
    for m in messages:
        await store.save(m.key, CanaryState(), None, [], [m])


def rows(store: StateStore) -> list[tuple[str, str, int, str | None]]:
    """Every outbox row as (idempotency key, status, attempts, last error), oldest first."""
    return query(store, "SELECT idem, status, attempts, last_error FROM outbox ORDER BY id")


async def drain(d: Dispatcher, clock: Clock, until: Callable[[], bool], polls: int = 50) -> None:
    """Poll (jumping past any backoff each time) until ``until()`` holds; bounded."""
    for _ in range(polls):
        if until():
            return
        await d.drain_once()
        clock.advance(1.0)
    assert until(), f"not done after {polls} polls"


def delivered(r: Receiver) -> list[Request]:
    """The requests ``r`` answered with a 2xx, in arrival order."""
    return [q for i, q in enumerate(r.requests) if 200 <= r.status_for(i) < 300]


def keys(requests: list[Request]) -> list[str]:
    """The Idempotency-Key of each request."""
    return [q.headers["Idempotency-Key"] for q in requests]


def verify(request: Request, secret: str, *, max_age: float = 300.0) -> bool:
    """Check X-Canaryd-Signature as a receiver would: HMAC of "<t>.<raw body>", fresh t."""
    fields = dict(p.split("=", 1) for p in request.headers["X-Canaryd-Signature"].split(","))
    t = fields["t"]
    expected = hmac.new(secret.encode(), f"{t}.".encode() + request.body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), fields["v1"]) and (
        abs(time.time() - int(t)) <= max_age
    )


# --------------------------------------------------------------------------- outages


@pytest.mark.parametrize("outage", ["503", "refused"], ids=["answering-503", "connection-refused"])
async def test_receiver_down_then_back_gets_each_message_once_in_order(
    tmp_path: Path, store: StateStore, session: HttpTransport, outage: str
) -> None:
    """A receiver down for a while, then back, gets every message exactly once per key, in order."""
    port = free_port()
    statuses = [503, 503, 503, 200] if outage == "503" else [200]
    cfg = config(tmp_path, audited(["web"], f"http://127.0.0.1:{port}"))
    msgs = [message("prod/web", n) for n in range(4)]
    await put(store, *msgs)
    clock = Clock()
    d = dispatcher(services(cfg, store, session), clock)
    if outage == "refused":
        for _ in range(3):
            await d.drain_once()
            clock.advance(1.0)
        assert rows(store)[0][1:3] == ("pending", 3)
    async with Receiver(statuses, port=port) as r:
        await drain(d, clock, lambda: all(s == "sent" for _, s, _, _ in rows(store)))
    assert keys(delivered(r)) == [m.idempotency_key for m in msgs]
    assert [q.json["n"] for q in delivered(r)] == [0, 1, 2, 3]
    assert d.counters == {"sent": 4, "failed": 3, "dead": 0}


async def test_idempotency_key_is_the_same_on_every_retry_and_after_a_restart(
    tmp_path: Path, session: HttpTransport
) -> None:
    """Retries, including those after the store is reopened by a new dispatcher, reuse the key."""
    async with Receiver([500, 502, 503, 200]) as r:
        cfg = config(tmp_path, audited(["web"], r.url, secret_env="CANARYD_TEST_SECRET"))
        first = SqliteStore(tmp_path / "state.db")
        await first.open()
        await put(first, message("prod/web", 0))
        clock = Clock()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CANARYD_TEST_SECRET", SECRET)
            for _ in range(2):
                await dispatcher(services(cfg, first, session), clock).drain_once()
                clock.advance(1.0)
            await first.close()
            again = SqliteStore(tmp_path / "state.db")
            await again.open()
            d = dispatcher(services(cfg, again, session), clock)
            await drain(d, clock, lambda: rows(again)[0][1] == "sent")
            await again.close()
    assert keys(r.requests) == ["prod/web:r1:0:0:hook:audit"] * 4
    assert all(verify(q, SECRET) for q in r.requests)
    assert rows(again) == [("prod/web:r1:0:0:hook:audit", "sent", 4, None)]


async def test_failing_canary_blocks_only_its_own_later_messages(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Two canaries interleaved: a failing head holds only its own queue; both stay in order."""
    async with Receiver([503, 503, 503, 200]) as slow, Receiver() as fast:
        cfg = config(
            tmp_path,
            [
                *audited(["web"], slow.url),
                *audited(["api"], fast.url),
            ],
        )
        msgs = [message(k, n) for n in range(3) for k in ("prod/web", "prod/api")]
        await put(store, *msgs)
        clock = Clock()
        d = dispatcher(services(cfg, store, session), clock)
        for _ in range(3):  # web keeps failing its first message meanwhile
            await d.drain_once()
            clock.advance(1.0)
        assert len(delivered(fast)) == 3 and not delivered(slow)
        await drain(d, clock, lambda: len(delivered(slow)) == 3)
    assert [q.json["n"] for q in delivered(slow)] == [0, 1, 2]
    assert [q.json["n"] for q in delivered(fast)] == [0, 1, 2]
    assert Counter(keys(slow.requests))["prod/web:r1:0:0:hook:audit"] == 4


async def test_a_hanging_receiver_delays_neither_analysis_nor_other_canaries(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """While one canary's receiver hangs, its analysis ticks on and another's alerts arrive."""
    async with Receiver(delay=30.0) as hanging, Receiver() as ok:
        cfg = config(
            tmp_path,
            [*audited(["web"], hanging.url, timeout="20s"), *audited(["api"], ok.url)],
        )
        svc = services(cfg, store, session)
        web = CanaryRunner(cfg.canaries[0], CanaryState(), svc)
        api = CanaryRunner(cfg.canaries[1], CanaryState(), svc)
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher(svc).run)
            await web.start_rollout("v2", {})
            await hanging.wait_for(1)
            with anyio.fail_after(3):
                for _ in range(5):
                    await web.tick()
                await api.start_rollout("v2", {})
                await api.tick()
                await ok.wait_for(3)
            tg.cancel_scope.cancel()
    assert web.state.phase is Phase.SUCCEEDED
    assert len(hanging.requests) == 1
    assert [q.json["event"]["event"] for q in ok.requests] == [
        "rollout.started",
        "analysis.tick",
        "weight.advanced",
    ]


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


# --------------------------------------------------------------------------- what goes out


async def rollout(runner: CanaryRunner, ticks: int) -> None:
    """Start a rollout of v2 and run ``ticks`` ticks."""
    await runner.start_rollout("v2", {})
    for _ in range(ticks):
        await runner.tick()


@pytest.mark.parametrize(
    ("severity", "events", "expected"),
    [
        (
            "info",
            "all",
            ["rollout.started", "weight.advanced", "check.failed", "rollout.rolled_back"],
        ),
        ("warn", "all", ["check.failed", "rollout.rolled_back"]),
        ("error", "all", ["rollout.rolled_back"]),
        ("info", "flagger", ["rollout.started", "rollout.rolled_back"]),
        ("warn", "flagger", ["rollout.rolled_back"]),
        ("info", ["check.failed", "weight.advanced"], ["weight.advanced", "check.failed"]),
        ("error", ["check.failed", "weight.advanced"], []),
    ],
    ids=["info-all", "warn-all", "error-all", "info-flagger", "warn-flagger", "list", "list-error"],
)
async def test_alerts_are_filtered_by_severity(
    tmp_path: Path,
    store: StateStore,
    session: HttpTransport,
    severity: str,
    events: Any,
    expected: list[str],
) -> None:
    """An alert sends the events its ``events`` setting chooses (Flagger's by default) that are
    at or above its severity, in order."""
    alert = {"name": "a", "notifier": "n", "severity": severity, "events": events}
    async with Receiver() as r:
        cfg = config(
            tmp_path,
            [{"name": "web", "alerts": [alert]}],
            notifiers={"n": {"type": "webhook", "url": r.url + "/alerts"}},
        )
        provider = FakeProvider([50.0])  # tick 1 only moves to 25%; tick 2 fails: rollback
        runner = CanaryRunner(
            cfg.canaries[0], CanaryState(), services(cfg, store, session, provider)
        )
        await rollout(runner, 2)
        assert runner.state.phase is Phase.FAILED
        clock = Clock()
        d = dispatcher(runner.services, clock)
        await drain(d, clock, lambda: len(r.requests) == len(expected))
        await d.drain_once()  # nothing more goes out
    assert [q.json["event"] for q in r.requests] == expected


async def test_event_webhooks_receive_every_event_in_order(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """An ``event`` webhook gets each stored event, analysis ticks included, in order, signed."""
    async with Receiver() as r:
        hooks = audited(["web"], r.url, secret_env="CANARYD_TEST_SECRET")
        cfg = config(tmp_path, hooks)
        runner = CanaryRunner(cfg.canaries[0], CanaryState(), services(cfg, store, session))
        await rollout(runner, 6)
        assert runner.state.phase is Phase.SUCCEEDED
        events = [e["event"] for e in reversed(await store.events("prod/web"))]
        clock = Clock()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CANARYD_TEST_SECRET", SECRET)
            d = dispatcher(runner.services, clock)
            await drain(d, clock, lambda: len(r.requests) == len(events))
    assert [q.json["event"]["event"] for q in r.requests] == events
    assert {"analysis.tick", "rollout.promoted"} <= set(events)
    assert {q.json["type"] for q in r.requests} == {"event"}
    assert all(verify(q, SECRET) for q in r.requests)


@pytest.mark.parametrize("disable_tls", [True, False], ids=["disableTLS", "verified"])
async def test_event_hook_with_disable_tls_reaches_a_self_signed_receiver(
    tmp_path: Path, store: StateStore, session: HttpTransport, disable_tls: bool
) -> None:
    """An outbox-delivered hook with disableTLS reaches an HTTPS receiver whose certificate does
    not verify, with Flagger's event metadata; without it nothing is delivered."""
    async with Receiver(tls=self_signed(tmp_path)) as r:
        cfg = config(tmp_path, audited(["web"], r.url, disableTLS=disable_tls))
        runner = CanaryRunner(cfg.canaries[0], CanaryState(), services(cfg, store, session))
        await runner.start_rollout("v2", {})
        clock = Clock()
        d = dispatcher(runner.services, clock)
        for _ in range(3):
            await d.drain_once()
            clock.advance(1.0)
    assert len(r.requests) == (1 if disable_tls else 0)
    if disable_tls:
        metadata = r.requests[0].json["metadata"]
        assert metadata["eventType"] == "Normal"
        assert metadata["eventMessage"].startswith("prod/web v2: rollout started")
        assert metadata["timestamp"].isdigit()


@pytest.mark.parametrize(
    ("values", "ticks", "phase"),
    [([99.9], 6, "Succeeded"), ([50.0], 4, "Failed")],
    ids=["promotion", "rollback"],
)
async def test_post_rollout_hook_fires_once_at_the_end(
    tmp_path: Path,
    store: StateStore,
    session: HttpTransport,
    values: list[float | None],
    ticks: int,
    phase: str,
) -> None:
    """A post-rollout webhook is called exactly once when a rollout is promoted or rolled back."""
    async with Receiver() as r:
        hook = {"name": "post", "type": "post-rollout", "url": r.url + "/post"}
        cfg = config(tmp_path, [{"name": "web", "analysis": {"webhooks": [hook]}}])
        svc = services(cfg, store, session, FakeProvider([*values]))
        runner = CanaryRunner(cfg.canaries[0], CanaryState(), svc)
        await rollout(runner, ticks)  # a few ticks more than needed: the end is idle
        assert runner.state.phase.value == phase
        clock = Clock()
        d = dispatcher(svc, clock)
        await drain(d, clock, lambda: len(r.requests) == 1)
        await d.drain_once()
    assert len(r.requests) == 1
    body = r.requests[0].json
    assert (body["type"], body["phase"], body["revision"]) == ("post-rollout", phase, "v2")


async def test_alerts_after_a_restart_mid_rollout_are_not_lost(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A runner rebuilt from the store (a restart) writes new messages under new keys."""
    async with Receiver() as r:
        cfg = config(
            tmp_path,
            [{"name": "web", "alerts": [{"name": "a", "notifier": "n", "events": "all"}]}],
            notifiers={"n": {"type": "webhook", "url": r.url}},
        )
        svc = services(cfg, store, session)
        first = CanaryRunner(cfg.canaries[0], CanaryState(), svc)
        await rollout(first, 1)
        stored = (await store.load_states())["prod/web"]
        second = CanaryRunner(cfg.canaries[0], stored, svc)
        from canaryd.core import analysis as core

        await second.command(lambda s, now: core.pause(second.spec, s, now))
        clock = Clock()
        d = dispatcher(svc, clock)
        await drain(d, clock, lambda: len(r.requests) == 3)
    assert [q.json["event"] for q in r.requests] == [
        "rollout.started",
        "weight.advanced",
        "rollout.paused",
    ]
    assert len(set(keys(r.requests))) == 3


# --------------------------------------------------------------------------- shutdown


async def test_flush_returns_once_the_dispatcher_sent_everything_due(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """The shutdown flush waits while the running dispatcher sends every due message in order."""
    async with Receiver() as r:
        cfg = config(tmp_path, audited(["web", "api"], r.url))
        await put(store, *[message(k, n) for n in range(3) for k in ("prod/web", "prod/api")])
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher(services(cfg, store, session)).run)
            left = await flush_outbox(store, 5.0)
            tg.cancel_scope.cancel()
    assert left == 0
    assert [q.json["n"] for q in r.requests if q.path == "/web"] == [0, 1, 2]
    assert [q.json["n"] for q in r.requests if q.path == "/api"] == [0, 1, 2]


async def test_flush_waits_for_a_delivery_in_flight(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """The shutdown flush started while a delivery is in flight waits for it and the next."""
    async with Receiver(delay=0.3) as r:
        cfg = config(tmp_path, audited(["web"], r.url))
        await put(store, message("prod/web", 0), message("prod/web", 1))
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher(services(cfg, store, session)).run)
            await r.wait_for(1)
            left = await flush_outbox(store, 5.0)
            tg.cancel_scope.cancel()
    assert left == 0
    assert [q.json["n"] for q in r.requests] == [0, 1]
    assert [s for _, s, _, _ in rows(store)] == ["sent", "sent"]


async def test_flush_is_bounded_by_its_grace(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Against a hanging receiver the shutdown flush returns after its grace, the canary's
    messages still pending (one canary with a message due)."""
    async with Receiver(delay=30.0) as r:
        cfg = config(tmp_path, audited(["web"], r.url, timeout="20s"))
        await put(store, message("prod/web", 0), message("prod/web", 1))
        with anyio.fail_after(3):
            async with anyio.create_task_group() as tg:
                await tg.start(dispatcher(services(cfg, store, session)).run)
                left = await flush_outbox(store, 0.3)
                tg.cancel_scope.cancel()
    assert left == 1 and len(r.requests) == 1
    assert [s for _, s, _, _ in rows(store)] == ["pending", "pending"]
