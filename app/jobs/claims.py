"""Claims and leases: a worker takes a file, renews its lease with progress, and lets go.

A worker holds a file while it is downloading or verifying and its row names the worker;
every write a worker makes is conditional on that hold, so a worker that lost the file (a
user paused or cancelled it, or the sweeper handed it to another worker) writes nothing.

Leases are stamped and judged with the job store's clock (`db_now`), never a worker's own:
a worker whose clock is minutes off neither looks dead to others nor finds live files stale.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, update
from sqlalchemy.orm import Session

from app.db import db_now
from app.jobs.listing import get_file
from app.jobs.states import settle_job, transition_file, update_one
from app.models import ACTIVE, TERMINAL, DownloadFile, FileStatus, JobStatus, utcnow

F = FileStatus

# How a worker's hold on a file ends: an end state, paused by a user, or handed back.
OUTCOMES = TERMINAL | {F.PAUSED, F.QUEUED}


def lease_expired(before: datetime) -> ColumnElement[bool]:
    """SQL: the file is held but its holder has not heartbeated since `before`."""
    return and_(
        DownloadFile.status.in_(sorted(ACTIVE)),
        or_(DownloadFile.heartbeat_at.is_(None), DownloadFile.heartbeat_at < before),
    )


def claim_file(
    session: Session,
    file_id: str,
    *,
    worker: str,
    task_id: str | None = None,
    stale_before: datetime | None = None,
    lease_seconds: float | None = None,
    now: datetime | None = None,
) -> DownloadFile | None:
    """Take a queued file for `worker`; None if another worker has it or it is not queued.

    A file whose holder stopped heartbeating is taken over too (its worker died without its
    message being redelivered): `lease_seconds` ago by the job store's clock, or before
    `stale_before`, a time read from the caller's clock (`utcnow() - lease`) and moved onto
    the store's clock here. `now` (tests) replaces the store's clock, and then both times
    are on it.
    """
    stamp = now or db_now(session)
    claimable: ColumnElement[bool] = DownloadFile.status == FileStatus.QUEUED
    cutoff = _stale_cutoff(stamp, stale_before, lease_seconds, translate=now is None)
    if cutoff is not None:
        claimable = or_(claimable, lease_expired(cutoff))
    claimed = update_one(
        session,
        update(DownloadFile)
        .where(DownloadFile.id == file_id, claimable)
        .values(
            status=FileStatus.DOWNLOADING,
            worker=worker,
            task_id=task_id,
            attempts=DownloadFile.attempts + 1,
            claimed_bytes=DownloadFile.bytes_done,
            heartbeat_at=stamp,
            started_at=stamp,
            finished_at=None,
            error=None,
            stderr=None,
            updated_at=stamp,
        ),
    )
    if not claimed:
        return None
    row = get_file(session, file_id)
    settle_job(session, row.job_id, now=stamp)
    return row


def _stale_cutoff(
    stamp: datetime,
    stale_before: datetime | None,
    lease_seconds: float | None,
    *,
    translate: bool,
) -> datetime | None:
    # The moment, on the store's clock, before which a holder's last heartbeat means it is
    # gone. A caller's `stale_before` is shifted by how far its clock is from the store's
    # (measured now), so a worker with a fast clock does not find live files stale.
    if lease_seconds is not None:
        return stamp - timedelta(seconds=lease_seconds)
    if stale_before is None:
        return None
    return stale_before + (stamp - utcnow()) if translate else stale_before


def record_progress(
    session: Session,
    file_id: str,
    *,
    worker: str,
    bytes_done: int,
    size: int | None = None,
    now: datetime | None = None,
) -> bool:
    """Store bytes done and renew the lease; False means the worker no longer holds the file.

    The file was then paused, cancelled or taken over, and the worker should stop. The
    lease is renewed with the job store's clock (`now`, for tests, replaces it).
    """
    stamp = now or db_now(session)
    values: dict[str, Any] = {"bytes_done": bytes_done, "heartbeat_at": stamp, "updated_at": stamp}
    if size is not None:
        values["size"] = size
    return update_one(
        session,
        update(DownloadFile)
        .where(
            DownloadFile.id == file_id,
            DownloadFile.worker == worker,
            DownloadFile.status.in_(sorted(ACTIVE)),
        )
        .values(**values),
    )


def record_metadata(
    session: Session,
    file_id: str,
    *,
    worker: str,
    size: int | None = None,
    sha256: str | None = None,
    etag: str | None = None,
    commit: str | None = None,
) -> bool:
    """Store what resolving the file learned (size, sha256, etag, commit); False if not held."""
    values = {
        k: v
        for k, v in {"size": size, "sha256": sha256, "etag": etag, "commit": commit}.items()
        if v is not None
    }
    if not values:
        return True
    return update_one(
        session,
        update(DownloadFile)
        .where(DownloadFile.id == file_id, DownloadFile.worker == worker)
        .values(**values, updated_at=utcnow()),
    )


def record_stopped_bytes(session: Session, file_id: str, *, bytes_done: int) -> None:
    """Keep the bytes a worker had when a pause made it let go of the file.

    The row is no longer the worker's then, so record_progress would not write them.
    """
    update_one(
        session,
        update(DownloadFile)
        .where(DownloadFile.id == file_id, DownloadFile.status == FileStatus.PAUSED)
        .values(bytes_done=bytes_done),
    )


def start_verifying(session: Session, file_id: str, *, worker: str) -> bool:
    """Move the worker's file to verifying: the transfer is done, the checksum is checked next."""
    return transition_file(session, file_id, F.VERIFYING, held_by=worker)


def finish_file(
    session: Session,
    file_id: str,
    outcome: FileStatus,
    *,
    worker: str | None = None,
    error: str | None = None,
    stderr: str | None = None,
    bytes_done: int | None = None,
    size: int | None = None,
    sha256: str | None = None,
    now: datetime | None = None,
) -> JobStatus | None:
    """End a worker's hold on a file and settle its job in the same transaction.

    `outcome` is one of OUTCOMES: completed, failed, cancelled, paused, or queued (handed
    back). Returns the job's new status, or None when the file was not this worker's to
    finish (a user paused or cancelled it meanwhile, or another worker took it over).
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"{outcome} is not an outcome")
    stamp = now or utcnow()
    values: dict[str, Any] = {}
    if outcome.is_terminal:
        values["finished_at"] = stamp
    if outcome is F.FAILED:
        values["error"] = error or "failed"
        values["stderr"] = stderr
    if outcome is F.QUEUED:
        values["worker"] = None
        values["published_at"] = None  # the caller publishes it again
    if bytes_done is not None:
        values["bytes_done"] = bytes_done
    if size is not None:
        values["size"] = size
    if sha256 is not None:
        values["sha256"] = sha256
    ok = transition_file(
        session, file_id, outcome, only_from=ACTIVE, held_by=worker, now=stamp, **values
    )
    if not ok:
        return None
    return settle_job(session, get_file(session, file_id).job_id, now=stamp)
