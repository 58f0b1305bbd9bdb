"""Hashing a partial file's contiguous prefix as it grows, so verifying at the end only has the
last stretch left to read; what is hashed is also handed to the disk's writeback early, so the
final fsync is short."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable

from worker.engine.writeback import Writeback

MiB = 1 << 20
BLOCK = 4 * MiB  # bytes read per pread into the hasher's one buffer


class PrefixHasher:
    """The sha256 and, for regular (non-LFS) files, the git blob id of [0, pos) of a file."""

    def __init__(self, fd: int, size: int, *, with_sha1: bool) -> None:
        self.fd = fd
        self.size = size
        self.with_sha1 = with_sha1
        self.writeback = Writeback(fd)
        # One buffer, reused: no new bytes object per block read.
        self._buffer = memoryview(bytearray(min(BLOCK, max(1, size))))
        self.reset()

    def reset(self) -> None:
        """Start hashing from byte 0 again."""
        self.pos = 0
        self.writeback.reset()
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
        buffer = self._buffer
        while self.pos < end:
            n = os.preadv(self.fd, [buffer[: min(len(buffer), end - self.pos)]], self.pos)
            if n <= 0:
                raise OSError(errno.EIO, "short read of the partial file")
            block = buffer[:n]
            self._sha256.update(block)
            if self._sha1 is not None:
                self._sha1.update(block)
            self.pos += n
        # Hashed bytes are final: the disk may start writing them now.
        self.writeback.advance(self.pos, final=self.pos >= self.size)

    def follow(
        self,
        prefix_end: Callable[[], int],
        grew: threading.Event,
        finished: threading.Event,
        advanced: Callable[[], None] = lambda: None,
    ) -> None:
        """Hash the prefix as writers extend it (they set `grew`), until `finished` is set;
        `advanced` is called after each bite."""
        while not finished.is_set():
            target = prefix_end()
            if self.pos < target:
                # A bounded bite, so `finished` is noticed while a long prefix is hashed.
                self.advance(target, budget=16 * MiB)
                advanced()
                continue
            grew.wait(0.05)
            grew.clear()
