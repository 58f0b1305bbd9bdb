"""How many connections one file runs: a fixed count, or one that adapts to the server.

Adaptive: a file starts with a few connections and doubles them while the aggregate rate grows
(a CDN that caps each connection rewards more of them), up to a ceiling. When a step brings less
than `GAIN` more, the added connections are dropped and the count holds; it probes again a
while later, since a link changes. When the connections had to wait for the hasher during a
step, the machine, not the network, is the limit: the count holds there, since more
connections would only wait too. A 429 or 503 from the download server halves the count and
lowers the ceiling for the rest of the transfer. Every count also fits a per-host limit shared
by all the transfers of this process.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

GAIN = 1.15  # a step must bring 15 % more to be kept
SETTLE_S = 0.1  # new connections get this long to reach speed before the rate is measured
WINDOW_S = 0.25  # the rate a step is judged by is measured over this long
REPROBE_S = 10.0  # a settled count tries one more step after this long
THROTTLE_QUIET_S = 1.0  # refusals within this long of a halving are part of it


class HostSlots:
    """Connections open to each host by this process's transfers, within a limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[str, int] = {}

    def take(self, host: str, want: int, limit: int) -> int:
        """Take up to `want` slots for `host`; returns how many were granted (maybe 0)."""
        with self._lock:
            used = self._used.get(host, 0)
            got = max(0, min(want, limit - used))
            self._used[host] = used + got
            return got

    def give(self, host: str, n: int = 1) -> None:
        """Return `n` slots of `host`."""
        with self._lock:
            left = self._used.get(host, 0) - n
            if left > 0:
                self._used[host] = left
            else:
                self._used.pop(host, None)

    def used(self, host: str) -> int:
        """Slots of `host` in use now."""
        with self._lock:
            return self._used.get(host, 0)


HOSTS = HostSlots()  # one per process: every transfer of a worker process shares it


class ConnectionPlan:
    """The number of connections a transfer should run now."""

    def __init__(
        self,
        *,
        fixed: int | None,
        start: int,
        ceiling: int,
        remaining: int,
        piece_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # More connections than pieces would only idle.
        by_size = max(1, math.ceil(remaining / max(1, piece_size)))
        self.adaptive = fixed is None
        self.ceiling = max(1, min(ceiling if fixed is None else fixed, by_size))
        self.target = self.ceiling if fixed is not None else max(1, min(start, self.ceiling))
        self.most = 0  # the most connections that ran at once, for the record
        self._clock = clock
        self._kept = self.target  # the count to return to when a step does not pay
        self._best = 0.0  # bytes/s at the kept count
        # (time, bytes, hasher waits) the window started at
        self._mark: tuple[float, int, int] | None = None
        self._changed = clock()
        self._settled_at: float | None = None
        self._throttled_at = float("-inf")
        # observe() runs on the coordinator, throttled() on connection threads.
        self._lock = threading.Lock()

    def observe(self, transferred: int, waits: int = 0) -> int:
        """Feed the bytes fetched so far and how often connections have waited for the hasher
        so far; returns the count to run now."""
        if not self.adaptive:
            return self.target
        with self._lock:
            return self._observe(transferred, waits)

    def _observe(self, transferred: int, waits: int) -> int:
        now = self._clock()
        if self._settled_at is not None:
            if now - self._settled_at >= REPROBE_S and self.target < self.ceiling:
                self._step(now, max(self.target + 1, self.target * 3 // 2))
            return self.target
        if now - self._changed < SETTLE_S:
            return self.target
        if self._mark is None:
            self._mark = (now, transferred, waits)
            return self.target
        t0, b0, w0 = self._mark
        if now - t0 < WINDOW_S:
            return self.target
        self._judge(now, (transferred - b0) / (now - t0), hash_bound=waits > w0)
        return self.target

    def _judge(self, now: float, rate: float, *, hash_bound: bool) -> None:
        if self.target == self._kept or rate >= self._best * GAIN:
            self._kept, self._best = self.target, rate  # the step paid (or the first count)
            if self.target < self.ceiling and not hash_bound:
                self._step(now, self.target * 2)
                return
        else:
            self.target = self._kept  # more connections did not help: drop the added ones
        self._settled_at, self._mark = now, None

    def _step(self, now: float, to: int) -> None:
        self.target = min(self.ceiling, to)
        self._changed, self._mark, self._settled_at = now, None, None

    def throttled(self) -> None:
        """The server answered 429 or 503: run half as many, and never more than that. The
        connections that meet the same refusal at once count as one."""
        with self._lock:
            self._throttle()

    def _throttle(self) -> None:
        now = self._clock()
        if now - self._throttled_at < THROTTLE_QUIET_S:
            return
        self._throttled_at = now
        self.target = self._kept = max(1, self.target // 2)
        self.ceiling = min(self.ceiling, self.target)
        self._settled_at, self._mark = now, None

    def ran(self, running: int) -> None:
        """Record how many ran at once."""
        self.most = max(self.most, running)
