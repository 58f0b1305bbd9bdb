"""One transfer of a file's missing byte ranges into its open partial file.

Connection threads take pieces from a queue and write each chunk at its offset; a coordinator
on the calling thread checks for pause and cancel, saves the sidecar and reports progress; a
hashing thread follows the contiguous prefix. A range is marked done only after its bytes were
written, and the sidecar is saved from the done ranges, so it never claims bytes the file lacks.

Every wait can be cut short (worker.engine.stream reads the bodies): a stop shuts the
sockets of live responses down, a connection that trickles (less than `trickle_bytes` in
`trickle_window` seconds) is treated as stalled, and backoffs wait in slices that ask for
control.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any

import requests
import urllib3

from app.errors import TransientDownloadError, disk_full_as
from worker.engine.backoff import backoff_delay
from worker.engine.base import ControlFn, ProgressMeter, obey, wait_obeying
from worker.engine.disk import write_all
from worker.engine.hashing import PrefixHasher
from worker.engine.hub import HubClient, ResolvedFile, hub_error, retry_after_of
from worker.engine.ranges import RangeSet
from worker.engine.stream import BodyReader, LiveReads, broken
from worker.engine.terms import (
    Checkpoint,
    FileChanged,
    Trickle,
    Tuning,
    UrlExpired,
)

MiB = 1 << 20


class _RangesUnsupported(Exception):
    """The server ignores Range: fetch the whole file on one connection."""


class _RestartPlain(Exception):
    """A plain (unranged) GET broke off: it can only start again from byte 0."""


class Transfer:
    """Fetches the missing ranges of one file; the state its threads share lives here."""

    def __init__(
        self,
        fd: int,
        done: RangeSet,
        *,
        resolved: ResolvedFile,
        client: HubClient,
        hasher: PrefixHasher,
        meter: ProgressMeter,
        control: ControlFn | None,
        checkpoint: Checkpoint,
        tuning: Tuning,
        validator: str | None = None,
    ) -> None:
        self.fd = fd
        self.size = resolved.size
        self.done = done
        self.resolved = resolved
        self.client = client
        self.hasher = hasher
        self.meter = meter
        self.control = control
        self.checkpoint = checkpoint  # saves the sidecar with the given done ranges
        self.tuning = tuning
        self.transferred = 0  # bytes over the network in this transfer
        self._ctx: dict[str, Any] = {"repo": resolved.repo, "file": resolved.file_name}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pieces: deque[tuple[int, int]] = deque()
        self._errors: list[BaseException] = []
        # The download URL's own strong ETag, learnt from its first answer (or from the sidecar
        # on a resume): a CDN's ETag need not be the Hub's content hash, so If-Range must use
        # what that server itself sent.
        self.validator = validator
        # Responses being read now, and since when a blocking read of one has waited (None:
        # not blocked): a stop shuts their sockets down to end the reads, and a read that
        # waits longer than the trickle window is cut as a stall.
        self._reads = LiveReads()
        self._grew = threading.Event()
        # Connections still running, and a bell they ring when they end: the coordinator wakes
        # at once instead of at its next tick (a small file takes less than a tick).
        self._running = 0
        self._ended = threading.Event()

    def run(self) -> None:
        """Fetch every missing range, then return; raise what stopped it (a pause, a cancel, a
        DownloadError, StartOver) once every thread has ended."""
        t = self.tuning
        connections = self._plan()
        ranged = True
        plain_failures = 0
        while True:
            try:
                self._run_connections(connections, ranged)
                return
            except _RangesUnsupported:  # raised by ranged requests only
                ranged, connections = False, 1
            except _RestartPlain:
                plain_failures += 1
                if plain_failures > t.max_retries:
                    raise TransientDownloadError(
                        "the server does not support ranges and keeps dropping the connection",
                        attempt=plain_failures,
                        **self._ctx,
                    ) from None
                delay = backoff_delay(plain_failures + 1, base=t.backoff_base, cap=t.backoff_max)
                wait_obeying(delay, self.control, interval=t.control_interval, **self._ctx)
            # Without ranges the file comes in one piece from byte 0: nothing kept is usable.
            self._stop.clear()
            self._errors.clear()
            self.done = RangeSet()
            self._pieces = deque([(0, self.size)])
            self.hasher.reset()

    def _plan(self) -> int:
        """Cut the missing ranges into pieces; returns how many connections to run."""
        t = self.tuning
        gaps = self.done.missing(self.size)
        remaining = sum(e - s for s, e in gaps)
        n = 1 if remaining < 2 * t.min_split else min(t.connections, remaining // t.min_split)
        piece = min(t.max_piece, max(t.min_split, remaining // max(1, n * 4)))
        for s, e in gaps:
            for start in range(s, e, piece):
                self._pieces.append((start, min(e, start + piece)))
        return n

    # --- the coordinator ----------------------------------------------------------------------

    def _run_connections(self, n: int, ranged: bool) -> None:
        threads = [
            threading.Thread(
                target=self._connection, args=(ranged,), name=f"modelpull-conn-{i}", daemon=True
            )
            for i in range(n if self._pieces else 0)
        ]
        self._running = len(threads)
        for thread in threads:
            thread.start()
        # Hashing runs beside the transfer (hashlib and pread release the GIL), so at the
        # end only the stretch after the last contiguous piece is left to read.
        finished = threading.Event()
        follower = threading.Thread(
            target=self._follow, args=(finished,), name="modelpull-hash", daemon=True
        )
        follower.start()
        try:
            self._coordinate()
        finally:
            self._stop.set()
            finished.set()
            self._grew.set()  # the hasher is told at once, not at its next tick
            self._reads.shut_all()
            # Each connection writes through its own descriptor, so one still blocked in the
            # network after the grace (a server that never answers) can be left behind safely.
            deadline = time.monotonic() + self.tuning.stop_grace
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            follower.join()
        if self._errors:
            raise self._errors[0]
        if not self.done.covers(self.size):
            raise TransientDownloadError("the transfer ended with ranges missing", **self._ctx)

    def _coordinate(self) -> None:
        """Until the connections end: obey pause and cancel, save the sidecar, report."""
        t = self.tuning
        last_save = last_control = time.monotonic()
        while self._running > 0:
            self._ended.wait(0.05)
            self._ended.clear()
            if self._errors or self._stop.is_set():
                return
            now = time.monotonic()
            if self.control is not None and now - last_control >= t.control_interval:
                last_control = now
                obey(self.control(), **self._ctx)
            with self._lock:
                total = self.done.total
                snapshot = tuple(self.done)
            if now - last_save >= t.sidecar_interval:
                last_save = now
                self.checkpoint(snapshot, self.validator)
            self.meter.update(total, self.size)
            self._reads.cut_slower_than(self.tuning.trickle_window, now)

    def _follow(self, finished: threading.Event) -> None:
        try:
            self.hasher.follow(self._prefix_end, self._grew, finished)
        except BaseException as exc:
            self._fail(exc)

    # --- state shared with the threads --------------------------------------------------------

    def _prefix_end(self) -> int:
        with self._lock:
            return self.done.prefix_end()

    def _mark(self, start: int, end: int) -> None:
        with self._lock:
            self.done.add(start, end)
            self.transferred += end - start
        self._grew.set()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)
        self._stop.set()
        self._ended.set()

    # --- one connection -----------------------------------------------------------------------

    def _connection(self, ranged: bool) -> None:
        fd = os.dup(self.fd)  # closed by this thread, whenever it ends
        try:
            with requests.Session() as session:
                while not self._stop.is_set():
                    with self._lock:
                        piece = self._pieces.popleft() if self._pieces else None
                    if piece is None:
                        return
                    self._fetch_piece(session, fd, piece, ranged)
        except BaseException as exc:
            if not self._stop.is_set():
                self._fail(exc)
        finally:
            os.close(fd)
            with self._lock:
                self._running -= 1
            self._ended.set()

    def _fetch_piece(
        self, session: requests.Session, fd: int, piece: tuple[int, int], ranged: bool
    ) -> None:
        t = self.tuning
        pos, end = piece
        failures = 0
        while pos < end and not self._stop.is_set():
            new_pos, err = self._stream(session, fd, pos, end, ranged)
            progressed, pos = new_pos > pos, new_pos
            if err is None or self._stop.is_set():
                continue
            if not ranged:
                raise _RestartPlain() from None
            # A connection that delivered bytes before failing (a stall, a reset) is
            # reconnected at once without using up its retries; only fruitless tries count,
            # and a trickle, which always brings a little, counts too.
            failures = 0 if progressed and not isinstance(err, Trickle) else failures + 1
            if failures > t.max_retries:
                err.attempt = failures
                raise err
            if not failures:
                continue
            delay = backoff_delay(
                failures, base=t.backoff_base, cap=t.backoff_max, retry_after=retry_after_of(err)
            )
            if self._stop.wait(delay):
                return

    def _stream(
        self, session: requests.Session, fd: int, pos: int, end: int, ranged: bool
    ) -> tuple[int, TransientDownloadError | None]:
        """GET [pos, end) and write it at its offset; returns the new position and the
        transient error that cut it short, if any. Other errors are raised."""
        url = self.resolved.url
        headers = self.client.headers_for(url)
        if ranged:
            headers["Range"] = f"bytes={pos}-{end - 1}"
            if self.validator:
                headers["If-Range"] = self.validator
        try:
            with session.get(
                url,
                headers=headers,
                stream=True,
                timeout=self.tuning.timeout,
                allow_redirects=False,
            ) as resp:
                self._check_response(resp, pos, ranged)
                reader = BodyReader(self.tuning, self._stop, self._reads, self._ctx)
                return reader.read(
                    resp.raw, pos, end, lambda pending, at: self._flush(fd, pending, at)
                )
        except TransientDownloadError as exc:
            return pos, exc
        except requests.RequestException as exc:
            return pos, broken(exc, self._ctx)
        except urllib3.exceptions.HTTPError as exc:
            return pos, broken(exc, self._ctx)

    def _flush(self, fd: int, pending: list[bytes], pos: int) -> int:
        """Write the pending pieces at `pos`, mark them done and empty the list; returns the
        new position. Written even after a stop: these bytes arrived, checked, and a resume
        keeps them."""
        if not pending:
            return pos
        size = sum(len(p) for p in pending)
        with disk_full_as(
            "the disk filled up while downloading; free space and resume", **self._ctx
        ):
            write_all(fd, pending, pos)
        self._mark(pos, pos + size)
        pending.clear()
        return pos + size

    def _check_response(self, resp: requests.Response, pos: int, ranged: bool) -> None:
        """Raise unless the answer carries the bytes asked for, from the same file."""
        status = resp.status_code
        if status in (200, 206):
            served = resp.headers.get("ETag", "")
            known = self.validator
            if known and served and served != known:
                raise FileChanged()  # the URL now serves other bytes than we have
            with self._lock:
                if self.validator is None and served and not served.startswith("W/"):
                    self.validator = served
        if status == 206 and ranged:
            if not resp.headers.get("Content-Range", "").startswith(f"bytes {pos}-"):
                raise _RangesUnsupported()
            return
        if status == 200:
            if ranged:
                raise _RangesUnsupported()  # the server ignored Range
            return
        if status == 416:
            raise FileChanged()  # the server thinks the file is shorter than we do
        if status in (401, 403, 404, 410) and resp.headers.get("X-Error-Code") is None:
            raise UrlExpired()  # a signed CDN URL past its expiry
        raise hub_error(
            resp,
            repo=self.resolved.repo,
            file=self.resolved.file_name,
            revision=self.resolved.revision,
            has_token="Authorization" in self.client.headers_for(self.resolved.url),
        )
