"""Query templates: Flagger's ``{{ var }}`` syntax and the built-in metrics.

(Stub: names only; the Prometheus work fills in rendering and the per-mesh queries.)
"""

from __future__ import annotations

BUILTIN_METRICS = ("request-success-rate", "request-duration")
"""Metric names that need no template: their query comes from the canary's meshProvider."""
