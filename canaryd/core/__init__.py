"""The pure core: what a canary does next, decided from what was observed (docs/design.md).

:mod:`~canaryd.core.analysis` is the state machine, :mod:`~canaryd.core.checks` turns
observations into check results, :mod:`~canaryd.core.judge` (numpy, imported on first
use) and :mod:`~canaryd.core.scoring` judge a canary against its primary,
:mod:`~canaryd.core.events` names what happened. No await, no I/O, no clock; the core
imports nothing from canaryd but the plain config models and :mod:`canaryd.errors`
(enforced by import-linter, see ``[tool.importlinter]`` in pyproject.toml).
"""
