"""What the file-based routers (NGINX, Envoy, Traefik) share: atomic files, commands, admin APIs.

All three proxies read their traffic split from a file that canaryd owns. The
file is replaced **atomically**: written to a temporary file in the same
directory, fsynced, renamed over the old one, and the directory fsynced, so a
proxy (or a crash) never sees half a file, and Envoy's and Traefik's file
watchers see one rename. :func:`apply_file` keeps the previous content and puts
it back when activating the new one fails or is cancelled, so a failed apply
leaves the proxy on the previous split (``docs/routers.md``).

Helpers here translate every library or OS error into
:class:`~canaryd.errors.RouterError` whose message starts with ``<proxy>`` and
carries the proxy's own text where there is one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
from anyio.to_thread import run_sync

from canaryd import retry
from canaryd.config import read_secret
from canaryd.errors import RouterError, WebhookError
from canaryd.http import (
    USER_AGENT,
    HttpRequest,
    HttpTransport,
    basic_auth,
    describe_redirect,
    redact_url,
    redirect_target,
)

TEMP_SUFFIX = ".canaryd-tmp"
"""Suffix of the temporary file (no ``.conf``/``.yml``/``.json``: no proxy loads it)."""

ATTEMPTS = 3
"""How often an admin-API read is tried when the connection fails transiently."""

BACKOFF_MULTIPLIER = 0.1
"""Seconds; base of the jittered exponential backoff between attempts."""

BACKOFF_MAX = 1.0
"""Seconds; the longest single wait between attempts."""

MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""How much of an admin-API answer is read at most (Envoy's config dumps are large)."""

MAX_OUTPUT_BYTES = 64 * 1024
"""How much of a command's output is kept."""

ERROR_PREVIEW_CHARS = 300
"""How much of a proxy's message goes into an error."""

POLL_INTERVAL = 0.1
"""Seconds between read-backs while waiting for a proxy to load a new file."""


def preview(text: str) -> str:
    """The proxy's message shortened to one line for an error (control characters escaped)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    joined = "; ".join(lines)
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in joined)
    return escaped[:ERROR_PREVIEW_CHARS]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync the directory.

    Raises:
        OSError: the file could not be written (the old file is then untouched
            and no temporary file is left behind).
    """
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)  # not narrowed by the umask: the proxy's user must read it
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_directory(path.parent)


def read_current(path: Path) -> bytes | None:
    """The file's content, or None when it does not exist.

    Raises:
        OSError: it exists but cannot be read.
    """
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def put_back(path: Path, previous: bytes | None) -> None:
    """Restore ``previous`` (None: remove the file canaryd created).

    Raises:
        OSError: the file could not be restored.
    """
    if previous is None:
        path.unlink(missing_ok=True)
        _fsync_directory(path.parent)
    else:
        write_atomic(path, previous)


def api_auth(proxy: str, username: str | None, password_file: str | None) -> str | None:
    """The ``Authorization`` value for a proxy's admin API: basic auth with ``username``, or None.

    The password file is read (and checked) even without a username.

    Raises:
        RouterError: the password file cannot be read or is readable by others.
    """
    try:
        password = read_secret(password_file)
    except ValueError as exc:
        raise RouterError(f"{proxy}: {exc}") from exc
    if username is None:
        return None
    return basic_auth(username, password.get_secret_value() if password else "")


@contextlib.contextmanager
def applied_within(label: str, budget: float) -> Iterator[None]:
    """The block under ``anyio.fail_after(budget)``: one apply's whole time, retries included.

    Raises:
        RouterError: ``<label>: not applied within <budget>s`` when the time runs out.
    """
    try:
        with anyio.fail_after(budget):
            yield
    except TimeoutError as exc:
        raise RouterError(f"{label}: not applied within {budget:g}s") from exc


def _os_reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


async def apply_file(
    proxy: str,
    path: Path,
    data: bytes,
    activate: Callable[[], Awaitable[None]],
    reactivate: Callable[[], Awaitable[None]] | None = None,
    reactivate_timeout: float = 10.0,
) -> None:
    """Write ``data`` to ``path`` atomically, then ``activate()``; on failure restore the old file.

    ``activate`` makes the proxy load the file and confirms it did (test and
    reload, or wait for the watcher and read back). When it raises or is
    cancelled, the previous content goes back (shielded from cancellation), so
    the proxy keeps or returns to the previous split; then ``reactivate`` (if
    given, within ``reactivate_timeout``) makes the proxy load the old file
    again, for proxies that do not watch it.

    Raises:
        RouterError: the file could not be written, or ``activate`` failed (its
            error, with a note when the previous file could not be restored or
            reloaded).
    """
    try:
        previous = await run_sync(read_current, path)
        await run_sync(write_atomic, path, data)
    except OSError as exc:
        raise RouterError(f"{proxy} {path}: cannot write: {_os_reason(exc)}") from exc
    try:
        await activate()
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            note = await _restore(path, previous, reactivate, reactivate_timeout)
        if note and isinstance(exc, RouterError):
            raise RouterError(f"{exc} (and {note})") from exc
        raise


