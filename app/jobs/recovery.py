"""What the sweeper asks: messages that never reached the broker or were never taken,
holders that went quiet, stale leases to hand back, and partials still wanted."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, true, update
from sqlalchemy.orm import Session

from app.db import db_now
from app.jobs.claims import lease_expired
from app.jobs.states import settle_job, update_one
from app.models import ACTIVE, UNFINISHED, DownloadFile, FileStatus, utcnow

F = FileStatus


def mark_published(
    session: Session, file_ids: Iterable[str], *, now: datetime | None = None
) -> None:
    """Record that these files' task messages reached the broker."""
    ids = list(file_ids)
    if ids:
        # The one lock order (app.jobs.states): rows in (job, file_index) order, so a web
        # process marking a job's files cannot deadlock with a worker pinning their commit
        # or a user pausing them.
        locked = list(
            session.scalars(
                select(DownloadFile.id)
                .where(DownloadFile.id.in_(ids))
                .order_by(DownloadFile.job_id, DownloadFile.file_index)
                .with_for_update()
            )
        )
        session.execute(
            update(DownloadFile)
            .where(DownloadFile.id.in_(locked))
            .values(published_at=now or utcnow()),
            execution_options={"synchronize_session": False},
        )


def unpublished_files(session: Session, *, limit: int = 500) -> list[str]:
    """Queued files whose message never reached the broker (it was down, or we crashed)."""
    return list(
        session.scalars(
            select(DownloadFile.id)
            .where(DownloadFile.status == FileStatus.QUEUED, DownloadFile.published_at.is_(None))
            .order_by(DownloadFile.created_at)
            .limit(limit)
        )
    )


def queued_published_before(session: Session, before: datetime, *, limit: int = 500) -> list[str]:
    """Queued files whose message went out before `before` and was never taken."""
    return list(
        session.scalars(
            select(DownloadFile.id)
            .where(DownloadFile.status == FileStatus.QUEUED, DownloadFile.published_at < before)
            .order_by(DownloadFile.created_at)
            .limit(limit)
        )
    )


def quiet_holders(
    session: Session, *, quiet_before: datetime, limit: int = 1000
) -> list[tuple[str, str]]:
    """(file id, holder) of transfers whose heartbeat stopped before `quiet_before`."""
    rows = session.execute(
        select(DownloadFile.id, DownloadFile.worker)
        .where(
            DownloadFile.status.in_(sorted(ACTIVE)),
            DownloadFile.heartbeat_at < quiet_before,
            DownloadFile.worker.is_not(None),
        )
        .limit(limit)
    ).all()
    return [(file_id, holder) for file_id, holder in rows if holder]


@dataclass(frozen=True)
class StaleResult:
    """Files whose worker stopped heartbeating: queued again, or failed for good."""

    requeued: list[str]
    failed: list[str]


def _after_loss(
    stalls: int, max_attempts: int, stamp: datetime
) -> tuple[FileStatus, dict[str, Any]]:
    # Where a file goes when its holder is lost for the `stalls`-th time without progress.
    values: dict[str, Any] = {"worker": None, "stalled_losses": stalls}
    if stalls >= max_attempts:
        values["finished_at"] = stamp
        values["error"] = (
            f"the worker holding this file was lost {stalls} times in a row without "
            "getting any further; giving up"
        )
        return F.FAILED, values
    values["published_at"] = None  # the sweeper publishes it again
    return F.QUEUED, values


def requeue_stale(
    session: Session,
    *,
    stale_before: datetime,
    max_attempts: int,
    now: datetime | None = None,
    file_ids: Sequence[str] | None = None,
) -> StaleResult:
    """Hand back the files whose holder stopped heartbeating before `stale_before`.

    `stale_before` is a time on the job store's clock (`db_now(session) - lease`), the clock
    heartbeats are stamped with. A file that keeps killing workers is failed: lost
    `max_attempts` times in a row without getting any further. A big file on machines that
    restart often (or in the chaos suite) goes on as long as each claim moves it on.
    `file_ids` limits the sweep to those files (whose holders are known to be gone).
    """
    stamp = now or db_now(session)
    # The lock order (see app.jobs.states): file rows in (job, file_index) order, then each
    # job row once, in job order. A user's pause locks one job's files in file order and then
    # the job; taking a job between two files here would deadlock with it.
    rows = session.execute(
        select(
            DownloadFile.id,
            DownloadFile.job_id,
            DownloadFile.bytes_done,
            DownloadFile.claimed_bytes,
            DownloadFile.stalled_losses,
        )
        .where(
            lease_expired(stale_before),
            DownloadFile.id.in_(file_ids) if file_ids is not None else true(),
        )
        .order_by(DownloadFile.job_id, DownloadFile.file_index)
    ).all()
    result = StaleResult(requeued=[], failed=[])
    touched: list[str] = []
    for file_id, job_id, bytes_done, claimed_bytes, stalled_losses in rows:
        stalls = 0 if bytes_done > claimed_bytes else stalled_losses + 1
        target, values = _after_loss(stalls, max_attempts, stamp)
        # Conditional on the lease still being expired: the holder may have come back, or
        # another worker claimed the file, since the SELECT above.
        if update_one(
            session,
            update(DownloadFile)
            .where(DownloadFile.id == file_id, lease_expired(stale_before))
            .values(status=target, updated_at=stamp, **values),
        ):
            (result.failed if target is F.FAILED else result.requeued).append(file_id)
            touched.append(job_id)
    for job_id in sorted(set(touched)):
        settle_job(session, job_id, now=stamp)
    return result


def dest_wanted_elsewhere(session: Session, dest: str, *, besides: str) -> bool:
    """Whether another unfinished file still needs `dest` (and so its partial)."""
    return (
        session.scalar(
            select(DownloadFile.id)
            .where(
                DownloadFile.dest == dest,
                DownloadFile.id != besides,
                DownloadFile.status.in_(sorted(UNFINISHED)),
            )
            .limit(1)
        )
        is not None
    )
