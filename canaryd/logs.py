"""Logging, configured once: JSON lines on stdout (journald), readable on a terminal.

Every line has ``event``, ``level`` and ``timestamp``; lines about a canary carry
``canary``, ``namespace``, ``revision`` and ``phase`` (see :func:`log_event`).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import structlog

from canaryd.events import Event
from canaryd.jsonenc import make_encoder

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
    global _fast
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    json_renderer = structlog.processors.JSONRenderer(sort_keys=False)
    renderer: Any = structlog.dev.ConsoleRenderer(colors=out.isatty()) if console else json_renderer
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        stamper,
        structlog.processors.format_exc_info,
        renderer,
    ]
    factory = structlog.PrintLoggerFactory(out)
    min_level = _LEVELS.get(level, logging.INFO)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _fast = (
        None if console else _FastPath(tuple(processors), factory, factory(), min_level, stamper)
    )


@dataclass(frozen=True, slots=True)
class _FastPath:
    """What :func:`log_event` needs to write a JSON line without structlog's logger machinery.

    Valid while structlog still runs the configuration it was made with (the same
    processors and logger factory): ``structlog.testing.capture_logs`` (which edits the
    processor list in place) and any other reconfiguration change them, and
    :func:`log_event` then takes structlog's path.
    """

    processors: tuple[Any, ...]
    factory: Any
    printer: Any
    min_level: int
    stamper: structlog.processors.TimeStamper

    def active(self) -> bool:
        """Whether structlog is still configured as :func:`configure` left it."""
        config = structlog.get_config()
        return config["logger_factory"] is self.factory and (
            tuple(config["processors"]) == self.processors
        )


def _json_fallback(obj: Any) -> Any:
    """What structlog's JSONRenderer writes for a value JSON has no type for."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


_ENCODE = make_encoder(_json_fallback)
"""``JSONRenderer(sort_keys=False)``'s ``json.dumps``, built once instead of per line."""

_fast: _FastPath | None = None
"""Set by :func:`configure` for JSON output."""


def log_event(event: Event) -> None:
    """Write one canary event as a log line at the event's level.

    With the JSON configuration of :func:`configure` still in place, the line is built
    directly: the same object structlog's processors would render (an event per tick
    makes their chain ~15 % of a tick's CPU); otherwise (tests capturing logs, console
    output) it goes through structlog.
    """
    fields = {k: v for k, v in event.fields.items() if k not in ("event", "level")}
    fast = _fast
    if fast is not None and "exc_info" not in fields and fast.active():
        if _LEVELS[event.level] < fast.min_level:
            return
        line = {
            "canary": event.canary_name,
            "namespace": event.namespace,
            "revision": event.revision,
            "phase": event.phase,
            **fields,
            "event": event.name,
        }
        structlog.contextvars.merge_contextvars(None, event.level, line)
        line["level"] = event.level
        fast.stamper(None, event.level, line)
        fast.printer.msg(_ENCODE(line))
        return
    log = structlog.get_logger()
    getattr(log, event.level)(
        event.name,
        canary=event.canary_name,
        namespace=event.namespace,
        revision=event.revision,
        phase=event.phase,
        **fields,
    )
