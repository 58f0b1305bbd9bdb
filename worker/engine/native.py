"""The native engine: parallel byte ranges into a preallocated partial file, resumable from a
sidecar after a crash, verified while it downloads, placed atomically.

This module holds the attempts at a file and the placement of the result; the bytes move in
worker.engine.transfer. Crash safety: the sidecar only ever records ranges whose bytes were
written to the partial file before the sidecar was saved, so a process killed at any moment
resumes from a state that under-claims. (A power loss can lose written pages; the checksum
catches that.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from app import sidecar, storage
from app.errors import (
    CancelledError,
    ChecksumMismatchError,
    DiskFullError,
    PausedError,
    TransientDownloadError,
)
from app.sidecar import Sidecar
from worker.engine import disk
from worker.engine.backoff import backoff_delay
from worker.engine.base import (
    ControlFn,
    DownloadRequest,
    DownloadResult,
    ProgressFn,
    ProgressMeter,
    safe_dest,
)
from worker.engine.hashing import PrefixHasher
from worker.engine.hub import HubClient, ResolvedFile, retry_after_of
from worker.engine.ranges import RangeSet
from worker.engine.transfer import (
    Checkpoint,
    FileChanged,
    StartOver,
    Transfer,
    Tuning,
    UrlExpired,
)

MiB = 1 << 20
MAX_RESTARTS = 3  # new resolves after the file changed or its signed URL expired


class NativeEngine:
    """Parallel ranged downloads with requests; see the module docstring."""

    name = "native"

    def __init__(
        self,
        connections: int = 8,
        *,
        chunk_size: int = 1 * MiB,
        min_split: int = 8 * MiB,
        max_piece: int = 256 * MiB,
        connect_timeout: float = 10.0,
        stall_timeout: float = 30.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sidecar_interval: float = 1.0,
        progress_interval: float = 0.25,
        control_interval: float = 0.25,
    ) -> None:
        self.tuning = Tuning(
            connections=max(1, connections),
            chunk_size=chunk_size,
            min_split=min_split,
            max_piece=max_piece,
            timeout=(connect_timeout, stall_timeout),
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            sidecar_interval=sidecar_interval,
            control_interval=control_interval,
        )
        self.progress_interval = progress_interval

    def download(
        self,
        request: DownloadRequest,
        *,
        progress: ProgressFn | None = None,
        control: ControlFn | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> DownloadResult:
        """Download, verify and atomically place one file."""
        dest = safe_dest(request)
        client = HubClient(request.endpoint, request.token)
        meter = ProgressMeter(progress, interval=self.progress_interval)
        checksum_failures = 0
        restarts = 0
        while True:
            resolved = self._resolve(client, request)
            try:
                return self._attempt(request, resolved, client, dest, meter, control, before_commit)
            except StartOver:
                restarts += 1
                if restarts > MAX_RESTARTS:
                    raise TransientDownloadError(
                        "the file kept changing on the Hub while downloading",
                        repo=request.repo,
                        file=request.file_name,
                    ) from None
            except ChecksumMismatchError:
                # The bad data is already discarded; one clean retry rules out a bad
                # transfer, a second mismatch means the source itself is wrong.
                checksum_failures += 1
                if checksum_failures >= 2:
                    raise

    def _resolve(self, client: HubClient, request: DownloadRequest) -> ResolvedFile:
        """What the Hub serves now, with its sha256 if it has one, checked against the pin."""
        resolved = self._resolve_with_retries(client, request)
        if resolved.sha256 is None and resolved.git_sha1 is None:
            sha = client.lfs_sha256(request.repo, request.file_name, resolved.commit)
            if sha:
                resolved = replace(resolved, sha256=sha)
        if request.sha256 and resolved.sha256 and request.sha256 != resolved.sha256:
            raise ChecksumMismatchError(
                f"the catalog pins sha256 {request.sha256} but the Hub now serves "
                f"{resolved.sha256}; update the catalog if the new file is intended",
                repo=request.repo,
                file=request.file_name,
            )
        return resolved

    def _resolve_with_retries(self, client: HubClient, request: DownloadRequest) -> ResolvedFile:
        t = self.tuning
        failures = 0
        while True:
            try:
                return client.resolve(request.repo, request.file_name, request.revision)
            except TransientDownloadError as exc:
                failures += 1
                if failures > t.max_retries:
                    exc.attempt = failures
                    raise
                retry_after = retry_after_of(exc)
                delay = backoff_delay(
                    failures, base=t.backoff_base, cap=t.backoff_max, retry_after=retry_after
                )
                time.sleep(delay)

    def _attempt(
        self,
        request: DownloadRequest,
        resolved: ResolvedFile,
        client: HubClient,
        dest: Path,
        meter: ProgressMeter,
        control: ControlFn | None,
        before_commit: Callable[[], None] | None,
    ) -> DownloadResult:
        """One attempt at the whole file: resume or start the partial, fetch, verify, place."""
        size = resolved.size
        part = storage.partial_path(request.models_dir, request.dest)
        side = storage.sidecar_path(request.models_dir, request.dest)
        done = _resume(part, side, resolved)
        resumed_from = done.total
        disk.check_space(part.parent, size - resumed_from, request)
        checkpoint = _checkpointer(side, resolved)
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            disk.preallocate(fd, size, request)
            checkpoint(done)
            hasher = PrefixHasher(
                fd, size, with_sha1=bool(resolved.git_sha1 and not request.sha256)
            )
            transfer = Transfer(
                fd,
                done,
                resolved=resolved,
                client=client,
                hasher=hasher,
                meter=meter,
                control=control,
                checkpoint=checkpoint,
                tuning=self.tuning,
            )
            self._fetch(transfer, request, checkpoint)
            meter.update(size, size, status="verifying", force=True)
            hasher.advance(size, budget=size)
            self._verify(hasher, resolved, request)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._place(part, side, dest, before_commit)
        meter.update(size, size, status="completed", force=True)
        return DownloadResult(
            path=dest,
            size=size,
            sha256=hasher.sha256(),
            etag=resolved.etag,
            commit=resolved.commit,
            bytes_transferred=transfer.transferred,
            resumed_from=resumed_from,
        )

    def _fetch(self, transfer: Transfer, request: DownloadRequest, checkpoint: Checkpoint) -> None:
        """Run the transfer; on the way out keep what a resume can use, drop what it cannot."""
        try:
            transfer.run()
        except (PausedError, DiskFullError, TransientDownloadError, UrlExpired):
            checkpoint(transfer.done)
            raise
        except (CancelledError, FileChanged):
            storage.remove_partial(request.models_dir, request.dest)
            raise

    def _verify(
        self, hasher: PrefixHasher, resolved: ResolvedFile, request: DownloadRequest
    ) -> None:
        """Compare the hashed bytes with what they should be; discard them if they differ."""
        expected = request.sha256 or resolved.sha256
        blob_id = hasher.git_blob_id()
        if expected:
            got, kind = hasher.sha256(), "sha256"
        elif blob_id is not None and resolved.git_sha1:
            expected, got, kind = resolved.git_sha1, blob_id, "git blob id"
        else:
            return  # nothing to check against but the size, which the ranges guarantee
        if got != expected:
            storage.remove_partial(request.models_dir, request.dest)
            raise ChecksumMismatchError(
                f"the downloaded bytes have {kind} {got}, expected {expected}; "
                "the bad data was discarded",
                repo=resolved.repo,
                file=resolved.file_name,
            )

    def _place(
        self, part: Path, side: Path, dest: Path, before_commit: Callable[[], None] | None
    ) -> None:
        """Move the verified partial to its destination, durably."""
        if before_commit is not None:
            before_commit()  # the cache lease's fencing check: a stale holder must not commit
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest)
        disk.fsync_dir(dest.parent)
        side.unlink(missing_ok=True)


def _resume(part: Path, side: Path, resolved: ResolvedFile) -> RangeSet:
    """The ranges a resume can keep: the sidecar's, if it is for these very bytes, else none."""
    part.parent.mkdir(parents=True, exist_ok=True)
    kept = sidecar.load(side, etag=resolved.etag, size=resolved.size, partial=part)
    if kept is None:
        part.unlink(missing_ok=True)
    return RangeSet(kept or ())


def _checkpointer(side: Path, resolved: ResolvedFile) -> Checkpoint:
    """Saves the sidecar of this file with the done ranges it is given."""
    record = Sidecar(
        repo=resolved.repo,
        file=resolved.file_name,
        commit=resolved.commit,
        etag=resolved.etag,
        size=resolved.size,
    )

    def checkpoint(done: Iterable[tuple[int, int]]) -> None:
        record.with_done(done).save(side)

    return checkpoint
