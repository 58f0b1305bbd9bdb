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
from worker.engine.base import (
    ControlFn,
    DownloadRequest,
    DownloadResult,
    Identity,
    ProgressFn,
    ProgressMeter,
    obey,
    safe_dest,
)
from worker.engine.hashing import PrefixHasher
from worker.engine.hub import HubClient, ResolvedFile, resolve_patiently
from worker.engine.ranges import RangeSet
from worker.engine.terms import (
    Checkpoint,
    FileChanged,
    StartOver,
    Tuning,
    UrlExpired,
)
from worker.engine.transfer import Transfer

MiB = 1 << 20
MAX_RESTARTS = 3  # new resolves after the file changed or its signed URL expired
HASH_BITE = 64 * MiB  # the final hashing asks for control between bites of this size


class NativeEngine:
    """Parallel ranged downloads with requests; see the module docstring. `connections`: a
    fixed count per file, or None to adapt between `start_connections` and `max_connections`."""

    name = "native"

    def __init__(
        self,
        connections: int | None = None,
        *,
        max_connections: int = 32,
        start_connections: int = 4,
        host_connections: int = 64,
        chunk_size: int = 256 * 1024,
        min_split: int = 8 * MiB,
        connect_timeout: float = 10.0,
        stall_timeout: float = 30.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        sidecar_interval: float = 0.25,
        progress_interval: float = 0.25,
        control_interval: float = 0.25,
        trickle_bytes: int = 32 * 1024,
        trickle_window: float = 30.0,
    ) -> None:
        self.tuning = Tuning(
            connections=None if connections is None else max(1, connections),
            max_connections=max(1, max_connections),
            start_connections=max(1, start_connections),
            host_connections=max(1, host_connections),
            chunk_size=chunk_size,
            min_split=min_split,
            timeout=(connect_timeout, stall_timeout),
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            sidecar_interval=sidecar_interval,
            control_interval=control_interval,
            trickle_bytes=trickle_bytes,
            trickle_window=trickle_window,
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
            resolved = self._resolve(client, request, control)
            try:
                return self._attempt(request, resolved, client, dest, meter, control, before_commit)
            except StartOver as exc:
                restarts += 1
                if restarts > MAX_RESTARTS:
                    why = (
                        "the download server kept refusing its signed URL, even after "
                        "resolving the file again"
                        if isinstance(exc, UrlExpired)
                        else "the file kept changing on the Hub while downloading"
                    )
                    raise TransientDownloadError(
                        why, repo=request.repo, file=request.file_name
                    ) from None
            except ChecksumMismatchError:
                # The bad data is already discarded; one clean retry rules out a bad
                # transfer, a second mismatch means the source itself is wrong.
                checksum_failures += 1
                if checksum_failures >= 2:
                    raise

    def identify(self, request: DownloadRequest, *, control: ControlFn | None = None) -> Identity:
        """What the Hub serves at the request's revision (the commit it resolves to)."""
        client = HubClient(request.endpoint, request.token)
        return self._resolve(client, request, control).identity()

    def _resolve(
        self, client: HubClient, request: DownloadRequest, control: ControlFn | None
    ) -> ResolvedFile:
        """What the Hub serves now, with its sha256 if it has one, checked against the pin."""
        resolved = self._resolve_with_retries(client, request, control)
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

    def _resolve_with_retries(
        self, client: HubClient, request: DownloadRequest, control: ControlFn | None
    ) -> ResolvedFile:
        t = self.tuning
        return resolve_patiently(
            client,
            request.repo,
            request.file_name,
            request.revision,
            control=control,
            max_retries=t.max_retries,
            backoff_base=t.backoff_base,
            backoff_max=t.backoff_max,
            interval=t.control_interval,
        )

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
        kept = _resume(part, side, resolved)
        done = RangeSet(kept.done if kept else ())
        resumed_from = done.total
        # Blocks the partial already holds (it was preallocated) need no new space.
        disk.check_space(part.parent, size - disk.allocated(part, size), request)
        checkpoint = _checkpointer(side, resolved)
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            disk.preallocate(fd, size, request)
            checkpoint(done, kept.validator if kept else None)
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
                validator=kept.validator if kept else None,
            )
            self._fetch(transfer, request, checkpoint)
            meter.update(size, size, status="verifying", force=True)
            self._hash_rest(hasher, size, control, checkpoint, transfer)
            self._verify(hasher, resolved, request, fd, part)
            os.fsync(fd)
            # A hand-back at the rename (the lease could not be confirmed) keeps these
            # verified bytes: the next attempt resumes with nothing left to fetch.
            checkpoint(transfer.done, transfer.validator)
            self._place(fd, part, side, dest, before_commit)
        finally:
            os.close(fd)
        meter.update(size, size, status="completed", force=True)
        return _result(dest, resolved, hasher, transfer, resumed_from)

    def _fetch(self, transfer: Transfer, request: DownloadRequest, checkpoint: Checkpoint) -> None:
        """Run the transfer; on the way out keep what a resume can use, drop what it cannot."""
        try:
            transfer.run()
        except (PausedError, DiskFullError, TransientDownloadError, UrlExpired):
            checkpoint(transfer.done, transfer.validator)
            raise
        except (CancelledError, FileChanged):
            storage.remove_partial(request.models_dir, request.dest)
            raise

    def _hash_rest(
        self,
        hasher: PrefixHasher,
        size: int,
        control: ControlFn | None,
        checkpoint: Checkpoint,
        transfer: Transfer,
    ) -> None:
        """Hash what the follower had not reached, asking for control between bites."""
        while hasher.pos < size:
            hasher.advance(size, budget=HASH_BITE)
            if control is not None and hasher.pos < size:
                try:
                    obey(control(), repo=transfer.resolved.repo, file=transfer.resolved.file_name)
                except PausedError:
                    checkpoint(transfer.done, transfer.validator)
                    raise

    def _verify(
        self,
        hasher: PrefixHasher,
        resolved: ResolvedFile,
        request: DownloadRequest,
        fd: int,
        part: Path,
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
            if _same_file(fd, part):
                storage.remove_partial(request.models_dir, request.dest)
            raise ChecksumMismatchError(
                f"the downloaded bytes have {kind} {got}, expected {expected}; "
                "the bad data was discarded",
                repo=resolved.repo,
                file=resolved.file_name,
            )

    def _place(
        self,
        fd: int,
        part: Path,
        side: Path,
        dest: Path,
        before_commit: Callable[[], None] | None,
    ) -> None:
        """Move the verified partial to its destination, durably."""
        if before_commit is not None:
            before_commit()  # the cache lease's fencing check: a stale holder must not commit
        if not _same_file(fd, part):
            # Another writer replaced the partial meanwhile: what is there is not ours to place.
            raise TransientDownloadError(
                "the partial file was replaced by another transfer; not placing it",
                file=str(dest),
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest)
        disk.fsync_dir(dest.parent)
        side.unlink(missing_ok=True)


def _result(
    dest: Path, resolved: ResolvedFile, hasher: PrefixHasher, transfer: Transfer, resumed: int
) -> DownloadResult:
    last = transfer.last_byte_at
    return DownloadResult(
        path=dest,
        size=resolved.size,
        sha256=hasher.sha256(),
        etag=resolved.etag,
        commit=resolved.commit,
        bytes_transferred=transfer.transferred,
        resumed_from=resumed,
        tail_s=0.0 if last is None else time.monotonic() - last,
        connections=transfer.plan.most,
    )


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` is still the file open as `fd` (not replaced by another writer)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _resume(part: Path, side: Path, resolved: ResolvedFile) -> Sidecar | None:
    """What a resume can keep: the sidecar, if it is for these very bytes, else nothing."""
    part.parent.mkdir(parents=True, exist_ok=True)
    kept = sidecar.load_record(side, etag=resolved.etag, size=resolved.size, partial=part)
    if kept is None:
        part.unlink(missing_ok=True)
    return kept


def _checkpointer(side: Path, resolved: ResolvedFile) -> Checkpoint:
    """Saves the sidecar of this file with the done ranges (and validator) it is given."""
    record = Sidecar(
        repo=resolved.repo,
        file=resolved.file_name,
        commit=resolved.commit,
        etag=resolved.etag,
        size=resolved.size,
    )

    def checkpoint(done: Iterable[tuple[int, int]], validator: str | None) -> None:
        record.with_done(done, validator).save(side)

    return checkpoint
