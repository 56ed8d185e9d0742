"""The configuration layer: YAML in, validated :class:`Settings` out (docs/design.md, "Layers").

Reading one file goes: :mod:`~canaryd.config.yamlpos` (YAML with positions) →
:mod:`~canaryd.config.merge` (includes, Flagger manifests via :mod:`~canaryd.config.flagger`) →
environment overrides (:mod:`~canaryd.config.loader`) → :mod:`~canaryd.config.check` (keys,
references, secrets) → the pydantic models of :mod:`~canaryd.config.models` →
:mod:`~canaryd.config.lint` (cross-field rules, every query rendered by
:mod:`~canaryd.config.queries`). :func:`load_config` runs it all.

The plain models are what the other layers import (``from canaryd.config import Settings``);
the core imports :mod:`canaryd.config.models` only, never the loading modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Every public name of the models, so that a model added there is importable from here.
from canaryd.config.models import *  # noqa: F403

if TYPE_CHECKING:
    from canaryd.config.loader import Loaded as Loaded
    from canaryd.config.loader import load_config as load_config
    from canaryd.config.loader import summary as summary

_LOADER = frozenset({"Loaded", "load_config", "summary"})


if not TYPE_CHECKING:  # for mypy, the names above are all there is

    def __getattr__(name: str) -> Any:
        """The loader's names, imported on first use: the core and the adapters import the
        models from this package, and must not load the whole reading pipeline with them."""
        if name in _LOADER:
            from canaryd.config import loader

            return getattr(loader, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
