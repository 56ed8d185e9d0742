"""Helpers every test shares: one way to wait (:func:`eventually`), ports without races.

Import as ``from support import eventually, refused_port, retry_on_port_clash``.
"""

from support.ports import free_port, refused_port, retry_on_port_clash, start_on_free_port
from support.wait import eventually

__all__ = ["eventually", "free_port", "refused_port", "retry_on_port_clash", "start_on_free_port"]
