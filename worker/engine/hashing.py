"""Hashing a partial file's contiguous prefix as it grows, so verifying at the end only has the
last stretch left to read."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable

MiB = 1 << 20


class PrefixHasher:
    """The sha256 and, for regular (non-LFS) files, the git blob id of [0, pos) of a file."""

    def __init__(self, fd: int, size: int, *, with_sha1: bool) -> None:
        self.fd = fd
        self.size = size
        self.with_sha1 = with_sha1
        self.reset()

    def reset(self) -> None:
        """Start hashing from byte 0 again."""
        self.pos = 0
        self._sha256 = hashlib.sha256()
        # Regular files are addressed by their git blob id: sha1("blob N\0" + data).
        self._sha1 = (
            hashlib.sha1(b"blob %d\0" % self.size, usedforsecurity=False)
            if self.with_sha1
            else None
        )

    def sha256(self) -> str:
        """The sha256 (hex) of the bytes hashed so far."""
        return self._sha256.hexdigest()

    def git_blob_id(self) -> str | None:
        """The git blob id (hex) of the bytes hashed so far, if this hasher computes one."""
        return None if self._sha1 is None else self._sha1.hexdigest()

    def advance(self, upto: int, budget: int = 64 * MiB) -> None:
        """Hash from the current position towards `upto`, at most `budget` bytes."""
        end = min(upto, self.pos + budget)
        while self.pos < end:
            block = os.pread(self.fd, min(4 * MiB, end - self.pos), self.pos)
            if not block:
                raise OSError(errno.EIO, "short read of the partial file")
            self._sha256.update(block)
            if self._sha1 is not None:
                self._sha1.update(block)
            self.pos += len(block)

    def follow(
        self, prefix_end: Callable[[], int], grew: threading.Event, finished: threading.Event
    ) -> None:
        """Hash the prefix as writers extend it (they set `grew`), until `finished` is set."""
        while not finished.is_set():
            target = prefix_end()
            if self.pos < target:
                # A bounded bite, so `finished` is noticed while a long prefix is hashed.
                self.advance(target, budget=16 * MiB)
                continue
            grew.wait(0.05)
            grew.clear()
