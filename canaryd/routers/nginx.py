"""NGINX router: an ``upstream`` block with server weights in an include file canaryd owns.

The operator's ``nginx.conf`` includes ``cfg.file`` inside ``http {}`` and proxies
to the upstream (``proxy_pass http://web;``). For each decision canaryd:

1. renders the upstream: primary servers weighted by the primary's percent,
   canary servers by the canary's, reduced by their common divisor (80/20 with
   one server each is ``weight=4`` / ``weight=1``). NGINX refuses ``weight=0``,
   so a side at 0 % is left out of the block (the one-side form);
2. replaces the file atomically (:func:`canaryd.routers.files.apply_file`);
3. runs the test command (default ``nginx -t -q [-c conf]``) and, only if it
   passes, the reload command (default ``nginx -s reload [-c conf]``).

``nginx -s reload`` only signals the master, which reloads afterwards; so with
``pid_path`` set (Debian's ``/run/nginx.pid`` by default) canaryd then waits
until the master has started new worker processes and every old one is gone or
"shutting down", i.e. until new connections get the new split
(:func:`reload_done`). NGINX (open source) has no API to read the weights
back: the test, the reload and the new workers are the verification.

If the test or the reload fails or times out, the previous file is put back
(and, if the reload had been sent, reloaded: NGINX may have taken the new file
after all) and the RouterError quotes NGINX's own message, e.g. ``nginx: [emerg] host not
found in upstream "web-v2:80" in /etc/nginx/canaryd/web.conf:4``.
Changes to one NGINX (one test command) are applied one at a time, so canaries
sharing an NGINX never test or reload each other's half-applied files.
``promote`` (``promotion: address``, the default) points the primary's server
lines at the canary's addresses and writes the request's weights; the file
records it (a ``# promoted:`` line), so the promotion steps that follow move the
weight back to a primary that runs the new version, and a ``rollback`` while
the primary points at the canary's addresses is refused (the old version is no
longer in NGINX). With ``promotion: verify`` ``promote`` only writes the
weights (a ``promote`` webhook redeploys the primary). ``rollback`` always
writes primary 100 %. See ``docs/routers.md``.
"""

from __future__ import annotations

import re
from math import gcd
from pathlib import Path

import anyio

from canaryd.config import NginxRouter
from canaryd.errors import RouterError
from canaryd.routers import RouteRequest
from canaryd.routers.files import (
    applied_within,
    apply_file,
    poll,
    preview,
    read_current,
    run_command,
)

_LOG_LINE = re.compile(
    r"^(?:nginx: )?(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d )?"  # prefix and timestamp
    r"\[(?P<level>\w+)\] (?:\d+#\d+: )?(?P<text>.*)$"  # [level] pid#tid: text
)
_ERROR_LEVELS = frozenset({"emerg", "alert", "crit", "error"})

BUDGET_FACTOR = 3
"""One :meth:`NginxFileRouter.apply` takes at most ``cfg.timeout * BUDGET_FACTOR`` seconds."""


def split_weights(primary: int, canary: int, n_primary: int, n_canary: int) -> tuple[int, int]:
    """NGINX weights per primary and per canary server for a percent split.

    Each side's total is proportional to its percent; a side at 0 % gets weight 0
    (and is left out of the block).

    Raises:
        ValueError: the percents are not 0..100 adding up to 100.
    """
    if not (0 <= primary <= 100 and 0 <= canary <= 100 and primary + canary == 100):
        raise ValueError(f"weights {primary}/{canary} are not percentages adding up to 100")
    wp, wc = primary * n_canary, canary * n_primary
    divisor = gcd(wp, wc)
    return wp // divisor, wc // divisor


PROMOTED = "# promoted: the primary's servers point at the canary's addresses:"
"""The include file's marker line after a promotion (followed by the addresses)."""


def promoted_servers(text: str | None) -> list[str] | None:
    """The addresses the primary's server lines point at after a promotion, from the file."""
    for line in (text or "").splitlines():
        if line.startswith(PROMOTED):
            return line.removeprefix(PROMOTED).split()
    return None


