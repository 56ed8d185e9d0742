"""Configuration texts and load helpers shared by the test_loader_* modules."""

from __future__ import annotations

import textwrap
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from canaryd.config.loader import Loaded, load_config
from canaryd.errors import ConfigError

PRE = """\
providers: {prom: {type: prometheus}}
routers: {lb: {type: haproxy, socket: /s, backend: b, primary: p, canary: c}}
"""
"""Two lines defining one provider and one router; canary cases start on line 3."""


def write(directory: Path, name: str, text: str, mode: int = 0o644) -> Path:
    """Write a dedented file (creating directories) and return its path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    path.chmod(mode)
    return path


def problems(
    tmp_path: Path, text: str, environ: dict[str, str] | None = None, name: str = "c.yaml"
) -> list[str]:
    """The problems of loading ``text``, with the tmp directory stripped from file names."""
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    return [str(p).replace(f"{tmp_path}/", "") for p in info.value.problems]


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Loaded:
    """Load ``text`` as ``c.yaml``; it must be valid."""
    return load_config(write(tmp_path, "c.yaml", text), environ=environ or {})


def canary(analysis: str = "", **keys: str) -> str:
    """PRE plus one canary ``web`` (line 4) whose analysis keys start on line 7 (6 + keys)."""
    extra = "".join(f"    {k}: {v}\n" for k, v in keys.items())
    body = analysis or "stepWeight: 10"
    indented = textwrap.indent(textwrap.dedent(body), "      ")
    return f"{PRE}canaries:\n  - name: web\n    router: lb\n{extra}    analysis:\n{indented}\n"


def model_keys(model: type[BaseModel], seen: set[str]) -> set[str]:
    """Every key (alias or field name) of ``model`` and the models nested in it, once each."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        keys.add(info.alias or name)
        for arg in types_in(info.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg.__name__ not in seen:
                seen.add(arg.__name__)
                keys |= model_keys(arg, seen)
    return keys


def types_in(tp: object) -> list[object]:
    """``tp`` and every type argument inside it, depth first."""
    out = [tp]
    for arg in typing.get_args(tp):
        out += types_in(arg)
    return out
