"""The Consul router against a fake Consul built from its documented config-entry API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from consul_fake import FakeConsul, running_consul
from traffic import route

from canaryd.config import ConsulRouter
from canaryd.errors import RouterError
from canaryd.http import HttpTransport, make_transport
from canaryd.routers.consul import CAS_ATTEMPTS, ConsulSplitter

pytestmark = pytest.mark.anyio


def subsets(primary: int, canary: int) -> list[dict[str, Any]]:
    """The splits Consul should hold for a subset-based split of ``web``."""
    return [
        {"Weight": primary, "ServiceSubset": "primary"},
        {"Weight": canary, "ServiceSubset": "canary"},
    ]


@pytest.fixture
async def consul(anyio_backend: str) -> AsyncIterator[FakeConsul]:
    """A fake Consul agent on 127.0.0.1."""
    async with running_consul() as fake:
        yield fake


@pytest.fixture
async def session(anyio_backend: str) -> AsyncIterator[HttpTransport]:
    """A client session for canaryd's router."""
    async with make_transport() as client:
        yield client


def splitter(consul: FakeConsul, session: HttpTransport, **extra: Any) -> ConsulSplitter:
    """A consul router for service ``web`` with subsets primary/canary."""
    fields = {"type": "consul", "address": consul.url, "service": "web", "timeout": 1.0}
    fields |= {"primary_subset": "primary", "canary_subset": "canary", **extra}
    return ConsulSplitter(ConsulRouter.model_validate(fields), session)


async def test_route_steps_and_rollback_write_the_splits(
    consul: FakeConsul, session: HttpTransport
) -> None:
    """Each step creates or updates the service-splitter; rollback writes 100/0."""
    router = splitter(consul, session)

    for canary in (0, 20, 50, 100):
        await router.apply(route("route", 100 - canary, canary))
        assert consul.splits() == subsets(100 - canary, canary)
    await router.apply(route("rollback", 0, 100))

    assert consul.splits() == subsets(100, 0)
    assert consul.entries[("service-splitter", "web")]["Kind"] == "service-splitter"


async def test_same_split_twice_writes_once(consul: FakeConsul, session: HttpTransport) -> None:
    """Applying a split that is already there writes nothing (idempotent)."""
    router = splitter(consul, session)

    await router.apply(route("route", 80, 20))
    await router.apply(route("route", 80, 20))

    assert consul.puts == 1


async def test_services_instead_of_subsets(consul: FakeConsul, session: HttpTransport) -> None:
    """primary_service/canary_service split between two services; other entry fields are kept."""
    consul.store({"Kind": "service-splitter", "Name": "web", "Splits": [], "Meta": {"team": "a"}})
    extra = {"primary_subset": None, "canary_subset": None}
    router = splitter(consul, session, primary_service="web-v1", canary_service="web-v2", **extra)

    await router.apply(route("route", 70, 30))

    assert consul.splits() == [
        {"Weight": 70, "Service": "web-v1"},
        {"Weight": 30, "Service": "web-v2"},
    ]
    assert consul.entries[("service-splitter", "web")]["Meta"] == {"team": "a"}


async def test_cas_conflict_is_read_again_and_retried(
    consul: FakeConsul, session: HttpTransport
) -> None:
    """A write that loses the cas race reads the entry again and writes on top of the new one."""
    consul.store({"Kind": "service-splitter", "Name": "web", "Splits": subsets(100, 0), "Meta": {}})
    raced: list[bool] = []

    def other_writer(fake: FakeConsul) -> None:
        if not raced:
            raced.append(True)
            fake.store(
                {
                    "Kind": "service-splitter",
                    "Name": "web",
                    "Splits": subsets(90, 10),
                    "Meta": {"by": "other"},
                }
            )

    consul.before_put = other_writer

    await splitter(consul, session).apply(route("route", 80, 20))

    assert consul.puts == 2
    assert consul.splits() == subsets(80, 20)
    assert consul.entries[("service-splitter", "web")]["Meta"] == {"by": "other"}


