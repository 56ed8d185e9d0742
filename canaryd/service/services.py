"""What every canary's runner shares: the settings, the adapters, the store and the clock.

The daemon builds one :class:`Services` per config (a reload builds a new one) and
hands it to each :class:`~canaryd.service.runtime.CanaryRunner`; the dispatcher
delivers the outbox with the same bundle (docs/design.md, "A tick").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from canaryd.config.models import Settings
from canaryd.core.analysis import CanaryState
from canaryd.http import HttpTransport
from canaryd.providers import MetricsProvider
from canaryd.routers import Router
from canaryd.service.rollbacks import RollbackJournal
from canaryd.service.store import StateStore


@dataclass
class Services:
    """What runners share: outgoing HTTP, adapters, store, clock."""

    settings: Settings
    http: HttpTransport
    """The outgoing HTTP of routers, webhooks and notifiers (docs/design.md, "Seams")."""
    providers: Mapping[str, MetricsProvider]
    routers: Mapping[str, Router]
    store: StateStore
    clock: Callable[[], float] = time.time
    on_change: Callable[[str, CanaryState], None] = lambda key, state: None
    journal: RollbackJournal | None = None
    """Where rollbacks are written before they are sent (docs/reliability.md)."""
    epoch: Callable[[], int | None] = lambda: None
    """The leader lease's epoch, put in router idempotency keys (docs/ha.md); None: no lease."""
    leading: Callable[[], bool] = lambda: True
    """Whether this replica may act (it holds the leader lease, docs/ha.md); routes are not
    sent otherwise."""
