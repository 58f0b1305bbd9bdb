"""One transfer of a file's missing byte ranges into its open partial file.

Connection threads take pieces in file order (worker.engine.pieces) and write each buffer at
its offset; a coordinator on the calling thread checks for pause and cancel, saves the sidecar,
reports progress and runs as many connections as the plan says (worker.engine.adapt); a
hashing thread follows the contiguous prefix and starts its writeback. A range is marked done
only after its bytes were written, and the sidecar is saved from the done ranges, so it never
claims bytes the file lacks.

Every wait can be cut short: a stop shuts live responses' sockets down (worker.engine.stream),
a trickle (under `trickle_bytes` in `trickle_window` s) is a stall, backoffs wait in slices.
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from app.errors import TransientDownloadError, disk_full_as
from worker.engine.adapt import HOSTS, ConnectionPlan
from worker.engine.answer import RangesUnsupported, RestartPlain, check_answer
from worker.engine.backoff import backoff_delay
from worker.engine.base import ControlFn, ProgressMeter, obey, wait_obeying
from worker.engine.disk import write_all
from worker.engine.hashing import PrefixHasher
from worker.engine.hub import HubClient, ResolvedFile, retry_after_of
from worker.engine.pieces import Piece, PieceQueue
from worker.engine.ranges import RangeSet
from worker.engine.stream import BodyReader, LiveReads, broken, release
from worker.engine.terms import Checkpoint, Trickle, Tuning


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
        self.last_byte_at: float | None = None  # monotonic time the last byte was written
        self._ctx: dict[str, Any] = {"repo": resolved.repo, "file": resolved.file_name}
        self._host = urlsplit(resolved.url).netloc.lower()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        gaps = done.missing(self.size)
        self._kept_prefix = done.prefix_end()  # what a resume starts with
        self._pieces = PieceQueue(gaps, tuning.min_split, margin=tuning.chunk_size)
        self.plan = ConnectionPlan(
            fixed=tuning.connections,
            start=tuning.start_connections,
            ceiling=tuning.max_connections,
            remaining=sum(e - s for s, e in gaps),
            piece_size=tuning.min_split,
        )
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
        self._pace = threading.Condition()  # notified as the hasher advances
        self._waits = 0  # times a connection waited for the hasher before a new piece
        # Connections running, how many of them should end at their next piece, and a bell
        # they ring when they end: the coordinator wakes at once instead of at its next tick.
        self._running = 0
        self._retire = 0
        self._threads: list[threading.Thread] = []
        self._ended = threading.Event()

    def run(self) -> None:
        """Fetch every missing range, then return; raise what stopped it (a pause, a cancel, a
        DownloadError, StartOver) once every thread has ended."""
        t = self.tuning
        ranged = True
        plain_failures = 0
        while True:
            try:
                self._run_connections(ranged)
                return
            except RangesUnsupported:  # raised by ranged requests only
                ranged = False
                self.plan = ConnectionPlan(
                    fixed=1, start=1, ceiling=1, remaining=self.size, piece_size=self.size
                )
            except RestartPlain:
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
            self._pieces.reset(self.size)
            self.hasher.reset()

    # --- the coordinator ----------------------------------------------------------------------

    def _run_connections(self, ranged: bool) -> None:
        self._threads = []
        # Hashing runs beside the transfer (hashlib and pread release the GIL), so at the
        # end only the stretch after the last contiguous piece is left to read.
        finished = threading.Event()
        follower = threading.Thread(
            target=self._follow, args=(finished,), name="modelpull-hash", daemon=True
        )
        follower.start()
        try:
            self._coordinate(ranged)
        finally:
            self._stop.set()
            finished.set()
            self._grew.set()  # the hasher is told at once, not at its next tick
            self._reads.shut_all()
            # Each connection writes through its own descriptor, so one still blocked in the
            # network after the grace (a server that never answers) can be left behind safely.
            deadline = time.monotonic() + self.tuning.stop_grace
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            follower.join()
        if self._errors:
            raise self._errors[0]
        if not self.done.covers(self.size):
            raise TransientDownloadError("the transfer ended with ranges missing", **self._ctx)

    def _coordinate(self, ranged: bool) -> None:
        """Until every piece is fetched: run the planned number of connections, obey pause and
        cancel, save the sidecar, report."""
        t = self.tuning
        last_save = last_control = time.monotonic()
        while True:
            with self._lock:
                transferred, running = self.transferred, self._running
            if running == 0 and not len(self._pieces):
                return  # every piece fetched (or given up with an error, raised above)
            self._staff(self.plan.observe(transferred, self._waits), running, ranged)
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
            self.meter.update(total, self.size, connections=self.plan.target)
            self._reads.cut_slower_than(self.tuning.trickle_window, now)

    def _staff(self, target: int, running: int, ranged: bool) -> None:
        """Start or retire connections so `target` run (new ones only while pieces are left,
        and only as many as the per-host limit grants)."""
        with self._lock:
            self._retire = max(0, running - target)
        if running >= target or not len(self._pieces):
            return
        granted = HOSTS.take(self._host, target - running, self.tuning.host_connections)
        for i in range(granted):
            thread = threading.Thread(
                target=self._connection,
                args=(ranged,),
                name=f"modelpull-conn-{len(self._threads)}",
                daemon=True,
            )
            with self._lock:
                self._running += 1
            try:
                thread.start()
            except RuntimeError:  # no more threads to be had: run with what there is
                with self._lock:
                    self._running -= 1
                HOSTS.give(self._host, granted - i)
                if not self._running:
                    self._fail(TransientDownloadError("cannot start a connection", **self._ctx))
                break
            self._threads.append(thread)
        self.plan.ran(self._running)

    def _follow(self, finished: threading.Event) -> None:
        try:
            self.hasher.follow(self._prefix_end, self._grew, finished, self._hashed)
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
        self.last_byte_at = time.monotonic()
        self._grew.set()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)
        self._stop.set()
        self._ended.set()

    def _hashed(self) -> None:
        with self._pace:
            self._pace.notify_all()

    def _keep_pace(self) -> None:
        """Wait while the hasher is more than `hash_lag` behind the contiguous prefix: on a
        busy machine fetching faster than hashing only moves the work to the end."""
        lag = self.tuning.hash_lag
        with self._pace:
            if self._behind() > lag:
                self._waits += 1
            while not self._stop.is_set() and self._behind() > lag:
                self._pace.wait(0.05)

    def _behind(self) -> int:
        """Bytes of the prefix the hasher has yet to read, not counting a resumed prefix it is
        still re-reading: a resume must not idle the network while its kept bytes are hashed."""
        pos = self.hasher.pos
        return 0 if pos < self._kept_prefix else self._prefix_end() - pos

    def _retiring(self) -> bool:
        """Whether this connection should end now (the plan wants fewer)."""
        with self._lock:
            if self._retire > 0:
                self._retire -= 1
                return True
            return False

    # --- one connection -----------------------------------------------------------------------

    def _connection(self, ranged: bool) -> None:
        fd = -1  # its own descriptor, closed by this thread whenever it ends
        try:
            fd = os.dup(self.fd)
            # One reader and its buffer per connection, reused for every read of every piece.
            buffer = memoryview(bytearray(self.tuning.chunk_size))
            reader = BodyReader(self.tuning, self._stop, self._reads, self._ctx, buffer)
            with requests.Session() as session:
                while not self._stop.is_set() and not self._retiring():
                    self._keep_pace()
                    piece = self._pieces.take()
                    if piece is None:
                        return
                    if self._fetch_piece(session, fd, reader, piece, ranged):
                        return  # retired after the server asked for fewer connections
        except BaseException as exc:
            if not self._stop.is_set():
                self._fail(exc)
        finally:
            if fd >= 0:
                os.close(fd)
            HOSTS.give(self._host)
            with self._lock:
                self._running -= 1
            self._ended.set()

    def _fetch_piece(
        self,
        session: requests.Session,
        fd: int,
        reader: BodyReader,
        piece: Piece,
        ranged: bool,
    ) -> bool:
        """Fetch the piece, retrying what can be retried; True when this connection gave the
        rest of it back and should end (the server asked for fewer connections)."""
        t = self.tuning
        pos = piece.start
        failures = 0
        while pos < piece.end and not self._stop.is_set():
            new_pos, err = self._stream(session, fd, reader, pos, piece, ranged)
            progressed, pos = new_pos > pos, new_pos
            if err is None or self._stop.is_set():
                continue
            if not ranged:
                raise RestartPlain() from None
            if err.status in (429, 503):
                self.plan.throttled()  # the server wants fewer connections
                with self._lock:
                    self._retire = max(0, self._running - self.plan.target)
                if self._retiring():
                    self._pieces.put_back(piece, pos)
                    return True
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
                return False
        self._pieces.finished(piece)
        return False

    def _stream(
        self,
        session: requests.Session,
        fd: int,
        reader: BodyReader,
        pos: int,
        piece: Piece,
        ranged: bool,
    ) -> tuple[int, TransientDownloadError | None]:
        """GET [pos, piece.end) and write it at its offset; returns the new position and the
        transient error that cut it short, if any. Other errors are raised."""
        url = self.resolved.url
        headers = self.client.headers_for(url)
        if ranged:
            headers["Range"] = f"bytes={pos}-{piece.end - 1}"
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
                result = reader.read(
                    resp.raw, pos, piece, lambda data, at: self._flush(fd, data, at)
                )
                release(resp.raw)  # a body read to its end leaves the connection reusable
                return result
        except TransientDownloadError as exc:
            return pos, exc
        except requests.RequestException as exc:
            return pos, broken(exc, self._ctx)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
            return pos, broken(exc, self._ctx)

    def _flush(self, fd: int, data: memoryview, pos: int) -> int:
        """Write `data` at `pos` and mark it done; returns the new position. Written even after
        a stop: these bytes arrived, checked, and a resume keeps them."""
        if not data:
            return pos
        with disk_full_as(
            "the disk filled up while downloading; free space and resume", **self._ctx
        ):
            write_all(fd, [data], pos)
        self._mark(pos, pos + len(data))
        return pos + len(data)

    def _check_response(self, resp: requests.Response, pos: int, ranged: bool) -> None:
        """Raise unless the answer carries the bytes asked for, from the same file."""
        with self._lock:
            self.validator = check_answer(
                resp, pos, ranged, self.validator, self.resolved, self.client.headers_for
            )
