"""Running out of file descriptors for real: RLIMIT_NOFILE lowered, then filled."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
from collections.abc import Iterator


@contextlib.contextmanager
def out_of_file_descriptors() -> Iterator[None]:
    """This process runs out of file descriptors for the block (limit lowered, then filled).

    Garbage is collected first and the collector is off for the block: a socket an
    earlier test left to the collector, closed mid-block, would free a descriptor
    and let a connection through.
    """
    gc.collect()
    collecting = gc.isenabled()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    held: list[int] = []
    gc.disable()
    try:
        with contextlib.suppress(OSError):
            while len(held) < 64:
                held.append(os.open("/dev/null", os.O_RDONLY))
        assert len(held) < 64, "the lowered limit was not reached"
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if collecting:
            gc.enable()


@contextlib.contextmanager
def fd_limit_at_least(wanted: int) -> Iterator[None]:
    """Raise this process's soft RLIMIT_NOFILE to ``wanted`` for the block (a test's clients)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise AssertionError(f"the hard file-descriptor limit {hard} is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
