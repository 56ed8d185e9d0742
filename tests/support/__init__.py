"""Helpers every test shares: one way to wait (:func:`eventually`), ports without races.

Import as ``from support import eventually, refused_port, retry_on_port_clash``.
"""

from support.ports import (
    entered_on_free_port,
    free_port,
    refused_port,
    retry_on_port_clash,
    start_on_free_port,
    started_on_free_port,
)
from support.wait import eventually

__all__ = [
    "entered_on_free_port",
    "eventually",
    "free_port",
    "refused_port",
    "retry_on_port_clash",
    "start_on_free_port",
    "started_on_free_port",
]
