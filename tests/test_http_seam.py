"""The seams' fakes (canaryd.testing) behave like the real things they stand in for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from canaryd.core.analysis import CanaryState, Phase
from canaryd.errors import RouterError, WebhookError
from canaryd.http import HttpRequest, HttpResponse, basic_auth, post_json
from canaryd.routers.httpapi import ATTEMPTS, call
from canaryd.service.store import DROP, RELEASE, OutboxMessage, SqliteStore, StateStore
from canaryd.testing import FakeClock, FakeHttp, FakeStore, answer

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "fake"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """The real SQLite store and the fake, so one test checks both agree."""
    if request.param == "fake":
        yield FakeStore()
        return
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    yield store
    await store.close()


def message(key: str, idem: str) -> OutboxMessage:
    """An alert for canary ``key``."""
    return OutboxMessage(key, idem, "alert:a", {"n": idem})


async def test_store_holds_messages_until_settled(any_store: StateStore) -> None:
    """Messages saved with routes wait; RELEASE lets them out, DROP deletes them."""
    state = CanaryState(seq=1)
    await any_store.save("p/a", state, None, [], [message("p/a", "a1")], routes=[{"w": 10}])
    await any_store.save("p/b", state, None, [], [message("p/b", "b1")], routes=[{"w": 10}])
    assert await any_store.due(now=1e12) == []
    assert set(await any_store.load_pending()) == {"p/a", "p/b"}

    await any_store.save("p/a", state, None, [], [], settle=RELEASE)
    await any_store.save("p/b", state, None, [], [], settle=DROP)

    assert [m.idempotency_key for m in await any_store.due(now=1e12)] == ["a1"]
    assert set(await any_store.load_pending()) == set()


async def test_store_delivers_one_canary_in_order(any_store: StateStore) -> None:
    """Only a canary's oldest pending message is due; marking it sent exposes the next."""
    msgs = [message("p/a", "a1"), message("p/a", "a2"), message("p/b", "b1")]
    await any_store.save("p/a", CanaryState(), None, [], msgs)
    first = await any_store.due(now=1e12)
    assert [m.idempotency_key for m in first] == ["a1", "b1"]

    await any_store.mark(first[0].id, "sent")
    again = await any_store.due(now=1e12)
    assert [(m.idempotency_key, m.attempts) for m in again] == [("a2", 0), ("b1", 0)]
    await any_store.mark(again[1].id, "pending", next_at=2e12, error="HTTP 503")
    assert [m.idempotency_key for m in await any_store.due(now=1e12)] == ["a2"]


async def test_store_round_trips_states(any_store: StateStore) -> None:
    """A saved state loads back equal, as after a restart."""
    state = CanaryState(revision="v2", canary_weight=20, primary_weight=80, seq=3)
    await any_store.save("p/a", state, None, [], [])
    assert await any_store.load_states() == {"p/a": state}


async def test_post_json_sends_one_signed_post() -> None:
    """post_json hands the transport one POST with the JSON body and idempotency key."""
    http = FakeHttp([answer(202, b"queued")])
    result = await post_json(http, "https://h.example/x", {"a": 1}, timeout=3, idempotency_key="k")
    assert (result.ok, result.body) == (True, b"queued")
    [sent] = http.requests
    assert (sent.method, sent.url, sent.body, sent.timeout) == (
        "POST",
        "https://h.example/x",
        b'{"a":1}',
        3,
    )
    assert sent.headers["Idempotency-Key"] == "k"


async def test_post_json_names_where_a_redirect_points() -> None:
    """A 3xx from the transport fails and names the redirect's host, not its path."""
    moved = answer(302, headers={"Location": "https://sso.example/login?token=t"})
    result = await post_json(
        FakeHttp([moved]), "https://h.example/x", {}, timeout=1, idempotency_key="k"
    )
    assert not result.ok
    assert result.describe() == (
        "HTTP 302 redirect to https://sso.example/… (redirects are not followed)"
    )


async def test_router_call_retries_transient_answers() -> None:
    """A 503 and then a 200: the router API helper retries and returns the 200."""
    http = FakeHttp([answer(503, b"busy"), answer(200, b"{}")])
    result = await call(http, "PUT", "https://consul.example/v1/x", timeout=1, payload={"w": 1})
    assert result.status == 200
    assert [r.method for r in http.requests] == ["PUT", "PUT"]
    assert http.requests[0].headers["Content-Type"] == "application/json"


async def test_router_call_without_answer_is_a_router_error() -> None:
    """No answer on any attempt: a RouterError naming the host and the attempts."""
    http = FakeHttp([WebhookError("https://consul.example: ClientConnectorError: refused")])
    with pytest.raises(RouterError) as info:
        await call(http, "GET", "https://consul.example/v1/x?token=s", timeout=1)
    assert str(info.value) == (
        f"https://consul.example: ClientConnectorError: refused (after {ATTEMPTS} attempts)"
    )
    assert len(http.requests) == ATTEMPTS


async def test_fake_http_handler_sees_each_request() -> None:
    """A handler computes each answer from the request it is given."""

    def echo(request: HttpRequest) -> HttpResponse:
        return answer(200, request.url.encode())

    http = FakeHttp(handler=echo)
    result = await post_json(http, "https://h.example/y", {}, timeout=1, idempotency_key="k")
    assert result.body == b"https://h.example/y"
    await http.aclose()
    with pytest.raises(WebhookError):
        await post_json(http, "https://h.example/y", {}, timeout=1, idempotency_key="k")


def test_basic_auth_is_the_rfc_7617_value() -> None:
    """Providers' and routers' basic auth is ``Basic`` and base64 of ``user:password``."""
    assert basic_auth("Aladdin", "open sesame") == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    assert basic_auth("u", "p:ä") == "Basic dTpwOsOk"


def test_fake_clock_moves_only_when_told() -> None:
    """The fake clock adds what the test advanced to its base clock."""
    clock = FakeClock(base=lambda: 1000.0)
    assert clock() == 1000.0
    clock.advance(30)
    assert clock() == 1030.0


async def test_store_lists_rollouts_newest_first(any_store: StateStore) -> None:
    """Both stores list a canary's rollouts newest first with id, revision, phase, outcome."""
    first = CanaryState(phase=Phase.FAILED, revision="v1", rollout_id="r1")
    second = CanaryState(phase=Phase.PROGRESSING, revision="v2", rollout_id="r2")
    await any_store.save("p/a", first, None, [], [])
    await any_store.save("p/a", second, None, [], [])
    fields = ("id", "revision", "phase", "outcome")
    listed = [tuple(r[f] for f in fields) for r in await any_store.rollouts("p/a")]
    assert listed == [("r2", "v2", "Progressing", "running"), ("r1", "v1", "Failed", "rolled_back")]
    one = await any_store.rollout("p/a", "r1")
    assert one is not None and (one["id"], one["checks"], one["events"]) == ("r1", [], [])
    assert await any_store.rollout("p/a", "nope") is None
