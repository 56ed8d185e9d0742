"""Consul service mesh router: a ``service-splitter`` config entry, via Consul's HTTP API.

One :meth:`ConsulSplitter.apply` is a compare-and-set loop:

1. ``GET /v1/config/service-splitter/<service>`` (404: no entry yet, index 0);
   when its ``Splits`` already are the wanted ones nothing is written
   (idempotent);
2. ``PUT /v1/config?cas=<ModifyIndex>`` with the entry's other fields kept and
   ``Splits`` replaced: ``[{"Weight": p, <primary target>}, {"Weight": c,
   <canary target>}]`` where a target is ``ServiceSubset`` and/or ``Service``.
   Consul answers ``true`` (written) or ``false`` (someone changed the entry
   since step 1): then the loop starts again, :data:`CAS_ATTEMPTS` times at most;
3. ``GET`` again; ``Splits`` other than the ones written is an error.

Consul validates the entry before storing it, so an entry it refuses leaves the
previous one (and the previous split) in place; its error text is quoted.
``rollback`` writes primary 100 / canary 0; ``promote`` writes the request's
weights (the deploy pipeline moves the primary subset or service to the new
version: docs/routers.md, "Consul"). The ACL token is read from ``token_file``
and sent as ``X-Consul-Token``; it never appears in a message. Connection
failures, timeouts, 5xx (``No cluster leader``), 408/425/429 are retried
(:mod:`canaryd.routers.httpapi`).

Error messages (all :class:`~canaryd.errors.RouterError`)::

    consul web: HTTP 403: ACL not found
    consul web: HTTP 500: discovery chain "web" uses a protocol "tcp" that does not permit ...
    consul web: the entry changed concurrently 5 times in a row (cas); not written
    consul web: splits read back [...] differ from the ones written [...]
    consul web: http://127.0.0.1:8500/…: no answer within 5s (after 3 attempts)
"""

from __future__ import annotations

from typing import Any

import anyio
from yarl import URL

from canaryd.config.models import ConsulRouter, read_secret
from canaryd.errors import RouterError, SecretError
from canaryd.http import HttpTransport
from canaryd.routers import RouteRequest
from canaryd.routers.httpapi import call, json_body

KIND = "service-splitter"

CAS_ATTEMPTS = 5
"""Read-modify-write rounds before a concurrently changing entry is an error."""

BUDGET_FACTOR = 6
"""One :meth:`ConsulSplitter.apply` takes at most ``cfg.timeout * BUDGET_FACTOR`` seconds."""

_READ_ONLY = ("CreateIndex", "ModifyIndex", "Hash")
"""Fields Consul sets itself; not sent back."""

Split = tuple[float, str, str]
"""(Weight, Service, ServiceSubset) of one split, for comparing entries."""


def normalise(splits: Any) -> list[Split] | None:
    """Splits as comparable tuples; None when they are not a list of split objects."""
    if not isinstance(splits, list):
        return None
    out: list[Split] = []
    for split in splits:
        if not isinstance(split, dict):
            return None
        weight = split.get("Weight", 0)
        if not isinstance(weight, int | float):
            return None
        out.append(
            (float(weight), str(split.get("Service", "")), str(split.get("ServiceSubset", "")))
        )
    return out


