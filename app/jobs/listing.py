"""Reading jobs: one job or file by id, the job history page by page, the live list."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select, tuple_
from sqlalchemy.orm import Session, selectinload

from app.errors import AmbiguousError, NotFoundError, ValidationError
from app.models import JOB_UNDER_WAY, DownloadFile, DownloadJob, JobStatus, utcnow


def get_job(session: Session, job_id: str) -> DownloadJob:
    """The job (its files load on first use), or NotFoundError."""
    job = session.get(DownloadJob, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    return job


# A job is named by its id or a unique prefix of it (4 hex digits at least), as git names commits.
JOB_PREFIX_RE = re.compile(r"[0-9a-f]{4,32}", re.ASCII)


def resolve_job_id(session: Session, text: str) -> str:
    """The id of the one job whose id is or starts with `text`; NotFoundError or
    AmbiguousError (naming how many match) otherwise."""
    # fullmatch: "$" would let "<id>\n" through to the database.
    if not JOB_PREFIX_RE.fullmatch(text):
        raise NotFoundError(f"no job {text!r}")
    if len(text) == 32:
        return get_job(session, text).id
    # Hex digits only: nothing in `text` is a LIKE wildcard.
    matching = DownloadJob.id.startswith(text)
    count = session.scalar(select(func.count()).select_from(DownloadJob).where(matching)) or 0
    if count == 0:
        raise NotFoundError(f"no job {text!r}")
    if count > 1:
        raise AmbiguousError(f"job prefix {text!r} matches {count} jobs; give more characters")
    return str(session.scalar(select(DownloadJob.id).where(matching)))


def job_under_way_for_model(session: Session, model_id: str) -> DownloadJob | None:
    """The newest queued, downloading or paused job of a catalog model, if any."""
    return session.scalars(
        select(DownloadJob)
        .where(DownloadJob.model_id == model_id, DownloadJob.status.in_(sorted(JOB_UNDER_WAY)))
        .order_by(DownloadJob.created_at.desc())
        .limit(1)
    ).first()


def job_under_way_with(
    session: Session, repo: str, revision: str, files: list[tuple[str, str]]
) -> DownloadJob | None:
    """The newest job under way that holds every one of these files of a repo, each going
    to the same destination (`files`: (name, dest) pairs), if any. A catalog job that puts a
    file elsewhere does not count: the file asked for would never land where asked."""
    wanted = sorted(set(files))
    job_id = session.scalar(
        select(DownloadFile.job_id)
        .join(DownloadJob, DownloadJob.id == DownloadFile.job_id)
        .where(
            DownloadJob.status.in_(sorted(JOB_UNDER_WAY)),
            DownloadFile.repo == repo,
            DownloadFile.revision == revision,
            tuple_(DownloadFile.file_name, DownloadFile.dest).in_(wanted),
        )
        .group_by(DownloadFile.job_id, DownloadJob.created_at)
        .having(func.count(func.distinct(DownloadFile.dest)) == len(wanted))
        .order_by(DownloadJob.created_at.desc())
        .limit(1)
    )
    return None if job_id is None else get_job(session, job_id)


def models_under_way(session: Session) -> dict[str, DownloadJob]:
    """Each catalog model's newest job under way."""
    out: dict[str, DownloadJob] = {}
    rows = session.scalars(
        select(DownloadJob)
        .where(DownloadJob.model_id.is_not(None), DownloadJob.status.in_(sorted(JOB_UNDER_WAY)))
        .order_by(DownloadJob.created_at.desc())
    )
    for job in rows:
        out.setdefault(str(job.model_id), job)
    return out


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
