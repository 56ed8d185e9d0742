"""Retry policies: tenacity, built one way for every adapter that repeats a call.

The routers, the metrics providers, the analysis webhooks and the outbox
dispatcher retry idempotent calls (docs/reliability.md); each names its own
numbers (how many attempts or how long a budget, how long the waits, which
failures are transient) and :func:`retrying` turns them into a tenacity policy,
so the policies differ only where their numbers do:

- the waits are jittered exponential backoff, in one of two spellings:
  :func:`random_exponential` (the whole wait random below a growing cap) or
  :func:`jittered_exponential` (a growing wait plus a little random);
- a policy stops after ``attempts`` attempts, or once its ``budget`` has run
  out, and never starts an attempt whose timeout would end after the budget;
- it sleeps with :func:`anyio.sleep` (cancellable like every other wait);
- with ``reraise`` (the default) the last failure is raised as it was;
  without, tenacity's :class:`~tenacity.RetryError` carries it.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    stop_before_delay,
    wait_exponential,
    wait_random,
    wait_random_exponential,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

Transient = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
"""Which failures are worth another attempt: exception classes, or a test of the exception."""


def random_exponential(multiplier: float, longest: float) -> wait_base:
    """Wait a random time below ``multiplier * 2**n`` seconds, the cap at most ``longest``."""
    return wait_random_exponential(multiplier=multiplier, max=longest)


def jittered_exponential(initial: float, longest: float, jitter: float | None = None) -> wait_base:
    """Wait ``initial * 2**(n-1)`` seconds, at most ``longest``, plus up to ``jitter`` more.

    Args:
        initial: the first wait, in seconds.
        longest: the longest wait before the jitter, in seconds.
        jitter: the most random time added to each wait (default ``initial``).
    """
    extra = initial if jitter is None else jitter
    return wait_exponential(multiplier=initial, max=longest) + wait_random(0, extra)


def wait_after(wait: wait_base, attempts: int) -> float:
    """Seconds ``wait`` asks for after attempt ``attempts`` (at least 1), outside any retry loop.

    For callers that keep the attempts themselves (the outbox persists them).
    """
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = max(1, attempts)
    return float(wait(state))


def longest(attempts: int, timeout: float, longest_wait: float) -> float:
    """The longest ``attempts`` attempts of ``timeout`` seconds each may take, waits included."""
    return timeout * attempts + longest_wait * (attempts - 1)


def tries(attempts: int) -> str:
    """``"1 attempt"``, ``"3 attempts"``: for error messages."""
    return f"{attempts} attempt{'s' if attempts != 1 else ''}"


def retrying(
    transient: Transient,
    *,
    wait: wait_base,
    attempts: int | None = None,
    budget: float | None = None,
    attempt_timeout: float = 0.0,
    reraise: bool = True,
) -> AsyncRetrying:
    """A tenacity policy that repeats a call while it fails transiently.

    Call it with the function to repeat (``await retrying(...)(fn)``) or iterate
    over it (``async for attempt in retrying(...)``).

    Args:
        transient: the failures worth another attempt; any other is raised at once.
        wait: the pause before each further attempt (:func:`random_exponential`,
            :func:`jittered_exponential`).
        attempts: stop after this many attempts (None: no limit on the count).
        budget: stop once this many seconds have passed since the first
            attempt, and never start an attempt that could end after it
            (None: no limit in time).
        attempt_timeout: seconds one attempt may take, for the ``budget`` rule.
        reraise: raise the last failure itself (False: a
            :class:`~tenacity.RetryError` holding it).
    """
    stops: list[stop_base] = []
    if attempts is not None:
        stops.append(stop_after_attempt(attempts))
    if budget is not None:
        stops += [stop_after_delay(budget), stop_before_delay(budget - attempt_timeout)]
    retry: retry_base
    if isinstance(transient, type | tuple):
        retry = retry_if_exception_type(transient)
    else:
        retry = retry_if_exception(transient)
    return AsyncRetrying(
        stop=stop_any(*stops), wait=wait, retry=retry, reraise=reraise, sleep=anyio.sleep
    )
