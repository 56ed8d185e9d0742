"""Every line the process writes is one JSON object, and no secret is in any of them.

Libraries' logging (aiohttp's "Error handling request" with the raw header line,
asyncio, warnings) and uncaught exceptions go through the same renderer and the
same scrubbing as canaryd's own events (docs/reliability.md, "Log lines").
"""

from __future__ import annotations

import io
import json
import logging
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from daemons import TOKEN, api_url, daemon_process, write_config

from canaryd import logs

SECRET = "s3cr3t-Zq9"
"""A token some client tried: never logged either."""

HOSTILE_HEADERS = [
    b"Authorization: Bearer " + TOKEN.encode() + b"\r\r\n",  # a token file with CRLF endings
    b"Authorization: Bearer " + TOKEN.encode() + b"\x01\r\n",
    b"Authorization: Bearer " + SECRET.encode() + b"\x7f\r\n",
    b"Authorization: Bearer " + SECRET.encode() + b"\x00x\r\n",
    b"Authorization: Bearer " + SECRET.encode() + b"\x85\x1b[2K\r\n",
    b"Authorization: Basic " + SECRET.encode() + b" \x0b\r\n",
    b"Cookie: session=" + SECRET.encode() + b"\x02\r\n",
    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n",  # the right token, a valid request
]


def wait_listening(url: str, within: float = 15.0) -> tuple[str, int]:
    """Host and port of ``url`` once something accepts connections there."""
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            return host, int(port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def send_raw(address: tuple[str, int], header: bytes) -> bytes:
    """POST an abort with ``header`` as written; the answer's first bytes."""
    with socket.create_connection(address, timeout=5.0) as s:
        s.sendall(
            b"POST /api/v1/canaries/prod/web/abort HTTP/1.1\r\nHost: x\r\n"
            + header
            + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        return s.recv(200)


@pytest.mark.slow
def test_hostile_authorization_headers_leave_only_json_lines_without_secrets(
    tmp_path: Path,
) -> None:
    """A real daemon sent control characters in Authorization logs JSON only, no token."""
    config = write_config(tmp_path, [])
    log = tmp_path / "daemon.log"
    with daemon_process(config, log) as proc:
        address = wait_listening(api_url(config))
        answers = [send_raw(address, header) for header in HOSTILE_HEADERS]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert all(a.startswith(b"HTTP/1.") for a in answers)
    raw = log.read_bytes()
    lines = raw.decode("utf-8").splitlines()
    assert any(json.loads(line)["event"] == "library.log" for line in lines)
    for line in lines:
        assert isinstance(json.loads(line), dict), line
        assert TOKEN not in line and SECRET not in line, line


# --------------------------------------------------------------------------- in-process


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """JSON logging configured onto a buffer; logging, hooks and structlog restored after."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = sys.excepthook, threading.excepthook
    out = io.StringIO()
    logs.configure("json", "info", out)
    try:
        yield out
    finally:
        root.handlers[:], root.level = handlers, level
        sys.excepthook, threading.excepthook = hooks
        logging.captureWarnings(False)
        structlog.configure(**config)
        logs._fast = None


def lines_of(out: io.StringIO) -> list[dict[str, object]]:
    """Every line written, each parsed as one JSON object."""
    parsed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert all(isinstance(p, dict) for p in parsed)
    return parsed


def test_library_log_is_a_scrubbed_json_line(captured: io.StringIO) -> None:
    """A library's log record becomes one ``library.log`` line with the credential scrubbed."""
    logs.protect(SECRET)
    logging.getLogger("aiohttp.server").error(
        "bad header %r", b"Authorization: Bearer x\x01y", exc_info=ValueError(SECRET)
    )
    (line,) = lines_of(captured)
    assert line["event"] == "library.log" and line["logger"] == "aiohttp.server"
    assert line["level"] == "error"
    assert "x\\x01y" not in str(line) and SECRET not in captured.getvalue()


def test_library_line_is_written_as_canary_events_are(captured: io.StringIO) -> None:
    """A library's line is compact JSON, written by the encoder of canary events."""
    logging.getLogger("asyncio").warning("slow callback, took %.3f s", 0.25)
    (text,) = captured.getvalue().splitlines()
    line = json.loads(text)
    assert list(line) == ["level", "logger", "timestamp", "message", "event"]
    assert text == logs._ENCODE(line)
    assert '"message":"slow callback, took 0.250 s","event":"library.log"' in text


def test_warnings_and_uncaught_exceptions_are_json_lines(captured: io.StringIO) -> None:
    """A Python warning, an uncaught exception and a thread's one are each a JSON line."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning, stacklevel=1)
    try:
        raise RuntimeError(f"boom Bearer {SECRET}")
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    thread = threading.Thread(target=lambda: 1 / 0, name="worker")
    thread.start()
    thread.join()
    got = lines_of(captured)
    assert [line["logger"] for line in got] == ["py.warnings", "canaryd", "threading"]
    assert SECRET not in captured.getvalue()


def test_protected_secret_is_scrubbed_from_canary_events(captured: io.StringIO) -> None:
    """A secret canaryd read never reaches a canary event line, even on the fast path."""
    from canaryd.core.events import Event

    logs.protect(SECRET)
    logs.log_event(Event("check.failed", "prod/web", "v2", "Progressing", 1.0, {"reason": SECRET}))
    assert SECRET not in captured.getvalue()
    assert lines_of(captured)[0]["reason"] == "***"


@pytest.mark.parametrize(
    "secret",
    ['pa"ss-Zq9x', "pa\\ss-Zq9x", "pass-Zq9\u00e9", "pass\x01Zq9x", "pass\u2028Zq9x"],
    ids=["quote", "backslash", "non-ascii", "control", "line-separator"],
)
def test_protected_secret_escaped_in_json_is_scrubbed(captured: io.StringIO, secret: str) -> None:
    """A secret with a character JSON escapes is scrubbed from a canary event's line too."""
    from canaryd.core.events import Event

    logs.protect(secret)
    logs.log_event(Event("check.failed", "prod/web", "v2", "Progressing", 1.0, {"reason": secret}))
    assert lines_of(captured)[0]["reason"] == "***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("b'Authorization: Bearer tok\\x01en'", "b'Authorization: ***'"),
        ('{"Authorization": "Bearer tok en"}', '{"Authorization": "***"}'),
        ("Cookie: a=b; c=d\nnext", "Cookie: ***\nnext"),
        ("sent Bearer abc.def, then", "sent Bearer ***, then"),
        ("Basic dXNlcjpwYXNz", "Basic ***"),
        ("at https://bob:pw@prom:9090/x", "at https://***@prom:9090/x"),
        ("http://prom/a@b stays", "http://prom/a@b stays"),
        ("no credential here", "no credential here"),
    ],
    ids=[
        "header-repr",
        "json-header",
        "cookie",
        "bearer",
        "basic",
        "url-userinfo",
        "path-at",
        "none",
    ],
)
def test_credential_looking_values_are_scrubbed(text: str, expected: str) -> None:
    """Header values, Bearer/Basic credentials and URL passwords become ``***``."""
    assert logs.scrub(text) == expected
