"""Config models of the caddy, consul, alb and exec routers: problems located at their keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from canaryd.config.loader import load_config
from canaryd.errors import ConfigError

CASES = [
    (
        "caddy-admin-scheme",
        "routers:\n  c: {type: caddy, admin: ftp://x, handler: web, primary: a:1, canary: b:1}\n",
        "c.yaml:2:20: routers.c.admin: must be an http:// or https:// URL (got 'ftp://x')",
    ),
    (
        "caddy-handler-path",
        "routers:\n  c: {type: caddy, handler: /id/web, primary: a:1, canary: b:1}\n",
        "c.yaml:2:20: routers.c.handler: must be an @id or a path starting with /config/ "
        "(got '/id/web')",
    ),
    (
        "consul-same-target",
        "routers:\n  k: {type: consul, service: web}\n",
        "c.yaml:2:3: routers.k: primary and canary are the same split target; set "
        "primary_subset/canary_subset or primary_service/canary_service",
    ),
    (
        "alb-missing-canary",
        "routers:\n  a: {type: alb, listener_arn: l, primary_target_group_arn: p}\n",
        "c.yaml:2:3: routers.a: missing key 'canary_target_group_arn'",
    ),
    (
        "exec-empty-command",
        "routers:\n  e: {type: exec, command: []}\n",
        "c.yaml:2:19: routers.e.command: list should have at least 1 item after validation, not 0",
    ),
    (
        "haproxy-promotion",
        "routers:\n  h: {type: haproxy, socket: /s, backend: b, primary: p, canary: c, "
        "promotion: swap}\n",
        "c.yaml:2:69: routers.h.promotion: must be one of: address, verify (got 'swap')",
    ),
]


def problems(tmp_path: Path, text: str) -> list[str]:
    """The located problems ``canaryd check`` reports for ``text``."""
    path = tmp_path / "c.yaml"
    path.write_text(text + "canaries: []\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    return [str(p).replace(f"{tmp_path}/", "") for p in info.value.problems]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_router_config_problem_is_located(tmp_path: Path, text: str, expected: str) -> None:
    """Each router config mistake is reported once, at the key it concerns."""
    assert problems(tmp_path, text) == [expected]