def render_upstream(
    cfg: NginxRouter,
    canary: str,
    primary_pct: int,
    canary_pct: int,
    promoted: list[str] | None = None,
) -> str:
    """The include file's text for one split.

    ``promoted``: the primary's server lines point at these addresses (the
    canary's, since a promotion) instead of ``cfg.primary``; the file says so.

    Raises:
        ValueError: the percents are not a split (see :func:`split_weights`).
    """
    primary_servers = promoted or cfg.primary
    wp, wc = split_weights(primary_pct, canary_pct, len(primary_servers), len(cfg.canary))
    lines = [
        f"# Written by canaryd for {canary}: primary {primary_pct}%, canary {canary_pct}%.",
        "# canaryd replaces this file on every traffic change; do not edit it.",
        *([f"{PROMOTED} {' '.join(promoted)}"] if promoted else []),
        f"upstream {cfg.upstream} {{",
        *(f"    {directive};" for directive in cfg.directives),
    ]
    options = f" {cfg.server_options}" if cfg.server_options else ""
    for servers, weight in ((primary_servers, wp), (cfg.canary, wc)):
        if weight:
            lines += [f"    server {server} weight={weight}{options};" for server in servers]
    return "\n".join([*lines, "}", ""])


def nginx_message(output: str) -> str:
    """NGINX's error lines from a command's output, without timestamps and PIDs.

    ``nginx: [emerg] host not found in upstream "x:80" in /etc/nginx/web.conf:4``
    becomes ``[emerg] host not found in upstream "x:80" in /etc/nginx/web.conf:4``;
    notices and the "test failed" summary are dropped. Output without an error
    line is returned whole (shortened).
    """
    errors = []
    for line in output.splitlines():
        match = _LOG_LINE.match(line.strip())
        if match and match["level"] in _ERROR_LEVELS:
            errors.append(f"[{match['level']}] {match['text']}")
    return preview("\n".join(errors) or output)


_LOCKS: dict[tuple[str, ...], anyio.Lock] = {}


def _lock_for(test_command: list[str]) -> anyio.Lock:
    """One lock per NGINX configuration (its test command names it).

    Canaries behind one NGINX each have their own include file, but ``nginx -t``
    and the reload read all of them: without the lock one canary could test or
    reload another's file before that one was tested.
    """
    return _LOCKS.setdefault(tuple(test_command), anyio.Lock())


def _workers(master: int) -> dict[int, str]:
    """The master's worker processes and their titles (``nginx: worker process``...)."""
    children: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue  # exited meanwhile
        if int(stat.rpartition(")")[2].split()[1]) == master and "worker process" in title:
            children[int(entry.name)] = title.strip()
    return children


def reload_done(before: dict[int, str], now: dict[int, str]) -> str | None:
    """None once a reload is in effect, else what is still missing.

    In effect: a worker that was not there before exists, and every worker from
    before has exited or is shutting down (it no longer accepts connections).
    """
    if not set(now) - set(before):
        return "no new worker process yet"
    old = [pid for pid in before if pid in now and "shutting down" not in now[pid]]
    return f"old worker process {old[0]} still accepts connections" if old else None


def read_pid(path: Path) -> int:
    """The master's PID from NGINX's pid file.

    Raises:
        RouterError: the file is missing or holds no PID (NGINX is not running).
    """
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise RouterError(f"nginx: cannot read pid file {path}: {exc.strerror}") from exc
    if not text.isdigit():
        raise RouterError(f"nginx: pid file {path} holds no PID: {text[:40]!r}")
    return int(text)


