"""Start-up cost: the CLI and ``canaryd check`` do not import numpy or scipy.

Each check runs in a fresh interpreter, so modules imported by other tests do not
count (``docs/judge.md``, start-up cost).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "canaryd.example.yaml"
HEAVY = ("numpy", "scipy")


def _loaded_after(code: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """Run ``code`` in a new interpreter; which of numpy/scipy it left in sys.modules."""
    probe = f"{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run(
        [sys.executable, "-c", f"import json, sys\n{probe}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done


@pytest.mark.slow
def test_importing_the_cli_and_config_loads_no_numpy() -> None:
    """Importing the CLI, the configuration and the daemon's modules leaves numpy out."""
    loaded, _ = _loaded_after(
        "import canaryd.cli, canaryd.config, canaryd.core.checks,"
        " canaryd.service.runtime, canaryd.service.daemon"
    )
    assert loaded == []


@pytest.mark.slow
def test_check_runs_without_numpy_or_scipy() -> None:
    """``canaryd check`` validates the example configuration without importing numpy or scipy."""
    loaded, done = _loaded_after(
        f"from canaryd.cli import main\nassert main(['check', '-c', {str(EXAMPLE)!r}]) == 0"
    )
    assert "config OK" in done.stdout
    assert loaded == []


@pytest.mark.slow
def test_judge_needs_numpy_but_not_scipy(tmp_path: Path) -> None:
    """``canaryd judge`` imports numpy for the arithmetic, and scipy not at all."""
    document = tmp_path / "in.json"
    document.write_text(
        json.dumps({"metrics": [{"name": "m", "control": [1, 2], "experiment": [3, 4]}]})
    )
    loaded, done = _loaded_after(
        f"from canaryd.cli import main\nmain(['judge', {str(document)!r}])"
    )
    assert json.loads(done.stdout[: done.stdout.rindex("}") + 1])["results"][0]["name"] == "m"
    assert loaded == ["numpy"]


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
def test_importing_the_config_package_loads_no_numpy_or_scipy() -> None:
    """``import canaryd.config`` and its loader leave numpy and scipy out (docs/design.md)."""
    loaded, _ = _loaded_after("import canaryd.config\nfrom canaryd.config import load_config")
    assert loaded == []


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
def test_the_core_loads_no_adapter_or_http_library() -> None:
    """Importing every core module leaves aiohttp and the adapter packages out (docs/design.md)."""
    code = (
        "import pkgutil, importlib, canaryd.core\n"
        "for m in pkgutil.iter_modules(canaryd.core.__path__):\n"
        "    importlib.import_module('canaryd.core.' + m.name)\n"
        "out = ('aiohttp', 'canaryd.routers', 'canaryd.providers', 'canaryd.notifiers',"
        " 'canaryd.service', 'canaryd.config.loader')\n"
        "print(json.dumps([m for m in out if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", f"import json, sys\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
