"""The exception tree of ``canaryd/errors.py`` is the one canaryd raises; its drawing is true."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import canaryd
from canaryd import errors
from canaryd.config import read_secret
from canaryd.errors import CanarydError, SecretError

# Exceptions deliberately outside the tree (the errors.py docstring says why).
OUTSIDE = {"canaryd.core.judgestats.TiedObservationsError"}


def _exception_classes() -> dict[str, type[BaseException]]:
    """Every public exception class defined in a canaryd module, by dotted name."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(canaryd.__path__, "canaryd."):
        if info.name in ("canaryd.__main__", "canaryd.demo.app"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and not name.startswith("_")
            ):
                found[f"{info.name}.{name}"] = obj
    return found


def test_every_public_exception_is_in_the_tree() -> None:
    """Every public exception canaryd defines derives from CanarydError, bar the listed ones."""
    outside = {
        name
        for name, cls in _exception_classes().items()
        if not issubclass(cls, CanarydError) and name not in OUTSIDE
    }
    assert outside == set()


def test_the_docstring_draws_every_error_class() -> None:
    """Each exception class in errors.py appears in the tree drawn in its docstring."""
    drawn = set(re.findall(r"[─└├]── (\w+)", errors.__doc__ or ""))
    drawn.add("CanarydError")
    defined = {
        name
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, BaseException)
    }
    assert defined == drawn


def test_read_secret_raises_secret_error(tmp_path: Path) -> None:
    """A missing secret file, a world-readable one and an unset variable raise SecretError."""
    loose = tmp_path / "loose"
    loose.write_text("s3cret")
    loose.chmod(0o644)
    for path, env in ((str(tmp_path / "missing"), None), (str(loose), None), (None, "NO_SUCH")):
        with pytest.raises(SecretError) as err:
            read_secret(path, env, environ={})
        assert "s3cret" not in str(err.value)
