"""The event vocabulary (docs/events.md): names, levels and the Event record.

Every decision the analysis core takes is described by an :class:`Event`. The
runtime logs each one as a JSON line, stores it, and hands it to the alerting
outbox. ``docs/events.md`` documents this vocabulary; a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Level = Literal["debug", "info", "warning", "error"]

EVENTS: dict[str, tuple[Level, str]] = {
    "rollout.started": ("info", "A rollout of a new revision began."),
    "rollout.restarted": (
        "warning",
        "A new revision replaced the one under analysis; traffic went back to the primary.",
    ),
    "rollout.waiting": ("info", "The confirm-rollout gate is closed; the rollout waits."),
    "pre_rollout.failed": ("warning", "A pre-rollout webhook failed; counted as a failed check."),
    "check.failed": ("warning", "A check failed (metric out of range, no data, webhook, error)."),
    "check.held": ("info", "A check neither passed nor failed (onNoData: hold)."),
    "check.held_by_canaryd": (
        "warning",
        "A check held because canaryd itself failed (out of fds or memory, behind schedule).",
    ),
    "weight.advanced": ("info", "Traffic to the canary was increased."),
    "iteration.advanced": ("info", "A blue/green or A/B iteration passed."),
    "gate.waiting": ("info", "A confirm-* gate is closed; the rollout waits without failing."),
    "gate.approved": ("info", "An operator approved a gate."),
    "gate.timed_out": ("error", "A gate stayed closed longer than its gateTimeout."),
    "rollout.promoting": (
        "info",
        "The canary passed (or skipAnalysis skipped its analysis: `skipped: true`); "
        "the primary is being promoted.",
    ),
    "rollout.promoted": ("info", "The rollout succeeded; all traffic is on the new primary."),
    "rollout.rolled_back": (
        "error",
        "The rollout failed and the router confirmed that all traffic went back to the primary.",
    ),
    "rollback.pending": (
        "error",
        "A rollback was decided but the router refused its route (`error`); canaryd sends it "
        "again every tick and reports `rollout.rolled_back` once the router confirms it.",
    ),
    "rollout.paused": ("info", "An operator paused the analysis."),
    "rollout.resumed": ("info", "An operator resumed the analysis."),
    "router.failed": (
        "error",
        "The router answered a route with an error or not at all (`error`); with `retrying` "
        "it is tried again next tick (a pending rollback, a promotion under way, or a route "
        "towards the canary: its check held, never failed).",
    ),
    "analysis.tick": ("info", "One analysis tick, with every metric's value and bounds."),
    "notification.failed": ("error", "An alert or webhook could not be delivered in time."),
    "notification.retrying": ("warning", "A delivery failed and will be retried with backoff."),
    "outbox.store_failed": ("error", "The dispatcher could not read or update the outbox."),
    "tick.failed": ("error", "A tick could not complete (e.g. its state could not be read)."),
    "tick.crashed": ("error", "A tick hit a bug; the traceback is logged, the loop goes on."),
    "api.crashed": ("error", "An API request hit a bug; the client got a JSON 500."),
    "api.accept_failed": (
        "error",
        "The API could not accept connections: out of file descriptors (at most every 10 s).",
    ),
    "api.connection_limit": (
        "warning",
        "The API held its cap of connections and closed new ones (at most once a minute).",
    ),
    "api.store_failed": ("error", "An API request could not reach the state store (503)."),
    "store.prune_failed": ("error", "Old check records and events could not be pruned."),
    "adapter.close_failed": (
        "warning",
        "A provider or router a reload replaced, or one closed at stop, could not be closed "
        "within a second or raised while closing (`kind`, `name`, `error`); the daemon goes on.",
    ),
    "provider.tls_insecure": ("warning", "A provider skips TLS verification (insecureSkipVerify)."),
    "config.warning": ("warning", "The configuration has a warning (e.g. ignored fields)."),
    "daemon.fd_limit": (
        "warning",
        "RLIMIT_NOFILE leaves little room for API connections (raise LimitNOFILE=).",
    ),
    "daemon.failed": ("error", "The daemon could not start or stopped on an error."),
    "state.persist_failed": (
        "error",
        "The state store could not record a decision: traffic does not move towards the "
        "canary; failing checks count in memory and are recorded later.",
    ),
    "state.unrecorded_dropped": (
        "error",
        "A canary kept more decisions in memory than it may while the store could not "
        "record them; the oldest was dropped.",
    ),
    "reload.takeover_late": (
        "error",
        "A re-added canary's previous loop did not finish its tick in time; it waits.",
    ),
    "reload.rollback_pending": (
        "error",
        "A reload removed a canary whose rollback the router has not applied; its loop keeps "
        "sending the rollback until the router confirms it.",
    ),
    "reload.promote_abandoned": (
        "error",
        "A reload removed a canary whose promote the router has not confirmed; it is not "
        "retried: traffic may be on either revision, and the recorded state says Promoting "
        "with the route pending until the canary is added back.",
    ),
    "state.unrecorded_lost": (
        "error",
        "A canary removed by a reload, or a stopping daemon, could not record decisions the "
        "store did not take in time; they are lost (their number and sequence numbers, the "
        "failed checks and phase in memory are in the line) unless the canary is added back "
        "before the daemon stops: its new loop then records them.",
    ),
    "reload.rollback_applied": (
        "info",
        "The pending rollback of a canary a reload removed was applied; its loop stops.",
    ),
    "rollback.unrecorded_resent": (
        "warning",
        "At start, a rollback the store never recorded (found in the rollback journal) was "
        "sent again and recorded.",
    ),
    "rollback.journal_unavailable": (
        "error",
        "The rollback journal could not be opened: a rollback the store cannot record is not "
        "remembered across a crash.",
    ),
    "rollback.journal_failed": (
        "error",
        "A rollback could not be written to the rollback journal; the rollback still goes out.",
    ),
    "rollback.journal_unreadable_entry": (
        "warning",
        "An entry of the rollback journal could not be read and was ignored.",
    ),
    "notification.waiting": (
        "warning",
        "A message for a canary that is not configured right now waits for it to come back "
        "(until outbox.maxAge).",
    ),
    "lease.acquired": (
        "info",
        "This replica took the leader lease (docs/ha.md): it decides from now on.",
    ),
    "lease.renew_failed": (
        "warning",
        "The leader could not renew its lease; it stops deciding before the lease can expire.",
    ),
    "lease.lost": ("error", "This replica lost the leader lease and stops (systemd restarts it)."),
    "lease.release_failed": ("warning", "The lease could not be handed back on shutdown."),
    "store.fenced": (
        "warning",
        "A write carried a stale lease epoch and was refused: another replica leads.",
    ),
    "state.read_failed": ("error", "A follower could not read the canaries' state from the store."),
    "config.loaded": ("info", "The configuration was loaded."),
    "config.rejected": ("error", "A configuration reload was rejected; the last good one stays."),
    "daemon.started": ("info", "The daemon is ready."),
    "daemon.stopping": ("info", "The daemon is shutting down."),
    "daemon.stopped": ("info", "Shutdown is complete: ticks finished, outbox flushed."),
    "watchdog.withheld": ("error", "A canary loop stalled; systemd's watchdog is not fed."),
    "watchdog.resumed": ("info", "Every canary loop ticks again; the watchdog is fed again."),
    "scheduler.behind": (
        "warning",
        "Ticks start late: more checks are due than canaryd can run (at most once a minute).",
    ),
    "scheduler.caught_up": ("info", "Ticks start on time again."),
    "sdnotify.failed": ("warning", "A message to systemd's notify socket could not be sent."),
    "library.log": (
        "warning",
        "A library (aiohttp, asyncio, ...) logged a line, a warning or an uncaught exception: "
        "its text in `message`, its logger in `logger`, its own level (often not warning).",
    ),
}
"""Event name -> (level, meaning). The stable vocabulary for log-based alerting."""

FLAGGER_ALERTS: dict[str, str] = {
    "rollout.started": "info",
    "rollout.waiting": "warn",
    "gate.waiting": "warn",
    "rollout.promoted": "info",
    "rollout.rolled_back": "error",
    "rollback.pending": "error",
}
"""The events an alert sends by default (``events: flagger``) and their alert severity: the
moments Flagger alerts on, with Flagger's severities (Flagger alerts a threshold rollback when
it decides it, before routing: canaryd's ``rollback.pending`` when the router refuses that
route). A rollback that a ``rollback``
webhook or an operator asked for is ``warn``, as in Flagger (docs/flagger.md)."""

ALERTABLE = frozenset(
    {
        *FLAGGER_ALERTS,
        "rollout.restarted",
        "gate.approved",
        "gate.timed_out",
        "weight.advanced",
        "iteration.advanced",
        "check.failed",
        "check.held_by_canaryd",
        "pre_rollout.failed",
        "rollout.promoting",
        "rollout.paused",
        "rollout.resumed",
        "router.failed",
    }
)
"""The events an alert can send: those of ``events: all``, and the names an explicit list may
use. Not ``analysis.tick`` (one per tick is noise), nor daemon/config events or
``notification.failed`` (an alert about alerts failing would loop); ``event`` webhooks still
receive every event."""


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a canary, as logged, stored and alerted.

    Attributes:
        name: one of :data:`EVENTS`.
        canary: ``namespace/name``.
        revision: the rollout's revision, if any.
        phase: the phase after the event.
        time: Unix time of the decision.
        fields: event-specific values (metric, value, min, max, reason, weights...).
    """

    name: str
    canary: str
    revision: str | None
    phase: str
    time: float
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> Level:
        """The event's log level, from the vocabulary."""
        return EVENTS[self.name][0]

    @property
    def namespace(self) -> str:
        """The canary's namespace."""
        return self.canary.partition("/")[0]

    @property
    def canary_name(self) -> str:
        """The canary's name without namespace."""
        return self.canary.partition("/")[2]


