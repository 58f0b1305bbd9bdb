"""The native engine: parallel byte ranges into a preallocated partial file, resumable from a
sidecar after a crash, verified while it downloads, placed atomically.

Crash safety: the sidecar only ever records ranges whose bytes were written to the partial
file before the sidecar was saved, so a process killed at any moment resumes from a state
that under-claims. (A power loss can lose written pages; the checksum catches that.)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from app import storage
from app.errors import (
    CancelledError,
    ChecksumMismatchError,
    DiskFullError,
    DownloadError,
    PausedError,
    PermanentDownloadError,
    TransientDownloadError,
)
from worker.engine.base import (
    Control,
    ControlFn,
    DownloadRequest,
    DownloadResult,
    ProgressFn,
    ProgressMeter,
    safe_dest,
)
from worker.engine.hub import HubClient, ResolvedFile, TransientHttpError, hub_error
from worker.engine.ranges import RangeSet

MiB = 1 << 20
SIDECAR_VERSION = 1
DISK_RESERVE = 16 * MiB  # keep this much free beyond the file, for the sidecar and the FS


class _FileChanged(Exception):
    """The Hub serves different bytes than the partial holds: start over."""


class _RangesUnsupported(Exception):
    """The server ignores Range: fetch the whole file on one connection."""


class _UrlExpired(Exception):
    """The CDN refused a signed URL that worked before: resolve again."""


class _RestartPlain(Exception):
    """A plain (unranged) GET broke off: it can only start again from byte 0."""


@dataclass
class _Shared:
    """State the connection threads share with the coordinator."""

    fd: int
    size: int
    done: RangeSet
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    pieces: deque[tuple[int, int]] = field(default_factory=deque)
    errors: list[BaseException] = field(default_factory=list)
    transferred: int = 0
    # The download URL's own strong ETag, learnt from its first answer: a CDN's ETag need not
    # be the Hub's content hash, so If-Range must use what that server itself sent.
    validator: str | None = None
    grew: threading.Event = field(default_factory=threading.Event)
    # Connections still running, and a bell they ring when they end: the coordinator wakes
    # at once instead of at its next tick (a small file takes less than a tick).
    running: int = 0
    ended: threading.Event = field(default_factory=threading.Event)

    def connection_ended(self) -> None:
        with self.lock:
            self.running -= 1
        self.ended.set()

    def learn_validator(self, etag: str) -> str | None:
        with self.lock:
            if self.validator is None and etag and not etag.startswith("W/"):
                self.validator = etag
            return self.validator

    def mark(self, start: int, end: int) -> None:
        with self.lock:
            self.done.add(start, end)
            self.transferred += end - start
        self.grew.set()

    def prefix_end(self) -> int:
        with self.lock:
            return self.done.prefix_end()

    def next_piece(self) -> tuple[int, int] | None:
        with self.lock:
            return self.pieces.popleft() if self.pieces else None

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(exc)
        self.stop.set()
        self.ended.set()


class _Hasher:
    """Hashes the partial file's contiguous prefix as it grows, so verifying at the end
    only has the last stretch left to read."""

    def __init__(self, fd: int, size: int, resolved: ResolvedFile, pinned: str | None) -> None:
        self.fd = fd
        self.size = size
        self.with_sha1 = bool(resolved.git_sha1 and not pinned)
        self.reset()

    def reset(self) -> None:
        """Start hashing from byte 0 again."""
        self.pos = 0
        self.sha256 = hashlib.sha256()
        # Regular (non-LFS) files are addressed by their git blob id: sha1("blob N\0" + data).
        self.sha1: Any = None
        if self.with_sha1:
            self.sha1 = hashlib.sha1(b"blob %d\0" % self.size, usedforsecurity=False)

    def follow(self, shared: _Shared, finished: threading.Event) -> None:
        """Hash the prefix as the connections extend it, until `finished` is set."""
        try:
            while not finished.is_set():
                target = shared.prefix_end()
                if self.pos < target:
                    self.advance(target, budget=16 * MiB)
                    continue
                shared.grew.wait(0.05)
                shared.grew.clear()
        except BaseException as exc:
            shared.fail(exc)

    def advance(self, upto: int, budget: int = 64 * MiB) -> None:
        """Hash from the current position towards `upto`, at most `budget` bytes."""
        end = min(upto, self.pos + budget)
        while self.pos < end:
            block = os.pread(self.fd, min(4 * MiB, end - self.pos), self.pos)
            if not block:
                raise OSError(errno.EIO, "short read of the partial file")
            self.sha256.update(block)
            if self.sha1 is not None:
                self.sha1.update(block)
            self.pos += len(block)


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
        self.connections = max(1, connections)
        self.chunk_size = chunk_size
        self.min_split = min_split
        self.max_piece = max_piece
        self.timeout = (connect_timeout, stall_timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.sidecar_interval = sidecar_interval
        self.progress_interval = progress_interval
        self.control_interval = control_interval

    # --- public -----------------------------------------------------------------------------

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
            resolved = self._with_retries(
                lambda: client.resolve(request.repo, request.file_name, request.revision),
                stop=None,
            )
            if resolved.sha256 is None and resolved.git_sha1 is None:
                sha = client.lfs_sha256(request.repo, request.file_name, resolved.commit)
                if sha:
                    resolved = _with_sha256(resolved, sha)
            if request.sha256 and resolved.sha256 and request.sha256 != resolved.sha256:
                raise ChecksumMismatchError(
                    f"the catalog pins sha256 {request.sha256} but the Hub now serves "
                    f"{resolved.sha256}; update the catalog if the new file is intended",
                    repo=request.repo,
                    file=request.file_name,
                )
            try:
                return self._transfer(
                    request, resolved, client, dest, meter, control, before_commit
                )
            except (_FileChanged, _UrlExpired):
                restarts += 1
                if restarts > 3:
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

    # --- one attempt at the whole file ------------------------------------------------------

    def _transfer(
        self,
        request: DownloadRequest,
        resolved: ResolvedFile,
        client: HubClient,
        dest: Path,
        meter: ProgressMeter,
        control: ControlFn | None,
        before_commit: Callable[[], None] | None,
    ) -> DownloadResult:
        models_dir = request.models_dir
        part = storage.partial_path(models_dir, request.dest)
        sidecar = storage.sidecar_path(models_dir, request.dest)
        part.parent.mkdir(parents=True, exist_ok=True)
        size = resolved.size
        done = self._load_sidecar(sidecar, part, resolved)
        if done is None:
            _unlink(part)
            done = RangeSet()
        resumed_from = done.total
        self._check_space(part.parent, size - resumed_from, request)
        fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._preallocate(fd, size, request)
            shared = _Shared(fd=fd, size=size, done=done)
            self._save_sidecar(sidecar, resolved, done)
            hasher = _Hasher(fd, size, resolved, request.sha256)
            try:
                self._fetch(shared, resolved, client, hasher, meter, control, sidecar, request)
            except (PausedError, DiskFullError, TransientDownloadError, _UrlExpired):
                self._save_sidecar(sidecar, resolved, shared.done)
                raise
            except CancelledError:
                _unlink(part, sidecar)
                raise
            except (_FileChanged, _RangesUnsupported):
                _unlink(part, sidecar)
                raise
            meter.update(size, size, status="verifying", force=True)
            hasher.advance(size, budget=size)
            self._verify(hasher, resolved, request, part, sidecar)
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_commit is not None:
            before_commit()  # the cache lease's fencing check: a stale holder must not commit
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest)
        _fsync_dir(dest.parent)
        _unlink(sidecar)
        meter.update(size, size, status="completed", force=True)
        return DownloadResult(
            path=dest,
            size=size,
            sha256=hasher.sha256.hexdigest(),
            etag=resolved.etag,
            commit=resolved.commit,
            bytes_transferred=shared.transferred,
            resumed_from=resumed_from,
        )

    def _fetch(
        self,
        shared: _Shared,
        resolved: ResolvedFile,
        client: HubClient,
        hasher: _Hasher,
        meter: ProgressMeter,
        control: ControlFn | None,
        sidecar: Path,
        request: DownloadRequest,
    ) -> None:
        gaps = shared.done.missing(shared.size)
        remaining = sum(e - s for s, e in gaps)
        n = (
            1
            if remaining < 2 * self.min_split
            else min(self.connections, remaining // self.min_split)
        )
        piece = min(self.max_piece, max(self.min_split, remaining // max(1, n * 4)))
        for s, e in gaps:
            for start in range(s, e, piece):
                shared.pieces.append((start, min(e, start + piece)))
        ranged = True
        plain_failures = 0
        while True:
            threads = [
                threading.Thread(
                    target=self._connection,
                    args=(shared, resolved, client, ranged),
                    name=f"modelpull-conn-{i}",
                    daemon=True,
                )
                for i in range(int(n) if shared.pieces else 0)
            ]
            shared.running = len(threads)
            for t in threads:
                t.start()
            try:
                self._coordinate(shared, threads, resolved, hasher, meter, control, sidecar)
                return
            except _RangesUnsupported:
                if not ranged:
                    raise TransientDownloadError(
                        "the server answered a plain request with a partial one",
                        repo=request.repo,
                        file=request.file_name,
                    ) from None
                ranged, n = False, 1
            except _RestartPlain:
                plain_failures += 1
                if plain_failures > self.max_retries:
                    raise TransientDownloadError(
                        "the server does not support ranges and keeps dropping the connection",
                        repo=request.repo,
                        file=request.file_name,
                        attempt=plain_failures,
                    ) from None
                time.sleep(min(self.backoff_max, self.backoff_base * 2**plain_failures))
            # Without ranges the file comes in one piece from byte 0: nothing kept is usable.
            shared.stop.clear()
            shared.errors.clear()
            shared.done = RangeSet()
            shared.pieces = deque([(0, shared.size)])
            hasher.reset()

    def _coordinate(
        self,
        shared: _Shared,
        threads: list[threading.Thread],
        resolved: ResolvedFile,
        hasher: _Hasher,
        meter: ProgressMeter,
        control: ControlFn | None,
        sidecar: Path,
    ) -> None:
        last_save = last_control = time.monotonic()
        # Hashing runs beside the transfer (hashlib and pread release the GIL), so at the
        # end only the stretch after the last contiguous piece is left to read.
        finished = threading.Event()
        follower = threading.Thread(
            target=hasher.follow, args=(shared, finished), name="modelpull-hash", daemon=True
        )
        follower.start()
        try:
            while shared.running > 0:
                shared.ended.wait(0.05)
                shared.ended.clear()
                if shared.errors or shared.stop.is_set():
                    break
                now = time.monotonic()
                if control is not None and now - last_control >= self.control_interval:
                    last_control = now
                    wanted = control()
                    if wanted is Control.PAUSE:
                        raise PausedError("paused", repo=resolved.repo, file=resolved.file_name)
                    if wanted is Control.CANCEL:
                        raise CancelledError(
                            "cancelled", repo=resolved.repo, file=resolved.file_name
                        )
                with shared.lock:
                    total = shared.done.total
                    snapshot = shared.done.to_list()
                if now - last_save >= self.sidecar_interval:
                    last_save = now
                    self._save_sidecar(sidecar, resolved, RangeSet(snapshot))
                meter.update(total, shared.size)
        finally:
            shared.stop.set()
            finished.set()
            shared.grew.set()  # the hasher is told at once, not at its next tick
            for t in threads:
                t.join()
            follower.join()
        if shared.errors:
            raise shared.errors[0]
        if not shared.done.covers(shared.size):
            raise TransientDownloadError(
                "the transfer ended with ranges missing",
                repo=resolved.repo,
                file=resolved.file_name,
            )

    # --- one connection ---------------------------------------------------------------------

    def _connection(
        self, shared: _Shared, resolved: ResolvedFile, client: HubClient, ranged: bool
    ) -> None:
        try:
            with requests.Session() as session:
                while not shared.stop.is_set():
                    piece = shared.next_piece()
                    if piece is None:
                        return
                    self._fetch_piece(session, shared, resolved, client, piece, ranged)
        except BaseException as exc:
            shared.fail(exc)
        finally:
            shared.connection_ended()

    def _fetch_piece(
        self,
        session: requests.Session,
        shared: _Shared,
        resolved: ResolvedFile,
        client: HubClient,
        piece: tuple[int, int],
        ranged: bool,
    ) -> None:
        pos, end = piece
        failures = 0
        while pos < end and not shared.stop.is_set():
            new_pos, err = self._stream(session, shared, resolved, client, pos, end, ranged)
            progressed, pos = new_pos > pos, new_pos
            if err is None:
                continue
            if not ranged:
                raise _RestartPlain() from None
            # A connection that delivered bytes before failing (a stall, a reset) is
            # reconnected at once without using up its retries; only fruitless tries count.
            failures = 0 if progressed else failures + 1
            if failures > self.max_retries:
                err.attempt = failures
                raise err
            if not failures:
                continue
            delay = min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))
            if isinstance(err, TransientHttpError) and err.retry_after is not None:
                delay = min(max(delay, err.retry_after), 300.0)
            if shared.stop.wait(delay):
                return

    def _stream(
        self,
        session: requests.Session,
        shared: _Shared,
        resolved: ResolvedFile,
        client: HubClient,
        pos: int,
        end: int,
        ranged: bool,
    ) -> tuple[int, TransientDownloadError | None]:
        """GET [pos, end) and write it at its offset; returns the new position and the
        transient error that cut it short, if any. Other errors are raised."""
        headers = client.headers_for(resolved.url)
        if ranged:
            headers["Range"] = f"bytes={pos}-{end - 1}"
            if shared.validator:
                headers["If-Range"] = shared.validator
        ctx: dict[str, Any] = {"repo": resolved.repo, "file": resolved.file_name}
        try:
            with session.get(
                resolved.url, headers=headers, stream=True, timeout=self.timeout,
                allow_redirects=False,
            ) as resp:  # fmt: skip
                self._check_response(resp, shared, resolved, client, pos, ranged)
                for chunk in resp.iter_content(self.chunk_size):
                    if shared.stop.is_set():
                        return pos, None
                    take = chunk[: end - pos]
                    try:
                        os.pwrite(shared.fd, take, pos)
                    except OSError as exc:
                        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                            raise DiskFullError(
                                "the disk filled up while downloading; free space and resume",
                                **ctx,
                            ) from None
                        raise
                    shared.mark(pos, pos + len(take))
                    pos += len(take)
                    if pos >= end:
                        return pos, None
        except TransientDownloadError as exc:
            return pos, exc
        except requests.RequestException as exc:
            return pos, TransientDownloadError(f"connection failed: {type(exc).__name__}", **ctx)
        if pos < end:
            return pos, TransientDownloadError("the connection closed early", **ctx)
        return pos, None

    def _check_response(
        self,
        resp: requests.Response,
        shared: _Shared,
        resolved: ResolvedFile,
        client: HubClient,
        pos: int,
        ranged: bool,
    ) -> None:
        status = resp.status_code
        if status in (200, 206):
            served = resp.headers.get("ETag", "")
            known = shared.validator
            if known and served and served != known:
                raise _FileChanged()  # the URL now serves other bytes than we have
            shared.learn_validator(served)
        if status == 206 and ranged:
            if not resp.headers.get("Content-Range", "").startswith(f"bytes {pos}-"):
                raise _RangesUnsupported()
            return
        if status == 200:
            if ranged:
                raise _RangesUnsupported()  # the server ignored Range
            return
        if status == 416:
            raise _FileChanged()  # the server thinks the file is shorter than we do
        if status in (401, 403, 404, 410) and resp.headers.get("X-Error-Code") is None:
            raise _UrlExpired()  # a signed CDN URL past its expiry
        err = hub_error(
            resp,
            repo=resolved.repo,
            file=resolved.file_name,
            revision=resolved.revision,
            has_token="Authorization" in client.headers_for(resolved.url),
        )
        raise err

    # --- helpers ----------------------------------------------------------------------------

    def _with_retries(self, fn: Callable[[], ResolvedFile], stop: threading.Event | None) -> Any:
        failures = 0
        while True:
            try:
                return fn()
            except TransientDownloadError as exc:
                failures += 1
                if failures > self.max_retries:
                    exc.attempt = failures
                    raise
                delay = min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))
                if isinstance(exc, TransientHttpError) and exc.retry_after is not None:
                    delay = min(max(delay, exc.retry_after), 300.0)
                time.sleep(delay)

    def _load_sidecar(self, sidecar: Path, part: Path, resolved: ResolvedFile) -> RangeSet | None:
        """The done ranges, if the sidecar describes this very file (same etag and size)."""
        try:
            data = json.loads(sidecar.read_text())
            if (
                data.get("version") != SIDECAR_VERSION
                or data.get("etag") != resolved.etag
                or data.get("size") != resolved.size
                or part.stat().st_size != resolved.size
            ):
                return None
            return RangeSet((int(s), int(e)) for s, e in data["done"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save_sidecar(self, sidecar: Path, resolved: ResolvedFile, done: RangeSet) -> None:
        # Only what identifies the file: never the URL (signed) and never the token.
        data = {
            "version": SIDECAR_VERSION,
            "repo": resolved.repo,
            "file": resolved.file_name,
            "commit": resolved.commit,
            "etag": resolved.etag,
            "size": resolved.size,
            "done": done.to_list(),
        }
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, sidecar)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    "the disk is full; free space and resume",
                    repo=resolved.repo,
                    file=resolved.file_name,
                ) from None
            raise

    def _check_space(self, folder: Path, needed: int, request: DownloadRequest) -> None:
        free = shutil.disk_usage(folder).free
        if free < needed + DISK_RESERVE:
            raise DiskFullError(
                f"not enough free space in {request.models_dir}: the file needs "
                f"{_mib(needed)} MiB more, {_mib(free)} MiB are free",
                repo=request.repo,
                file=request.file_name,
            )

    def _preallocate(self, fd: int, size: int, request: DownloadRequest) -> None:
        if os.fstat(fd).st_size == size:
            return
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"not enough free space in {request.models_dir} for {_mib(size)} MiB",
                    repo=request.repo,
                    file=request.file_name,
                ) from None
            os.ftruncate(fd, size)  # filesystems without fallocate (some NFS)

    def _verify(
        self,
        hasher: _Hasher,
        resolved: ResolvedFile,
        request: DownloadRequest,
        part: Path,
        sidecar: Path,
    ) -> None:
        expected = request.sha256 or resolved.sha256
        if expected:
            got, kind = hasher.sha256.hexdigest(), "sha256"
        elif hasher.sha1 is not None and resolved.git_sha1:
            expected, got, kind = resolved.git_sha1, hasher.sha1.hexdigest(), "git blob id"
        else:
            return  # nothing to check against but the size, which the ranges guarantee
        if got != expected:
            _unlink(part, sidecar)
            raise ChecksumMismatchError(
                f"the downloaded bytes have {kind} {got}, expected {expected}; "
                "the bad data was discarded",
                repo=resolved.repo,
                file=resolved.file_name,
            )


def _with_sha256(resolved: ResolvedFile, sha256: str) -> ResolvedFile:
    from dataclasses import replace

    return replace(resolved, sha256=sha256)


def _unlink(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _fsync_dir(path: Path) -> None:
    # The rename is atomic but only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _mib(n: int) -> int:
    return max(0, n) // MiB


__all__ = ["DownloadError", "NativeEngine", "PermanentDownloadError"]
