"""HAProxy router: primary and canary server weights in one backend, via the runtime API.

canaryd talks to HAProxy's stats socket (``stats socket ... level admin``), a unix
path or ``host:port`` for TCP. Design choices:

- **One command per connection.** HAProxy's non-interactive mode answers one
  line and closes the connection, so every command opens a fresh connection,
  sends ``<command>\\n`` and reads until the empty line that ends HAProxy's
  output (or EOF). No ``prompt`` mode: no session state to get out of step, and
  a retry is always a clean reconnect.
- **Absolute weights.** Percent ``p`` becomes HAProxy weight ``round(p * 256 / 100)``
  (``set weight <backend>/<server> <0..256>``), so the result does not depend on
  the weights in ``haproxy.cfg``. The larger weight is set first, so the backend
  never has both servers at 0 in between. Both weights are read before (an
  unknown server fails before anything changes) and after with ``get weight``
  (``"<current> (initial <initial>)"``); a mismatch is an error, and on any
  error the weights read before are set again, so the previous split keeps
  serving.
- **Actions.** ``route`` sets the requested weights; ``rollback`` sets canary 0 /
  primary 100 whatever the request says. ``promote`` (``promotion: address``, the
  default) reads the canary server's address from ``show servers state``, points
  the primary server at it (``set server <backend>/<primary> addr <ip> port
  <port>``), reads the address back, then sets the request's weights (the
  analysis then moves the weight back to the primary, as Flagger does): from
  then on the primary server sends traffic to the new version. A rollback after that
  cannot bring the old version back (the old address is gone from HAProxy); the
  deploy pipeline must know that the old primary machine is now free (see
  docs/routers.md, "HAProxy"). With ``promotion: verify``, ``promote`` only
  checks that both servers exist and the pipeline redeploys the primary itself.
- **Retries.** Transient socket errors (refused, reset, missing socket during a
  restart, no answer within ``cfg.timeout``) are retried with tenacity
  (exponential backoff with jitter, :data:`ATTEMPTS` tries per command); a whole
  :meth:`HAProxyRuntime.apply` never takes longer than ``cfg.timeout *``
  :data:`BUDGET_FACTOR`. HAProxy's own answers ("No such server.") are not retried.

Error messages (all :class:`~canaryd.errors.RouterError`)::

    haproxy web/web-canary: No such server.                       HAProxy's own text
    haproxy web/web-canary: weight is 0 after set weight 51       read-back mismatch
    haproxy web/web-canary: empty answer to get weight            nothing came back
    haproxy web/web-primary: problem converting port ...           set server addr refused
    haproxy web: Can't find backend.                               show servers state
    haproxy /run/haproxy/admin.sock: connection refused (after 3 attempts)
    haproxy 127.0.0.1:9999: no answer within 5s (after 3 attempts)
    haproxy /run/haproxy/admin.sock: no answer within 15s          the apply budget ran out
"""

from __future__ import annotations

import contextlib
import re

import anyio

from canaryd.config.models import HAProxyRouter
from canaryd.errors import RouterError
from canaryd.routers import RouteRequest
from canaryd.routers.haproxy_socket import command as runtime_command
from canaryd.routers.haproxy_socket import (
    first_line,
    parse_servers_state,
    parse_socket,
    parse_weight,
)

MAX_WEIGHT = 256
"""HAProxy's largest absolute server weight; 100 percent maps to it."""

BUDGET_FACTOR = 3
"""One :meth:`HAProxyRuntime.apply` takes at most ``cfg.timeout * BUDGET_FACTOR`` seconds."""

_UNSAFE_NAME = re.compile(r"[\s;\\]")  # would split or alter a runtime-API command line