COMMON_FIELDS = {
    "event": "the event name (this table)",
    "level": "debug, info, warning or error",
    "timestamp": "ISO 8601, UTC",
    "canary": "the canary's name (canary events)",
    "namespace": "the canary's namespace (canary events)",
    "revision": "the rollout's revision (canary events)",
    "phase": "the phase after the event (canary events)",
}

DECISION_FIELDS = {
    "canaryWeight": "percent of traffic on the canary after the event",
    "primaryWeight": "percent on the primary",
    "failedChecks": "failed checks so far in this rollout",
    "threshold": "failed checks that roll back",
    "iteration": "passed iterations (blue/green, A/B)",
    "reason": "why a check failed or the rollout ended (check.failed, rollout.rolled_back, "
    "rollback.pending)",
    "metric": "the failing metric's name (check.failed, rollout.rolled_back)",
    "value": "its value, null for no data (check.failed, rollout.rolled_back)",
    "min": "its lower bound, inclusive (check.failed, rollout.rolled_back)",
    "max": "its upper bound, inclusive (check.failed, rollout.rolled_back)",
    "error": "provider, webhook or router error text",
    "retrying": "true: the route is tried again next tick (router.failed, rollback.pending)",
    "action": "the router action refused (router.failed of a promote)",
    "gate": "the gate concerned (gate.*, rollout.waiting)",
    "metrics": "every metric as {name, value, min, max[, error][, dryRun]} (analysis.tick)",
    "outcome": "pass, fail or hold (analysis.tick)",
    "dryRun": "what the dryRun metrics would have failed or held, in words (analysis.tick);"
    " a metric's `dryRun: true` marks it in `metrics`",
}


