"""What a job downloads and what a finished download means: one commit per job, and a
verified file at its destination recorded as completed.

A job's revision (a branch, a tag) is resolved to a commit once: the first of its files to
be resolved pins that commit on every file of the job from the same repo and revision, and
every later file, retry and resume downloads that commit, so a branch that moves meanwhile
cannot mix two versions into one job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.jobs.listing import get_file
from app.jobs.states import settle_job, update_one
from app.models import DownloadFile, FileStatus, JobStatus, utcnow


def pin_commit(session: Session, file_id: str, commit: str) -> str:
    """Pin `commit` on the file and on every file of its job from the same repo and revision
    that has none yet; returns the commit the file is pinned to now (another file's, if one
    was pinned first)."""
    row = get_file(session, file_id)
    unpinned = (
        DownloadFile.job_id == row.job_id,
        DownloadFile.repo == row.repo,
        DownloadFile.revision == row.revision,
        DownloadFile.commit.is_(None),
    )
    # The one lock order (app.jobs.states): a job's file rows in file order, before any job row.
    ids = list(
        session.scalars(
            select(DownloadFile.id)
            .where(*unpinned)
            .order_by(DownloadFile.file_index)
            .with_for_update()
        )
    )
    if ids:
        session.execute(
            update(DownloadFile)
            .where(DownloadFile.id.in_(ids), *unpinned)
            .values(commit=commit, updated_at=utcnow()),
            execution_options={"synchronize_session": False},
        )
    pinned = session.scalar(select(DownloadFile.commit).where(DownloadFile.id == file_id))
    return pinned or commit


def complete_placed(
    session: Session,
    file_id: str,
    *,
    size: int,
    sha256: str | None,
    now: datetime | None = None,
) -> tuple[FileStatus, JobStatus] | None:
    """Record a verified file that is at its destination as completed, whatever happened to
    the row meanwhile (a pause, a cancel, a hand-back that raced the final rename): the row
    and the disk agree. Returns the status it had and the job's new one; None when it was
    completed already."""
    stamp = now or utcnow()
    before = session.scalar(
        select(DownloadFile.status).where(DownloadFile.id == file_id).with_for_update()
    )
    if before is None or before is FileStatus.COMPLETED:
        return None
    values: dict[str, Any] = {
        "status": FileStatus.COMPLETED,
        "bytes_done": size,
        "size": size,
        "finished_at": stamp,
        "updated_at": stamp,
        "error": None,
        "stderr": None,
    }
    if sha256 is not None:
        values["sha256"] = sha256
    if not update_one(
        session,
        update(DownloadFile)
        .where(DownloadFile.id == file_id, DownloadFile.status != FileStatus.COMPLETED)
        .values(**values),
    ):
        return None
    return before, settle_job(session, get_file(session, file_id).job_id, now=stamp)
