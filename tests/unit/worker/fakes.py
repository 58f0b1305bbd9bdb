"""Test doubles for the worker's tests: an engine that does what each test tells it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from app import storage
from app.digest import sha256_file
from worker.engine.base import (
    ControlFn,
    DownloadRequest,
    DownloadResult,
    Identity,
    Progress,
    ProgressFn,
)

CONTENT = b"weights " * 4096
SIZE = len(CONTENT)
COMMIT = "c" * 40
# What the fake Hub says the file is: CONTENT, at COMMIT.
IDENTITY = Identity(COMMIT, "e", SIZE, hashlib.sha256(CONTENT).hexdigest(), None)

Behaviour = Callable[[DownloadRequest, ProgressFn, ControlFn, Callable[[], None]], DownloadResult]


@dataclass
class FakeEngine:
    """Stands in for an engine: runs `behaviour` with what the pipeline hands an engine."""

    behaviour: Behaviour
    name: str = "fake"
    requests: list[DownloadRequest] = field(default_factory=list)
    identity: Identity = IDENTITY
    asked: list[DownloadRequest] = field(default_factory=list)

    def identify(self, request: DownloadRequest, *, control: ControlFn | None = None) -> Identity:
        self.asked.append(request)
        return self.identity

    def download(
        self,
        request: DownloadRequest,
        *,
        progress: ProgressFn | None = None,
        control: ControlFn | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> DownloadResult:
        self.requests.append(request)
        assert progress is not None and control is not None and before_commit is not None
        return self.behaviour(request, progress, control, before_commit)


def place(
    request: DownloadRequest, progress: ProgressFn, before_commit: Callable[[], None]
) -> DownloadResult:
    """What a good engine does: report, fence, put verified bytes at the destination."""
    progress(Progress(SIZE // 2, SIZE, 1000.0, 1.0))
    before_commit()
    dest = storage.dest_path(request.models_dir, request.dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(CONTENT)
    return DownloadResult(
        path=dest,
        size=SIZE,
        sha256=sha256_file(dest),
        etag=IDENTITY.etag,
        commit=COMMIT,
        bytes_transferred=SIZE,
        resumed_from=0,
    )
