"""The JSONPath subset of the ``web`` provider: one path to one value.

Supported (docs/providers.md, "web"): ``$`` (the document), ``.name``,
``['name']`` or ``["name"]`` (any key, dots and spaces included), ``[N]`` and
``[-N]`` (array index, negative from the end). Argo Rollouts' braces,
``{$.data.value}``, are accepted too. Wildcards, slices, filters and recursive
descent are refused when the configuration is loaded: a metric is one number,
so a path that could match several values has no meaning here.
"""

from __future__ import annotations

import re
from typing import Any

Step = str | int

_STEP = re.compile(
    r"""\.(?P<name>[A-Za-z_][A-Za-z0-9_-]*)
      | \[\s*(?P<index>-?\d+)\s*\]
      | \[\s*'(?P<single>(?:[^'\\]|\\.)*)'\s*\]
      | \[\s*"(?P<double>(?:[^"\\]|\\.)*)"\s*\]""",
    re.VERBOSE,
)


def parse_path(path: str) -> tuple[Step, ...]:
    """The steps of a path: key names and array indexes.

    Raises:
        ValueError: not a path of the supported subset (the message says where).
    """
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if not text.startswith("$"):
        raise ValueError(f"JSONPath {path!r} must start with '$'")
    steps: list[Step] = []
    at = 1
    while at < len(text):
        found = _STEP.match(text, at)
        if found is None:
            raise ValueError(
                f"JSONPath {path!r}: unsupported at {text[at : at + 20]!r} (supported: "
                "$, .name, ['name'], [N]; no wildcards, slices or filters)"
            )
        if found["index"] is not None:
            steps.append(int(found["index"]))
        else:
            quoted = found["single"] if found["single"] is not None else found["double"]
            steps.append(found["name"] or re.sub(r"\\(.)", r"\1", quoted or ""))
        at = found.end()
    return tuple(steps)


def select(doc: Any, steps: tuple[Step, ...]) -> tuple[bool, Any]:
    """Follow ``steps`` into ``doc``: ``(True, value)``, or ``(False, None)`` when absent.

    A key missing from an object, an index beyond an array, or a ``null`` on
    the way all mean "absent"; a step into a value of the wrong kind (a key
    into an array, say) is an error.

    Raises:
        ValueError: a step does not fit the value it is applied to.
    """
    value = doc
    for step in steps:
        if value is None:
            return False, None
        if isinstance(step, int):
            if not isinstance(value, list):
                raise ValueError(f"[{step}] applied to {_kind(value)}, not an array")
            if not -len(value) <= step < len(value):
                return False, None
            value = value[step]
        else:
            if not isinstance(value, dict):
                raise ValueError(f"key {step!r} looked up in {_kind(value)}, not an object")
            if step not in value:
                return False, None
            value = value[step]
    return True, value


def _kind(value: Any) -> str:
    """``an array``, ``a string``... for messages."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
