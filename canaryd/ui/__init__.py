"""The web dashboard under ``/ui/`` and the live event stream (docs/api.md, "Dashboard").

The page is static HTML, CSS and JavaScript shipped in this package (no build
step, nothing from another host); it reads the JSON API with the token the
person typed (kept in the tab's ``sessionStorage``, sent as ``Authorization:
Bearer``, never in a URL or a cookie) and follows ``GET /api/v1/events/stream``,
server-sent events that name each canary as it changes.
"""

from __future__ import annotations

from canaryd.ui.live import LiveHub
from canaryd.ui.routes import setup

__all__ = ["LiveHub", "setup"]
