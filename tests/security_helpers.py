"""The API token, a one-canary config and secret files shared by the test_security_* modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

KEY = "prod/web"


def one_canary() -> list[dict[str, Any]]:
    """One canary whose router is unreachable (nothing here needs it)."""
    return [
        {
            "name": "web",
            "namespace": "prod",
            "router": "mesh",
            "analysis": {"stepWeight": 50, "interval": "1h", "threshold": 5},
        }
    ]


MESH = {"mesh": {"type": "webhook", "url": "http://127.0.0.1:9/routes"}}


# --------------------------------------------------------------------------- secret files


def secret_file(tmp_path: Path, name: str, value: str, mode: int) -> str:
    """Write ``value`` to ``tmp_path/name`` with ``mode``; return its path."""
    path = tmp_path / name
    path.write_text(value)
    path.chmod(mode)
    return str(path)
