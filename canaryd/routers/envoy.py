"""Envoy router: a route configuration (RDS) file with ``weighted_clusters``, read back.

Envoy's listener takes its routes from a file (``rds.config_source.path_config_source``)
that canaryd owns. For each decision canaryd writes one ``RouteConfiguration``
named ``cfg.route_config``: one virtual host (``cfg.domains``) with one route
(``prefix: cfg.prefix``) to ``weighted_clusters`` of the primary and canary
clusters (a side at 0 % is left out: ``cluster: <other>``), with
``validate_clusters: true`` so Envoy refuses a cluster it does not know.

Envoy reloads the file when it is *replaced by a rename* (an in-place edit is not
seen), which is how :func:`canaryd.routers.files.apply_file` writes it. The
file's ``version_info`` is a hash of its resources; canaryd then polls the admin
API's ``/config_dump?resource=dynamic_route_configs`` until the route
configuration shows that version. If instead Envoy's
``http.*.rds.<route_config>.update_rejected`` counter rises, Envoy refused the
file: the previous file is put back and the RouterError quotes Envoy's reason
from its log (``cfg.log_path``, Envoy's ``--log-path``) when configured. After
any failure canaryd waits until the config dump shows the previous version
again, so the error is reported once Envoy serves the previous split. The
admin API not answering (Envoy down) is an error before anything is written.
``promote`` writes the request's weights like ``route``; with ``promotion:
address`` it first points the primary cluster at the canary cluster's endpoints
(as ``/clusters`` shows them) by replacing the primary's EDS file
(``primary_eds``, same atomic rename) and waits until ``/clusters`` shows
them; a ``rollback`` while both clusters have the same endpoints is refused
(the old version is no longer in Envoy). ``rollback`` always writes primary
100 %. See ``docs/routers.md``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio

from canaryd.config import EnvoyRouter
from canaryd.errors import RouterError
from canaryd.http import HttpTransport
from canaryd.routers import RouteRequest
from canaryd.routers.files import POLL_INTERVAL, applied_within, apply_file, get_json, poll, preview

BUDGET_FACTOR = 3
"""One :meth:`EnvoyFileRouter.apply` takes at most ``cfg.timeout * BUDGET_FACTOR`` seconds."""

LOG_TAIL_BYTES = 64 * 1024
"""How much of Envoy's log (from where it ended before the write) is searched for the reason."""

LOG_WAIT = 2.0
"""Seconds to wait for Envoy's rejection line to reach its (buffered) log."""

ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
ENDPOINTS_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

Host = tuple[str, int]
"""An endpoint's (address, port)."""

_REJECTED = re.compile(r"update rejected: (?P<reason>.*)$")


def route_configuration(cfg: EnvoyRouter, primary: int, canary: int) -> dict[str, Any]:
    """The RouteConfiguration resource for one split (percent weights)."""
    if canary == 0 or primary == 0:
        action: dict[str, Any] = {"cluster": cfg.primary if canary == 0 else cfg.canary}
    else:
        clusters = [
            {"name": cfg.primary, "weight": primary},
            {"name": cfg.canary, "weight": canary},
        ]
        action = {"weighted_clusters": {"clusters": clusters}}
    return {
        "@type": ROUTE_TYPE,
        "name": cfg.route_config,
        "validate_clusters": True,
        "virtual_hosts": [
            {
                "name": cfg.route_config,
                "domains": list(cfg.domains),
                "routes": [{"match": {"prefix": cfg.prefix}, "route": action}],
            }
        ],
    }


def rds_file(resource: dict[str, Any]) -> tuple[str, bytes]:
    """The file's ``version_info`` (a hash of the resource) and its JSON bytes."""
    canonical = json.dumps(resource, sort_keys=True, separators=(",", ":"))
    version = "canaryd-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]
    document = {"version_info": version, "resources": [resource]}
    return version, (json.dumps(document, indent=2) + "\n").encode()


def eds_file(cluster: str, hosts: list[Host]) -> bytes:
    """An EDS file (``ClusterLoadAssignment``) giving ``cluster`` these endpoints."""
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
        for host, port in hosts
    ]
    resource = {
        "@type": ENDPOINTS_TYPE,
        "cluster_name": cluster,
        "endpoints": [{"lb_endpoints": endpoints}],
    }
    return rds_file(resource)[1]


