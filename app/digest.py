"""Content digests: the sha256 of a file, read in blocks (never whole into memory)."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 4 << 20


def sha256_file(path: Path | str) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
