"""State store: what canaryd keeps so that it survives a restart (docs/design.md).

A tick's new state, its check record, its events and the outbox messages it
caused are written in one transaction, so a crash (even ``kill -9``) leaves
either all of them or none.

Modules:

- :mod:`~canaryd.service.store.contract`: the :class:`StateStore` Protocol and
  :class:`OutboxMessage`, what the runner, dispatcher and API use;
- :mod:`~canaryd.service.store.codec`: rows as both stores encode and decode them;
- :mod:`~canaryd.service.store.retention`: what both stores keep of the past;
- :mod:`~canaryd.service.store.sqlite`: :class:`SqliteStore`, the embedded default;
- :mod:`~canaryd.service.store.postgres`: ``PostgresStore``, for several replicas
  (docs/ha.md); not imported here, so that SQLite users never load psycopg.
"""

from canaryd.service.store.codec import dumps, event_to_dict, state_from_dict, state_to_dict
from canaryd.service.store.contract import (
    DROP,
    RELEASE,
    ROLLOUT_LIMIT,
    OutboxMessage,
    StateStore,
)
from canaryd.service.store.retention import EVENTS_KEEP, SENT_KEEP_SECONDS, Retention
from canaryd.service.store.sqlite import SqliteStore

__all__ = [
    "DROP",
    "EVENTS_KEEP",
    "RELEASE",
    "ROLLOUT_LIMIT",
    "SENT_KEEP_SECONDS",
    "OutboxMessage",
    "Retention",
    "SqliteStore",
    "StateStore",
    "dumps",
    "event_to_dict",
    "state_from_dict",
    "state_to_dict",
]
