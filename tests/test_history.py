"""Past rollouts: the store's rollouts table, its retention, and the history API."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from daemons import api_url, running_daemon
from postgres import query
from service_helpers import backends, canary, service_config
from support import eventually
from test_api import Api

from canaryd.cli.commands import check
from canaryd.config.loader import load_config
from canaryd.config.models.settings import CHECKS_PER_ROLLOUT_MAX
from canaryd.core.analysis import CanaryState, CheckRecord, Outcome, Phase
from canaryd.core.events import Event
from canaryd.service.store import Retention, SqliteStore, StateStore
from canaryd.service.store import retention as store_retention
from canaryd.service.store.contract import ROLLOUT_LIMIT
from canaryd.service.supervisor import retention

pytestmark = pytest.mark.anyio

KEY = "prod/web"
DAY = 86400.0


async def rollout(
    store: StateStore,
    rid: str,
    *,
    started: float,
    ended: float | None,
    phase: Phase = Phase.SUCCEEDED,
    checks: int = 2,
    key: str = KEY,
) -> None:
    """Record rollout ``rid``: a start event, ``checks`` checks (a failed one fails last), end."""
    running = CanaryState(
        phase=Phase.PROGRESSING, revision=f"rev-{rid}", rollout_id=rid, started_at=started
    )
    start = Event("rollout.started", key, running.revision, "Progressing", started)
    await store.save(key, running, None, [start], [])
    for i in range(checks):
        fail = phase == Phase.FAILED and i == checks - 1
        outcome = Outcome.FAIL if fail else Outcome.PASS
        record = CheckRecord(
            started + i, i, outcome, 10, 0, int(fail), "m below 99" if fail else None
        )
        await store.save(key, running, record, [], [])
    if ended is not None:
        reason = "m below 99" if phase == Phase.FAILED else None
        done = CanaryState(
            phase=phase,
            revision=running.revision,
            rollout_id=rid,
            started_at=started,
            finished_at=ended,
            reason=reason,
        )
        await store.save(key, done, None, [], [])


async def ids(store: StateStore, key: str = KEY) -> list[str]:
    """The ids of a canary's stored rollouts, newest first."""
    return [r["id"] for r in await store.rollouts(key)]


async def test_rollouts_list_outcome_reason_and_counts(store: StateStore) -> None:
    """A promoted, a rolled-back, a superseded and a running rollout are listed newest first."""
    await rollout(store, "a", started=100, ended=110)
    await rollout(store, "b", started=200, ended=210, phase=Phase.FAILED, checks=3)
    await rollout(store, "c", started=300, ended=None)
    await rollout(store, "d", started=400, ended=None)
    rows = await store.rollouts(KEY)
    assert [(r["id"], r["outcome"]) for r in rows] == [
        ("d", "running"),
        ("c", "superseded"),
        ("b", "rolled_back"),
        ("a", "promoted"),
    ]
    failed = rows[2]
    assert (failed["reason"], failed["checkCount"], failed["failedCheckCount"]) == (
        "m below 99",
        3,
        1,
    )
    assert (failed["revision"], failed["startedAt"], failed["endedAt"]) == ("rev-b", 200, 210)


async def test_rollout_detail_has_only_its_checks_and_events(store: StateStore) -> None:
    """One rollout's detail holds its own checks and events, oldest first, and no other's."""
    await rollout(store, "a", started=100, ended=110, checks=2)
    await rollout(store, "b", started=200, ended=None, checks=3)
    detail = await store.rollout(KEY, "a")
    assert detail is not None
    assert [c["time"] for c in detail["checks"]] == [100, 101]
    assert [e["event"] for e in detail["events"]] == ["rollout.started"]
    assert detail["outcome"] == "promoted"
    assert await store.rollout(KEY, "nope") is None
    assert await store.rollout("prod/other", "a") is None


async def test_events_after_a_rollout_ended_are_not_part_of_it(store: StateStore) -> None:
    """An event recorded after the rollout ended (a reload, say) stays out of its detail."""
    await rollout(store, "a", started=100, ended=110)
    ended = CanaryState(
        phase=Phase.SUCCEEDED, revision="rev-a", rollout_id="a", started_at=100, finished_at=110
    )
    later = Event("config.loaded", KEY, "rev-a", "Succeeded", 120.0)
    await store.save(KEY, ended, None, [later], [])
    detail = await store.rollout(KEY, "a")
    assert detail is not None and [e["event"] for e in detail["events"]] == ["rollout.started"]
    assert (await store.events(KEY))[0]["event"] == "config.loaded"


