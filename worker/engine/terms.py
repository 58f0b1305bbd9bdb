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

    # A fixed number of connections per file, or None: adapt to the server (worker.engine.adapt)
    # from `start_connections` up to `max_connections`.
    connections: int | None = None
    max_connections: int = 32
    start_connections: int = 4
    # Connections this process opens to one host, over all its files at once.
    host_connections: int = 64
    # Bytes read from a socket into a connection's buffer before they are written: small
    # enough that the buffer stays in the CPU's cache between the read and the write (on the
    # bench's machine 256 KiB beat 1 and 4 MiB; bench/results/throughput.md).
    chunk_size: int = 256 * 1024
    # The file is fetched in pieces of this size, handed out in order: the hasher, which
    # follows the contiguous prefix, trails the furthest byte by about a piece per connection.
    min_split: int = 8 * MiB
    # Connections wait before a new piece while the hasher has more than this much of the
    # contiguous prefix still to read: the sha256 keeps pace, and little is left at the end.
    hash_lag: int = 64 * MiB
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
