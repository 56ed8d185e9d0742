"""The providers and routers a daemon builds from its config: kept across reloads, closed.

:class:`Adapters` is how the composition root (:mod:`canaryd.service.daemon`) builds
both kinds of adapters. One whose config a reload leaves unchanged is **kept**: the
same instance, so the ticks in flight and the ticks after the reload share its
connections and whatever it serialises. One the new config replaces or removes is
**retired**: the supervisor closes it once no tick or command can still use it
(:meth:`canaryd.service.supervisor.Supervisor.retire`), and the daemon closes every
adapter still open when it stops (:meth:`Adapters.aclose`). Every close is bounded
(:data:`CLOSE_SECONDS`); one that fails or hangs is logged as ``adapter.close_failed``
and never stops the daemon's stop (docs/design.md, "Service").

A router reads its secret files when it is built, so a router whose secret file
changed counts as changed: a reload after a secret rotation builds it anew, as a
restart would (:func:`with_secret_files`). The same holds for the files a router
reads credentials from without naming them in its config (the ``alb`` router's AWS
shared credentials and config files: :func:`canaryd.routers.credential_files`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, cast

import anyio
import structlog

from canaryd.config.models import RouterConfig
from canaryd.routers import credential_files

log = structlog.get_logger()

CLOSE_SECONDS = 1.0
"""How long one adapter may take to close (nothing waits on what it releases)."""


class Closable(Protocol):
    """An adapter: something that holds connections or clients until closed."""

    async def aclose(self) -> None:
        """Release what it holds (idempotent)."""
        ...


A = TypeVar("A", bound=Closable)
C = TypeVar("C")


@dataclass(frozen=True, eq=False)
class Built:
    """One adapter built from a config entry.

    Attributes:
        kind: ``provider`` or ``router``.
        name: its name in the config.
        adapter: the instance the runners use (metrics wrapper included).
    """

    kind: str
    name: str
    adapter: Closable


@dataclass
class Rebuild:
    """The adapters of one config, built in :meth:`Adapters.replacing`."""

    kept: Mapping[tuple[str, str], tuple[object, Built]]
    built: dict[tuple[str, str], tuple[object, Built]] = field(default_factory=dict)
    fresh: list[Built] = field(default_factory=list)
    """Adapters built anew for this config (the others are kept ones)."""
    retired: list[Built] = field(default_factory=list)
    """Once the block ended: the adapters this config no longer uses."""

    def build(
        self,
        kind: str,
        configs: Mapping[str, C],
        make: Callable[[str, C], A],
        key: Callable[[C], object] = lambda cfg: cfg,
    ) -> dict[str, A]:
        """The adapters of ``configs`` by name: the one built before if ``key`` of its
        config is unchanged, else a new one from ``make``.

        Raises:
            Whatever ``make`` or ``key`` raises (the config cannot be applied).
        """
        adapters: dict[str, A] = {}
        for name, cfg in configs.items():
            identity = key(cfg)
            before = self.kept.get((kind, name))
            if before is not None and before[0] == identity:
                built = before[1]
            else:
                built = Built(kind, name, make(name, cfg))
                self.fresh.append(built)
            self.built[kind, name] = (identity, built)
            adapters[name] = cast(A, built.adapter)
        return adapters


@dataclass
class Adapters:
    """Every adapter a daemon built and has not closed yet (see the module docstring)."""

    _kept: dict[tuple[str, str], tuple[object, Built]] = field(default_factory=dict)
    """The adapters of the config in force, by kind and name, with their config's key."""
    _retiring: list[Built] = field(default_factory=list)
    """Adapters handed out to be closed (:meth:`replacing`'s ``retired``), not closed yet."""
    _unused: list[Built] = field(default_factory=list)
    """Adapters built for a config that was then rejected: never used, not closed yet."""

    @contextmanager
    def replacing(self) -> Iterator[Rebuild]:
        """Build the adapters of a new config in the block (:meth:`Rebuild.build`).

        If the block ends normally they are the ones in force, and ``retired`` lists
        those they replaced or removed (and those built for a config rejected before):
        the caller closes these once nothing uses them (:meth:`close`). If it raises
        (the config is rejected), the ones in force stay, and those built anew in the
        block are retired with the next accepted config (or closed at stop).
        """
        rebuild = Rebuild(self._kept)
        try:
            yield rebuild
        except BaseException:
            self._unused += rebuild.fresh
            raise
        current = {id(built) for _, built in rebuild.built.values()}
        replaced = [b for _, b in self._kept.values() if id(b) not in current]
        rebuild.retired = [*replaced, *self._unused]
        self._kept, self._unused = rebuild.built, []
        self._retiring += rebuild.retired

    async def close(self, retired: Sequence[Built]) -> None:
        """Close retired adapters (each within :data:`CLOSE_SECONDS`; failures logged)."""
        closing = {id(b) for b in retired}
        self._retiring = [b for b in self._retiring if id(b) not in closing]
        await _close_all(retired)

    async def aclose(self) -> None:
        """Close every adapter, in force or retired (at stop, once no tick runs)."""
        everything = [*self._retiring, *self._unused, *(b for _, b in self._kept.values())]
        self._kept, self._retiring, self._unused = {}, [], []
        await _close_all(everything)


async def _close_all(adapters: Sequence[Built]) -> None:
    """Close adapters together, each within :data:`CLOSE_SECONDS`; log failures."""
    async with anyio.create_task_group() as tg:
        for built in adapters:
            tg.start_soon(_close, built)


async def _close(built: Built) -> None:
    """Close one adapter; a failure or a hang is logged (``adapter.close_failed``)."""
    error: str | None = None
    try:
        with anyio.fail_after(CLOSE_SECONDS):
            await built.adapter.aclose()
    except TimeoutError:
        error = f"not closed within {CLOSE_SECONDS:g}s"
    except Exception as exc:  # any adapter's library: a failed close must not stop a stop
        error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        log.warning("adapter.close_failed", kind=built.kind, name=built.name, error=error)


def with_secret_files(cfg: RouterConfig) -> object:
    """The key of a router's config for :meth:`Rebuild.build`: the config, a digest of
    each secret file it names (``*_file`` keys), read when the router is built, and a
    digest of each file it reads credentials from otherwise (:func:`credential_files`).

    A named file that cannot be read makes the key differ from every other: the router
    is built again, and building it says what is wrong with the file. An unnamed one
    that cannot be read (no ``~/.aws/config``) has a digest of its own, so the router is
    kept while it stays absent.
    """
    digests: list[object] = []
    for name in sorted(type(cfg).model_fields):
        path = getattr(cfg, name) if name.endswith("_file") else None
        if isinstance(path, str) and path:
            digests.append(_digest(path, unreadable=object()))
    digests += (_digest(path, unreadable=None) for path in credential_files(cfg))
    return (cfg, tuple(digests))


def _digest(path: str, unreadable: object) -> object:
    """The SHA-256 of the file at ``path``, or ``unreadable`` if it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return unreadable
