"""What the job state machine's tests share: a job of plain files, its statuses, row counts."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app import jobs
from app.models import DownloadFile, DownloadJob, FileStatus, JobStatus


def make_job(factory: sessionmaker[Session], n: int = 2) -> tuple[str, list[str]]:
    """A committed queued job of `n` files f0.bin, f1.bin, …; its id and its files' ids."""
    with factory.begin() as s:
        job = jobs.create_job(
            s,
            [jobs.FileSpec("org/repo", f"f{i}.bin") for i in range(n)],
            method="native",
        )
        return job.id, [f.id for f in job.files]


def job_status(factory: sessionmaker[Session], job_id: str) -> tuple[JobStatus, list[FileStatus]]:
    """The job's stored status and its files' statuses, in file order."""
    with factory() as s:
        job = jobs.get_job(s, job_id)
        return job.status, [f.status for f in job.files]


def row_counts(factory: sessionmaker[Session]) -> tuple[int, int]:
    """How many job rows and file rows the store holds."""
    with factory() as s:
        return (
            s.scalar(select(func.count()).select_from(DownloadJob)) or 0,
            s.scalar(select(func.count()).select_from(DownloadFile)) or 0,
        )
