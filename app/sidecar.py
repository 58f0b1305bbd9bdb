"""The partial file's sidecar (`*.part.json`): which byte ranges are done, so a download resumes.

This is the only code that reads or writes sidecars. The JSON is
`{"version": 1, "repo", "file", "commit", "etag", "size", "done": [[start, end], ...]}`, plus
`"validator"` (the download server's own strong ETag, sent as If-Range after a resume) when
that server sent one. It holds only what identifies the file: never the download URL (it is
signed) and never a token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.errors import disk_full_as

SIDECAR_VERSION = 1
# Added to a sidecar's name while it is written (then renamed over the sidecar).
TMP_SUFFIX = ".tmp"

Span = tuple[int, int]


@dataclass(frozen=True)
class Sidecar:
    """What a sidecar records: the file it belongs to and its done ranges [start, end)."""

    repo: str
    file: str
    commit: str
    etag: str
    size: int
    done: tuple[Span, ...] = ()
    version: int = SIDECAR_VERSION
    validator: str | None = None

    def with_done(self, done: Iterable[Span], validator: str | None = None) -> Sidecar:
        """The same record with other done ranges (and the validator, once one is known)."""
        return replace(self, done=tuple(done), validator=validator or self.validator)

    def to_json(self) -> str:
        """The file's text, in the key order earlier versions wrote."""
        data = {
            "version": self.version,
            "repo": self.repo,
            "file": self.file,
            "commit": self.commit,
            "etag": self.etag,
            "size": self.size,
            "done": [[start, end] for start, end in self.done],
        }
        if self.validator:
            data["validator"] = self.validator
        return json.dumps(data)

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old sidecar or the new one, never half of one."""
        tmp = path.with_name(path.name + TMP_SUFFIX)
        with disk_full_as(
            "the disk is full; free space and resume", repo=self.repo, file=self.file
        ):
            tmp.write_text(self.to_json())
            os.replace(tmp, path)


def load(path: Path, *, etag: str, size: int, partial: Path) -> list[Span] | None:
    """The done ranges, if the sidecar describes this very file (same etag and size, and a
    partial file of that size); None if it is missing, unreadable or for other bytes."""
    record = load_record(path, etag=etag, size=size, partial=partial)
    return None if record is None else list(record.done)


def load_record(path: Path, *, etag: str, size: int, partial: Path) -> Sidecar | None:
    """The whole record, on the same terms as `load`."""
    try:
        data = _read(path)
        if (
            data.get("version") != SIDECAR_VERSION
            or data.get("etag") != etag
            or data.get("size") != size
            or partial.stat().st_size != size
        ):
            return None
        validator = data.get("validator")
        return Sidecar(
            repo=str(data["repo"]),
            file=str(data["file"]),
            commit=str(data["commit"]),
            etag=etag,
            size=size,
            done=tuple(_spans(data)),
            validator=validator if isinstance(validator, str) and validator else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def done_bytes(path: Path) -> int | None:
    """Bytes the sidecar records as done, or None when it is missing or unreadable."""
    try:
        return sum(end - start for start, end in _spans(_read(path)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("a sidecar is a JSON object")
    return data


def _spans(data: dict[str, Any]) -> list[Span]:
    return [(int(start), int(end)) for start, end in data["done"]]
