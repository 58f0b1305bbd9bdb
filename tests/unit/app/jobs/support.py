"""What the job state machine's tests share: a job of plain files, its statuses, row counts,
and a process clock set minutes off."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app import jobs, models
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


# The real clock, read before any test skews it.
_TRUE_UTCNOW = models.utcnow


def skew_clock(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> None:
    """Set this process's clock `offset` off as app and worker code read it (`utcnow`): how a
    worker on a machine whose clock drifted sees the time. The database's clock stays right.
    Calling it again replaces the offset."""

    def skewed() -> datetime:
        return _TRUE_UTCNOW() + offset

    skewed.skewed = True  # type: ignore[attr-defined]
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in ("app", "worker"):
            continue
        current = vars(module).get("utcnow")
        if current is _TRUE_UTCNOW or getattr(current, "skewed", False):
            monkeypatch.setattr(module, "utcnow", skewed)