def cluster_hosts(answer: Any, name: str) -> list[Host] | None:
    """The sorted endpoints of cluster ``name`` in a ``/clusters?format=json`` answer."""
    statuses = answer.get("cluster_statuses", []) if isinstance(answer, dict) else []
    for status in statuses:
        if isinstance(status, dict) and status.get("name") == name:
            hosts = []
            for host in status.get("host_statuses", []):
                socket = host.get("address", {}).get("socket_address", {})
                hosts.append((str(socket.get("address")), int(socket.get("port_value", 0))))
            return sorted(hosts)
    return None


def dumped_version(dump: Any, name: str) -> str | None:
    """``version_info`` of route configuration ``name`` in a ``/config_dump`` answer."""
    configs = dump.get("configs", []) if isinstance(dump, dict) else []
    for entry in configs:
        route = entry.get("route_config", {}) if isinstance(entry, dict) else {}
        if isinstance(route, dict) and route.get("name") == name:
            version = entry.get("version_info")
            return version if isinstance(version, str) else None
    return None


def rejection_reason(log: str) -> str | None:
    """The reason of the last rejected config update in Envoy's log text, if any."""
    for line in reversed(log.splitlines()):
        match = _REJECTED.search(line)
        if match:
            return match["reason"]
    return None


def _hosts_text(hosts: list[Host]) -> str:
    return " ".join(f"{host}:{port}" for host, port in hosts) or "(none)"


def _log_size(path: str | None) -> int | None:
    """Size of Envoy's log now (None: no log configured or not readable)."""
    if path is None:
        return None
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def _read_from(path: Path, offset: int) -> str:
    """What was appended to the log after ``offset`` (at most :data:`LOG_TAIL_BYTES`)."""
    with path.open("rb") as log:
        end = log.seek(0, 2)
        log.seek(offset if offset <= end else 0)  # a rotated log starts again at 0
        return log.read(LOG_TAIL_BYTES).decode("utf-8", "replace")


