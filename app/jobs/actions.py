"""User actions on a whole job: pause, resume, cancel, retry and delete."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import IllegalTransitionError
from app.jobs.listing import get_job
from app.jobs.states import current_job_status, settle_job, transition_file
from app.models import (
    ACTIVE,
    JOB_UNDER_WAY,
    UNFINISHED,
    DownloadFile,
    FileStatus,
    JobStatus,
    utcnow,
)

F = FileStatus
J = JobStatus

# What each action moves (the files in these states) and when a user may ask for it (the
# job in these states).
PAUSABLE = frozenset({F.QUEUED, *ACTIVE})
PAUSABLE_JOBS = frozenset({J.QUEUED, J.DOWNLOADING})
RESUMABLE = frozenset({F.PAUSED})
RESUMABLE_JOBS = frozenset({J.PAUSED})
# Every file that may still be downloaded; cancelling a failed job gives it up for good.
CANCELLABLE = UNFINISHED
CANCELLABLE_JOBS = JOB_UNDER_WAY | {J.FAILED}
RETRYABLE = frozenset({F.FAILED})
RETRYABLE_JOBS = frozenset({J.FAILED})


@dataclass(frozen=True)
class ActionResult:
    """What a job action changed: the job's status and the files a caller must act on."""

    status: JobStatus
    # Files a worker holds right now: the caller raises their control flag.
    active_file_ids: list[str]
    # Files that became queued: the caller enqueues them after committing.
    enqueue_file_ids: list[str]


def _files_in(session: Session, job_id: str, statuses: Iterable[FileStatus]) -> list[str]:
    return list(
        session.scalars(
            select(DownloadFile.id)
            .where(DownloadFile.job_id == job_id, DownloadFile.status.in_(sorted(statuses)))
            .order_by(DownloadFile.file_index)
        )
    )


def _act(
    session: Session,
    job_id: str,
    action: str,
    target: FileStatus,
    movable: frozenset[FileStatus],
    allowed_jobs: frozenset[JobStatus],
    **values: Any,
) -> ActionResult:
    # Lock order (app.jobs.states): file rows first, in file order, then the job row in
    # settle_job, as a worker and the sweeper do, so none of them can deadlock with another.
    current = current_job_status(session, job_id)
    if current not in allowed_jobs:
        raise IllegalTransitionError(f"cannot {action} a job that is {current.value}")
    active = _files_in(session, job_id, movable & ACTIVE)
    moved = [
        fid
        for fid in _files_in(session, job_id, movable)
        if transition_file(session, fid, target, only_from=movable, **values)
    ]
    status = settle_job(session, job_id)
    enqueue = moved if target is F.QUEUED else []
    return ActionResult(status=status, active_file_ids=active, enqueue_file_ids=enqueue)


def pause_job(session: Session, job_id: str) -> ActionResult:
    """Pause every unfinished file; partial files are kept."""
    return _act(session, job_id, "pause", F.PAUSED, PAUSABLE, PAUSABLE_JOBS, worker=None)


def resume_job(session: Session, job_id: str) -> ActionResult:
    """Queue the paused files again; they continue from their partial files."""
    # A user's resume or retry starts a fresh count of attempts.
    return _act(
        session,
        job_id,
        "resume",
        F.QUEUED,
        RESUMABLE,
        RESUMABLE_JOBS,
        published_at=None,
        attempts=0,
    )


def cancel_job(session: Session, job_id: str) -> ActionResult:
    """Cancel every file that has not completed; their partial files are to be deleted."""
    return _act(
        session,
        job_id,
        "cancel",
        F.CANCELLED,
        CANCELLABLE,
        CANCELLABLE_JOBS,
        worker=None,
        finished_at=utcnow(),
    )


def retry_job(session: Session, job_id: str) -> ActionResult:
    """Queue the failed files again; they continue from their partial files."""
    return _act(
        session,
        job_id,
        "retry",
        F.QUEUED,
        RETRYABLE,
        RETRYABLE_JOBS,
        error=None,
        stderr=None,
        finished_at=None,
        worker=None,
        published_at=None,
        attempts=0,
    )


def delete_job(session: Session, job_id: str) -> None:
    """Forget an ended job; its downloaded files stay on disk."""
    current = current_job_status(session, job_id)
    if not current.is_terminal:
        raise IllegalTransitionError(
            f"cannot delete a job that is {current.value}; cancel it first"
        )
    session.delete(get_job(session, job_id))
    session.flush()
