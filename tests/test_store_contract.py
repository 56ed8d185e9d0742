"""Every state store answers the StateStore contract as written (docs/design.md, "State")."""

from __future__ import annotations

import inspect

import pytest

from canaryd.service.store import SqliteStore, StateStore
from canaryd.service.store.postgres import PostgresStore
from canaryd.testing import FakeStore

CALLS = [
    name
    for name, member in vars(StateStore).items()
    if inspect.iscoroutinefunction(member) and not name.startswith("_")
]


def _defaults(cls: type, name: str) -> dict[str, object]:
    """The parameters of ``cls.name`` with their defaults (``empty`` for none)."""
    params = inspect.signature(getattr(cls, name)).parameters
    return {p.name: p.default for p in params.values()}


@pytest.mark.parametrize("store", [SqliteStore, PostgresStore, FakeStore], ids=lambda c: c.__name__)
def test_every_store_takes_the_contracts_parameters_and_defaults(store: type) -> None:
    """Each call of each store has the contract's parameters and default values."""
    assert "rollout" in CALLS and len(CALLS) >= 10, CALLS
    differ = {
        name: (_defaults(store, name), _defaults(StateStore, name))
        for name in CALLS
        if _defaults(store, name) != _defaults(StateStore, name)
    }
    assert differ == {}
