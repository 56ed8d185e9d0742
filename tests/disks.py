"""Real disk faults for the store tests: a really full filesystem and one gone read-only.

Both mount a small filesystem under the test's temporary directory (root is
needed: we and CI run as root). With ``CI=true`` a test that cannot mount fails;
elsewhere it is skipped.

- :func:`small_tmpfs`: a size-limited tmpfs; :meth:`Disk.fill` fills it for real
  (a file written until ``ENOSPC``), :meth:`Disk.free` deletes that file.
- :func:`small_ext4`: an ext4 filesystem on a loop device mounted with
  ``errors=remount-ro``; :meth:`Disk.break_read_only` makes the kernel turn it
  read-only under the open database, as it does after an I/O error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _unavailable(message: str) -> None:
    """Fail under ``CI=true``, skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _mount(args: list[str]) -> None:
    """Run ``mount`` (fail or skip the test if it cannot)."""
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"cannot mount ({' '.join(args)}): {exc}")
        return
    if done.returncode != 0:
        _unavailable(f"cannot mount ({' '.join(args)}): {done.stderr.strip()}")


def _umount(path: Path) -> None:
    """Unmount, lazily if something still holds it (never leaves the test's mount behind)."""
    done = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@dataclass
class Disk:
    """A mounted test filesystem."""

    path: Path
    device: str = ""
    """The loop device name (``loop3``), for ext4."""

    @property
    def filler(self) -> Path:
        """The file :meth:`fill` writes."""
        return self.path / "filler"

    def fill(self) -> int:
        """Write a file until the filesystem has not one byte left; return its size."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        written = 0
        try:
            for chunk in (65536, 4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        written += os.write(fd, b"\0" * chunk)
        finally:
            os.close(fd)
        fd = os.open(self.filler, os.O_WRONLY | os.O_APPEND)
        try:
            with pytest.raises(OSError) as refused:  # really full: one more byte is refused
                os.write(fd, b"\0")
        finally:
            os.close(fd)
        assert refused.value.errno == errno.ENOSPC, refused.value
        return written

    def free(self) -> None:
        """Delete what :meth:`fill` wrote."""
        self.filler.unlink(missing_ok=True)

    def break_read_only(self) -> None:
        """Make the kernel turn the ext4 filesystem read-only now, files open or not."""
        Path(f"/sys/fs/ext4/{self.device}/trigger_fs_error").write_text("canaryd test\n")


@contextlib.contextmanager
def small_tmpfs(root: Path, size: str = "1m") -> Iterator[Disk]:
    """A tmpfs of ``size`` mounted at ``root/disk`` for the block; unmounted after."""
    path = root / "disk"
    path.mkdir()
    _mount(["-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)])
    try:
        yield Disk(path)
    finally:
        _umount(path)


@contextlib.contextmanager
def small_ext4(root: Path, size_mb: int = 8) -> Iterator[Disk]:
    """An ext4 filesystem (loop device, ``errors=remount-ro``) at ``root/disk`` for the block."""
    image, path = root / "disk.img", root / "disk"
    path.mkdir()
    with image.open("wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    try:
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as exc:
        _unavailable(f"cannot make an ext4 filesystem: {exc}")
    _mount(["-o", "loop,errors=remount-ro", str(image), str(path)])
    try:
        source = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        yield Disk(path, Path(source).name)
    finally:
        _umount(path)
        image.unlink(missing_ok=True)
