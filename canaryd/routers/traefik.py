"""Traefik router: a ``weighted`` service in a file of the file provider, read back via the API.

Traefik's file provider (``providers.file.directory`` or ``filename``, with
``watch: true``) loads the file canaryd owns; the operator's routers point at
the weighted service ``cfg.service``, whose two children ``cfg.primary`` and
``cfg.canary`` are services defined elsewhere (another file, or another
provider with ``name@provider``). For each decision canaryd:

1. asks Traefik's API that both child services exist
   (``GET /api/http/services/<name>@<provider>``): Traefik applies a weighted
   service with a missing child as a broken router answering 404, so this is
   checked *before* anything is written, and Traefik's own answer
   (``service not found: web-v2@file``) is the error;
2. writes ``http.services.<service>.weighted.services`` with the percents as
   weights (Traefik accepts weight 0) atomically
   (:func:`canaryd.routers.files.apply_file`);
3. polls ``GET /api/http/services/<service>@<provider>`` until it shows exactly
   those weights. If Traefik reports an ``error`` for the service, the previous
   file is put back and the error quotes Traefik's text; after any failure
   canaryd waits until Traefik shows the previous weights again, so the error
   is reported once Traefik serves the previous split.

Traefik applies provider changes at most every ``providersThrottleDuration``
(2 s by default), so ``timeout`` must be longer. ``promote`` (``promotion:
address``, the default) also points the weighted service's primary side at the
canary service's server URLs: a service ``<service>-canaryd-primary`` in
canaryd's file, with the URLs Traefik's API shows for the canary; the file
records it, so the weights that follow go back to a primary running the new
version, and a ``rollback`` while it points there is refused (the old version
is no longer in Traefik). With ``promotion: verify`` ``promote`` writes the
request's weights like ``route``. ``rollback`` always writes primary 100 %.
See ``docs/routers.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import yaml

from canaryd.config import TraefikRouter
from canaryd.errors import RouterError
from canaryd.http import HttpTransport
from canaryd.routers import RouteRequest
from canaryd.routers.files import (
    api_auth,
    applied_within,
    apply_file,
    get_json,
    poll,
    preview,
    read_current,
)

BUDGET_FACTOR = 3
"""One :meth:`TraefikFileRouter.apply` takes at most ``cfg.timeout * BUDGET_FACTOR`` seconds."""


def qualified(name: str, provider: str) -> str:
    """``name@provider`` as Traefik's API names a service (``web`` -> ``web@file``)."""
    return name if "@" in name else f"{name}@{provider}"


PROMOTED_SUFFIX = "-canaryd-primary"
"""canaryd's primary service after a promotion is ``<service>-canaryd-primary``."""


def weighted_services(
    cfg: TraefikRouter, primary: int, canary: int, *, promoted: bool = False
) -> list[dict[str, Any]]:
    """The weighted service's children with their weights (the promoted primary if promoted)."""
    first = cfg.service + PROMOTED_SUFFIX if promoted else cfg.primary
    return [{"name": first, "weight": primary}, {"name": cfg.canary, "weight": canary}]


def dynamic_config(
    cfg: TraefikRouter,
    primary: int,
    canary: int,
    canary_name: str,
    promoted: list[str] | None = None,
) -> bytes:
    """The file's YAML for one split; ``promoted``: the primary side's server URLs."""
    header = (
        f"# Written by canaryd for {canary_name}: primary {primary}%, canary {canary}%.\n"
        "# canaryd replaces this file on every traffic change; do not edit it.\n"
    )
    children = weighted_services(cfg, primary, canary, promoted=promoted is not None)
    services: dict[str, Any] = {cfg.service: {"weighted": {"services": children}}}
    if promoted is not None:
        servers = [{"url": url} for url in promoted]
        services[cfg.service + PROMOTED_SUFFIX] = {"loadBalancer": {"servers": servers}}
    document = {"http": {"services": services}}
    return (header + yaml.safe_dump(document, sort_keys=False)).encode()


def promoted_urls(cfg: TraefikRouter, data: bytes | None) -> list[str] | None:
    """The promoted primary's server URLs in canaryd's file (None: not promoted)."""
    try:
        document = yaml.safe_load(data or b"")
        service = document["http"]["services"][cfg.service + PROMOTED_SUFFIX]
        return [str(server["url"]) for server in service["loadBalancer"]["servers"]]
    except (yaml.YAMLError, KeyError, TypeError):
        return None


def service_state(answer: Any, expected: list[dict[str, Any]]) -> str | None:
    """None when Traefik's answer shows the expected weights, else what differs.

    An error counts only once Traefik shows the expected children: an error of
    the configuration it had before is not this file's.

    Raises:
        RouterError: Traefik reports an error for the expected service (its text is quoted).
    """
    if not isinstance(answer, dict):
        return "no service in Traefik's answer"
    children = answer.get("weighted", {}).get("services", [])
    shown = [{"name": c.get("name"), "weight": c.get("weight", 1)} for c in children]
    if shown != expected:
        return f"Traefik shows {shown}"
    errors = answer.get("error")
    if errors:
        texts = errors if isinstance(errors, list) else [errors]
        raise RouterError("; ".join(preview(str(text)) for text in texts))
    return None