class ConsulSplitter:
    """Sets primary/canary weights in a Consul ``service-splitter`` config entry.

    Attributes:
        name: the service, for error messages.
        budget: seconds one :meth:`apply` may take at most, retries included.
    """

    def __init__(self, cfg: ConsulRouter, http: HttpTransport) -> None:
        """Keep the config and the shared HTTP transport; read the ACL token once.

        Raises:
            RouterError: the token file cannot be read or is readable by others.
        """
        self._cfg = cfg
        self._http = http
        self.name = cfg.service
        self.budget = cfg.timeout * BUDGET_FACTOR
        try:
            token = read_secret(cfg.token_file)
        except SecretError as exc:
            raise RouterError(f"consul {self.name}: {exc}") from exc
        self._headers = {"X-Consul-Token": token.get_secret_value()} if token else {}
        query = {"dc": cfg.datacenter, "ns": cfg.namespace, "partition": cfg.partition}
        self._query = {k: v for k, v in query.items() if v}
        self._entry_url = URL(f"{cfg.address}/v1/config/{KIND}/{cfg.service}")

    def splits(self, request: RouteRequest) -> list[dict[str, Any]]:
        """The ``Splits`` to write for ``request`` (rollback: primary 100 / canary 0)."""
        primary, canary = request.weights()
        cfg = self._cfg
        targets = [
            (primary, cfg.primary_service, cfg.primary_subset),
            (canary, cfg.canary_service, cfg.canary_subset),
        ]
        out: list[dict[str, Any]] = []
        for weight, service, subset in targets:
            split: dict[str, Any] = {"Weight": weight}
            if service:
                split["Service"] = service
            if subset:
                split["ServiceSubset"] = subset
            out.append(split)
        return out

    async def aclose(self) -> None:
        """Nothing to release: the router borrows the daemon's HTTP transport."""

    async def apply(self, request: RouteRequest) -> None:
        """Write and verify the splits for ``request`` (see the module docstring).

        Raises:
            RouterError: Consul refused the entry (its text is in the message),
                the entry kept changing concurrently, the read-back differs, or
                no answer.
        """
        try:
            with anyio.fail_after(self.budget):
                await self._apply(self.splits(request))
        except TimeoutError as exc:
            raise RouterError(f"consul {self.name}: no answer within {self.budget:g}s") from exc
        except RouterError as exc:
            raise RouterError(f"consul {self.name}: {exc}") from exc

    async def _apply(self, wanted: list[dict[str, Any]]) -> None:
        for _ in range(CAS_ATTEMPTS):
            entry = await self._read()
            if entry is not None and normalise(entry.get("Splits")) == normalise(wanted):
                return
            if await self._write(entry, wanted):
                break
        else:
            raise RouterError(
                f"the entry changed concurrently {CAS_ATTEMPTS} times in a row (cas); not written"
            )
        after = await self._read()
        found = normalise(after.get("Splits")) if after else None
        if found != normalise(wanted):
            raise RouterError(
                f"splits read back {found} differ from the ones written {normalise(wanted)}"
            )

    async def _read(self) -> dict[str, Any] | None:
        """The current entry, or None if there is none (404).

        Raises:
            RouterError: any other non-200 answer, or not a JSON object.
        """
        answer = await call(
            self._http, "GET", str(self._entry_url.with_query(self._query)), **self._opts(None)
        )
        if answer.status == 404:
            return None
        if not answer.ok:
            raise RouterError(answer.describe())
        entry = json_body(answer)
        if not isinstance(entry, dict):
            raise RouterError(f"config entry is not a JSON object: {answer.describe()}")
        return entry

    async def _write(self, entry: dict[str, Any] | None, splits: list[dict[str, Any]]) -> bool:
        """PUT the entry with ``cas``; True if Consul stored it, False on a cas conflict.

        Raises:
            RouterError: Consul refused the entry.
        """
        current = entry or {}
        body = {k: v for k, v in current.items() if k not in _READ_ONLY}
        body.update(Kind=KIND, Name=self._cfg.service, Splits=splits)
        for key, value in (("Namespace", self._cfg.namespace), ("Partition", self._cfg.partition)):
            if value:
                body[key] = value
        cas = current.get("ModifyIndex", 0)
        if not isinstance(cas, int) or isinstance(cas, bool):
            raise RouterError(f"config entry has no numeric ModifyIndex: {str(cas)[:50]}")
        url = URL(f"{self._cfg.address}/v1/config").with_query({**self._query, "cas": str(cas)})
        answer = await call(self._http, "PUT", str(url), **self._opts(body))
        if not answer.ok:
            raise RouterError(answer.describe())
        result = json_body(answer)
        if not isinstance(result, bool):
            raise RouterError(f"expected true or false: {answer.describe()}")
        return result

    def _opts(self, payload: Any) -> dict[str, Any]:
        return {"timeout": self._cfg.timeout, "payload": payload, "headers": self._headers}
