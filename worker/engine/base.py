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
from app.errors import CancelledError, PausedError, UnsafePathError


class Control(StrEnum):
    """What a user asked a running download to do."""

    PAUSE = "pause"
    CANCEL = "cancel"


ControlFn = Callable[[], Control | None]


def obey(wanted: Control | None, *, repo: str | None = None, file: str | None = None) -> None:
    """Raise what a control answer asks for: PausedError, CancelledError, or nothing."""
    if wanted is Control.PAUSE:
        raise PausedError("paused", repo=repo, file=file)
    if wanted is Control.CANCEL:
        raise CancelledError("cancelled", repo=repo, file=file)


def wait_obeying(
    seconds: float,
    control: ControlFn | None,
    *,
    interval: float = 0.25,
    repo: str | None = None,
    file: str | None = None,
) -> None:
    """Sleep `seconds` (a backoff, a server's Retry-After), asking `control` every `interval`:
    a pause, a cancel or a worker's shutdown ends the wait at once."""
    deadline = time.monotonic() + seconds
    while True:
        if control is not None:
            obey(control(), repo=repo, file=file)
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, max(0.01, interval)))


@dataclass(frozen=True)
class Progress:
    """A progress report: bytes on disk, total, smoothed speed (bytes/s) and ETA (s)."""

    bytes_done: int
    total: int | None
    speed: float
    eta: float | None
    status: str = "downloading"
    connections: int | None = None  # running now, for engines that run several

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
class Identity:
    """What the Hub says a file is at a revision: the commit it resolved to, the etag, size
    and content hash. Never the download URL (it is signed) nor the token."""

    commit: str
    etag: str
    size: int
    sha256: str | None  # LFS files
    git_sha1: str | None  # regular files: the git blob id


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
    # From the last byte written to the file in place: the verify-and-sync tail.
    tail_s: float = 0.0
    connections: int = 0  # the most connections that ran at once (0: not a ranged engine)


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

    def identify(
        self, request: DownloadRequest, *, control: ControlFn | None = None
    ) -> Identity | None:
        """Ask the Hub what the file is at the request's revision (retrying what is worth
        retrying, obeying control while it waits); raise a DownloadError if it cannot, or
        return None to let `download` meet and report the failure in its own words."""
        ...

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
        connections: int | None = None,
    ) -> Progress | None:
        """Report if the interval has passed (or `force`); returns what was reported."""
        speed = self.speed(bytes_done)
        now = self._clock()
        if not force and now - self._last_emit < self._interval:
            return None
        self._last_emit = now
        eta = (total - bytes_done) / speed if total is not None and speed > 0 else None
        report = Progress(bytes_done, total, speed, eta, status, connections)
        if self._callback is not None:
            self._callback(report)
        return report