class TraefikFileRouter:
    """Moves traffic by rewriting a weighted service for Traefik's file provider.

    Attributes:
        budget: seconds one :meth:`apply` may take at most.
    """

    def __init__(self, cfg: TraefikRouter, http: HttpTransport) -> None:
        """Read the API password (``password_file``); nothing is sent yet.

        Raises:
            RouterError: the password file cannot be read or is readable by others.
        """
        self._cfg = cfg
        self._http = http
        self._path = Path(cfg.file)
        self._name = qualified(cfg.service, cfg.provider)
        self._label = f"traefik {self._name}"
        self._auth = api_auth("traefik", cfg.username, cfg.password_file)
        self.budget = cfg.timeout * BUDGET_FACTOR

    async def aclose(self) -> None:
        """Nothing to release: the router borrows the daemon's HTTP transport."""

    async def apply(self, request: RouteRequest) -> None:
        """Check the children, write the split for ``request``, wait until Traefik shows it.

        Raises:
            RouterError: a child service is unknown to Traefik, the API did not
                answer, the file cannot be written, Traefik reports an error for
                the service or did not load it in time (the previous file is then
                back in place).
        """
        primary, canary = request.weights()
        if not (0 <= primary <= 100 and 0 <= canary <= 100 and primary + canary == 100):
            raise RouterError(f"{self._label}: weights {primary}/{canary} are not a split")
        before: Any = None
        try:
            with applied_within(self._label, self.budget):
                for child in (self._cfg.primary, self._cfg.canary):
                    await self._service(qualified(child, self._cfg.provider), missing_ok=False)
                promoted = await self._promoted(request)
                data = dynamic_config(self._cfg, primary, canary, request.canary, promoted)
                expected = weighted_services(
                    self._cfg, primary, canary, promoted=promoted is not None
                )
                before = await self._service(self._name, missing_ok=True)

                async def confirm() -> None:
                    await self._confirm(expected)

                await apply_file("traefik", self._path, data, confirm)
            return
        except RouterError as exc:
            error = exc
        raise await self._back_to(before, error)

    async def _promoted(self, request: RouteRequest) -> list[str] | None:
        """The primary side's server URLs (None: ``cfg.primary`` itself) for ``request``.

        With ``promotion: address`` a ``promote`` points the primary side at the
        canary service's URLs, and later changes keep it there (canaryd's file
        records it); a rollback while it points there is refused
        (docs/routers.md, "Traefik").

        Raises:
            RouterError: the file cannot be read, the canary service has no
                server URLs, or a rollback cannot restore the old version.
        """
        if self._cfg.promotion != "address":
            return None
        if request.action == "promote":
            return await self._canary_urls()
        try:
            current = await anyio.to_thread.run_sync(read_current, self._path)
        except OSError as exc:
            raise RouterError(f"traefik {self._path}: cannot read: {exc.strerror}") from exc
        promoted = promoted_urls(self._cfg, current)
        if request.action == "rollback" and promoted and promoted == await self._canary_urls():
            raise RouterError(
                f"{self._label}: cannot roll back: the primary side already points at the "
                f"canary's URLs {' '.join(promoted)} (promoted); "
                "redeploy the old version to restore it"
            )
        return promoted

    async def _canary_urls(self) -> list[str]:
        """The canary service's server URLs, as Traefik's API shows them.

        Raises:
            RouterError: the API did not answer, or the service has no server URLs.
        """
        name = qualified(self._cfg.canary, self._cfg.provider)
        answer = await self._service(name, missing_ok=False)
        servers = (
            answer.get("loadBalancer", {}).get("servers", []) if isinstance(answer, dict) else []
        )
        urls = [str(s["url"]) for s in servers if isinstance(s, dict) and "url" in s]
        if not urls:
            raise RouterError(
                f"traefik {name}: no loadBalancer server URLs to promote to "
                "(promotion: address needs them; or set promotion: verify)"
            )
        return urls

    async def _back_to(self, before: Any, error: RouterError) -> RouterError:
        """Wait until Traefik shows its weights from before (the file is back); the error to raise.

        Bounded by ``cfg.timeout``; if Traefik does not show them again, the
        error says so.
        """
        if not isinstance(before, dict) or before.get("error"):
            return error  # there was no working service to go back to
        previous = [
            {"name": c.get("name"), "weight": c.get("weight", 1)}
            for c in before.get("weighted", {}).get("services", [])
        ]
        try:
            await self._confirm(previous)
        except RouterError:
            return RouterError(f"{error} (and Traefik did not show the previous weights again)")
        return error

    async def _confirm(self, expected: list[dict[str, Any]]) -> None:
        async def check() -> str | None:
            answer = await self._service(self._name, missing_ok=True)
            if answer is None:
                return "Traefik has not loaded the service yet"
            try:
                return service_state(answer, expected)
            except RouterError as exc:
                raise RouterError(f"{self._label}: {exc}") from exc

        await poll(check, self._cfg.timeout, self._label)

    async def _service(self, name: str, *, missing_ok: bool) -> Any:
        """Traefik's view of one HTTP service (None when missing and ``missing_ok``).

        Raises:
            RouterError: the API did not answer, or the service is missing.
        """
        url = f"{self._cfg.api.rstrip('/')}/api/http/services/{quote(name, safe='@')}"
        status, body = await get_json("traefik", self._http, url, self._cfg.timeout, self._auth)
        if status == 200:
            return body
        if status == 404 and missing_ok:
            return None
        text = body.get("message") if isinstance(body, dict) else None
        raise RouterError(f"traefik {name}: HTTP {status}: {preview(str(text or ''))}")
