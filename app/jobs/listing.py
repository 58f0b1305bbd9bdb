"""Reading jobs: one job or file by id, the job history page by page, the live list."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from app.errors import NotFoundError, ValidationError
from app.models import JOB_UNDER_WAY, DownloadFile, DownloadJob, JobStatus, utcnow


def get_job(session: Session, job_id: str) -> DownloadJob:
    """The job (its files load on first use), or NotFoundError."""
    job = session.get(DownloadJob, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    return job


def get_file(session: Session, file_id: str) -> DownloadFile:
    """The file row, re-read from the database, or NotFoundError."""
    # Re-read because the state machine's UPDATEs bypass the objects in the session.
    row = session.get(DownloadFile, file_id, populate_existing=True)
    if row is None:
        raise NotFoundError(f"no file {file_id!r}")
    return row


def encode_cursor(job: DownloadJob) -> str:
    """An opaque cursor that points just past `job` in newest-first order."""
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) a cursor points past; ValidationError if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, job_id = raw.split("|")
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None or len(job_id) != 32:
            raise ValueError(cursor)
        when = when.astimezone(UTC)
        if not 2000 <= when.year <= 9000:
            raise ValueError(cursor)
        return when, job_id
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise ValidationError("cursor", "is not a cursor this service gave out") from None


def list_jobs(
    session: Session,
    *,
    status: JobStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[DownloadJob], str | None]:
    """Jobs newest first, one page; returns the page and the cursor of the next one."""
    # One row more than the page tells whether a next page exists.
    query = (
        select(DownloadJob)
        .options(selectinload(DownloadJob.files))
        .order_by(DownloadJob.created_at.desc(), DownloadJob.id.desc())
        .limit(limit + 1)
    )
    if status is not None:
        query = query.where(DownloadJob.status == status)
    if cursor:
        when, job_id = decode_cursor(cursor)
        query = query.where(
            or_(
                DownloadJob.created_at < when,
                and_(DownloadJob.created_at == when, DownloadJob.id < job_id),
            )
        )
    rows = list(session.scalars(query))
    page = rows[:limit]
    return page, encode_cursor(page[-1]) if len(rows) > limit else None


def active_jobs(
    session: Session, *, recent_seconds: int = 600, limit: int = 200
) -> list[DownloadJob]:
    """Jobs under way, plus those that ended in the last minutes (for a reconnecting page)."""
    since = utcnow() - timedelta(seconds=recent_seconds)
    return list(
        session.scalars(
            select(DownloadJob)
            .options(selectinload(DownloadJob.files))
            .where(
                or_(
                    DownloadJob.status.in_(sorted(JOB_UNDER_WAY)),
                    DownloadJob.finished_at >= since,
                )
            )
            .order_by(DownloadJob.created_at.desc())
            .limit(limit)
        )
    )
