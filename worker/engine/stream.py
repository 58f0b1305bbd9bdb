"""Reading one response body into the partial file, at any speed, and cutting it short.

A fast connection reads a chunk at a time (the cheapest way); a slow one reads what has
arrived (never waiting for a whole chunk), so its progress shows and a trickle is noticed.
Every read can be ended from another thread: a stop shuts the sockets of live responses
down, and a blocking read that has waited longer than the trickle window is cut as a stall.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3

from app.errors import TransientDownloadError
from worker.engine.pieces import Piece
from worker.engine.terms import Trickle, Tuning

# Writes a stretch of bytes at a position, marks it done; returns the new position.
Flush = Callable[[memoryview, int], int]


class LiveReads:
    """The responses being read now, and since when a blocking read of each has waited."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[Any, float | None] = {}

    def add(self, raw: Any) -> None:
        with self._lock:
            self._since[raw] = None

    def remove(self, raw: Any) -> None:
        with self._lock:
            self._since.pop(raw, None)

    def blocking(self, raw: Any, since: float | None) -> None:
        """Mark a blocking read of `raw` as begun (`since`) or over (None)."""
        with self._lock:
            if raw in self._since:
                self._since[raw] = since

    def shut_all(self) -> None:
        """Shut the sockets of every live response, so blocked reads return now."""
        with self._lock:
            live = list(self._since)
        _shut(live)

    def cut_slower_than(self, window: float, now: float) -> None:
        """Shut the socket of each blocking read that has waited longer than `window`."""
        with self._lock:
            slow = [raw for raw, since in self._since.items() if since and now - since > window]
        _shut(slow)


def _shut(raws: list[Any]) -> None:
    for raw in raws:
        with contextlib.suppress(Exception):
            raw.shutdown()


def broken(
    exc: Exception, ctx: dict[str, Any], *, waited: float = 0.0, window: float = float("inf")
) -> TransientDownloadError:
    """The error for a connection that failed; a read cut after a whole silent window is a
    stall (a trickle of nothing)."""
    if waited >= window:
        return Trickle(f"the connection brought nothing in {waited:.0f} s", **ctx)
    return TransientDownloadError(f"connection failed: {type(exc).__name__}", **ctx)


class BodyReader:
    """Reads one body into the piece's bytes [pos, piece.end) through one reused buffer and
    hands each filled stretch to `flush`: the bytes are copied once from the socket into the
    buffer and once into the file, with no new object per chunk."""

    def __init__(
        self,
        tuning: Tuning,
        stop: threading.Event,
        live: LiveReads,
        ctx: dict[str, Any],
        buffer: memoryview,
    ) -> None:
        self.t = tuning
        self.stop = stop
        self.live = live
        self.ctx = ctx
        self.buffer = buffer
        # Whether this connection is fast: kept from one body to the next, so a fast
        # connection does not begin every piece with small reads.
        self.fast = False

    def read(
        self, raw: Any, pos: int, piece: Piece, flush: Flush
    ) -> tuple[int, TransientDownloadError | None]:
        """Returns the new position and the transient error that cut the body short, if any.
        Bytes that arrived before an error are flushed and count. `piece.end` may shrink
        while this reads (a steal); the read stops there."""
        t, buf = self.t, self.buffer
        body = _body_of(raw)
        filled = 0  # bytes in the buffer, not yet written
        window_start, window_pos = time.monotonic(), pos
        last_flush, fast = window_start, self.fast
        self.live.add(raw)
        try:
            while pos + filled < piece.end and not self.stop.is_set():
                want = min(len(buf) - filled, piece.end - pos - filled)
                piece.reach = pos + filled + want  # a steal leaves this much to this read
                try:
                    n = self._read(raw, body, buf[filled : filled + want], fast)
                except (
                    requests.RequestException,
                    urllib3.exceptions.HTTPError,
                    http.client.HTTPException,  # a chunked body cut short, read directly
                    OSError,
                ) as exc:
                    waited = time.monotonic() - window_start
                    return flush(buf[:filled], pos), broken(
                        exc, self.ctx, waited=waited, window=t.trickle_window
                    )
                if not n:
                    break
                filled += n
                now = time.monotonic()
                if filled == len(buf) or now - last_flush >= t.flush_interval:
                    # Fast: a buffer fills within a flush interval, so blocking reads of a
                    # whole buffer still report often, and cost the least.
                    fast = filled / max(now - last_flush, 1e-6) * t.flush_interval >= len(buf)
                    self.fast = fast
                    pos, filled, last_flush = flush(buf[:filled], pos), 0, now
                if now - window_start >= t.trickle_window:
                    got = pos + filled - window_pos
                    if got < t.trickle_bytes:
                        return flush(buf[:filled], pos), Trickle(
                            f"the connection brought only {got} bytes in "
                            f"{now - window_start:.0f} s",
                            **self.ctx,
                        )
                    window_start, window_pos = now, pos + filled
        finally:
            self.live.remove(raw)
        pos = flush(buf[:filled], pos)
        if pos < piece.end and not self.stop.is_set():
            return pos, TransientDownloadError("the connection closed early", **self.ctx)
        return pos, None

    def _read(self, raw: Any, body: Any, into: memoryview, fast: bool) -> int:
        if not fast:
            # What has arrived, up to the room there is: a slow body shows its progress.
            data = body.read1(len(into)) if body is not None else raw.read1(len(into))
            into[: len(data)] = data
            return len(data)
        self.live.blocking(raw, time.monotonic())  # the coordinator may cut this read
        try:
            if body is not None:
                return int(body.readinto(into))
            data = raw.read(len(into), decode_content=False)
            into[: len(data)] = data
            return len(data)
        finally:
            self.live.blocking(raw, None)


def _body_of(raw: Any) -> http.client.HTTPResponse | None:
    """The http.client response under urllib3's, read directly: it fills a caller's buffer
    from the socket (urllib3's read makes a new bytes object each time). None when the body
    is encoded (we ask for identity; a server may not listen) or the layout is unknown."""
    body = getattr(raw, "_fp", None)
    encoded = raw.headers.get("Content-Encoding", "identity").lower() not in ("", "identity")
    return body if isinstance(body, http.client.HTTPResponse) and not encoded else None


def release(raw: Any) -> None:
    """Give the connection back to its pool when the body was read to its very end, so the
    next piece reuses it (no new handshake, no new slow start); otherwise it is closed."""
    body = _body_of(raw)
    if body is not None and body.isclosed():
        with contextlib.suppress(Exception):
            raw.release_conn()
