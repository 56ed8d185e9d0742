"""The ``exec`` router: runs a configured command for every decision (everything else).

For proxies and platforms without a built-in router (a script around ``consul
config write``, a cloud CLI, a config-management run), canaryd runs::

    <command...> <action> <primaryWeight> <canaryWeight>

directly (an argv, never a shell), with these variables added to its
environment (and ``env`` from the config)::

    CANARYD_CANARY=prod/web  CANARYD_REVISION=v2  CANARYD_ACTION=route
    CANARYD_PRIMARY_WEIGHT=80  CANARYD_CANARY_WEIGHT=20  CANARYD_IDEMPOTENCY_KEY=...

Exit status 0 means "applied". ``rollback`` passes primary 100 / canary 0. The
command runs in its own process group with stdin from ``/dev/null`` and stdout
discarded; after ``timeout`` seconds the whole group is killed (SIGKILL). An exit
status listed in ``retry_exit_codes`` (default 75, ``EX_TEMPFAIL``) is retried
with tenacity (:data:`ATTEMPTS` tries, jittered backoff); any other failure is
final. canaryd cannot read the result back: the command must verify what it
applied before exiting 0 (docs/routers.md, "exec").

Error messages (all :class:`~canaryd.errors.RouterError`; stderr escaped and
shortened to its last :data:`STDERR_PREVIEW_CHARS` characters)::

    exec lb: exit 1: Error writing config entry: Unexpected response code: 403
    exec lb: killed after 30s (no exit within the timeout)
    exec lb: exit 75: backend busy (after 3 attempts)
    exec lb: cannot run /usr/local/bin/lb-weights: No such file or directory
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import anyio
from anyio.abc import ByteReceiveStream, Process

from canaryd import retry
from canaryd.config.models import ExecRouter
from canaryd.errors import RouterError
from canaryd.routers import RouteRequest
from canaryd.terminal import escape

ATTEMPTS = 3
"""How often the command is run when it exits with a ``retry_exit_codes`` status."""

BACKOFF_MULTIPLIER = 0.2
"""Seconds; base of the jittered exponential backoff between attempts."""

BACKOFF_MAX = 5.0
"""Seconds; the longest single wait between attempts."""

MAX_STDERR_BYTES = 64 * 1024
"""How much of the command's stderr is kept (the rest is read and discarded)."""

STDERR_PREVIEW_CHARS = 300
"""How much of stderr (its end, escaped) goes into an error message."""

REAP_TIMEOUT = 5.0
"""Seconds to wait for a killed process group's leader to be reaped."""


class _RetryableExitError(Exception):
    """Internal: the command exited with a status worth another attempt."""


def command_env(request: RouteRequest, extra: dict[str, str]) -> dict[str, str]:
    """The command's environment: canaryd's, the configured ``env``, the decision."""
    primary, canary = request.weights()
    return {
        **os.environ,
        **extra,
        "CANARYD_CANARY": request.canary,
        "CANARYD_REVISION": request.revision or "",
        "CANARYD_ACTION": request.action,
        "CANARYD_PRIMARY_WEIGHT": str(primary),
        "CANARYD_CANARY_WEIGHT": str(canary),
        "CANARYD_IDEMPOTENCY_KEY": request.idempotency_key,
    }


def command_argv(command: list[str], request: RouteRequest) -> list[str]:
    """``command`` followed by the action and both weights."""
    primary, canary = request.weights()
    return [*command, request.action, str(primary), str(canary)]


def stderr_preview(data: bytes) -> str:
    """The end of stderr, decoded, escaped for a terminal and shortened."""
    text = data.decode("utf-8", "replace").strip()
    if len(text) > STDERR_PREVIEW_CHARS:
        text = "…" + text[-STDERR_PREVIEW_CHARS:]
    return escape(text)


class ExecCommand:
    """Applies decisions by running a command.

    Attributes:
        name: the router's config key, for error messages.
        budget: seconds one :meth:`apply` may take at most, retries included.
    """

    def __init__(self, cfg: ExecRouter, *, name: str = "exec") -> None:
        """Keep the config (nothing is run)."""
        self._cfg = cfg
        self.name = name
        self.budget = retry.longest(ATTEMPTS, cfg.timeout, BACKOFF_MAX)

    async def aclose(self) -> None:
        """Nothing to release: each route runs its own process, which ends with it."""

    async def apply(self, request: RouteRequest) -> None:
        """Run the command until it exits 0, fails for good, or runs out of attempts.

        Raises:
            RouterError: non-zero exit (stderr quoted), killed at the timeout,
                or the program cannot be started.
        """
        argv = command_argv(self._cfg.command, request)
        env = command_env(request, self._cfg.env)
        attempts = 0

        async def once() -> None:
            nonlocal attempts
            attempts += 1
            await self._run(argv, env)

        retrying = retry.retrying(
            _RetryableExitError,
            attempts=ATTEMPTS,
            wait=retry.random_exponential(BACKOFF_MULTIPLIER, BACKOFF_MAX),
        )
        try:
            await retrying(once)
        except _RetryableExitError as exc:
            raise RouterError(f"exec {self.name}: {exc} (after {attempts} attempts)") from exc

    async def _run(self, argv: list[str], env: dict[str, str]) -> None:
        """Run the command once.

        Raises:
            RouterError: a final failure.
            _RetryableExitError: an exit status from ``retry_exit_codes``.
        """
        try:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,  # its own group, killed as a whole at the timeout
            )
        except OSError as exc:
            raise RouterError(f"exec {self.name}: cannot run {argv[0]}: {exc.strerror}") from exc
        code, stderr = await self._wait(process)
        self._check(code, stderr)

    async def _wait(self, process: Process) -> tuple[int, bytes]:
        """Read stderr and wait for the exit, killing the process group at the timeout.

        Raises:
            RouterError: the timeout passed.
        """
        try:
            with anyio.fail_after(self._cfg.timeout):
                assert process.stderr is not None  # opened with stderr=PIPE
                stderr = await _read_bounded(process.stderr)
                return await process.wait(), stderr
        except TimeoutError as exc:
            raise RouterError(
                f"exec {self.name}: killed after {self._cfg.timeout:g}s "
                "(no exit within the timeout)"
            ) from exc
        finally:
            if process.returncode is None:
                _kill_group(process.pid)
                with anyio.CancelScope(shield=True), anyio.move_on_after(REAP_TIMEOUT):
                    await process.wait()
            with anyio.CancelScope(shield=True):
                await process.aclose()

    def _check(self, code: int, stderr: bytes) -> None:
        """Raise unless ``code`` is 0.

        Raises:
            RouterError: a final failure.
            _RetryableExitError: an exit status from ``retry_exit_codes``.
        """
        if code == 0:
            return
        reason = f"exit {code}" if code > 0 else f"killed by {_signal_name(-code)}"
        preview = stderr_preview(stderr)
        detail = f"{reason}: {preview}" if preview else reason
        if code in self._cfg.retry_exit_codes:
            raise _RetryableExitError(detail)
        raise RouterError(f"exec {self.name}: {detail}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (already gone: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _read_bounded(stream: ByteReceiveStream) -> bytes:
    """Read ``stream`` to EOF, keeping the first :data:`MAX_STDERR_BYTES` bytes."""
    kept = bytearray()
    while True:
        try:
            chunk = await stream.receive()
        except anyio.EndOfStream:
            return bytes(kept)
        kept += chunk[: max(0, MAX_STDERR_BYTES - len(kept))]
