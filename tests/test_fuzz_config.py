"""Bad config input, property-based: mutations of a valid config, template text, overrides.

``tests/test_loader_yaml.py`` already feeds the loader random YAML text and random
structures; here the loader gets *mutations of a complete valid config* (the
deep rules only a nearly valid config reaches), template text and environment
overrides, through the daemon's start path (load, render queries) and through
``canaryd check``. The only outcomes allowed are the documented ones.
"""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzz_strategies import FUZZ
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryd.cli import commands as cli
from canaryd.config.loader import load_config
from canaryd.errors import ConfigError
from canaryd.service.daemon import check_queries

# --------------------------------------------------------------------------- config

BASE: dict[str, Any] = {
    "listen": "127.0.0.1:9879",
    "state": "sqlite:///tmp/state.db",
    "api": {"anonymous_read": False, "max_body_bytes": 65536},
    "log": {"format": "json", "level": "info"},
    "outbox": {"maxAge": "1h", "initialBackoff": "1s", "maxBackoff": "1m", "pollInterval": "0.5s"},
    "meshProvider": "haproxy",
    "providers": {"prom": {"type": "prometheus", "address": "http://127.0.0.1:9090"}},
    "routers": {
        "lb": {
            "type": "haproxy",
            "socket": "/run/h.sock",
            "backend": "b",
            "primary": "p",
            "canary": "c",
        },
        "mesh": {"type": "webhook", "url": "http://127.0.0.1:1/routes", "timeout": "2s"},
    },
    "notifiers": {"chat": {"type": "slack", "url": "http://127.0.0.1:1/hooks/x"}},
    "templates": {"errors": {"provider": "prom", "query": 'sum(x{job="{{ target }}"})'}},
    "canaries": [
        {
            "name": "web",
            "namespace": "prod",
            "target": "web-canary",
            "router": "lb",
            "provider": "prom",
            "variables": {"tier": "front"},
            "analysis": {
                "interval": "30s",
                "threshold": 5,
                "maxWeight": 50,
                "stepWeight": 10,
                "metrics": [
                    {
                        "name": "request-success-rate",
                        "thresholdRange": {"min": 99},
                        "interval": "1m",
                    },
                    {
                        "name": "errors",
                        "templateRef": {"name": "errors"},
                        "thresholdRange": {"max": 1},
                        "onNoData": "hold",
                    },
                    {
                        "name": "custom",
                        "query": 'up{tier="{{ variables.tier }}"}',
                        "thresholdRange": {"min": 1, "max": 1},
                    },
                ],
                "webhooks": [
                    {"name": "gate", "type": "confirm-promotion", "gateTimeout": "1h"},
                    {
                        "name": "load",
                        "type": "rollout",
                        "url": "http://127.0.0.1:1/",
                        "timeout": "5s",
                    },
                    {"name": "events", "type": "event", "url": "http://127.0.0.1:1/e"},
                ],
            },
            "alerts": [{"name": "oncall", "notifier": "chat", "severity": "warn"}],
        },
        {
            "name": "api",
            "router": "mesh",
            "analysis": {"iterations": 3, "match": [{"headers": {"x": {"exact": "1"}}}]},
        },
    ],
}
"""A complete valid config touching most keys, the seed of every mutation."""


def test_base_config_is_valid(tmp_path: Path) -> None:
    """The mutation seed loads and renders, so mutations start from a valid config."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    check_queries(load_config(path, environ={}).settings)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node of ``tree`` (dict keys and list indices)."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(BASE)[1:]
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(
        [
            "0s",
            "-1s",
            "1e9h",
            "nan",
            "inf",
            "{{",
            "{{ nope }}",
            "{{ variables.x }}",
            "}}",
            "@",
            "http://",
            "https://x",
            "sqlite://",
            "127.0.0.1:99999",
            "a/b",
            "-",
            "",
            " ",
            "\x00",
        ]
    ),
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and mappings of ``inner`` (how random config values nest)."""
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)


_values = st.recursive(_scalars, _containers, max_leaves=10)


def _mutate(tree: dict[str, Any], path: tuple[Any, ...], how: str, value: Any) -> dict[str, Any]:
    """A copy of ``tree`` with the node at ``path`` replaced, removed, or given a stray key."""
    out = copy.deepcopy(tree)
    parent: Any = out
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "stray" and isinstance(parent[last], dict):
        parent[last]["strayKey"] = value
    else:
        parent[last] = value
    return out


def _check_never_crashes(path: Path) -> None:
    """Load as the daemon starts (load, render queries): a config, or ConfigError."""
    with contextlib.suppress(ConfigError):
        check_queries(load_config(path, environ={}).settings)


@FUZZ
@given(
    path=st.sampled_from(PATHS),
    how=st.sampled_from(["replace", "delete", "stray"]),
    value=_values,
)
@pytest.mark.slow
def test_mutated_valid_config_is_a_config_or_a_config_error(
    tmp_path: Path, path: tuple[Any, ...], how: str, value: Any
) -> None:
    """One mutation of a valid config loads and renders, or raises ConfigError; nothing else."""
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(_mutate(BASE, path, how, value)))
    _check_never_crashes(file)


@settings(
    max_examples=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    query=st.lists(
        st.sampled_from([*"{} .xv_$|", "variables", "target", "\x00", "é"]), max_size=20
    ).map("".join),
    path=st.sampled_from(PATHS),
    value=_values,
)
@pytest.mark.slow
def test_canaryd_check_answers_problems_never_a_traceback(
    tmp_path: Path, query: str, path: tuple[Any, ...], value: Any
) -> None:
    """``canaryd check`` on a mutated config with random template text exits 0 or 1, no trace."""
    tree = _mutate(BASE, path, "replace", value)
    if isinstance(tree.get("templates"), dict) and isinstance(
        tree["templates"].get("errors"), dict
    ):
        tree["templates"]["errors"]["query"] = query
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(tree))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.check(file)
    assert code in (0, 1)
    assert "Traceback" not in err.getvalue() + out.getvalue()
    if code == 1:
        assert err.getvalue().strip().endswith("problem(s) found")


_env_keys = st.sampled_from(
    [
        "CANARYD_LISTEN",
        "CANARYD_STATE",
        "CANARYD_API__MAX_BODY_BYTES",
        "CANARYD_OUTBOX__MAXAGE",
        "CANARYD_PROVIDERS__PROM__ADDRESS",
        "CANARYD_PROVIDERS__PROM__TIMEOUT",
        "CANARYD_CANARIES",
        "CANARYD_TEMPLATES",
        "CANARYD_ROUTERS__MESH__URL",
        "CANARYD_LOG__LEVEL",
        "CANARYD_NOPE",
    ]
)


@FUZZ
@given(
    env=st.dictionaries(
        _env_keys, st.text(max_size=30) | st.just("{}") | st.just("[1]"), max_size=3
    )
)
@pytest.mark.slow
def test_random_environment_overrides_are_a_config_or_a_config_error(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Random CANARYD_* overrides on a valid config load, or raise ConfigError; nothing else."""
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(BASE))
    with contextlib.suppress(ConfigError):
        check_queries(load_config(file, environ=env).settings)
