"""Hashing the contiguous prefix of a partial file as it grows."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub.content import git_blob_sha1
from tests.support import wait_for
from worker.engine.hashing import PrefixHasher

DATA = os.urandom(3 * (1 << 20) + 12345)


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "f.part"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def test_hashing_the_whole_prefix_gives_the_files_sha256_and_git_blob_id(fd: int) -> None:
    hasher = PrefixHasher(fd, len(DATA), with_sha1=True)
    hasher.advance(len(DATA), budget=len(DATA))
    assert hasher.pos == len(DATA)
    assert hasher.sha256() == hashlib.sha256(DATA).hexdigest()
    assert hasher.git_blob_id() == git_blob_sha1(DATA)


def test_a_budget_hashes_in_bites_with_the_same_result(fd: int) -> None:
    hasher = PrefixHasher(fd, len(DATA), with_sha1=False)
    hasher.advance(len(DATA), budget=1000)
    assert hasher.pos == 1000
    while hasher.pos < len(DATA):
        hasher.advance(len(DATA), budget=777_777)
    assert hasher.sha256() == hashlib.sha256(DATA).hexdigest()
    assert hasher.git_blob_id() is None  # LFS or pinned files need no blob id


def test_reset_starts_again_from_byte_zero(fd: int) -> None:
    hasher = PrefixHasher(fd, len(DATA), with_sha1=True)
    hasher.advance(5000)
    hasher.reset()
    assert hasher.pos == 0
    assert hasher.sha256() == hashlib.sha256(b"").hexdigest()
    hasher.advance(len(DATA), budget=len(DATA))
    assert hasher.sha256() == hashlib.sha256(DATA).hexdigest()
    assert hasher.git_blob_id() == git_blob_sha1(DATA)


def test_a_file_shorter_than_its_prefix_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "short.part"
    path.write_bytes(b"x" * 10)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            PrefixHasher(fd, 20, with_sha1=False).advance(20)
    finally:
        os.close(fd)
    assert info.value.errno == errno.EIO


def test_follow_hashes_the_prefix_as_it_grows_until_finished(fd: int) -> None:
    hasher = PrefixHasher(fd, len(DATA), with_sha1=True)
    written = [0]
    grew, finished = threading.Event(), threading.Event()
    follower = threading.Thread(target=hasher.follow, args=(lambda: written[0], grew, finished))
    follower.start()
    try:
        for end in (100, 1 << 20, 2 << 20, len(DATA)):
            written[0] = end
            grew.set()
            wait_for(lambda: hasher.pos >= end, 10, f"the hasher to reach {end}")  # noqa: B023
            assert hasher.pos == end  # it kept up without going past the prefix
    finally:
        finished.set()
        grew.set()
        follower.join(10)
    assert not follower.is_alive()
    assert hasher.sha256() == hashlib.sha256(DATA).hexdigest()
    assert hasher.git_blob_id() == git_blob_sha1(DATA)
