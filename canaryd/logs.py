"""Logging, configured once: JSON lines on stdout (journald), readable on a terminal.

Every line is one compact JSON object (``{"canary":"web",...,"event":"analysis.tick",
"level":"info","timestamp":"..."}``, written by :mod:`canaryd.jsonenc`) with ``event``,
``level`` and ``timestamp``; lines about a canary carry ``canary``, ``namespace``,
``revision`` and ``phase`` (see :func:`log_event`).

Libraries' logging (aiohttp, asyncio, ...), Python warnings and uncaught
exceptions go through the same renderer as ``event="library.log"`` lines, so
every line the process writes is one JSON object. Every line is scrubbed of
secrets first: the values of :func:`protect` (every secret canaryd reads) and
anything that looks like a credential (``Authorization``/``Cookie`` header
values, ``Bearer``/``Basic`` credentials, a URL's user info). See
docs/reliability.md, "Log lines".
"""

from __future__ import annotations

import datetime
import logging
import sys
import threading
import time
import types
from dataclasses import dataclass
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict

from canaryd.core.events import Event
from canaryd.jsonenc import make_encoder, map_leaves
from canaryd.redact import REDACTED as REDACTED
from canaryd.redact import protect as protect
from canaryd.redact import scrub as scrub
from canaryd.redact import scrub_protected

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
    json_renderer = structlog.processors.JSONRenderer(serializer=_serialize)
    renderer: Any = structlog.dev.ConsoleRenderer(colors=out.isatty()) if console else json_renderer
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        stamper,
        structlog.processors.format_exc_info,
        redact,
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
    _fast = None if console else _FastPath(tuple(processors), factory, factory(), min_level)
    _route_libraries(out, renderer, stamper, min_level)


def _route_libraries(out: TextIO, renderer: Any, stamper: Any, min_level: int) -> None:
    """Send the stdlib logging of every library, warnings and uncaught exceptions to ``out``.

    One handler on the root logger replaces any other (``logging.lastResort``
    would print plain text on stderr).
    """
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            stamper,
            _library_event,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(min_level, logging.INFO))  # libraries' debug chatter stays off
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught


def _library_event(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """A library's record: its text becomes ``message``, the event is ``library.log``."""
    event_dict["message"] = event_dict.pop("event", "")
    event_dict["event"] = "library.log"
    return event_dict


def _log_uncaught(
    kind: type[BaseException], exc: BaseException, tb: types.TracebackType | None
) -> None:
    """``sys.excepthook``: an exception nobody caught, as one JSON line."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("canaryd").error("uncaught exception", exc_info=(kind, exc, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    """``threading.excepthook``: a thread's uncaught exception, as one JSON line."""
    if args.exc_value is None:
        return
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    name = args.thread.name if args.thread else "?"
    logging.getLogger("threading").error("uncaught exception in thread %s", name, exc_info=exc_info)


# --------------------------------------------------------------------------- redaction
# What is redacted lives in canaryd.redact; this is the processor that applies it.


def redact(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Processor: scrub every string value of a line (exception text included)."""
    return {key: map_leaves(value, _scrub_text) for key, value in event_dict.items()}


def _scrub_text(value: Any) -> Any:
    return scrub(value) if isinstance(value, str) else value


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
"""Every line's JSON (docs/design.md, "JSON"): compact, keys in their order, NaN as ``NaN``."""


def _serialize(event_dict: EventDict, **_: Any) -> str:
    """``JSONRenderer``'s serializer: the line as :func:`log_event`'s fast path writes it.

    Its keyword arguments (``default``) are ``json.dumps``'s; :data:`_ENCODE` has its own.
    """
    return _ENCODE(event_dict)


_fast: _FastPath | None = None
"""Set by :func:`configure` for JSON output."""

_second: tuple[int, str] = (-1, "")
"""The second :func:`iso_utc_now` last formatted, and its text (one tuple: any thread may log)."""


def iso_utc_now() -> str:
    """Now as ``TimeStamper(fmt="iso", utc=True)`` writes it (``2026-11-30T00:55:12.123456Z``).

    The date and time of day are formatted once a second: ``datetime.now().isoformat()``
    costs a few microseconds, and every tick writes a line or two. Like
    ``isoformat``, a time on the second has no fraction.
    """
    global _second
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    cached, text = _second
    if cached != second:
        text = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (second, text)
    return f"{text}.{micro:06d}Z" if micro else f"{text}Z"


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
        line["timestamp"] = iso_utc_now()
        text = _ENCODE(line)
        text = scrub_protected(text)  # canary events carry scrubbed errors already: values only
        fast.printer.msg(text)
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
