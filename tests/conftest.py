"""Shared test settings: asyncio backend only (aiohttp runs on asyncio)."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Pin anyio's pytest plugin to asyncio."""
    return "asyncio"
