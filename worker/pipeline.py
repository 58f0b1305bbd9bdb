"""One file's download, from claim to settled outcome: what `download_file` runs.

Every step is safe to repeat: a redelivered or duplicated message finds the row claimed by a
live worker (or finished) and returns; a worker that died leaves a lease that expires.
"""

from __future__ import annotations

import time
import traceback
import uuid
from dataclasses import replace

from app import events, jobs, storage
from app.digest import git_blob_id_file, sha256_file
from app.errors import (
    CancelledError,
    DiskFullError,
    DownloadError,
    PausedError,
    PermanentDownloadError,
    TransientDownloadError,
)
from app.models import DownloadFile, FileStatus
from worker.downloadlog import fields
from worker.engine.backoff import backoff_delay
from worker.engine.base import DownloadRequest, DownloadResult, Identity
from worker.lease import DestLease, LeaseLostError, remove_partial_under_lease
from worker.progress import FileReporter
from worker.runtime import Runtime

LEASE_POLL_S = 0.5
# A transient failure sends the file back to the queue after 5, 10, 20 ... s, at most 5 min.
REQUEUE_BACKOFF_S = 5.0
REQUEUE_BACKOFF_MAX_S = 300.0


def process_file(rt: Runtime, file_id: str, task_id: str | None = None) -> str:
    """Download one file of a job; returns what happened (for logs and tests)."""
    if rt.shutting_down.is_set():
        # A stopping worker's other threads may still be handed messages (the file it just
        # handed back, say): it takes none, and sends the message on for another worker.
        rt.dispatcher.enqueue(rt.sessions, [file_id])
        return "passed on"
    # One holder name per claim, not per process: two tasks in one worker's thread pool
    # (a pause and a quick resume) must not mistake each other's claim for their own.
    holder = f"{rt.name}:{uuid.uuid4().hex[:8]}"
    with rt.sessions.begin() as session:
        row = jobs.claim_file(
            session,
            file_id,
            worker=holder,
            task_id=task_id,
            lease_seconds=rt.settings.download_lease_seconds,
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
    except DiskFullError as exc:
        # Space can be freed: a shortage waits and tries again, it does not end the file.
        return _retry_later(rt, reporter, file, exc)
    except PermanentDownloadError as exc:
        return _fail(rt, reporter, exc)
    except TransientDownloadError as exc:
        return _retry_later(rt, reporter, file, exc)
    except Exception as exc:
        return _unexpected(rt, reporter, file, exc)
    return _complete(rt, reporter, result)


def _complete(rt: Runtime, reporter: FileReporter, result: DownloadResult) -> str:
    """A verified file is at its destination: the row says completed, whatever a pause, a
    cancel or a hand-back did to it meanwhile (the row and the disk agree)."""
    reporter.bytes_done = reporter.total = result.size
    with rt.sessions.begin() as session:
        settled = jobs.complete_placed(
            session, reporter.file.id, size=result.size, sha256=result.sha256
        )
        job = jobs.get_job(session, reporter.job.id)
        job_evt = events.job_event(job)
    if settled is None:
        return "not ours"  # completed already (by another worker that found it present)
    before, job_status = settled
    if before not in (FileStatus.DOWNLOADING, FileStatus.VERIFYING):
        rt.log.info(
            "completed despite %s %s",
            before.value,
            reporter.ctx(reason="the file was placed before the request took effect"),
        )
    reporter.publish(reporter.event(FileStatus.COMPLETED))
    if job_status.is_terminal:
        reporter.publish(job_evt)
        rt.log.info("job %s %s", job_status.value, reporter.ctx())
    return FileStatus.COMPLETED.value


def _retry_later(
    rt: Runtime, reporter: FileReporter, file: DownloadFile, exc: DownloadError
) -> str:
    if _used_up(rt, file, reporter, exc):
        return _fail(rt, reporter, exc)
    rt.log.warning("transient %s", reporter.ctx(error=str(exc), attempt=file.attempts))
    delay = backoff_delay(file.attempts, base=REQUEUE_BACKOFF_S, cap=REQUEUE_BACKOFF_MAX_S)
    return _requeue(rt, reporter, file, countdown=delay, reason=str(exc))


def _transfer(
    rt: Runtime, file: DownloadFile, reporter: FileReporter, lease: DestLease
) -> DownloadResult:
    """Take the destination's lease, pin the job's commit, then find the file present or run
    the engine at that commit."""
    if not _acquire(rt, lease, reporter):
        raise PausedError("stopped while waiting", repo=file.repo, file=file.file_name)
    reporter.lease = lease
    request = DownloadRequest(
        repo=file.repo,
        file_name=file.file_name,
        dest=file.dest,
        models_dir=rt.settings.models_dir,
        endpoint=rt.settings.hf_endpoint,
        revision=file.commit or file.revision,
        token=rt.settings.hf_token,
        sha256=file.sha256,
    )
    identity = _pin(rt, file, reporter, request)
    if identity is not None:
        request = replace(request, revision=identity.commit, sha256=file.sha256 or identity.sha256)
    if identity is not None and _present(rt, file, reporter, identity):
        path = storage.dest_path(rt.settings.models_dir, file.dest)
        rt.log.info("present %s", reporter.ctx(bytes=identity.size, transferred=0))
        return DownloadResult(
            path=path,
            size=identity.size,
            sha256=request.sha256,
            etag=identity.etag,
            commit=identity.commit,
            bytes_transferred=0,
            resumed_from=identity.size,
        )
    partial = storage.partial_bytes(rt.settings.models_dir, file.dest) or 0
    rt.log.info("start %s", reporter.ctx(partial=partial, commit=request.revision))
    result = rt.engine.download(
        request, progress=reporter.on_progress, control=reporter.control, before_commit=lease.fence
    )
    rt.log.info(
        "completed %s",
        reporter.ctx(
            bytes=result.size,
            transferred=result.bytes_transferred,
            resumed_from=result.resumed_from,
            connections=result.connections or None,
            tail_s=round(result.tail_s, 2),
            sha256=result.sha256,
        ),
    )
    return result


def _pin(
    rt: Runtime, file: DownloadFile, reporter: FileReporter, request: DownloadRequest
) -> Identity | None:
    """Ask the Hub what the file is at the job's commit, pinning that commit on the job the
    first time; a recorded answer that no longer holds starts the file over. None: the
    engine will meet and report what stopped the Hub from answering."""
    identity = rt.engine.identify(request, control=reporter.control)
    if identity is None:
        return None
    if file.commit is None:
        with rt.sessions.begin() as session:
            pinned = jobs.pin_commit(session, file.id, identity.commit)
        if pinned != identity.commit:  # another file of the job pinned one first
            identity = rt.engine.identify(
                replace(request, revision=pinned), control=reporter.control
            )
            if identity is None:
                return None
        rt.log.info("pinned %s", reporter.ctx(revision=file.revision, commit=pinned))
    elif file.etag is not None and (file.etag, file.size) != (identity.etag, identity.size):
        rt.log.warning(
            "starting over %s",
            reporter.ctx(
                reason="the Hub's answer no longer matches what was recorded",
                commit=file.commit,
                etag=identity.etag,
                recorded_etag=file.etag,
                size=identity.size,
                recorded_size=file.size,
            ),
        )
        storage.remove_partial(rt.settings.models_dir, file.dest)  # under our lease
    with rt.sessions.begin() as session:
        # A sha256 already on the row (a catalog's pin) is kept, and checked against.
        jobs.record_metadata(
            session,
            file.id,
            worker=reporter.holder,
            etag=identity.etag,
            size=identity.size,
            sha256=None if file.sha256 else identity.sha256,
        )
    reporter.total = identity.size
    return identity


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


def _used_up(
    rt: Runtime, file: DownloadFile, reporter: FileReporter, exc: DownloadError | None = None
) -> bool:
    """This failed attempt ends the file: it has had its attempts and this one got no
    further than the last (an attempt that moved the file on earns another, unless it only
    trickled)."""
    if file.attempts < rt.settings.download_max_attempts:
        return False
    return bool(getattr(exc, "trickle", False)) or reporter.bytes_done <= file.claimed_bytes


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


def _present(rt: Runtime, file: DownloadFile, reporter: FileReporter, identity: Identity) -> bool:
    """The destination already holds this very file (another job or worker brought it): its
    content matches the sha256 (LFS) or the git blob id (regular files), never by size alone.
    Other bytes there are replaced by the download, swapped in atomically."""
    path = storage.dest_path(rt.settings.models_dir, file.dest)
    if not path.is_file():
        return False
    if path.stat().st_size == identity.size:
        expected = file.sha256 or identity.sha256
        if expected is not None:
            if sha256_file(path) == expected:
                return True
        elif identity.git_sha1 is not None and git_blob_id_file(path) == identity.git_sha1:
            return True
    rt.log.warning(
        "replacing %s", reporter.ctx(dest=file.dest, reason="the destination holds other bytes")
    )
    return False


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


def _requeue(
    rt: Runtime,
    reporter: FileReporter,
    file: DownloadFile,
    *,
    countdown: float,
    reason: str | None = None,
) -> str:
    if _finish(rt, reporter, FileStatus.QUEUED, quiet=True) == "not ours":
        return "not ours"
    rt.dispatcher.enqueue(rt.sessions, [file.id], countdown=countdown)
    reporter.publish(reporter.event(FileStatus.QUEUED, error=reason))
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
