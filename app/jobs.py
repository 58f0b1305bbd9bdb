"""The job state machine: create jobs, claim files, record progress, settle outcomes.

Every function takes the caller's session and never commits: the web tier commits once per
request, a worker once per unit of work. Changes to a file's status are conditional UPDATEs
(`WHERE status IN (...)`), so two processes racing for the same row cannot both win.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select, true, update
from sqlalchemy.orm import Session, selectinload

from app import storage
from app.catalog import CatalogModel, missing_files
from app.errors import (
    IllegalTransitionError,
    NotFoundError,
    NothingToDownloadError,
    ValidationError,
)
from app.models import DownloadFile, DownloadJob, FileStatus, JobStatus, utcnow

F = FileStatus
# Branches, tags, refs/pr/N and commits: ASCII only, no spaces, no URL syntax.
REVISION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}", re.ASCII)

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


def can_transition(current: FileStatus, target: FileStatus) -> bool:
    """Whether a file may go from `current` to `target`."""
    return target in FILE_TRANSITIONS[current]


def _sources(target: FileStatus) -> set[FileStatus]:
    return {s for s, targets in FILE_TRANSITIONS.items() if target in targets}


@dataclass(frozen=True)
class FileSpec:
    """A file to download: where it comes from and where it goes."""

    repo: str
    file_name: str
    revision: str = "main"
    dest: str | None = None
    sha256: str | None = None
    size: int | None = None


def _validate_specs(files: Sequence[FileSpec]) -> list[FileSpec]:
    if not files:
        raise ValidationError("files", "must name at least one file")
    clean: list[FileSpec] = []
    seen: set[str] = set()
    for i, spec in enumerate(files):
        try:
            repo = storage.check_repo_id(spec.repo)
        except ValueError as exc:
            raise ValidationError("repo", str(exc)) from None
        try:
            name = storage.check_relative_path(spec.file_name)
        except ValueError as exc:
            raise ValidationError(f"files[{i}]", str(exc)) from None
        try:
            dest = storage.check_relative_path(spec.dest or name)
        except ValueError as exc:
            raise ValidationError(f"files[{i}].dest", str(exc)) from None
        revision = spec.revision or "main"
        if not REVISION_RE.fullmatch(revision) or ".." in revision or revision.endswith("/"):
            raise ValidationError("revision", f"{revision!r} is not a branch, tag or commit")
        if dest in seen:
            raise ValidationError(f"files[{i}]", f"destination {dest!r} is named twice")
        seen.add(dest)
        clean.append(FileSpec(repo, name, revision, dest, spec.sha256, spec.size))
    return clean


def create_job(
    session: Session, files: Sequence[FileSpec], *, method: str, model_id: str | None = None
) -> DownloadJob:
    """Add a queued job with one queued row per file; the caller commits, then enqueues."""
    specs = _validate_specs(files)
    job = DownloadJob(model_id=model_id, method=method, status=JobStatus.QUEUED)
    for index, spec in enumerate(specs):
        job.files.append(
            DownloadFile(
                file_index=index,
                repo=spec.repo,
                revision=spec.revision,
                file_name=spec.file_name,
                dest=spec.dest or spec.file_name,
                sha256=spec.sha256,
                size=spec.size,
                status=FileStatus.QUEUED,
                bytes_done=0,
                attempts=0,
            )
        )
    session.add(job)
    session.flush()
    return job


def create_model_job(
    session: Session, model: CatalogModel, *, method: str, models_dir: Path
) -> DownloadJob:
    """A job for the model's files that are not present yet."""
    missing = missing_files(models_dir, model)
    if not missing:
        raise NothingToDownloadError(f"every file of {model.id} is already present")
    specs = [FileSpec(f.repo, f.file_name, f.revision, f.dest, f.sha256, f.size) for f in missing]
    return create_job(session, specs, method=method, model_id=model.id)


def get_job(session: Session, job_id: str) -> DownloadJob:
    """The job with its files, or NotFoundError."""
    job = session.get(DownloadJob, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id!r}")
    return job


