"""The README's configuration examples pass `canaryd check`, so what a new user copies works.

A YAML block in README.md is preceded by one of these markers:

- `<!-- config -->`: a complete configuration file;
- `<!-- config: fragment -->`: keys that go into the README's first complete
  configuration (canaries are merged by `name`);
- `<!-- not a config -->`: anything else.

Secret files the examples name (`/etc/canaryd/...`, `${CREDENTIALS_DIRECTORY}/...`)
are created in a temporary directory first, as the README tells the user to do.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(
    r"(?:<!-- (?P<marker>[^>]*?) -->\n)?(?P<indent>[ ]*)```yaml\n(?P<body>.*?)^(?P=indent)```",
    re.S | re.M,
)
MARKERS = {"config", "config: fragment", "not a config"}


def readme_blocks() -> list[tuple[int, str | None, str]]:
    """Every YAML block of README.md as (line, marker, text)."""
    text = (ROOT / "README.md").read_text()
    return [
        (text.count("\n", 0, m.start("body")), m.group("marker"), textwrap.dedent(m.group("body")))
        for m in BLOCK.finditer(text)
    ]


def merge(base: Any, extra: Any) -> Any:
    """`extra` laid over `base`: mappings deeply, lists of named items by `name`."""
    if isinstance(base, dict) and isinstance(extra, dict):
        out = dict(base)
        for key, value in extra.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(extra, list)
        and all(isinstance(i, dict) and "name" in i for i in base + extra)
    ):
        named = {item["name"]: item for item in base}
        for item in extra:
            named[item["name"]] = (
                merge(named[item["name"]], item) if item["name"] in named else item
            )
        return list(named.values())
    return extra


def configs() -> list[Any]:
    """The configurations to check: complete ones as they are, fragments merged into the first."""
    blocks = [
        (line, marker, body)
        for line, marker, body in readme_blocks()
        if marker in ("config", "config: fragment")
    ]
    base = next((body for _, marker, body in blocks if marker == "config"), "{}")
    out = []
    for line, marker, body in blocks:
        text = (
            body
            if marker == "config"
            else yaml.safe_dump(merge(yaml.safe_load(base), yaml.safe_load(body)))
        )
        out.append(pytest.param(text, id=f"README.md:{line + 1}"))
    return out


def sandboxed(text: str, root: Path) -> str:
    """The config with /etc/canaryd moved under `root` and every secret file it names created."""
    text = text.replace("/etc/canaryd/", f"{root}/etc/")
    text = text.replace("${CREDENTIALS_DIRECTORY}", f"{root}/credentials")
    for path in re.findall(r"_file: *\"?([^\s\"},]+)", text):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("https://hooks.example.invalid/secret\n")
        Path(path).chmod(0o600)  # root-only, as the README installs them
    return text


def test_every_yaml_block_of_the_readme_is_marked() -> None:
    """Each YAML block of README.md says whether it is a config, so none escapes the check."""
    blocks = readme_blocks()
    assert any(marker == "config" for _, marker, _ in blocks)
    assert [(line + 1, marker) for line, marker, _ in blocks if marker not in MARKERS] == []


@pytest.mark.slow  # a `canaryd check` process per example
@pytest.mark.parametrize("text", configs())
def test_readme_config_passes_canaryd_check(text: str, tmp_path: Path) -> None:
    """`canaryd check` accepts the README's configuration example without a problem."""
    path = tmp_path / "canaryd.yaml"
    path.write_text(sandboxed(text, tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANARYD_")}
    done = subprocess.run(
        [sys.executable, "-m", "canaryd", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
