"""The one retry-policy builder every adapter uses (canaryd.retry)."""

from __future__ import annotations

import time

import pytest
from tenacity import RetryError

from canaryd import retry

pytestmark = pytest.mark.anyio

NO_WAIT = retry.random_exponential(0, 0)
"""Backoff of zero seconds: the tests count attempts, not pauses."""


class _FlakyError(Exception):
    """A failure the policies under test call transient."""


async def _count_failures(policy: retry.Transient, raised: BaseException, **kw: float) -> int:
    """How often a call that always raises ``raised`` is made before the policy gives up."""
    calls = 0

    async def once() -> None:
        nonlocal calls
        calls += 1
        raise raised

    with pytest.raises(type(raised)):
        await retry.retrying(policy, wait=NO_WAIT, **kw)(once)  # type: ignore[arg-type]
    return calls


async def test_transient_failures_are_tried_attempts_times_then_raised() -> None:
    """A call failing transiently is made ``attempts`` times and its last failure raised as is."""
    assert await _count_failures(_FlakyError, _FlakyError("down"), attempts=3) == 3


async def test_other_failures_are_raised_at_once() -> None:
    """A failure that is not transient ends the retries after the first attempt."""
    assert await _count_failures(_FlakyError, ValueError("bad"), attempts=3) == 1


async def test_a_test_of_the_exception_decides_what_is_transient() -> None:
    """With a predicate, only the exceptions it accepts are retried."""
    assert await _count_failures(lambda e: "again" in str(e), OSError("again"), attempts=4) == 4
    assert await _count_failures(lambda e: "again" in str(e), OSError("never"), attempts=4) == 1


async def test_the_budget_starts_no_attempt_that_could_end_after_it() -> None:
    """With a 1 s budget and 0.6 s attempts, every attempt starts within the first 0.4 s."""
    began = time.monotonic()
    starts: list[float] = []

    async def once() -> None:
        starts.append(time.monotonic() - began)
        raise _FlakyError("down")

    pause = retry.jittered_exponential(0.05, 0.05, jitter=0)
    policy = retry.retrying(_FlakyError, wait=pause, budget=1.0, attempt_timeout=0.6, reraise=False)
    with pytest.raises(RetryError):
        await policy(once)
    assert len(starts) > 1
    assert max(starts) < 0.4 + 0.1  # a little for a busy machine's late wake-ups


@pytest.mark.parametrize("attempt", [1, 2, 3, 6], ids=["first", "second", "third", "capped"])
def test_jittered_exponential_doubles_up_to_the_longest_plus_jitter(attempt: int) -> None:
    """The wait after attempt n is initial·2^(n-1), at most the longest, plus up to the jitter."""
    wait = retry.jittered_exponential(0.5, 4.0, jitter=0.25)
    base = min(0.5 * 2 ** (attempt - 1), 4.0)
    waits = [retry.wait_after(wait, attempt) for _ in range(50)]
    assert all(base <= w <= base + 0.25 for w in waits)
    assert len(set(waits)) > 1


def test_longest_counts_every_attempt_and_every_wait_between() -> None:
    """Three attempts of 10 s with waits of at most 5 s take at most 40 s."""
    assert retry.longest(3, 10.0, 5.0) == 40.0


@pytest.mark.parametrize(("n", "text"), [(1, "1 attempt"), (3, "3 attempts")], ids=["one", "many"])
def test_tries_names_the_attempts(n: int, text: str) -> None:
    """Error messages say "1 attempt" and "3 attempts"."""
    assert retry.tries(n) == text