async def test_endless_cas_conflicts_are_an_error(
    consul: FakeConsul, session: HttpTransport
) -> None:
    """An entry that changes before every write gives up after a bounded number of rounds."""
    consul.store({"Kind": "service-splitter", "Name": "web", "Splits": subsets(100, 0)})
    consul.before_put = lambda fake: fake.store(
        {"Kind": "service-splitter", "Name": "web", "Splits": subsets(100, 0)}
    )

    with pytest.raises(RouterError) as info:
        await splitter(consul, session).apply(route("route", 80, 20))

    assert str(info.value) == (
        f"consul web: the entry changed concurrently {CAS_ATTEMPTS} times in a row (cas); "
        "not written"
    )
    assert consul.splits() == subsets(100, 0)


async def test_refused_entry_quotes_consul_and_keeps_the_previous_split(
    consul: FakeConsul, session: HttpTransport
) -> None:
    """An entry Consul refuses is a RouterError with Consul's text; the stored split stays."""
    router = splitter(consul, session)
    await router.apply(route("route", 80, 20))
    consul.protocols["web"] = "tcp"

    with pytest.raises(RouterError) as info:
        await router.apply(route("route", 50, 50))

    assert str(info.value) == (
        'consul web: HTTP 500: discovery chain "web" uses a protocol "tcp" that does not '
        "permit advanced routing or splitting behavior"
    )
    assert consul.splits() == subsets(80, 20)


async def test_token_comes_from_the_file_and_is_sent(
    consul: FakeConsul, session: HttpTransport, tmp_path: Path
) -> None:
    """The ACL token from token_file is sent; without it Consul's 403 is the error."""
    consul.token = "s3cr3t-token"
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-token\n")
    token_file.chmod(0o600)

    await splitter(consul, session, token_file=str(token_file)).apply(route())
    with pytest.raises(RouterError) as info:
        await splitter(consul, session).apply(route("route", 50, 50))

    assert consul.splits() == subsets(80, 20)
    assert str(info.value) == "consul web: HTTP 403: ACL not found"


async def test_world_readable_token_file_is_refused(tmp_path: Path, session: HttpTransport) -> None:
    """A token file others can read is a RouterError naming the fix."""
    token_file = tmp_path / "token"
    token_file.write_text("t")
    token_file.chmod(0o644)
    cfg = ConsulRouter.model_validate(
        {"type": "consul", "service": "web", "canary_subset": "c", "token_file": str(token_file)}
    )

    with pytest.raises(RouterError, match=r"^consul web: secret file .* is readable by others"):
        ConsulSplitter(cfg, session)


async def test_no_leader_is_retried(consul: FakeConsul, session: HttpTransport) -> None:
    """A transient 500 (No cluster leader) is retried and the write then succeeds."""
    consul.fail_next = [500]

    await splitter(consul, session).apply(route())

    assert consul.splits() == subsets(80, 20)


async def test_datacenter_namespace_and_partition_are_passed(
    consul: FakeConsul, session: HttpTransport
) -> None:
    """dc, ns and partition go into every request's query; cas into the write's."""
    router = splitter(consul, session, datacenter="dc2", namespace="team", partition="p1")

    await router.apply(route())

    assert {"dc": "dc2", "ns": "team", "partition": "p1"}.items() <= consul.queries[0].items()
    assert consul.queries[1] == {"dc": "dc2", "ns": "team", "partition": "p1", "cas": "0"}
    assert consul.entries[("service-splitter", "web")]["Namespace"] == "team"


async def test_unreachable_consul_is_a_bounded_error(session: HttpTransport) -> None:
    """An address nobody listens on gives a RouterError naming the host, after retries."""
    async with running_consul() as gone:
        url = gone.url
    cfg = {"type": "consul", "address": url, "service": "web", "canary_subset": "c", "timeout": 0.5}

    with pytest.raises(RouterError) as info:
        await ConsulSplitter(ConsulRouter.model_validate(cfg), session).apply(route())

    assert str(info.value).startswith(f"consul web: {url}/…: ClientConnectorError")
    assert str(info.value).endswith("(after 3 attempts)")


def test_primary_and_canary_must_differ() -> None:
    """A config whose primary and canary are the same split target is refused."""
    with pytest.raises(ValueError, match="primary and canary are the same split target"):
        ConsulRouter.model_validate({"type": "consul", "service": "web"})