class NginxFileRouter:
    """Moves traffic by rewriting an NGINX upstream include file, testing and reloading.

    Attributes:
        budget: seconds one :meth:`apply` may take at most.
    """

    def __init__(self, cfg: NginxRouter) -> None:
        """Work out the commands; nothing is run yet.

        Raises:
            RouterError: the config has no ``file`` (it sets ``api``: NGINX Plus).
        """
        if cfg.file is None:
            raise RouterError("nginx: no file configured")  # config validation prevents this
        self._cfg = cfg
        self._path = Path(cfg.file)
        conf = ["-c", cfg.conf] if cfg.conf else []
        self.test_command = cfg.test_command or [cfg.nginx_bin, "-t", "-q", *conf]
        self.reload_command = cfg.reload_command or [cfg.nginx_bin, "-s", "reload", *conf]
        self.budget = cfg.timeout * BUDGET_FACTOR

    async def aclose(self) -> None:
        """Nothing to release: every command is a process that has exited."""

    async def apply(self, request: RouteRequest) -> None:
        """Write, test and reload the split for ``request`` (see the module docstring).

        Raises:
            RouterError: the weights are not a split, the file cannot be written,
                the test or reload failed (NGINX's message quoted) or timed out;
                the previous file is then back in place.
        """
        primary, canary = request.weights()
        promoted = await self._promoted(request)
        try:
            text = render_upstream(self._cfg, request.canary, primary, canary, promoted)
        except ValueError as exc:
            raise RouterError(f"nginx {self._cfg.upstream}: {exc}") from exc
        signalled = False

        async def activate() -> None:
            nonlocal signalled
            await run_command("nginx", self.test_command, self._cfg.timeout, nginx_message)
            before = await self._workers_now()
            await run_command("nginx", self.reload_command, self._cfg.timeout, nginx_message)
            signalled = True
            await self._await_reload(before)

        async def reactivate() -> None:
            if signalled:  # NGINX may have loaded the new file after all: load the old one
                await run_command("nginx", self.reload_command, self._cfg.timeout, nginx_message)

        with applied_within("nginx", self.budget):
            async with _lock_for(self.test_command):
                await apply_file(
                    "nginx", self._path, text.encode(), activate, reactivate, self._cfg.timeout
                )

    async def _promoted(self, request: RouteRequest) -> list[str] | None:
        """Where the primary's server lines point (None: ``cfg.primary``), for ``request``.

        With ``promotion: address`` a ``promote`` points them at the canary's
        addresses, and every later change keeps them there (the file records
        it), like HAProxy's ``set server ... addr`` (docs/routers.md, "NGINX").

        Raises:
            RouterError: the file cannot be read, or a rollback was asked while the
                primary already points at the canary's addresses: the old version
                is gone from NGINX, so reporting the rollback as done would be false.
        """
        if self._cfg.promotion != "address":
            return None
        if request.action == "promote":
            return list(self._cfg.canary)
        try:
            current = await anyio.to_thread.run_sync(read_current, self._path)
        except OSError as exc:
            raise RouterError(f"nginx {self._path}: cannot read: {exc.strerror}") from exc
        promoted = promoted_servers(current.decode(errors="replace") if current else None)
        if request.action == "rollback" and promoted == list(self._cfg.canary):
            raise RouterError(
                f"nginx {self._cfg.upstream}: cannot roll back: the primary's servers already "
                f"point at the canary's addresses {' '.join(promoted)} (promoted); "
                "redeploy the old version to restore it"
            )
        return promoted

    async def _workers_now(self) -> dict[int, str] | None:
        """The master's workers before the reload (None: no pid_path, or NGINX is down)."""
        if not self._cfg.pid_path:
            return None
        try:
            master = read_pid(Path(self._cfg.pid_path))
        except RouterError:
            return None  # NGINX is down: the reload command says so in its own words
        return await anyio.to_thread.run_sync(_workers, master)

    async def _await_reload(self, before: dict[int, str] | None) -> None:
        """Wait until the reload is in effect (:func:`reload_done`), when ``pid_path`` is set."""
        if not self._cfg.pid_path:
            return
        pid_path = Path(self._cfg.pid_path)
        old = before or {}  # None: the master came up after the first read, any worker is new

        async def check() -> str | None:
            return reload_done(old, await anyio.to_thread.run_sync(_workers, read_pid(pid_path)))

        await poll(check, self._cfg.timeout, "nginx reload")
