"""The ``canaryd`` command line (docs/design.md, "Layers"): :mod:`~canaryd.cli.commands` parses
and dispatches, :mod:`~canaryd.cli.views` shows rollouts (``status``, ``--watch``, ``history``,
``events``), :mod:`~canaryd.cli.online` is ``check --online``, :mod:`~canaryd.cli.judge` is
``canaryd judge``."""

from __future__ import annotations

from canaryd.cli.commands import main

__all__ = ["main"]