async def test_prune_keeps_the_newest_rollouts_and_failed_ones_longer(store: StateStore) -> None:
    """Beyond ``keep`` rollouts the oldest go, but failed ones stay up to ``failed_keep``."""
    await rollout(store, "f1", started=100, ended=101, phase=Phase.FAILED)
    for i in range(4):
        await rollout(store, f"s{i}", started=200 + i, ended=201 + i)
    await store.prune(now=1000, keep=Retention(keep=3, failed_keep=5))
    assert await ids(store) == ["s3", "s2", "s1", "f1"]


async def test_prune_drops_the_checks_and_events_of_dropped_rollouts(
    store: StateStore, tmp_path: Path
) -> None:
    """A dropped rollout leaves no check record or event behind."""
    await rollout(store, "old", started=100, ended=101)
    await rollout(store, "new", started=200, ended=None)
    await store.prune(now=1000, keep=Retention(keep=1))
    left = {
        table: {r for (r,) in query(store, f"SELECT DISTINCT rollout FROM {table}")}
        for table in ("checks", "events", "rollouts")
    }
    assert left == {"checks": {"new"}, "events": {"new"}, "rollouts": {"new"}}


@pytest.mark.parametrize(
    ("age_days", "phase", "kept"),
    [
        (10, Phase.SUCCEEDED, True),
        (40, Phase.SUCCEEDED, False),
        (40, Phase.FAILED, True),
        (100, Phase.FAILED, False),
    ],
    ids=["young-promoted", "old-promoted", "failed-kept-longer", "old-failed"],
)
async def test_prune_by_age(store: StateStore, age_days: int, phase: Phase, kept: bool) -> None:
    """Finished rollouts go after ``max_age``; rolled-back ones after ``failed_max_age``."""
    now = 1000 * DAY
    await rollout(
        store, "past", started=now - age_days * DAY - 60, ended=now - age_days * DAY, phase=phase
    )
    await rollout(store, "current", started=now - 50, ended=None)
    await store.prune(now=now, keep=Retention(max_age=30 * DAY, failed_max_age=90 * DAY))
    assert ("past" in await ids(store)) is kept


async def test_prune_never_drops_the_current_rollout(store: StateStore) -> None:
    """A canary's newest rollout stays, however old (its loop may still be at a gate)."""
    await rollout(store, "only", started=100, ended=None)
    await store.prune(now=1000 * DAY, keep=Retention(keep=1, max_age=1))
    assert await ids(store) == ["only"]


async def test_superseded_rollout_ages_from_its_last_record(store: StateStore) -> None:
    """A rollout replaced before it ended is kept while younger than ``max_age``."""
    await rollout(store, "replaced", started=time.time() - 60, ended=None)
    await rollout(store, "current", started=time.time(), ended=None)
    await store.prune(keep=Retention(max_age=DAY))
    assert await ids(store) == ["current", "replaced"]


async def test_prune_caps_checks_per_rollout(store: StateStore) -> None:
    """A long rollout keeps only its newest ``checks_per_rollout`` check records."""
    await rollout(store, "long", started=100, ended=None, checks=25)
    await store.prune(now=200, keep=Retention(checks_per_rollout=10))
    detail = await store.rollout(KEY, "long")
    assert detail is not None
    assert [c["time"] for c in detail["checks"]] == list(range(115, 125))


async def test_prune_caps_events_outside_rollouts(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events of no rollout (config, reload) keep the newest ``EVENTS_KEEP`` per canary."""
    monkeypatch.setattr(store_retention, "EVENTS_KEEP", 3)
    loaded = [Event("config.loaded", KEY, None, "Initialized", float(t)) for t in range(6)]
    await store.save(KEY, CanaryState(), None, loaded, [])
    await rollout(store, "a", started=100, ended=None)
    await store.prune(now=200)
    times = [e["time"] for e in await store.events(KEY)]
    assert times == [100, 5, 4, 3]


async def test_old_database_gains_the_rollout_column(tmp_path: Path) -> None:
    """A database made before history existed opens, and its old events stay readable."""
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, key TEXT NOT NULL, time REAL NOT NULL, "
            "name TEXT NOT NULL, level TEXT NOT NULL, event TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO events(key, time, name, level, event) VALUES (?,?,?,?,?)",
            (KEY, 1.0, "config.loaded", "info", '{"event":"config.loaded"}'),
        )
    store = SqliteStore(path)
    await store.open()
    try:
        await rollout(store, "a", started=100, ended=None)
        assert [e["event"] for e in await store.events(KEY)] == ["rollout.started", "config.loaded"]
        detail = await store.rollout(KEY, "a")
        assert detail is not None and [e["event"] for e in detail["events"]] == ["rollout.started"]
    finally:
        await store.close()


def test_retention_comes_from_the_history_config(tmp_path: Path) -> None:
    """The config's ``history`` section (durations as text) becomes the store's retention."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "state: sqlite://" + str(tmp_path / "s.db") + "\n"
        "history: {keep: 7, maxAge: 2d, failedKeep: 9, failedMaxAge: 10d, checksPerRollout: 50}\n"
    )
    assert retention(load_config(path).settings) == Retention(7, 2 * DAY, 9, 10 * DAY, 50)


