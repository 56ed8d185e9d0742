"""The one way tests wait for something that happens in the background."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import anyio

T = TypeVar("T")


def _truthy(value: object) -> bool:
    return bool(value)


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool] = ...,
    *,
    within: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    accept: Callable[[T], bool] = ...,
    *,
    within: float = ...,
    interval: float = ...,
    what: str = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    accept: Callable[[Any], bool] = _truthy,
    *,
    within: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Call ``probe`` (sync or async) until ``accept`` holds for its result; bounded.

    An exception from ``probe`` counts as "not yet" (it is shown if the time runs out).

    Args:
        probe: what to look at, e.g. ``lambda: runner.state.phase``.
        accept: when the result is good enough (default: truthy).
        within: seconds at most.
        interval: seconds between probes.
        what: named in the failure message.

    Returns:
        The accepted result.

    Raises:
        AssertionError: ``within`` passed; the message shows the last result or error.
    """
    last: Any = None
    with anyio.move_on_after(within):
        while True:
            try:
                value = probe()
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:  # shown if the time runs out
                last = exc
            else:
                if accept(value):
                    return value
                last = value
            await anyio.sleep(interval)
    raise AssertionError(f"{what} not met within {within:g}s; last: {last!r}")
