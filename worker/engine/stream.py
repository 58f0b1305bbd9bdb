"""Reading one response body into the partial file, at any speed, and cutting it short.

A fast connection reads a chunk at a time (the cheapest way); a slow one reads what has
arrived (never waiting for a whole chunk), so its progress shows and a trickle is noticed.
Every read can be ended from another thread: a stop shuts the sockets of live responses
down, and a blocking read that has waited longer than the trickle window is cut as a stall.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3

from app.errors import TransientDownloadError
from worker.engine.terms import Trickle, Tuning

# Writes pending pieces at a position, marks them done; returns the new position.
Flush = Callable[[list[bytes], int], int]


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
    """Reads one body [pos, end) and hands it to `flush` in chunk-sized runs."""

    def __init__(
        self, tuning: Tuning, stop: threading.Event, live: LiveReads, ctx: dict[str, Any]
    ) -> None:
        self.t = tuning
        self.stop = stop
        self.live = live
        self.ctx = ctx

    def read(
        self, raw: Any, pos: int, end: int, flush: Flush
    ) -> tuple[int, TransientDownloadError | None]:
        """Returns the new position and the transient error that cut the body short, if any.
        Bytes that arrived before an error are flushed and count."""
        t = self.t
        pending: list[bytes] = []
        size = 0  # bytes pending
        window_start, window_pos = time.monotonic(), pos
        last_flush, fast = window_start, False
        self.live.add(raw)
        try:
            while pos + size < end and not self.stop.is_set():
                want = min(t.chunk_size, end - pos - size)
                try:
                    data = self._read(raw, want, fast)
                except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                    waited = time.monotonic() - window_start
                    return flush(pending, pos), broken(
                        exc, self.ctx, waited=waited, window=t.trickle_window
                    )
                if not data:
                    break
                pending.append(data)
                size += len(data)
                now = time.monotonic()
                if size >= t.chunk_size or now - last_flush >= t.flush_interval:
                    # Fast: a chunk comes within a flush interval, so blocking reads of a
                    # whole chunk still report often, and cost the least.
                    fast = size / max(now - last_flush, 1e-6) * t.flush_interval >= t.chunk_size
                    pos, size, last_flush = flush(pending, pos), 0, now
                if now - window_start >= t.trickle_window:
                    got = pos + size - window_pos
                    if got < t.trickle_bytes:
                        return flush(pending, pos), Trickle(
                            f"the connection brought only {got} bytes in "
                            f"{now - window_start:.0f} s",
                            **self.ctx,
                        )
                    window_start, window_pos = now, pos + size
        finally:
            self.live.remove(raw)
        pos = flush(pending, pos)
        if pos < end and not self.stop.is_set():
            return pos, TransientDownloadError("the connection closed early", **self.ctx)
        return pos, None

    def _read(self, raw: Any, want: int, fast: bool) -> bytes:
        if not fast:
            return bytes(raw.read1(want, decode_content=False))
        self.live.blocking(raw, time.monotonic())  # the coordinator may cut this read
        try:
            return bytes(raw.read(want, decode_content=False))
        finally:
            self.live.blocking(raw, None)