@pytest.mark.parametrize(
    ("kept", "problem"),
    [
        (10, None),
        (2000, None),
        (9, "history.checksPerRollout: must be >= 10 (got 9)"),
        (2001, "history.checksPerRollout: must be <= 2000 (got 2001)"),
    ],
    ids=["least", "most", "too-few", "too-many"],
)
def test_checks_per_rollout_is_bounded_as_documented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kept: int, problem: str | None
) -> None:
    """``checksPerRollout`` is 10 to 2000 (what one rollout's answer carries, docs/api.md);
    ``canaryd check`` names a value outside."""
    path = tmp_path / "c.yaml"
    path.write_text(f"history: {{checksPerRollout: {kept}}}\n")
    assert check(path) == (0 if problem is None else 1)
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 1)[1] for line in err if "checksPerRollout" in line] == (
        [] if problem is None else [problem]
    )


def test_the_most_checks_kept_are_the_most_an_answer_reads() -> None:
    """The model's bound on ``checksPerRollout`` is the store's read limit for one rollout."""
    assert CHECKS_PER_ROLLOUT_MAX == ROLLOUT_LIMIT


# --------------------------------------------------------------------------- API


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """A daemon with canary ``prod/web`` (interval 50ms, threshold 3) and a healthy metric."""
    async with backends() as (prom, router):
        cfg = service_config(tmp_path, prom, router, [canary(interval="50ms", maxWeight=20)])
        async with running_daemon(cfg) as daemon, aiohttp.ClientSession() as session:
            yield Api(daemon, api_url(cfg), session)


async def _finished(api: Api) -> Any:
    status, body, _ = await api.call("GET", "/api/v1/canaries/prod/web")
    return status == 200 and body["phase"] in ("Succeeded", "Failed")


async def test_history_api_lists_past_rollouts_with_their_outcome(api: Api) -> None:
    """A promoted rollout and an aborted one are listed, newest first, with why it failed."""
    base = "/api/v1/canaries/prod/web"
    await api.call("POST", base + "/rollouts", json={"revision": "v1"})
    await eventually(lambda: _finished(api), what="v1 finished")
    await api.call("POST", base + "/rollouts", json={"revision": "v2"})
    status, _, _ = await api.call("POST", base + "/abort")
    assert status == 200
    status, body, _ = await api.call("GET", base + "/rollouts")
    assert status == 200
    got = [(r["revision"], r["outcome"]) for r in body["rollouts"]]
    assert got == [("v2", "rolled_back"), ("v1", "promoted")]
    assert "operator" in body["rollouts"][0]["reason"]
    rid = body["rollouts"][1]["id"]
    status, detail, _ = await api.call("GET", f"{base}/rollouts/{rid}")
    assert status == 200 and detail["checkCount"] == len(detail["checks"]) > 0
    assert {e["event"] for e in detail["events"]} >= {"rollout.started", "rollout.promoted"}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/rollouts/ffffffffffff", 404),
        ("/rollouts?limit=0", 400),
        ("/rollouts?limit=201", 400),
        ("/rollouts?limit=x", 400),
        ("/rollouts?limit=%C2%B2", 400),
    ],
    ids=["unknown-rollout", "limit-zero", "limit-too-big", "limit-not-a-number", "superscript"],
)
async def test_history_api_errors(api: Api, path: str, status: int) -> None:
    """An unknown rollout is 404; a bad ``limit`` is 400; both JSON errors."""
    got, body, _ = await api.call("GET", "/api/v1/canaries/prod/web" + path)
    assert (got, set(body)) == (status, {"error"})


async def test_history_api_answers_the_newest_checks_per_rollout(tmp_path: Path) -> None:
    """A rollout with more checks than ``checksPerRollout`` (housekeeping not yet run) is
    answered with its newest ``checksPerRollout`` checks."""
    async with backends() as (prom, router):
        history = {"checksPerRollout": 10}
        cfg = service_config(tmp_path, prom, router, [canary(interval="1h")], history=history)
        async with running_daemon(cfg) as daemon, aiohttp.ClientSession() as session:
            await rollout(daemon.services.store, "long", started=100, ended=None, checks=25)
            url = "/api/v1/canaries/prod/web/rollouts/long"
            status, detail, _ = await Api(daemon, api_url(cfg), session).call("GET", url)
    assert status == 200
    assert [c["time"] for c in detail["checks"]] == list(range(115, 125))


async def test_history_api_needs_the_token_to_read(api: Api) -> None:
    """Without ``anonymous_read`` the history answers 401 to a request without the token."""
    status, _, _ = await api.call("GET", "/api/v1/canaries/prod/web/rollouts", auth=False)
    assert status == 401