_ALERT_LEVELS = {"debug": "info", "info": "info", "warning": "warn", "error": "error"}


def events_markdown() -> str:
    """The body of ``docs/events.md``, generated from :data:`EVENTS`."""
    lines = [
        "# Events",
        "",
        "canaryd writes one JSON object per line on stdout. This is the stable vocabulary",
        "for log-based alerting; it is generated from `canaryd/core/events.py`",
        "(`python -m canaryd.core.events > docs/events.md`) and a test keeps the two equal.",
        "",
        "Lines are compact JSON; a canary event's line starts with its canary and ends with",
        '`event`, `level`, `timestamp` (`{"canary":"web",…,"event":"check.failed",…}`).',
        "Select them by field, not by their text: the spacing is not part of the format",
        "(`journalctl -u canaryd -o cat | jq 'select(.event == \"rollout.rolled_back\")'`).",
        "",
        "## Fields on every line",
        "",
        "| field | meaning |",
        "|---|---|",
        *(f"| `{k}` | {v} |" for k, v in COMMON_FIELDS.items()),
        "",
        "## Fields of canary decisions",
        "",
        "| field | meaning |",
        "|---|---|",
        *(f"| `{k}` | {v} |" for k, v in DECISION_FIELDS.items()),
        "",
        "## Event names",
        "",
        "| event | level | meaning |",
        "|---|---|---|",
        *(f"| `{name}` | {level} | {text} |" for name, (level, text) in sorted(EVENTS.items())),
        "",
        "## Alerts",
        "",
        "An alert (`canaries[].alerts[]`) sends, by default (`events: flagger`), the events",
        "Flagger alerts on, with Flagger's severities; `events: all` sends every event below;",
        "`events: [names]` sends the events listed. The `severity` filter applies on top",
        "(`info`: all, `warn`: warn and error, `error`: error only).",
        "",
        "| event | by default | alert severity |",
        "|---|---|---|",
        *(
            f"| `{name}` | {'yes' if name in FLAGGER_ALERTS else 'no'} | "
            f"{FLAGGER_ALERTS.get(name) or _ALERT_LEVELS[EVENTS[name][0]]} |"
            for name in sorted(ALERTABLE)
        ),
        "",
        "A rollback asked for by a `rollback` webhook or by `canaryd abort` is `warn`;",
        "a waiting alert of a gate whose closing webhook has `muteAlert: true` is not sent.",
        "",
        "## Alerting examples",
        "",
        '- rolled back: `event="rollout.rolled_back"` (level error; `reason` says why)',
        '- rollback refused by the router: `event="rollback.pending"` (`error` says why)',
        '- stuck gate: `event="gate.timed_out"`',
        '- lost alerts: `event="notification.failed"`',
        '- disk trouble: `event="state.persist_failed"`',
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(events_markdown(), end="")
