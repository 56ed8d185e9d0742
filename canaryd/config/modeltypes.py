"""The model types along key paths of the raw configuration.

The loader reports problems by key path in the user's data, while pydantic
reports them by its own ``loc`` (which names the tags of discriminated unions)
and knows keys only through the model classes of :mod:`canaryd.config`. These
helpers connect the two: :func:`data_path` finds the part of a ``loc`` that
exists in the data, and :func:`keys_at` lists the keys a model accepts at a
path (for "did you mean" hints and case-insensitive environment names),
following unions by the data's ``type``.
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from canaryd.config.flaggermap import KeyPath
from canaryd.config.models import Settings


def keys_at(path: KeyPath, raw: Any) -> list[str]:
    """The keys accepted at ``path`` of the raw configuration (aliases where set).

    Empty when no model is known there (a free-form mapping, a list, a scalar,
    or a union member the data does not select).
    """
    return _keys_of(_type_at(path, raw))


def data_path(loc: tuple[str | int, ...], raw: Any) -> tuple[KeyPath, Any, str | int | None]:
    """The part of a pydantic ``loc`` that exists in the data, the value there, and the rest.

    Discriminated unions insert their tag into ``loc``; such parts are skipped.
    The last part, when absent from the data, is returned (a missing key).
    """
    path: KeyPath = ()
    node, rest = raw, None
    for i, part in enumerate(loc):
        if not _has_child(node, part):
            rest = part if i == len(loc) - 1 else None
            continue
        node = node[part]
        path = (*path, part)
    return path, node, rest


def _keys_of(tp: Any) -> list[str]:
    """The keys a model accepts (aliases where set); none when ``tp`` is not a model."""
    if not _is_model(tp):
        return []
    return [info.alias or name for name, info in tp.model_fields.items()]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _type_at(path: KeyPath, raw: Any) -> Any:
    """The model type at ``path`` (``Settings`` at the root), following the data through unions."""
    tp: Any = Settings
    node = raw
    for part in path:
        tp = _unwrap(tp, node)
        if _is_model(tp) and isinstance(part, str):
            names = {info.alias or name: info for name, info in tp.model_fields.items()}
            info = tp.model_fields.get(part) or names.get(part)
            if info is None:
                return None
            tp = info.annotation
        elif get_origin(tp) is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return None
        node = _child(node, part)
    return _unwrap(tp, node)


def _has_child(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _child(node: Any, part: str | int) -> Any:
    return node[part] if _has_child(node, part) else None


def _unwrap(tp: Any, node: Any) -> Any:
    """Strip ``Annotated`` and ``Optional``; pick a union member by the data's ``type``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, UnionType):
            members = [m for m in get_args(tp) if m is not type(None)]
            tag = node.get("type") if isinstance(node, dict) else None
            chosen = [m for m in members if len(members) == 1 or _has_tag(m, tag)]
            if not chosen:
                return None
            tp = chosen[0]
        else:
            return tp


def _has_tag(tp: Any, tag: Any) -> bool:
    if not _is_model(tp) or "type" not in tp.model_fields:
        return False
    annotation = tp.model_fields["type"].annotation
    return get_origin(annotation) is Literal and tag in get_args(annotation)