async def _restore(
    path: Path,
    previous: bytes | None,
    reactivate: Callable[[], Awaitable[None]] | None,
    timeout: float,
) -> str | None:
    """Put the previous file back and reactivate it; what went wrong, or None."""
    try:
        await run_sync(put_back, path, previous)
    except OSError as exc:
        return f"the previous {path} could not be restored: {_os_reason(exc)}"
    if reactivate is None:
        return None
    try:
        with anyio.fail_after(timeout):
            await reactivate()
    except (RouterError, TimeoutError) as exc:
        return f"reloading the previous file failed: {exc or 'timeout'}"
    return None


async def run_command(
    proxy: str,
    argv: Sequence[str],
    timeout: float,
    message: Callable[[str], str] = preview,
) -> str:
    """Run a proxy's command (``nginx -t``, a reload); return its output.

    Args:
        proxy: the proxy's name, first word of every error.
        argv: the command.
        timeout: seconds it may run.
        message: extracts the proxy's own message from the output of a failure.

    Raises:
        RouterError: the command is missing, exited non-zero (its own message is
            quoted), or did not finish within ``timeout`` (it is killed).
    """
    name = Path(argv[0]).name
    try:
        with anyio.fail_after(timeout):
            result = await anyio.run_process(list(argv), check=False, stdin=None)
    except TimeoutError as exc:
        raise RouterError(f"{proxy}: {name} did not finish within {timeout:g}s") from exc
    except OSError as exc:
        raise RouterError(f"{proxy}: cannot run {argv[0]}: {_os_reason(exc)}") from exc
    output = (result.stderr + result.stdout)[:MAX_OUTPUT_BYTES].decode("utf-8", "replace")
    if result.returncode != 0:
        text = message(output) or f"{name}: exit status {result.returncode}"
        raise RouterError(f"{proxy}: {text}")
    return output


class _TransientError(Exception):
    """An admin-API answer worth another try (5xx)."""


class _RedirectError(Exception):
    """A 3xx answer: never followed, never retried (docs/reliability.md)."""


async def get_json(
    proxy: str,
    http: HttpTransport,
    url: str,
    timeout: float,
    auth: str | None = None,
) -> tuple[int, Any]:
    """GET ``url`` from a proxy's admin API; see :func:`request_json`.

    Raises:
        RouterError: no usable answer after the retries.
    """
    return await request_json(proxy, http, "GET", url, timeout, auth)


async def request_json(
    proxy: str,
    http: HttpTransport,
    method: str,
    url: str,
    timeout: float,
    auth: str | None = None,
    body: Any = None,
) -> tuple[int, Any]:
    """Send an idempotent request to a proxy's admin API (no redirects followed, bounded answer).

    Connection failures, timeouts and 5xx are retried (:data:`ATTEMPTS` tries);
    only use it for requests that may be repeated (GET, PATCH to absolute values).
    A 3xx answer is an error naming where it points (docs/reliability.md, "No
    redirects followed").

    Args:
        auth: an ``Authorization`` header value (:func:`canaryd.http.basic_auth`), or None.

    Returns:
        The HTTP status and the decoded JSON answer (for a non-JSON error answer
        ``{"message": text}``; for a non-JSON success None).

    Raises:
        RouterError: no usable answer after the retries.
    """
    retrying = retry.retrying(
        (WebhookError, _TransientError),
        attempts=ATTEMPTS,
        wait=retry.random_exponential(BACKOFF_MULTIPLIER, BACKOFF_MAX),
    )
    try:
        return await retrying(_request_once, http, method, url, timeout, auth, body)
    except _TransientError as exc:
        raise RouterError(f"{proxy} {url}: {exc} (after {ATTEMPTS} attempts)") from exc
    except _RedirectError as exc:
        raise RouterError(f"{proxy} {url}: {exc}") from exc
    except WebhookError as exc:  # no answer: the transport's reason, without its host prefix
        reason = str(exc).removeprefix(f"{redact_url(url)}: ")
        raise RouterError(f"{proxy} {url}: {reason} (after {ATTEMPTS} attempts)") from exc


async def _request_once(
    http: HttpTransport,
    method: str,
    url: str,
    timeout: float,
    auth: str | None,
    body: Any,
) -> tuple[int, Any]:
    headers = {"User-Agent": USER_AGENT}
    data = None
    if auth is not None:
        headers["Authorization"] = auth
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body).encode()
    resp = await http.send(HttpRequest(method, url, data, headers, timeout))
    text = resp.body.decode("utf-8", "replace")
    if 300 <= resp.status < 400:
        target = redirect_target(url, resp.headers.get("Location"))
        raise _RedirectError(describe_redirect(resp.status, target))
    if resp.status >= 500:
        raise _TransientError(f"HTTP {resp.status}: {preview(text)}")
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, None if resp.status < 300 else {"message": text}


async def poll(check: Callable[[], Awaitable[str | None]], timeout: float, what: str) -> None:
    """Call ``check`` every :data:`POLL_INTERVAL` until it returns None (done).

    ``check`` returns why it is not done yet; it raises RouterError for a final no.

    Raises:
        RouterError: still not done after ``timeout`` (the last reason is quoted).
    """
    reason = "no read-back finished"
    with anyio.move_on_after(timeout):
        while (current := await check()) is not None:
            reason = current
            await anyio.sleep(POLL_INTERVAL)  # the proxies offer nothing to wait on
        return
    raise RouterError(f"{what} not confirmed within {timeout:g}s: {reason}")
