"""One file's download, from claim to settled outcome: what `download_file` runs.

Every step is safe to repeat: a redelivered or duplicated message finds the row claimed by a
live worker (or finished) and returns; a worker that died leaves a lease that expires.
"""

from __future__ import annotations

import time
import traceback
import uuid
from datetime import timedelta

from app import events, jobs, storage
from app.digest import sha256_file
from app.errors import (
    CancelledError,
    DownloadError,
    PausedError,
    PermanentDownloadError,
    TransientDownloadError,
)
from app.models import DownloadFile, FileStatus, utcnow
from worker.downloadlog import fields
from worker.engine.backoff import backoff_delay
from worker.engine.base import DownloadRequest, DownloadResult
from worker.engine.hub import HubClient
from worker.lease import DestLease, LeaseLostError, remove_partial_under_lease
from worker.progress import FileReporter
from worker.runtime import Runtime

LEASE_POLL_S = 0.5
# A transient failure sends the file back to the queue after 5, 10, 20 ... s, at most 5 min.
REQUEUE_BACKOFF_S = 5.0
REQUEUE_BACKOFF_MAX_S = 300.0


def process_file(rt: Runtime, file_id: str, task_id: str | None = None) -> str:
    """Download one file of a job; returns what happened (for logs and tests)."""
    stale_before = utcnow() - timedelta(seconds=rt.settings.download_lease_seconds)
    # One holder name per claim, not per process: two tasks in one worker's thread pool
    # (a pause and a quick resume) must not mistake each other's claim for their own.
    holder = f"{rt.name}:{uuid.uuid4().hex[:8]}"
    with rt.sessions.begin() as session:
        row = jobs.claim_file(
            session, file_id, worker=holder, task_id=task_id, stale_before=stale_before
        )
    if row is None:
        return _not_claimed(rt, file_id)
    with rt.sessions() as session:
        job = jobs.get_job(session, row.job_id)
        file = next(f for f in job.files if f.id == file_id)
    reporter = FileReporter(rt, job, file, holder=holder)
    rt.log.info("claimed %s", reporter.ctx(attempt=file.attempts, worker=holder))
    reporter.publish(reporter.event(FileStatus.DOWNLOADING))
    reporter.start_heartbeat()
    lease = DestLease(rt.redis, file.dest, ttl_seconds=rt.settings.download_lease_seconds)
    try:
        return _run(rt, file, reporter, lease)
    finally:
        reporter.stop_heartbeat()
        lease.release()


def _run(rt: Runtime, file: DownloadFile, reporter: FileReporter, lease: DestLease) -> str:
    """Transfer the file and settle its row by how the transfer ended."""
    try:
        result = _transfer(rt, file, reporter, lease)
    except PausedError:
        return _stopped(rt, reporter, file)
    except CancelledError:
        rt.log.info("cancelled %s", reporter.ctx())
        _finish(rt, reporter, FileStatus.CANCELLED, quiet=True)
        reporter.publish(reporter.event(FileStatus.CANCELLED))
        return "cancelled"
    except LeaseLostError as exc:
        rt.log.warning("lease lost %s", reporter.ctx(error=str(exc)))
        return _requeue(rt, reporter, file, countdown=1.0)
    except PermanentDownloadError as exc:
        return _fail(rt, reporter, exc)
    except TransientDownloadError as exc:
        if _used_up(rt, file, reporter):
            return _fail(rt, reporter, exc)
        rt.log.warning("transient %s", reporter.ctx(error=str(exc), attempt=file.attempts))
        delay = backoff_delay(file.attempts, base=REQUEUE_BACKOFF_S, cap=REQUEUE_BACKOFF_MAX_S)
        return _requeue(rt, reporter, file, countdown=delay)
    except Exception as exc:
        return _unexpected(rt, reporter, file, exc)
    reporter.bytes_done = reporter.total = result.size
    return _finish(
        rt,
        reporter,
        FileStatus.COMPLETED,
        bytes_done=result.size,
        size=result.size,
        sha256=result.sha256,
    )


