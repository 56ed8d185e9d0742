"""Logging, configured once: JSON lines on stdout (journald), readable on a terminal.

Every line has ``event``, ``level`` and ``timestamp``; lines about a canary carry
``canary``, ``namespace``, ``revision`` and ``phase`` (see :func:`log_event`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from canaryd.events import Event

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog for the process.

    Args:
        fmt: ``json``, ``console`` or ``auto`` (console when ``stream`` is a terminal).
        level: minimum level to emit.
        stream: where lines go (stdout by default).
    """
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def log_event(event: Event) -> None:
    """Write one canary event as a log line at the event's level."""
    log = structlog.get_logger()
    fields = {k: v for k, v in event.fields.items() if k not in ("event", "level")}
    getattr(log, event.level)(
        event.name,
        canary=event.canary_name,
        namespace=event.namespace,
        revision=event.revision,
        phase=event.phase,
        **fields,
    )