def get_file(session: Session, file_id: str) -> DownloadFile:
    """The file row, re-read from the database, or NotFoundError."""
    row = session.get(DownloadFile, file_id, populate_existing=True)
    if row is None:
        raise NotFoundError(f"no file {file_id!r}")
    return row


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
    result = session.execute(
        stmt.values(status=target, updated_at=stamp, **values),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def claim_file(
    session: Session,
    file_id: str,
    *,
    worker: str,
    task_id: str | None = None,
    stale_before: datetime | None = None,
    now: datetime | None = None,
) -> DownloadFile | None:
    """Take a queued file for `worker`; None if another worker has it or it is not queued.

    With `stale_before`, a file whose holder stopped heartbeating before that time is taken
    over too: its worker died without its message being redelivered.
    """
    stamp = now or utcnow()
    claimable = DownloadFile.status == FileStatus.QUEUED
    if stale_before is not None:
        claimable = or_(
            claimable,
            (DownloadFile.status.in_([FileStatus.DOWNLOADING, FileStatus.VERIFYING]))
            & or_(DownloadFile.heartbeat_at.is_(None), DownloadFile.heartbeat_at < stale_before),
        )
    result = session.execute(
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
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = get_file(session, file_id)
    settle_job(session, row.job_id, now=stamp)
    return row


def record_progress(
    session: Session,
    file_id: str,
    *,
    worker: str,
    bytes_done: int,
    size: int | None = None,
    now: datetime | None = None,
) -> bool:
    """Store bytes done and renew the lease; False means the file is no longer this worker's
    (paused, cancelled or taken over), and the worker should stop."""
    stamp = now or utcnow()
    values: dict[str, Any] = {"bytes_done": bytes_done, "heartbeat_at": stamp, "updated_at": stamp}
    if size is not None:
        values["size"] = size
    result = session.execute(
        update(DownloadFile)
        .where(
            DownloadFile.id == file_id,
            DownloadFile.worker == worker,
            DownloadFile.status.in_([FileStatus.DOWNLOADING, FileStatus.VERIFYING]),
        )
        .values(**values),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


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
    """Store what resolving the file learned (size, sha256, etag, commit)."""
    values = {
        k: v
        for k, v in {"size": size, "sha256": sha256, "etag": etag, "commit": commit}.items()
        if v is not None
    }
    if not values:
        return True
    result = session.execute(
        update(DownloadFile)
        .where(DownloadFile.id == file_id, DownloadFile.worker == worker)
        .values(**values, updated_at=utcnow()),
        execution_options={"synchronize_session": False},
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def record_stopped_bytes(session: Session, file_id: str, *, bytes_done: int) -> None:
    """After a pause: keep the bytes the worker had when it let go (the row is no longer
    the worker's, so record_progress would not write it)."""
    session.execute(
        update(DownloadFile)
        .where(DownloadFile.id == file_id, DownloadFile.status == FileStatus.PAUSED)
        .values(bytes_done=bytes_done),
        execution_options={"synchronize_session": False},
    )


def start_verifying(session: Session, file_id: str, *, worker: str) -> bool:
    """The transfer is done and the checksum is being checked."""
    return transition_file(session, file_id, F.VERIFYING, held_by=worker)


_OUTCOMES = frozenset({F.COMPLETED, F.FAILED, F.CANCELLED, F.PAUSED, F.QUEUED})


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

    `outcome` is completed, failed, cancelled, paused, or queued (handed back). Returns the
    job's new status, or None when the file was not this worker's to finish (a user paused
    or cancelled it meanwhile, or another worker took it over).
    """
    if outcome not in _OUTCOMES:
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
        session,
        file_id,
        outcome,
        only_from=[F.DOWNLOADING, F.VERIFYING],
        held_by=worker,
        now=stamp,
        **values,
    )
    if not ok:
        return None
    return settle_job(session, get_file(session, file_id).job_id, now=stamp)


def derive_job_status(statuses: Iterable[FileStatus], *, started: bool) -> JobStatus:
    """A job's status from its files' statuses."""
    s = set(statuses)
    if s & {F.DOWNLOADING, F.VERIFYING}:
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
    statuses = [r.status for r in rows]
    started = job.started_at is not None or any(s is not F.QUEUED for s in statuses)
    status = derive_job_status(statuses, started=started)
    if status is JobStatus.DOWNLOADING and job.started_at is None:
        job.started_at = stamp
    if status.is_terminal:
        job.finished_at = job.finished_at if job.status == status else stamp
    else:
        job.finished_at = None
    failed = [r for r in rows if r.status is F.FAILED]
    if status is JobStatus.FAILED and failed:
        first = failed[0]
        job.error = f"{len(failed)} of {len(rows)} files failed; {first.file_name}: {first.error}"
    elif status is not JobStatus.CANCELLED:
        job.error = None
    job.status = status
    job.updated_at = stamp
    session.flush()
    return status


# --- user actions on a whole job -------------------------------------------------------------


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


def _current_status(session: Session, job_id: str) -> JobStatus:
    """The job's status derived from its files now, without locking anything."""
    job = get_job(session, job_id)
    statuses = session.scalars(
        select(DownloadFile.status).where(DownloadFile.job_id == job_id)
    ).all()
    started = job.started_at is not None or any(s is not F.QUEUED for s in statuses)
    return derive_job_status(statuses, started=started)


def _act(
    session: Session,
    job_id: str,
    action: str,
    target: FileStatus,
    movable: set[FileStatus],
    allowed_jobs: set[JobStatus],
    **values: Any,
) -> ActionResult:
    # Lock order: file rows first (in file order), then the job row in settle_job, the same
    # order a worker uses, so a user's action and a worker's finish cannot deadlock.
    current = _current_status(session, job_id)
    if current not in allowed_jobs:
        raise IllegalTransitionError(f"cannot {action} a job that is {current.value}")
    active = _files_in(session, job_id, movable & {F.DOWNLOADING, F.VERIFYING})
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
    return _act(
        session,
        job_id,
        "pause",
        F.PAUSED,
        {F.QUEUED, F.DOWNLOADING, F.VERIFYING},
        {JobStatus.QUEUED, JobStatus.DOWNLOADING},
        worker=None,
    )


def resume_job(session: Session, job_id: str) -> ActionResult:
    """Queue the paused files again; they continue from their partial files."""
    # A user's resume or retry starts a fresh count of attempts.
    return _act(
        session,
        job_id,
        "resume",
        F.QUEUED,
        {F.PAUSED},
        {JobStatus.PAUSED},
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
        {F.QUEUED, F.DOWNLOADING, F.VERIFYING, F.PAUSED, F.FAILED},
        {JobStatus.QUEUED, JobStatus.DOWNLOADING, JobStatus.PAUSED, JobStatus.FAILED},
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
        {F.FAILED},
        {JobStatus.FAILED},
        error=None,
        stderr=None,
        finished_at=None,
        worker=None,
        published_at=None,
        attempts=0,
    )


def delete_job(session: Session, job_id: str) -> None:
    """Forget a finished job; its downloaded files stay on disk."""
    current = _current_status(session, job_id)
    if not current.is_terminal:
        raise IllegalTransitionError(
            f"cannot delete a job that is {current.value}; cancel it first"
        )
    session.delete(get_job(session, job_id))
    session.flush()


# --- the sweeper's queries --------------------------------------------------------------------


def mark_published(
    session: Session, file_ids: Iterable[str], *, now: datetime | None = None
) -> None:
    """Record that these files' task messages reached the broker."""
    ids = list(file_ids)
    if ids:
        session.execute(
            update(DownloadFile)
            .where(DownloadFile.id.in_(ids))
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
            DownloadFile.status.in_([FileStatus.DOWNLOADING, FileStatus.VERIFYING]),
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


def requeue_stale(
    session: Session,
    *,
    stale_before: datetime,
    max_attempts: int,
    now: datetime | None = None,
    file_ids: Sequence[str] | None = None,
) -> StaleResult:
    """Hand back files whose holder died. A file that keeps killing workers is failed: lost
    `max_attempts` times in a row without getting any further. A big file on machines that
    restart often (or in the chaos suite) goes on while its claims move it on.
    `file_ids` limits the sweep to those files (whose holders are known to be gone).
    """
    stamp = now or utcnow()
    rows = session.execute(
        select(
            DownloadFile.id,
            DownloadFile.bytes_done,
            DownloadFile.claimed_bytes,
            DownloadFile.stalled_losses,
        ).where(
            DownloadFile.status.in_([FileStatus.DOWNLOADING, FileStatus.VERIFYING]),
            or_(DownloadFile.heartbeat_at.is_(None), DownloadFile.heartbeat_at < stale_before),
            DownloadFile.id.in_(file_ids) if file_ids is not None else true(),
        )
    ).all()
    requeued: list[str] = []
    failed: list[str] = []
    for file_id, bytes_done, claimed_bytes, stalled_losses in rows:
        stale = (DownloadFile.heartbeat_at.is_(None)) | (DownloadFile.heartbeat_at < stale_before)
        stalls = 0 if bytes_done > claimed_bytes else stalled_losses + 1
        values: dict[str, Any] = {"worker": None, "stalled_losses": stalls}
        if stalls >= max_attempts:
            target, bucket = F.FAILED, failed
            values["finished_at"] = stamp
            values["error"] = (
                f"the worker holding this file was lost {stalls} times in a row without "
                "getting any further; giving up"
            )
        else:
            target, bucket = F.QUEUED, requeued
            values["published_at"] = None
        result = session.execute(
            update(DownloadFile)
            .where(
                DownloadFile.id == file_id,
                DownloadFile.status.in_([FileStatus.DOWNLOADING, FileStatus.VERIFYING]),
                stale,
            )
            .values(status=target, updated_at=stamp, **values),
            execution_options={"synchronize_session": False},
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            bucket.append(file_id)
            settle_job(session, get_file(session, file_id).job_id, now=stamp)
    return StaleResult(requeued=requeued, failed=failed)


def dest_wanted_elsewhere(session: Session, dest: str, *, besides: str) -> bool:
    """Whether another unfinished file still needs `dest` (and so its partial)."""
    return (
        session.scalar(
            select(DownloadFile.id)
            .where(
                DownloadFile.dest == dest,
                DownloadFile.id != besides,
                DownloadFile.status.in_([F.QUEUED, F.DOWNLOADING, F.VERIFYING, F.PAUSED, F.FAILED]),
            )
            .limit(1)
        )
        is not None
    )


# --- listing ------------------------------------------------------------------------------------


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
                    DownloadJob.status.in_(
                        [JobStatus.QUEUED, JobStatus.DOWNLOADING, JobStatus.PAUSED]
                    ),
                    DownloadJob.finished_at >= since,
                )
            )
            .order_by(DownloadJob.created_at.desc())
            .limit(limit)
        )
    )