def to_haproxy_weight(percent: int) -> int:
    """Map a traffic percentage to HAProxy's absolute weight scale.

    Args:
        percent: 0..100.

    Returns:
        ``round(percent * 256 / 100)``: 20 -> 51, 80 -> 205, 100 -> 256.

    Raises:
        ValueError: ``percent`` is outside 0..100.
    """
    if not 0 <= percent <= 100:
        raise ValueError(f"weight {percent} is not a percentage (0..100)")
    return round(percent * MAX_WEIGHT / 100)


class HAProxyRuntime:
    """Sets primary/canary weights through HAProxy's runtime API.

    Attributes:
        budget: seconds one :meth:`apply` may take at most, retries included.
    """

    def __init__(self, cfg: HAProxyRouter) -> None:
        """Check the configured names and socket address (no connection is made).

        Raises:
            RouterError: a backend or server name contains characters that would
                break a runtime-API command, or the socket address is malformed.
        """
        for name in (cfg.backend, cfg.primary, cfg.canary):
            if not name or _UNSAFE_NAME.search(name):
                raise RouterError(f"haproxy: invalid backend or server name {name!r}")
        try:
            self._address = parse_socket(cfg.socket)
        except ValueError as exc:
            raise RouterError(f"haproxy: {exc}") from exc
        self._cfg = cfg
        self.budget = cfg.timeout * BUDGET_FACTOR

    async def aclose(self) -> None:
        """Nothing to release: the router opens a connection per command and keeps none."""

    async def apply(self, request: RouteRequest) -> None:
        """Set and verify the weights for ``request`` (see the module docstring).

        Raises:
            RouterError: HAProxy refused a command (its own text is in the
                message), a weight read back differs from the one set, the
                socket failed after retries, or :attr:`budget` ran out.
        """
        try:
            with anyio.fail_after(self.budget):
                await self._apply(request)
        except TimeoutError as exc:
            raise RouterError(
                f"haproxy {self._cfg.socket}: no answer within {self.budget:g}s"
            ) from exc

    async def check(self) -> str:
        """The backend and both servers exist (``show servers state``); nothing is changed.

        Raises:
            RouterError: the socket does not answer, or the backend or a server is unknown.
        """
        state = await self.servers_state()
        found = [f"{n} at {':'.join(self._server(state, n))}" for n in self._primary_canary()]
        return f"backend {self._cfg.backend}: {', '.join(found)}"

    def _primary_canary(self) -> tuple[str, str]:
        return self._cfg.primary, self._cfg.canary

    async def _apply(self, request: RouteRequest) -> None:
        if request.action == "promote":
            if self._cfg.promotion == "verify":
                await self.get_weight(self._cfg.primary)
                await self.get_weight(self._cfg.canary)
                return
            await self.point_primary_at_canary()
        elif request.action == "rollback" and self._cfg.promotion == "address":
            await self._refuse_rollback_after_promotion()
        await self._set_weights(self._targets(request))

    async def _refuse_rollback_after_promotion(self) -> None:
        """A rollback cannot restore the old version once the primary points at the canary.

        Reporting such a rollback as done would be false (docs/routers.md, "HAProxy").

        Raises:
            RouterError: both servers have the same address.
        """
        state = await self.servers_state()
        primary = self._server(state, self._cfg.primary)
        if primary == self._server(state, self._cfg.canary):
            raise RouterError(
                f"haproxy {self._cfg.backend}/{self._cfg.primary}: cannot roll back: the primary "
                f"server already points at the canary's address {primary[0]}:{primary[1]} "
                "(promoted); redeploy the old version to restore it"
            )

    async def point_primary_at_canary(self) -> None:
        """Make the primary server send its traffic to the canary server's address.

        Idempotent: when the primary already has the canary's address nothing is sent.

        Raises:
            RouterError: a server or the backend is unknown, HAProxy refused the
                new address (its own text is in the message), or the address read
                back afterwards is not the canary's.
        """
        where = f"{self._cfg.backend}/{self._cfg.primary}"
        state = await self.servers_state()
        target = self._server(state, self._cfg.canary)
        if self._server(state, self._cfg.primary) == target:
            return
        answer = await self.command(f"set server {where} addr {target[0]} port {target[1]}")
        if self._server(await self.servers_state(), self._cfg.primary) != target:
            raise RouterError(f"haproxy {where}: {first_line(answer) or 'address unchanged'}")

    def _server(self, state: dict[str, tuple[str, str]], name: str) -> tuple[str, str]:
        """One server's (address, port) from :meth:`servers_state`'s answer.

        Raises:
            RouterError: the backend has no such server.
        """
        if name not in state:
            raise RouterError(f"haproxy {self._cfg.backend}/{name}: No such server.")
        return state[name]

    async def servers_state(self) -> dict[str, tuple[str, str]]:
        """Every server of the backend: name -> (address, port), from ``show servers state``.

        Raises:
            RouterError: HAProxy answered with an error (``Can't find backend.``)
                or something that is not a servers-state table.
        """
        answer = await self.command(f"show servers state {self._cfg.backend}")
        state = parse_servers_state(answer)
        if state is None:
            text = first_line(answer) or "empty answer to show servers state"
            raise RouterError(f"haproxy {self._cfg.backend}: {text}")
        return state

    async def _set_weights(self, targets: list[tuple[str, int]]) -> None:
        """Set and read back ``targets``; on failure put the weights found before back.

        Both weights are read first, so an unknown server fails before anything
        changes; a later failure restores the previous split (best effort).

        Raises:
            RouterError: a command failed or a weight read back differs.
        """
        before = [(server, await self.get_weight(server)) for server, _ in targets]
        try:
            for server, weight in targets:
                await self.set_weight(server, weight)
            for server, weight in targets:
                actual = await self.get_weight(server)
                if actual != weight:
                    raise RouterError(
                        f"haproxy {self._cfg.backend}/{server}: "
                        f"weight is {actual} after set weight {weight}"
                    )
        except RouterError:
            with contextlib.suppress(RouterError):
                for server, weight in sorted(before, key=lambda t: t[1], reverse=True):
                    await self.set_weight(server, weight)
            raise

    def _targets(self, request: RouteRequest) -> list[tuple[str, int]]:
        """(server, HAProxy weight) pairs, the larger weight first so both are never 0.

        Raises:
            RouterError: a weight is not a percentage.
        """
        primary, canary = request.weights()
        try:
            targets = [
                (self._cfg.primary, to_haproxy_weight(primary)),
                (self._cfg.canary, to_haproxy_weight(canary)),
            ]
        except ValueError as exc:
            raise RouterError(f"haproxy {self._cfg.backend}: {exc}") from exc
        return sorted(targets, key=lambda target: target[1], reverse=True)

    async def set_weight(self, server: str, weight: int) -> None:
        """Set one server's absolute weight (``set weight <backend>/<server> <weight>``).

        Raises:
            RouterError: HAProxy answered with an error, or the socket failed.
        """
        answer = await self.command(f"set weight {self._cfg.backend}/{server} {weight}")
        if answer.strip():
            raise RouterError(f"haproxy {self._cfg.backend}/{server}: {first_line(answer)}")

    async def get_weight(self, server: str) -> int:
        """Return one server's current weight (``get weight <backend>/<server>``).

        Raises:
            RouterError: HAProxy answered with an error or something that is not
                a weight, or the socket failed.
        """
        answer = await self.command(f"get weight {self._cfg.backend}/{server}")
        weight = parse_weight(answer)
        if weight is not None:
            return weight
        text = first_line(answer)
        raise RouterError(
            f"haproxy {self._cfg.backend}/{server}: {text or 'empty answer to get weight'}"
        )

    async def command(self, line: str) -> str:
        """Send one runtime-API command on a fresh connection and return the answer.

        Raises:
            RouterError: the socket failed on every attempt (or on the first, for
                a non-transient failure such as permission denied).
        """
        return await runtime_command(self._address, self._cfg.socket, self._cfg.timeout, line)