class EnvoyFileRouter:
    """Moves traffic by replacing Envoy's RDS file and reading it back via the admin API.

    Attributes:
        budget: seconds one :meth:`apply` may take at most.
    """

    def __init__(self, cfg: EnvoyRouter, http: HttpTransport) -> None:
        """Keep the config and the shared HTTP transport; nothing is sent yet."""
        self._cfg = cfg
        self._http = http
        self._path = Path(cfg.file)
        self._label = f"envoy {cfg.route_config}"
        self.budget = cfg.timeout * BUDGET_FACTOR

    async def aclose(self) -> None:
        """Nothing to release: the router borrows the daemon's HTTP transport."""

    async def apply(self, request: RouteRequest) -> None:
        """Write the split for ``request`` and wait until Envoy serves it.

        Raises:
            RouterError: the admin API did not answer, the file cannot be written,
                Envoy rejected it (its reason quoted) or did not load it in time;
                the previous file is then back in place.
        """
        primary, canary = request.weights()
        if not (0 <= primary <= 100 and 0 <= canary <= 100 and primary + canary == 100):
            raise RouterError(f"{self._label}: weights {primary}/{canary} are not a split")
        version, data = rds_file(route_configuration(self._cfg, primary, canary))
        previous: str | None = None
        try:
            with applied_within(self._label, self.budget):
                if self._cfg.promotion == "address" and request.action != "route":
                    await self._promotion(request)
                rejected = await self._rejections()
                previous = await self._version()
                offset = await anyio.to_thread.run_sync(_log_size, self._cfg.log_path)

                async def confirm() -> None:
                    await self._confirm(version, rejected, offset)

                await apply_file("envoy", self._path, data, confirm)
            return
        except RouterError as exc:
            error = exc
        raise await self._back_to(previous, error)

    async def _promotion(self, request: RouteRequest) -> None:
        """``promotion: address``: point the primary cluster at the canary's endpoints
        (promote), or refuse a rollback once it does (docs/routers.md, "Envoy").

        Raises:
            RouterError: a cluster is unknown or the canary has no endpoint, the
                EDS file cannot be written or Envoy did not load it (the previous
                file is back), or a rollback cannot restore the old version.
        """
        primary, canary = await self._hosts()
        if request.action == "rollback":
            if primary == canary:
                raise RouterError(
                    f"{self._label}: cannot roll back: the primary cluster {self._cfg.primary} "
                    f"already points at the canary's endpoints {_hosts_text(canary)} "
                    "(promoted); redeploy the old version to restore it"
                )
            return
        if primary == canary:
            return  # promoted already: idempotent
        if not canary:
            raise RouterError(
                f"{self._label}: the canary cluster {self._cfg.canary} has no endpoint"
            )

        async def confirm() -> None:
            async def check() -> str | None:
                now = (await self._hosts())[0]
                return None if now == canary else f"primary endpoints {_hosts_text(now)}"

            await poll(check, self._cfg.timeout, f"{self._label}: primary cluster endpoints")

        path = Path(str(self._cfg.primary_eds))
        await apply_file("envoy", path, eds_file(self._cfg.primary, canary), confirm)

    async def _hosts(self) -> tuple[list[Host], list[Host]]:
        """The primary and canary clusters' endpoints, from the admin API's ``/clusters``.

        Raises:
            RouterError: Envoy does not know one of the clusters.
        """
        answer = await self._get("/clusters?format=json")
        found = []
        for name in (self._cfg.primary, self._cfg.canary):
            hosts = cluster_hosts(answer, name)
            if hosts is None:
                raise RouterError(f"{self._label}: Envoy has no cluster {name}")
            found.append(hosts)
        return found[0], found[1]

    async def _back_to(self, previous: str | None, error: RouterError) -> RouterError:
        """Wait until Envoy shows the version from before (the file is back); the error to raise.

        Bounded by ``cfg.timeout``; if Envoy does not show it again, the error says so.
        """
        if previous is None:
            return error
        try:
            await self._confirm(previous, None, None)
        except RouterError:
            return RouterError(f"{error} (and Envoy did not show version {previous} again)")
        return error

    async def _version(self) -> str | None:
        """The route configuration's version in Envoy's config dump."""
        dump = await self._get("/config_dump?resource=dynamic_route_configs")
        return dumped_version(dump, self._cfg.route_config)

    async def _confirm(
        self, version: str, rejected_before: int | None, log_offset: int | None
    ) -> None:
        async def check() -> str | None:
            current = await self._version()
            if current == version:
                return None
            if rejected_before is None:
                return f"config_dump shows version {current}"
            if await self._rejections() > rejected_before:
                raise RouterError(f"{self._label}: {await self._reason(log_offset)}")
            return f"config_dump shows version {current}"

        await poll(check, self._cfg.timeout, f"{self._label}: version {version}")

    async def _rejections(self) -> int:
        """Sum of the route configuration's ``update_rejected`` counters."""
        pattern = rf"\.rds\.{re.escape(self._cfg.route_config)}\.update_rejected$"
        answer = await self._get(f"/stats?format=json&filter={quote(pattern)}")
        stats = answer.get("stats", []) if isinstance(answer, dict) else []
        return sum(s["value"] for s in stats if isinstance(s.get("value"), int))

    async def _reason(self, log_offset: int | None) -> str:
        """Envoy's reason for the rejection, from the part of its log written since ``log_offset``.

        Envoy writes its log in buffered chunks (``--file-flush-interval-msec``),
        so the line is awaited for up to :data:`LOG_WAIT` seconds.
        """
        if self._cfg.log_path and log_offset is not None:
            path = Path(self._cfg.log_path)
            with anyio.move_on_after(LOG_WAIT):
                while True:
                    try:
                        text = await anyio.to_thread.run_sync(_read_from, path, log_offset)
                    except OSError:
                        break
                    if reason := rejection_reason(text):
                        return f"update rejected: {preview(reason)}"
                    await anyio.sleep(POLL_INTERVAL)
        return "Envoy rejected the route configuration (the reason is in Envoy's log)"

    async def _get(self, path: str) -> Any:
        status, body = await get_json(
            "envoy", self._http, self._cfg.admin.rstrip("/") + path, self._cfg.timeout
        )
        if status != 200:
            text = preview(str(body.get("message") if isinstance(body, dict) else body))
            endpoint = path.split("?")[0]
            raise RouterError(f"{self._label}: admin API {endpoint}: HTTP {status}: {text}")
        return body
