"""Stopping the server processes tests start."""

from __future__ import annotations

import subprocess

STOP_TIMEOUT = 5.0
"""Seconds a server gets to exit after SIGTERM before it is killed."""


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """Terminate ``proc``; kill it if it is still there after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