def _transfer(
    rt: Runtime, file: DownloadFile, reporter: FileReporter, lease: DestLease
) -> DownloadResult:
    """Take the destination's lease, then find the file present or run the engine."""
    if not _acquire(rt, lease, reporter):
        raise PausedError("stopped while waiting", repo=file.repo, file=file.file_name)
    reporter.lease = lease
    if _already_present(rt, file):
        path = storage.dest_path(rt.settings.models_dir, file.dest)
        size = path.stat().st_size
        rt.log.info("present %s", reporter.ctx(bytes=size, transferred=0))
        return DownloadResult(
            path=path,
            size=size,
            sha256=None,
            etag="",
            commit="",
            bytes_transferred=0,
            resumed_from=size,
        )
    request = DownloadRequest(
        repo=file.repo,
        file_name=file.file_name,
        dest=file.dest,
        models_dir=rt.settings.models_dir,
        endpoint=rt.settings.hf_endpoint,
        revision=file.revision,
        token=rt.settings.hf_token,
        sha256=file.sha256,
    )
    partial = storage.partial_bytes(rt.settings.models_dir, file.dest) or 0
    rt.log.info("start %s", reporter.ctx(partial=partial))
    result = rt.engine.download(
        request, progress=reporter.on_progress, control=reporter.control, before_commit=lease.fence
    )
    rt.log.info(
        "completed %s",
        reporter.ctx(
            bytes=result.size,
            transferred=result.bytes_transferred,
            resumed_from=result.resumed_from,
            sha256=result.sha256,
        ),
    )
    return result


def _unexpected(rt: Runtime, reporter: FileReporter, file: DownloadFile, exc: Exception) -> str:
    """A bug or an unexpected OS error: keep the whole traceback for the user."""
    trace = traceback.format_exc()
    error = DownloadError(
        f"unexpected {type(exc).__name__}: {exc}", repo=file.repo, file=file.file_name
    )
    error.stderr = trace
    if _used_up(rt, file, reporter):
        return _fail(rt, reporter, error)
    rt.log.error("unexpected %s", reporter.ctx(error=str(error), stderr=trace))
    return _requeue(rt, reporter, file, countdown=10.0)


def _used_up(rt: Runtime, file: DownloadFile, reporter: FileReporter) -> bool:
    """This failed attempt ends the file: it has had its attempts and this one got no
    further than the last (an attempt that moved the file on earns another)."""
    if file.attempts < rt.settings.download_max_attempts:
        return False
    return reporter.bytes_done <= file.claimed_bytes


def _acquire(rt: Runtime, lease: DestLease, reporter: FileReporter) -> bool:
    """Wait for the destination's lease; False if told to stop meanwhile."""
    announced = False
    while True:
        try:
            if lease.try_acquire():
                return True
        except Exception as exc:  # Redis away: keep trying, the outage is usually short
            rt.log.warning("lease unavailable %s", reporter.ctx(error=type(exc).__name__))
        if not announced:
            rt.log.info(
                "waiting for the destination held by another transfer %s",
                reporter.ctx(dest=reporter.file.dest),
            )
            announced = True
        if reporter.why_stop() is not None:
            return False
        time.sleep(LEASE_POLL_S)


def _already_present(rt: Runtime, file: DownloadFile) -> bool:
    """The destination already holds this file (another job or worker brought it)."""
    path = storage.dest_path(rt.settings.models_dir, file.dest)
    if not path.is_file():
        return False
    size, sha256 = file.size, file.sha256
    if size is None or sha256 is None:
        try:
            resolved = HubClient(rt.settings.hf_endpoint, rt.settings.hf_token).resolve(
                file.repo, file.file_name, file.revision
            )
        except DownloadError:
            return False  # let the engine meet (and report) the error
        size, sha256 = resolved.size, sha256 or resolved.sha256
    if path.stat().st_size != size:
        return False
    return sha256 is None or sha256_file(path) == sha256


