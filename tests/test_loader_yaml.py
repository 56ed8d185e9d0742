"""Configuration loader: malformed, missing or odd files are located problems, never tracebacks."""

from __future__ import annotations

import contextlib
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loader_helpers import PRE, load, model_keys, write

from canaryd import config
from canaryd.config.loader import load_config, summary
from canaryd.errors import ConfigError

# --------------------------------------------------------------------------- files and YAML


UNKNOWN_TOP = (
    "valid keys: api, canaries, ha, history, include, listen, log, meshProvider, notifiers, "
    "outbox, providers, routers, state, templates"
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b"listen: [1,\n",
            [
                "c.yaml:2:1: <yaml>: expected the node content, but found "
                "'<stream end>' (while parsing a flow node)"
            ],
        ),
        (
            b"api:\n\ttoken_env: X\n",
            ["c.yaml:2:1: <yaml>: a tab character cannot indent YAML; use spaces"],
        ),
        (
            b"listen: \x00\x01\x02",
            ["c.yaml:1:9: <yaml>: not a text file: character #x0000 is not allowed"],
        ),
        (b"listen: \xff\xfe", ["c.yaml:1:9: <file>: not UTF-8 text (byte 0xff)"]),
        (
            b"- a\n- b\n",
            ["c.yaml:1:1: <root>: the top level must be a mapping of keys (got a list)"],
        ),
        (
            b"just text",
            ["c.yaml:1:1: <root>: the top level must be a mapping of keys (got 'just text')"],
        ),
        (
            b"log: {level: info}\nlog: {level: debug}\n",
            ["c.yaml:2:1: log: duplicate key 'log' (first on line 1); remove one"],
        ),
        (b"listen: !secret x\n", ["c.yaml:1:9: listen: unsupported tag !secret"]),
        (
            b"qq: &a [*a]\n",
            [
                f"c.yaml:1:1: qq: unknown key 'qq'; {UNKNOWN_TOP}",
                "c.yaml:1:5: qq[0]: an alias refers to a value that contains it",
            ],
        ),
        (
            b"api: {max_body_bytes: !!int nope}\n",
            ["c.yaml:1:23: api.max_body_bytes: invalid value 'nope' for tag tag:yaml.org,2002:int"],
        ),
        (
            b"zz: " + b"[" * 80 + b"]" * 80 + b"\n",
            [
                f"c.yaml:1:1: zz: unknown key 'zz'; {UNKNOWN_TOP}",
                "c.yaml:1:69: zz" + "[0]" * 64 + ": nested more than 64 levels deep",
            ],
        ),
    ],
    ids=[
        "syntax",
        "tab",
        "binary",
        "not-utf8",
        "list",
        "scalar",
        "duplicate-key",
        "tag",
        "recursive-alias",
        "bad-int-tag",
        "deep",
    ],
)
def test_bad_yaml(tmp_path: Path, content: bytes, expected: list[str]) -> None:
    """Malformed files are located problems, never tracebacks."""
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert [str(p).replace(f"{tmp_path}/", "") for p in info.value.problems] == expected


@pytest.mark.parametrize(
    "content",
    ["", "# only a comment\n", "---\n", "~\n"],
    ids=["empty", "comment", "empty-document", "null"],
)
def test_empty_file_is_default_config(tmp_path: Path, content: str) -> None:
    """An empty file is a valid configuration with every default and no canaries."""
    loaded = load(tmp_path, content)
    assert loaded.settings.canaries == []
    assert summary(loaded) == (
        "config OK: 0 canaries, 0 providers, 0 routers, 0 notifiers, 0 templates (1 file)"
    )


def test_missing_file(tmp_path: Path) -> None:
    """A missing main file is one problem at line 0."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", environ={})
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}/nope.yaml:0:0: <file>: cannot read: No such file or directory"
    ]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A directory given as the config is a problem, not a crash."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path}:0:0: <file>: cannot read: Is a directory"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    """A file without read permission is a problem."""
    path = write(tmp_path, "c.yaml", "listen: 127.0.0.1:1\n", mode=0o000)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert [str(p) for p in info.value.problems] == [
        f"{path}:0:0: <file>: cannot read: Permission denied"
    ]


def test_merge_keys_and_anchors(tmp_path: Path) -> None:
    """YAML anchors and merge keys work; explicit keys win over merged ones."""
    text = PRE + textwrap.dedent("""\
        canaries:
          - &first
            name: web
            router: lb
            analysis: &analysis {interval: 10s, threshold: 3, stepWeight: 10}
          - <<: *first
            name: api
            analysis:
              <<: *analysis
              threshold: 7
    """)
    found = [
        (c.name, c.router, c.analysis.interval, c.analysis.threshold)
        for c in load(tmp_path, text).settings.canaries
    ]
    assert found == [("web", "lb", 10.0, 3), ("api", "lb", 10.0, 7)]


# --------------------------------------------------------------------------- never a traceback

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["prometheus", "haproxy", "webhook", "slack", "10s", "lb", "prom", "x_file"]),
)


_keys = st.one_of(
    st.sampled_from(
        sorted(
            model_keys(config.Settings, set())
            | {"apiVersion", "kind", "metadata", "spec", "include", "flagger.app/v1beta1"}
        )
    ),
    st.text(max_size=8),
)


_trees = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=30,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.text(alphabet=st.sampled_from([*"ab:- \n\t[]{}&*!|>'\"#%@`,?~0.", "\x00"]), max_size=80)
)
@pytest.mark.slow
def test_random_text_never_crashes(tmp_path: Path, text: str) -> None:
    """Arbitrary YAML-ish text either loads or raises ConfigError, nothing else."""
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(ConfigError):
        load_config(path, environ={})


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    top=st.dictionaries(_keys, _trees, max_size=6),
    flagger=st.booleans(),
)
@pytest.mark.slow
def test_random_structures_never_crash(
    tmp_path: Path, top: dict[str, object], flagger: bool
) -> None:
    """Random nested structures dumped to YAML either load or raise ConfigError."""
    if flagger:
        top = {"apiVersion": "flagger.app/v1beta1", **top}
        write(tmp_path, "inc.yaml", yaml.safe_dump(top))
        text = "include: [inc.yaml]\n"
    else:
        text = yaml.safe_dump(top)
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(ConfigError):
        load_config(path, environ={})
