"""Progress of one file: wire events on Redis (throttled, best-effort), bytes done and the
lease heartbeat in the job store, milestones in the download log, and the control checks."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from app import events, jobs
from app.dispatch import control_key
from app.models import DownloadFile, DownloadJob, FileStatus
from worker.downloadlog import fields
from worker.engine.base import Control, Progress
from worker.lease import DestLease
from worker.runtime import Runtime

PUBLISH_INTERVAL_S = 0.25  # at most ~4 progress messages a second per file
DB_INTERVAL_S = 1.0
REDIS_RETRY_S = 2.0
MILESTONES = (25, 50, 75)


class FileReporter:
    """Publishes a file's events and keeps its row and lease alive while it downloads."""

    def __init__(self, rt: Runtime, job: DownloadJob, file: DownloadFile, *, holder: str) -> None:
        self.rt = rt
        self.holder = holder
        self.job = job
        self.file = file
        self.bytes_done = file.bytes_done
        self.total = file.size
        self.speed = 0.0
        self.eta: float | None = None
        self.connections: int | None = None  # the engine's connections now, if it says
        # Other files of the job, for the overall percentage.
        self.others_done = sum(f.bytes_done for f in job.files if f.id != file.id)
        others = [f.size for f in job.files if f.id != file.id]
        self.others_total: int | None = (
            None if any(s is None for s in others) else sum(s or 0 for s in others)
        )
        self.seq = 0
        self.lost = False  # the row is no longer ours: paused, cancelled or taken over
        self.verifying = False  # the row says verifying: the final checksum runs
        self._last_publish = 0.0
        self._redis_down_until = 0.0
        self._milestone = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lease: DestLease | None = None

    # --- context for log lines -------------------------------------------------------------

    def ctx(self, **extra: Any) -> str:
        """The ids every download log line carries."""
        return fields(
            job=self.job.id,
            file=self.file.id,
            repo=self.file.repo,
            name=self.file.file_name,
            engine=self.rt.engine.name,
            **extra,
        )

    # --- events ----------------------------------------------------------------------------

    def event(
        self, status: FileStatus, *, error: str | None = None, stderr: str | None = None
    ) -> dict[str, Any]:
        """The wire event for the file's current state."""
        with self._lock:
            self.seq += 1
            total = self.total
            overall_total = (
                None if total is None or self.others_total is None else total + self.others_total
            )
            return events.file_event(
                self.job,
                self.file,
                status=status,
                bytes_done=self.bytes_done,
                total=total,
                overall_done=self.others_done + self.bytes_done,
                overall_total=overall_total,
                speed=self.speed,
                eta=self.eta,
                error=error,
                stderr=stderr,
                seq=self.seq,
                method=self.rt.engine.name,
                connections=self.connections,
            )

    def publish(self, *items: dict[str, Any], progress: bool = False) -> None:
        """Send events unless publishing is off; progress is skipped for a moment after Redis
        was found down, state changes are always tried."""
        if not self.rt.settings.download_websocket_progress:
            return
        now = time.monotonic()
        if progress and now < self._redis_down_until:
            return
        # A state change is worth a few quick tries (the first may meet a connection that
        # died with a restarted Redis); a progress message is not.
        for attempt in range(1 if progress else 3):
            try:
                events.publish(self.rt.redis, items)
                return
            except Exception as exc:
                error = type(exc).__name__
                if attempt < 2 and not progress:
                    time.sleep(0.3)
        # A Redis outage never fails a download: skip progress for a moment, then retry.
        self._redis_down_until = now + REDIS_RETRY_S
        self.rt.log.warning("events paused, Redis unreachable %s", self.ctx(error=error))

    def on_progress(self, p: Progress) -> None:
        """The engine's progress callback."""
        with self._lock:
            self.bytes_done, self.speed, self.eta = p.bytes_done, p.speed, p.eta
            if p.total is not None:
                self.total = p.total
            changed = p.connections is not None and p.connections != self.connections
            if changed:
                self.connections = p.connections
        if changed:
            # Few lines: the count changes when the engine adapts, not with every report.
            self.rt.log.info("connections %s", self.ctx(connections=p.connections))
        pct = p.percent
        while self._milestone < len(MILESTONES) and pct >= MILESTONES[self._milestone]:
            self.rt.log.info(
                "progress %s", self.ctx(percent=MILESTONES[self._milestone], bytes=p.bytes_done)
            )
            self._milestone += 1
        if p.status == "verifying" and not self.verifying:
            self._start_verifying()
            return
        now = time.monotonic()
        if p.status == "downloading" and now - self._last_publish >= PUBLISH_INTERVAL_S:
            self._last_publish = now
            self.publish(self.event(FileStatus.DOWNLOADING), progress=True)

    def _start_verifying(self) -> None:
        """The transfer is done and the final checksum runs: the row, the API, the WebSocket
        and the dashboard say `verifying` until the file is placed."""
        self.verifying = True
        try:
            with self.rt.sessions.begin() as session:
                if not jobs.start_verifying(session, self.file.id, worker=self.holder):
                    self.lost = True  # paused, cancelled or taken over meanwhile
                    return
        except Exception as exc:  # the DB briefly away: the state is cosmetic, go on
            self.rt.log.warning("verifying not recorded %s", self.ctx(error=type(exc).__name__))
        self.publish(self.event(FileStatus.VERIFYING))

    # --- heartbeat -------------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Write bytes done about once a second; renew the DB lease and the cache lease."""
        self._thread = threading.Thread(target=self._beat, name="modelpull-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _beat(self) -> None:
        lease_every = max(0.5, self.rt.settings.download_lease_seconds / 4)
        last_lease = time.monotonic()
        while not self._stop.wait(DB_INTERVAL_S):
            try:
                with self.rt.sessions.begin() as session:
                    ok = jobs.record_progress(
                        session,
                        self.file.id,
                        worker=self.holder,
                        bytes_done=self.bytes_done,
                        size=self.total,
                    )
                if not ok:
                    self.lost = True
            except Exception as exc:  # the DB may be briefly away: the lease absorbs it
                self.rt.log.warning("heartbeat failed %s", self.ctx(error=type(exc).__name__))
            if self.lease is not None and time.monotonic() - last_lease >= lease_every:
                last_lease = time.monotonic()
                # Redis away: renewal resumes when it is back (the key is re-taken if lost).
                # Another holder has it: stop now rather than write beside it.
                with contextlib.suppress(Exception):
                    if not self.lease.renew():
                        self.lost = True

    # --- control ---------------------------------------------------------------------------

    def why_stop(self) -> str | None:
        """'handback', 'lost', 'pause', 'cancel' or None: checked by the engine between chunks."""
        if self.rt.shutting_down.is_set():
            return "handback"
        if self.lost:
            # The row stopped being ours: a user paused or cancelled it (the DB changes
            # before the flag is raised), or another worker took it over.
            with contextlib.suppress(Exception), self.rt.sessions() as session:
                status = jobs.get_file(session, self.file.id).status
                if status is FileStatus.CANCELLED:
                    return "cancel"
                if status is FileStatus.PAUSED:
                    return "pause"
            return "lost"
        now = time.monotonic()
        if now >= self._redis_down_until:
            try:
                flag = self.rt.redis.get(control_key(self.file.id))
            except Exception:
                self._redis_down_until = now + REDIS_RETRY_S
                flag = None
            if flag in (b"pause", b"cancel"):
                return str(flag.decode())
        return None

    def control(self) -> Control | None:
        """The engine's control callable."""
        reason = self.why_stop()
        if reason is None:
            return None
        if reason == "lost":
            with self.rt.sessions() as session:
                if jobs.get_file(session, self.file.id).status is FileStatus.CANCELLED:
                    reason = "cancel"
        if reason == "cancel":
            with self.rt.sessions() as session:
                wanted = jobs.dest_wanted_elsewhere(session, self.file.dest, besides=self.file.id)
            # Cancel deletes the partial, unless another job still needs that destination.
            return Control.PAUSE if wanted else Control.CANCEL
        return Control.PAUSE
