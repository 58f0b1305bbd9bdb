"""What every engine takes and returns, and the progress meter they share."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from app import storage
from app.errors import UnsafePathError


class Control(StrEnum):
    """What a user asked a running download to do."""

    PAUSE = "pause"
    CANCEL = "cancel"


ControlFn = Callable[[], Control | None]


@dataclass(frozen=True)
class Progress:
    """A progress report: bytes on disk, total, smoothed speed (bytes/s) and ETA (s)."""

    bytes_done: int
    total: int | None
    speed: float
    eta: float | None
    status: str = "downloading"

    @property
    def percent(self) -> float:
        """0 to 100, or 0 while the total is unknown."""
        return 100.0 * self.bytes_done / self.total if self.total else 0.0


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True)
class DownloadRequest:
    """One file to fetch into MODELS_DIR/dest. The token lives only in memory."""

    repo: str
    file_name: str
    dest: str
    models_dir: Path
    endpoint: str
    revision: str = "main"
    token: str | None = field(default=None, repr=False)
    sha256: str | None = None  # pinned by the catalog, checked against the Hub's
    size: int | None = None


@dataclass(frozen=True)
class DownloadResult:
    """A verified file at its destination."""

    path: Path
    size: int
    sha256: str | None
    etag: str
    commit: str
    bytes_transferred: int  # over the network in this run (resumes make it smaller)
    resumed_from: int  # bytes already on disk when this run started
    stderr: str = ""


def safe_dest(request: DownloadRequest) -> Path:
    """The request's destination, refusing a file name or dest that would leave MODELS_DIR."""
    try:
        storage.check_relative_path(request.file_name)
        return storage.dest_path(request.models_dir, request.dest)
    except ValueError as exc:
        raise UnsafePathError(
            f"refused: {exc}", repo=request.repo, file=request.file_name
        ) from None


class Engine(Protocol):
    """Fetches one file, verified, into its destination."""

    name: str

    def download(
        self,
        request: DownloadRequest,
        *,
        progress: ProgressFn | None = None,
        control: ControlFn | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> DownloadResult:
        """Download, verify and atomically place the file; raise a DownloadError if not."""
        ...


class ProgressMeter:
    """Throttles progress reports and smooths speed over a sliding window."""

    def __init__(
        self,
        callback: ProgressFn | None,
        *,
        interval: float = 0.25,
        window: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._callback = callback
        self._interval = interval
        self._window = window
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()
        self._last_emit = float("-inf")

    def speed(self, bytes_done: int) -> float:
        """Bytes per second over the recent window."""
        now = self._clock()
        self._samples.append((now, bytes_done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window:
            self._samples.popleft()
        t0, b0 = self._samples[0]
        return (bytes_done - b0) / (now - t0) if now > t0 else 0.0

    def update(
        self,
        bytes_done: int,
        total: int | None,
        *,
        status: str = "downloading",
        force: bool = False,
    ) -> Progress | None:
        """Report if the interval has passed (or `force`); returns what was reported."""
        speed = self.speed(bytes_done)
        now = self._clock()
        if not force and now - self._last_emit < self._interval:
            return None
        self._last_emit = now
        eta = (total - bytes_done) / speed if total is not None and speed > 0 else None
        report = Progress(bytes_done, total, speed, eta, status)
        if self._callback is not None:
            self._callback(report)
        return report
