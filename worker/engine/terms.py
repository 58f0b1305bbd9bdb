"""The terms a transfer works under: how it splits a file, times out, retries and checks in
(its tuning), how it saves what it has done, and the ways it ends short of the whole file."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from app.errors import TransientDownloadError

MiB = 1 << 20


@dataclass(frozen=True)
class Tuning:
    """How a transfer splits the file, times out and retries, and how often it checks in."""

    connections: int = 8
    chunk_size: int = 1 * MiB
    min_split: int = 8 * MiB
    max_piece: int = 256 * MiB
    timeout: tuple[float, float] = (10.0, 30.0)  # (connect, stall) seconds
    max_retries: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # A crash loses at most this long of bytes: what was written since the last save.
    sidecar_interval: float = 0.25
    control_interval: float = 0.25
    # A connection that brings less than this many bytes in this many seconds is stalled.
    trickle_bytes: int = 32 * 1024
    trickle_window: float = 30.0
    # Written bytes are flushed to the file at least this often, so progress shows the truth.
    flush_interval: float = 0.25
    # After a stop, how long to wait for connection threads before leaving them behind.
    stop_grace: float = 1.0


# Saves the sidecar: the done ranges, and the download URL's validator if it sent one.
Checkpoint = Callable[[Iterable[tuple[int, int]], str | None], None]


class StartOver(Exception):
    """What was resolved no longer fits: resolve the file again and start a new attempt."""


class FileChanged(StartOver):
    """The Hub serves different bytes than the partial holds: discard it, start over."""


class UrlExpired(StartOver):
    """The CDN refused a signed URL that worked before: resolve again, keep the partial."""


class Trickle(TransientDownloadError):
    """A connection delivered less than the minimum over the window: as good as stalled."""

    # An attempt that ends in a trickle does not count as moving the file on.
    trickle = True
