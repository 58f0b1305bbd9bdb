"""Content digests of a file, read in blocks (never whole into memory): its sha256, and the
git blob id by which the Hub names a regular (non-LFS) file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

BLOCK = 4 << 20


def sha256_file(path: Path | str) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def git_blob_id_file(path: Path | str) -> str:
    """The git blob id of a file: sha1 of `blob <size>\\0` and its bytes."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        digest = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
