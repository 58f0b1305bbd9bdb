"""The hasher starts the disk's writeback of what it has hashed, in steps, so the final fsync
has little left; on a system without sync_file_range nothing changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.engine import writeback
from worker.engine.hashing import PrefixHasher
from worker.engine.writeback import Writeback

MiB = 1 << 20


def test_writeback_starts_in_steps_behind_the_hasher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[tuple[int, int, int]] = []

    def record(fd: int, offset: int, nbytes: int, flags: int) -> int:
        started.append((offset, nbytes, flags))
        return 0

    monkeypatch.setattr(writeback, "_SYNC_FILE_RANGE", record)
    path = tmp_path / "f"
    path.write_bytes(os.urandom(10 * MiB))
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = PrefixHasher(fd, 10 * MiB, with_sha1=False)
        hasher.writeback.step = 4 * MiB
        for upto in range(MiB, 10 * MiB + 1, MiB):
            hasher.advance(upto)
    finally:
        os.close(fd)
    # Every hashed byte was handed to the writeback once, in runs of a step, the rest at the end.
    assert [(o, n) for o, n, _ in started] == [(0, 4 * MiB), (4 * MiB, 4 * MiB), (8 * MiB, 2 * MiB)]
    assert {f for _, _, f in started} == {writeback.SYNC_FILE_RANGE_WRITE}


def test_the_real_call_works_here_and_a_refusal_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(MiB))
    fd = os.open(path, os.O_RDWR)
    try:
        real = Writeback(fd, step=1)
        real.advance(MiB)
        assert real.enabled == (writeback._SYNC_FILE_RANGE is not None)
        monkeypatch.setattr(writeback, "_SYNC_FILE_RANGE", lambda *a: -1)
        refused = Writeback(fd, step=1)
        refused.advance(MiB)
        assert not refused.enabled and refused.started == 0  # the fsync will do it all
    finally:
        os.close(fd)
