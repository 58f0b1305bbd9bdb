"""The disk side of a download: free space, preallocation, durable renames."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from app.errors import DiskFullError, disk_full_as
from worker.engine.base import DownloadRequest

MiB = 1 << 20
IOV_MAX = 512  # pieces per pwritev, well under every system's limit
DISK_RESERVE = 16 * MiB  # keep this much free beyond the file, for the sidecar and the FS


def check_space(folder: Path, needed: int, request: DownloadRequest) -> None:
    """Raise DiskFullError unless `folder` has `needed` bytes free and the reserve besides."""
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_RESERVE:
        raise DiskFullError(
            f"not enough free space in {request.models_dir}: the file needs "
            f"{_mib(needed)} MiB more, {_mib(free)} MiB are free",
            repo=request.repo,
            file=request.file_name,
        )


def allocated(path: Path, size: int) -> int:
    """Bytes of disk `path` already holds (a preallocated partial holds them all), at most
    `size`; 0 when it does not exist."""
    try:
        return min(size, os.stat(path).st_blocks * 512)
    except OSError:
        return 0


def preallocate(fd: int, size: int, request: DownloadRequest) -> None:
    """Reserve `size` bytes for the open file, so a full disk shows now, not mid-download."""
    if os.fstat(fd).st_size == size:
        return
    message = f"not enough free space in {request.models_dir} for {_mib(size)} MiB"
    try:
        with disk_full_as(message, repo=request.repo, file=request.file_name):
            os.posix_fallocate(fd, 0, size)
    except OSError:
        os.ftruncate(fd, size)  # filesystems without fallocate (some NFS)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries, best effort."""
    # A rename is atomic but only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _mib(n: int) -> int:
    return max(0, n) // MiB


def write_all(fd: int, pieces: Sequence[bytes | bytearray | memoryview], pos: int) -> None:
    """Write `pieces` back to back at `pos` (one pwritev, no joining copy): a short write
    continues where it stopped, and a write that takes nothing is an error, never a gap."""
    views = [memoryview(p) for p in pieces if len(p)]
    while views:
        written = os.pwritev(fd, views[:IOV_MAX], pos)
        if written <= 0:
            raise OSError(errno.EIO, "the partial file took no bytes")
        pos += written
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]
