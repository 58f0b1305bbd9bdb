"""Writing a partial file's pages back to disk while it downloads, so the final fsync has
little left to do.

Linux's sync_file_range(SYNC_FILE_RANGE_WRITE) starts the writeback of a range without waiting
for it; Python's os module does not offer it, so it is called through libc. Where it is missing
(another system, a libc without it) nothing is started early and the final fsync does it all,
as before. This never replaces the fsync: it only moves its work earlier.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable

MiB = 1 << 20
SYNC_FILE_RANGE_WRITE = 2
STEP = 32 * MiB  # start writeback in runs of at least this much


def _load() -> Callable[[int, int, int, int], int] | None:
    if not hasattr(os, "posix_fadvise"):  # not Linux-like: leave it to the fsync
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _load()


class Writeback:
    """Starts the writeback of [0, upto) of a file as `upto` grows."""

    def __init__(self, fd: int, step: int = STEP) -> None:
        self.fd = fd
        self.step = step
        self.started = 0  # writeback was started for [0, started)
        self.enabled = _SYNC_FILE_RANGE is not None

    def advance(self, upto: int, *, final: bool = False) -> None:
        """Start writing back what is new below `upto`, once a step's worth has gathered (or
        at once when `final`)."""
        if not self.enabled or upto <= self.started:
            return
        if upto - self.started < self.step and not final:
            return
        assert _SYNC_FILE_RANGE is not None
        if _SYNC_FILE_RANGE(self.fd, self.started, upto - self.started, SYNC_FILE_RANGE_WRITE):
            self.enabled = False  # e.g. EINVAL on a filesystem that refuses it: the fsync will do
            return
        self.started = upto

    def reset(self) -> None:
        """The file starts again from byte 0."""
        self.started = 0
