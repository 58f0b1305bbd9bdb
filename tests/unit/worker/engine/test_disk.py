"""Free space, preallocation and durable renames."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import DiskFullError
from worker.engine import disk
from worker.engine.base import DownloadRequest

MiB = 1 << 20


@pytest.fixture
def request_(tmp_path: Path) -> DownloadRequest:
    return DownloadRequest(
        repo="org/m", file_name="m.gguf", dest="m.gguf", models_dir=tmp_path, endpoint="http://hub"
    )


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "m.part", os.O_RDWR | os.O_CREAT, 0o644)
    yield fd
    os.close(fd)


def test_check_space_wants_the_file_and_a_reserve(
    tmp_path: Path, request_: DownloadRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda p: real(p)._replace(free=100 * MiB))
    disk.check_space(tmp_path, 100 * MiB - disk.DISK_RESERVE, request_)
    with pytest.raises(DiskFullError) as info:
        disk.check_space(tmp_path, 100 * MiB - disk.DISK_RESERVE + 1, request_)
    assert f"not enough free space in {tmp_path}" in str(info.value)
    assert "100 MiB are free" in str(info.value) and info.value.file == "m.gguf"


def test_preallocate_sizes_the_file(fd: int, request_: DownloadRequest) -> None:
    disk.preallocate(fd, 5 * MiB, request_)
    assert os.fstat(fd).st_size == 5 * MiB


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_or_quota_while_preallocating_is_disk_full(
    fd: int, request_: DownloadRequest, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def fallocate(fd: int, offset: int, length: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(disk.os, "posix_fallocate", fallocate)
    with pytest.raises(DiskFullError, match=r"not enough free space .* for 5 MiB") as info:
        disk.preallocate(fd, 5 * MiB, request_)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert os.fstat(fd).st_size == 0


def test_without_fallocate_the_file_is_truncated_to_size(
    fd: int, request_: DownloadRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fallocate(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(disk.os, "posix_fallocate", fallocate)
    disk.preallocate(fd, 3 * MiB, request_)
    assert os.fstat(fd).st_size == 3 * MiB


def test_fsync_dir_is_best_effort(tmp_path: Path) -> None:
    disk.fsync_dir(tmp_path)
    disk.fsync_dir(tmp_path / "gone")  # no error: durability is a bonus, not a condition
