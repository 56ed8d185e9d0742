"""HAProxy's runtime API: one command per connection, retried on transient socket errors.

Used by the router in :mod:`canaryd.routers.haproxy` (its docstring gives the
design: one command per connection, retries with tenacity). This module holds the
wire side: the socket address, sending one command and reading the answer up to
HAProxy's end-of-output empty line, and parsing the answers the router reads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from anyio.abc import ByteStream

from canaryd import retry
from canaryd.errors import RouterError

T = TypeVar("T")

ATTEMPTS = 3
"""How often one runtime-API command is tried when the socket fails transiently."""

BACKOFF_MULTIPLIER = 0.1
"""Seconds; base of the jittered exponential backoff between attempts."""

BACKOFF_MAX = 1.0
"""Seconds; the longest single wait between attempts."""

MAX_ANSWER_BYTES = 64 * 1024
"""How much of an answer is read at most (``get``/``set weight`` answers are tiny)."""

ERROR_PREVIEW_CHARS = 200
"""How much of an unexpected answer goes into an error message."""

_WEIGHT_ANSWER = re.compile(r"(\d+) \(initial \d+\)")


def parse_socket(value: str) -> str | tuple[str, int]:
    """Split a socket setting into a unix path or a TCP ``(host, port)``.

    ``/run/haproxy/admin.sock`` and ``./admin.sock`` are paths; ``127.0.0.1:9999``
    and ``[::1]:9999`` are TCP addresses.

    Raises:
        ValueError: the value looks like ``host:port`` but the port is not a number.
    """
    if value.startswith(("/", ".")) or ":" not in value:
        return value
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not host:
        raise ValueError(f"socket {value!r} is neither a path nor host:port")
    return host.strip("[]"), int(port)


def parse_weight(answer: str) -> int | None:
    """Return the current weight from a ``get weight`` answer, or None if it is not one."""
    match = _WEIGHT_ANSWER.fullmatch(answer.strip())
    return int(match.group(1)) if match else None


def parse_servers_state(answer: str) -> dict[str, tuple[str, str]] | None:
    """Map server name -> (address, port) from a ``show servers state`` answer.

    The answer is a version line, a ``# be_id be_name ...`` header naming the
    columns, and one line per server. Returns None when it is not such a table
    (HAProxy's error text, garbage).
    """
    lines = [line for line in answer.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[1].startswith("# "):
        return None
    columns = lines[1][2:].split()
    try:
        name, addr, port = (columns.index(c) for c in ("srv_name", "srv_addr", "srv_port"))
    except ValueError:
        return None
    rows = [line.split() for line in lines[2:]]
    return {r[name]: (r[addr], r[port]) for r in rows if len(r) > max(name, addr, port)}


def first_line(answer: str) -> str:
    """The first non-empty line of an answer, shortened for an error message."""
    line = next((ln.strip() for ln in answer.splitlines() if ln.strip()), "")
    return line[:ERROR_PREVIEW_CHARS]


def _is_transient(exc: BaseException) -> bool:
    """Socket failures worth another try: everything but a permission problem."""
    if isinstance(exc, PermissionError):
        return False
    return isinstance(exc, TimeoutError | OSError | anyio.BrokenResourceError)


def _describe(exc: BaseException, timeout: float) -> str:
    """An operator-facing reason for a socket failure."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, FileNotFoundError):
        return "no such socket"
    if isinstance(exc, anyio.BrokenResourceError):
        return "connection reset"
    if isinstance(exc, OSError) and exc.errno is None and isinstance(exc.__cause__, OSError):
        exc = exc.__cause__  # anyio.connect_tcp wraps the per-address errors
    if isinstance(exc, OSError) and exc.errno:
        text = os.strerror(exc.errno)
        return text[:1].lower() + text[1:]
    return f"{type(exc).__name__}: {exc}"


async def _read_answer(stream: ByteStream) -> str:
    """Read until HAProxy's end-of-output empty line, EOF, or the size limit."""
    data = b""
    while len(data) < MAX_ANSWER_BYTES and not data.endswith(b"\n\n"):
        try:
            data += await stream.receive()
        except anyio.EndOfStream:
            break
    return data[:MAX_ANSWER_BYTES].decode("utf-8", "replace")


async def command(address: str | tuple[str, int], label: str, timeout: float, line: str) -> str:
    """Send one runtime-API command on a fresh connection and return the answer.

    Args:
        address: a unix socket path or a TCP ``(host, port)`` (:func:`parse_socket`).
        label: the socket as configured, for error messages.
        timeout: seconds one attempt may take.
        line: the command, without its newline.

    Raises:
        RouterError: the socket failed on every attempt (or on the first, for
            a non-transient failure such as permission denied).
    """
    attempts = 0

    async def once() -> str:
        nonlocal attempts
        attempts += 1
        return await _exchange(address, timeout, line)

    try:
        return await _retrying(once)
    except (OSError, TimeoutError, anyio.BrokenResourceError) as exc:
        reason = _describe(exc, timeout)
        tries = f"{attempts} attempt{'s' if attempts > 1 else ''}"
        raise RouterError(f"haproxy {label}: {reason} (after {tries})") from exc


async def _exchange(address: str | tuple[str, int], timeout: float, line: str) -> str:
    with anyio.fail_after(timeout):
        stream = await _connect(address)
        async with stream:
            await stream.send(line.encode() + b"\n")
            return await _read_answer(stream)


async def _connect(address: str | tuple[str, int]) -> ByteStream:
    if isinstance(address, tuple):
        return await anyio.connect_tcp(*address)
    return await anyio.connect_unix(address)


async def _retrying(fn: Callable[[], Awaitable[T]]) -> T:
    """Call ``fn`` until it succeeds, fails non-transiently, or runs out of attempts.

    Raises:
        BaseException: the last exception ``fn`` raised.
    """
    retrying = retry.retrying(
        _is_transient,
        attempts=ATTEMPTS,
        wait=retry.random_exponential(BACKOFF_MULTIPLIER, BACKOFF_MAX),
    )
    return await retrying(fn)