def _finish(
    rt: Runtime,
    reporter: FileReporter,
    outcome: FileStatus,
    *,
    quiet: bool = False,
    error: str | None = None,
    stderr: str | None = None,
    bytes_done: int | None = None,
    size: int | None = None,
    sha256: str | None = None,
) -> str:
    with rt.sessions.begin() as session:
        job_status = jobs.finish_file(
            session,
            reporter.file.id,
            outcome,
            worker=reporter.holder,
            error=error,
            stderr=stderr,
            bytes_done=bytes_done,
            size=size,
            sha256=sha256,
        )
        job = jobs.get_job(session, reporter.job.id) if job_status is not None else None
        job_evt = events.job_event(job) if job is not None and job_status is not None else None
    if job_status is None:
        return "not ours"
    if not quiet:
        reporter.publish(reporter.event(outcome, error=error, stderr=stderr))
    if job_evt is not None and job_status.is_terminal:
        reporter.publish(job_evt)
        rt.log.info("job %s %s", job_status.value, reporter.ctx())
    return outcome.value


def _fail(rt: Runtime, reporter: FileReporter, exc: DownloadError) -> str:
    stderr = exc.stderr or None
    rt.log.error("failed %s", reporter.ctx(error=str(exc), stderr=stderr))
    return _finish(rt, reporter, FileStatus.FAILED, error=str(exc), stderr=stderr)


def _requeue(rt: Runtime, reporter: FileReporter, file: DownloadFile, *, countdown: float) -> str:
    if _finish(rt, reporter, FileStatus.QUEUED, quiet=True) == "not ours":
        return "not ours"
    rt.dispatcher.enqueue(rt.sessions, [file.id], countdown=countdown)
    reporter.publish(reporter.event(FileStatus.QUEUED))
    rt.log.info("requeued %s", reporter.ctx(countdown=countdown))
    return "requeued"


def _stopped(rt: Runtime, reporter: FileReporter, file: DownloadFile) -> str:
    reason = reporter.why_stop() or "pause"
    if reason == "handback":
        rt.log.info("handed back %s", reporter.ctx(reason="worker stopping"))
        return _requeue(rt, reporter, file, countdown=0)
    if reason == "lost":
        rt.log.info("stopped %s", reporter.ctx(reason="no longer this worker's"))
        return "lost"
    if reason == "cancel":
        # Stopped without deleting the partial: another job still needs this destination.
        rt.log.info("cancelled %s", reporter.ctx(partial="kept for another job"))
        _finish(rt, reporter, FileStatus.CANCELLED, quiet=True)
        reporter.publish(reporter.event(FileStatus.CANCELLED))
        return "cancelled"
    rt.log.info("paused %s", reporter.ctx(bytes=reporter.bytes_done))
    _finish(rt, reporter, FileStatus.PAUSED, quiet=True)
    with rt.sessions.begin() as session:
        jobs.record_stopped_bytes(session, file.id, bytes_done=reporter.bytes_done)
    reporter.publish(reporter.event(FileStatus.PAUSED))
    return "paused"


def _not_claimed(rt: Runtime, file_id: str) -> str:
    """A message for a file this worker may not take: clean up after a cancel, or skip."""
    with rt.sessions() as session:
        try:
            row = jobs.get_file(session, file_id)
        except Exception:
            return "gone"
        if row.status is not FileStatus.CANCELLED:
            return "skipped"
        if jobs.dest_wanted_elsewhere(session, row.dest, besides=row.id):
            return "skipped"
        dest = row.dest
    # Nobody needs the partial any more; the lease keeps any live transfer from writing it.
    try:
        removed = remove_partial_under_lease(
            rt.redis, rt.settings.models_dir, dest, ttl_seconds=rt.settings.download_lease_seconds
        )
    except Exception:  # Redis away: the sweeper cleans orphaned partials later
        return "skipped"
    if not removed:
        return "skipped"
    rt.log.info("cleaned %s", fields(file=file_id, dest=dest))
    return "cleaned"
