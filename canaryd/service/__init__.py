"""The running daemon: composition, loops, state, delivery, API (docs/design.md, "Layers").

:mod:`~canaryd.service.daemon` builds everything from the settings (the composition
root), :mod:`~canaryd.service.supervisor` runs and stops it, :mod:`~canaryd.service.health`
says how it is doing;
:mod:`~canaryd.service.scheduler` runs one loop per canary, each tick a
:class:`~canaryd.service.runtime.CanaryRunner` (observe through the providers, decide in
the core, route through the router, persist in :mod:`~canaryd.service.store`);
:mod:`~canaryd.service.dispatcher` delivers the outbox (alerts, event webhooks);
:mod:`~canaryd.service.api`, :mod:`~canaryd.service.metrics` and
:mod:`~canaryd.service.sdnotify` face the operator and systemd. Nothing is imported
here, so importing one module does not start the others.
"""
