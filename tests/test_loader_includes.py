"""Configuration loader: includes merge sections and locate problems in the included file."""

from __future__ import annotations

from pathlib import Path

import pytest
from loader_helpers import PRE, canary, load, problems, write

# --------------------------------------------------------------------------- includes


def test_include_merges_sections(tmp_path: Path) -> None:
    """Included files add providers, routers, templates and canaries; canaries are concatenated."""
    write(tmp_path, "conf.d/a.yaml", "providers: {thanos: {type: prometheus}}\n")
    write(tmp_path, "conf.d/b.yaml", canary().replace("web", "api").removeprefix(PRE))
    loaded = load(tmp_path, canary() + "include: ['conf.d/*.yaml']\n")
    assert [c.name for c in loaded.settings.canaries] == ["web", "api"]
    assert sorted(loaded.settings.providers) == ["prom", "thanos"]
    assert loaded.files == [
        f"{tmp_path}/c.yaml",
        f"{tmp_path}/conf.d/a.yaml",
        f"{tmp_path}/conf.d/b.yaml",
    ]
    assert loaded.settings.include == ["conf.d/*.yaml"]


def test_problem_in_included_file_is_located_there(tmp_path: Path) -> None:
    """A problem in an included canary names the included file and its own index."""
    write(tmp_path, "more.yaml", "canaries:\n  - {name: api, router: lb, analysis: {}}\n")
    assert problems(tmp_path, canary() + "include: [more.yaml]\n") == [
        "more.yaml:2:29: canaries[0].analysis: set stepWeight or stepWeights (canary), "
        "or iterations (blue/green, A/B)"
    ]


@pytest.mark.parametrize(
    ("files", "main", "expected"),
    [
        (
            {"a.yaml": "providers: {prom: {type: prometheus}}\n"},
            PRE + "include: [a.yaml]\n",
            ["a.yaml:1:13: providers.prom: duplicate provider 'prom' (first at c.yaml:1:13)"],
        ),
        (
            {"a.yaml": "listen: 127.0.0.1:1\n"},
            "include: [a.yaml]\n",
            ["a.yaml:1:1: listen: may only be set in the main configuration file"],
        ),
        (
            {"a.yaml": "routrs: {}\n"},
            "include: [a.yaml]\n",
            ["a.yaml:1:1: routrs: unknown key 'routrs'; did you mean 'routers'?"],
        ),
        (
            {},
            "include: [conf.d/*.yaml]\n",
            ["c.yaml:1:11: include[0]: no file matches 'conf.d/*.yaml' (relative to {tmp})"],
        ),
        (
            {"a.yaml": "include: [c.yaml]\n"},
            "include: [a.yaml]\n",
            ["a.yaml:1:1: include: include cycle: c.yaml -> a.yaml -> c.yaml"],
        ),
        (
            {"a.yaml": "include: [a.yaml]\n"},
            "include: a.yaml\n",
            ["a.yaml:1:1: include: include cycle: c.yaml -> a.yaml -> a.yaml"],
        ),
        (
            {},
            "include: {a: b}\n",
            ["c.yaml:1:1: include: must be a list of file globs (got a mapping)"],
        ),
        (
            {"a.yaml": "[1]\n"},
            "include: [a.yaml]\n",
            ["a.yaml:1:1: <root>: the top level must be a mapping of keys (got a list)"],
        ),
    ],
    ids=[
        "duplicate-name",
        "scalar-in-include",
        "unknown-key",
        "no-match",
        "cycle",
        "self",
        "not-a-list",
        "bad-included-file",
    ],
)
def test_include_problems(
    tmp_path: Path, files: dict[str, str], main: str, expected: list[str]
) -> None:
    """Include problems are reported at the include entry or in the included file."""
    for name, text in files.items():
        write(tmp_path, name, text)
    found = problems(tmp_path, main)
    assert found == [e.replace("{tmp}", str(tmp_path)) for e in expected]


def test_include_diamond_reads_each_file_once(tmp_path: Path) -> None:
    """A file reached through two includes (no cycle) is read and merged once."""
    write(tmp_path, "d/shared.yaml", "providers: {prom: {type: prometheus}}\n")
    write(tmp_path, "d/a.yaml", "include: [shared.yaml]\n")
    loaded = load(tmp_path, "include: [d/a.yaml, d/shared.yaml]\n")
    assert len(loaded.files) == 3
    assert list(loaded.settings.providers) == ["prom"]
