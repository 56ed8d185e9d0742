"""canaryd: canary analysis daemon (Flagger-compatible semantics, outside Kubernetes)."""

__version__ = "0.1.0"
