"""States and transitions: which changes of a file's status are legal, and a job's status.

A file's status changes only through conditional UPDATEs (`WHERE status IN (...)`), so two
processes racing for the same row cannot both win; a job's status is derived from its files'
and stored by `settle_job` in the transaction that changed them.

One lock order everywhere, so that the sweeper, users and workers never deadlock on
PostgreSQL: file rows first, in (job, file_index) order, then job rows (`settle_job`), in
job order, each once, and never a file row after a job row in the same transaction. A
user's action locks one job's files in file order then the job; a worker locks its one file
then the job; the sweeper locks every stale file in that order, then settles each job once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Update, select, update
from sqlalchemy.orm import Session

from app.jobs.listing import get_job
from app.models import ACTIVE, DownloadFile, DownloadJob, FileStatus, JobStatus, utcnow

F = FileStatus

# Every legal change of a file's status. Anything else is refused.
FILE_TRANSITIONS: dict[FileStatus, frozenset[FileStatus]] = {
    F.QUEUED: frozenset({F.DOWNLOADING, F.PAUSED, F.CANCELLED, F.FAILED}),
    # -> queued: a worker handed the file back (shutdown) or its lease expired.
    F.DOWNLOADING: frozenset({F.VERIFYING, F.PAUSED, F.QUEUED, F.COMPLETED, F.FAILED, F.CANCELLED}),
    F.VERIFYING: frozenset({F.COMPLETED, F.FAILED, F.PAUSED, F.QUEUED, F.CANCELLED}),
    F.PAUSED: frozenset({F.QUEUED, F.CANCELLED}),
    F.FAILED: frozenset({F.QUEUED, F.CANCELLED}),
    F.COMPLETED: frozenset(),
    F.CANCELLED: frozenset(),
}


def _sources(target: FileStatus) -> set[FileStatus]:
    return {s for s, targets in FILE_TRANSITIONS.items() if target in targets}


def update_one(session: Session, stmt: Update) -> bool:
    """Run a conditional UPDATE of one row; whether it applied (False: a race lost)."""
    # The ORM objects in the session are left alone: callers re-read the row they need.
    result = session.execute(stmt, execution_options={"synchronize_session": False})
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def transition_file(
    session: Session,
    file_id: str,
    target: FileStatus,
    *,
    only_from: Iterable[FileStatus] | None = None,
    held_by: str | None = None,
    now: datetime | None = None,
    **values: Any,
) -> bool:
    """Move a file to `target` if its current status allows it (and `held_by` holds it).

    False means the row was not in a state that may move there: a race lost, or an illegal
    change; the row is then untouched.
    """
    sources = _sources(target)
    if only_from is not None:
        sources &= set(only_from)
    stmt = update(DownloadFile).where(
        DownloadFile.id == file_id, DownloadFile.status.in_(sorted(sources))
    )
    if held_by is not None:
        stmt = stmt.where(DownloadFile.worker == held_by)
    stamp = now or utcnow()
    return update_one(session, stmt.values(status=target, updated_at=stamp, **values))


def derive_job_status(statuses: Iterable[FileStatus], *, started: bool) -> JobStatus:
    """A job's status from its files' statuses."""
    s = set(statuses)
    if s & ACTIVE:
        return JobStatus.DOWNLOADING
    if F.QUEUED in s:
        # A job that has begun shows as downloading between one file and the next.
        return JobStatus.DOWNLOADING if started else JobStatus.QUEUED
    if F.PAUSED in s:
        return JobStatus.PAUSED
    if F.CANCELLED in s:
        return JobStatus.CANCELLED
    if F.FAILED in s:
        return JobStatus.FAILED
    return JobStatus.COMPLETED


def _status_of(job: DownloadJob, statuses: list[FileStatus]) -> JobStatus:
    started = job.started_at is not None or any(s is not F.QUEUED for s in statuses)
    return derive_job_status(statuses, started=started)


def current_job_status(session: Session, job_id: str) -> JobStatus:
    """The job's status derived from its files now, without locking anything."""
    job = get_job(session, job_id)
    statuses = session.scalars(
        select(DownloadFile.status).where(DownloadFile.job_id == job_id)
    ).all()
    return _status_of(job, list(statuses))


def settle_job(session: Session, job_id: str, *, now: datetime | None = None) -> JobStatus:
    """Recompute a job's status from its files and store it.

    The job row is locked first: two workers finishing a job's last two files at once
    serialise here, so the second one sees the first's committed file and settles the job
    as done (on PostgreSQL; SQLite serialises all writers anyway).
    """
    stamp = now or utcnow()
    job = session.scalars(
        select(DownloadJob)
        .where(DownloadJob.id == job_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    rows = session.execute(
        select(DownloadFile.status, DownloadFile.error, DownloadFile.file_name)
        .where(DownloadFile.job_id == job_id)
        .order_by(DownloadFile.file_index)
    ).all()
    status = _status_of(job, [r.status for r in rows])
    if status is JobStatus.DOWNLOADING and job.started_at is None:
        job.started_at = stamp
    if status.is_terminal:
        # The time it really ended, not the time it was last recomputed.
        job.finished_at = job.finished_at if job.status == status else stamp
    else:
        job.finished_at = None
    failed = [r for r in rows if r.status is F.FAILED]
    if status is JobStatus.FAILED and failed:
        first = failed[0]
        files = "file" if len(rows) == 1 else "files"
        job.error = f"{len(failed)} of {len(rows)} {files} failed; {first.file_name}: {first.error}"
    elif status is not JobStatus.CANCELLED:
        job.error = None
    job.status = status
    job.updated_at = stamp
    session.flush()
    return status
