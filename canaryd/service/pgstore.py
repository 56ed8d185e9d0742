"""The old import path of :mod:`canaryd.service.store.postgres` (kept while callers move)."""

from canaryd.service.store.postgres import Fence, PostgresStore, redact

__all__ = ["Fence", "PostgresStore", "redact"]
