"""User actions on a job (app/jobs/actions.py): what each moves, and what each refuses."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app import jobs
from app.errors import IllegalTransitionError, NotFoundError
from app.models import FileStatus, JobStatus
from tests.unit.app.jobs.support import job_status, make_job, row_counts

F = FileStatus


def test_pause_then_resume_requeues_unfinished_files(
    session_factory: sessionmaker[Session],
) -> None:
    job_id, (a, b) = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
    with session_factory.begin() as s:
        paused = jobs.pause_job(s, job_id)
    assert paused.status is JobStatus.PAUSED
    assert paused.active_file_ids == [a] and paused.enqueue_file_ids == []
    assert job_status(session_factory, job_id) == (JobStatus.PAUSED, [F.PAUSED, F.PAUSED])
    with session_factory.begin() as s:
        resumed = jobs.resume_job(s, job_id)
    assert resumed.enqueue_file_ids == [a, b]
    assert resumed.status is JobStatus.DOWNLOADING  # it had started before the pause
    assert job_status(session_factory, job_id)[1] == [F.QUEUED, F.QUEUED]
    with session_factory() as s:
        row = jobs.get_file(s, a)
        assert row.worker is None and row.attempts == 0  # a user's resume starts afresh


def test_cancel_stops_everything_not_completed(session_factory: sessionmaker[Session]) -> None:
    job_id, (a, b) = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
        jobs.finish_file(s, a, F.COMPLETED, worker="w1")
        jobs.claim_file(s, b, worker="w1")
    with session_factory.begin() as s:
        result = jobs.cancel_job(s, job_id)
    assert result.status is JobStatus.CANCELLED and result.active_file_ids == [b]
    assert job_status(session_factory, job_id) == (JobStatus.CANCELLED, [F.COMPLETED, F.CANCELLED])
    # The worker that held it cannot complete it afterwards.
    with session_factory.begin() as s:
        assert jobs.finish_file(s, b, F.COMPLETED, worker="w1") is None
    assert job_status(session_factory, job_id)[0] is JobStatus.CANCELLED


def test_retry_requeues_only_failed_files(session_factory: sessionmaker[Session]) -> None:
    job_id, (a, b) = make_job(session_factory)
    with session_factory.begin() as s:
        for fid, outcome in ((a, F.FAILED), (b, F.COMPLETED)):
            jobs.claim_file(s, fid, worker="w")
            jobs.finish_file(s, fid, outcome, worker="w", error="HTTP 500", bytes_done=7)
    with session_factory.begin() as s:
        result = jobs.retry_job(s, job_id)
    assert result.enqueue_file_ids == [a]
    with session_factory() as s:
        job = jobs.get_job(s, job_id)
        assert job.status is JobStatus.DOWNLOADING and job.error is None
        assert job.finished_at is None and job.files[0].attempts == 0
        assert (job.files[0].status, job.files[0].error, job.files[0].bytes_done) == (
            F.QUEUED,
            None,
            7,
        )


@pytest.mark.parametrize(
    ("setup", "action"),
    [
        ("completed", jobs.resume_job),
        ("completed", jobs.pause_job),
        ("completed", jobs.cancel_job),
        ("completed", jobs.retry_job),
        ("queued", jobs.resume_job),
        ("queued", jobs.retry_job),
        ("queued", jobs.delete_job),
        ("paused", jobs.pause_job),
        ("cancelled", jobs.cancel_job),
        ("cancelled", jobs.resume_job),
    ],
)
def test_illegal_job_actions_are_refused_and_change_nothing(
    session_factory: sessionmaker[Session], setup: str, action: object
) -> None:
    job_id, ids = make_job(session_factory)
    with session_factory.begin() as s:
        if setup == "completed":
            for fid in ids:
                jobs.claim_file(s, fid, worker="w")
                jobs.finish_file(s, fid, F.COMPLETED, worker="w")
        elif setup == "paused":
            jobs.pause_job(s, job_id)
        elif setup == "cancelled":
            jobs.cancel_job(s, job_id)
    before = job_status(session_factory, job_id)
    with session_factory() as s:
        with pytest.raises(IllegalTransitionError, match="cannot"):
            action(s, job_id)  # type: ignore[operator]
        s.commit()
    assert job_status(session_factory, job_id) == before


def test_delete_forgets_a_finished_job(session_factory: sessionmaker[Session]) -> None:
    job_id, _ = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.cancel_job(s, job_id)
    with session_factory.begin() as s:
        jobs.delete_job(s, job_id)
    assert row_counts(session_factory) == (0, 0)
    with session_factory() as s, pytest.raises(NotFoundError):
        jobs.get_job(s, job_id)


def test_pause_stops_a_verifying_file_too(session_factory: sessionmaker[Session]) -> None:
    job_id, (a, _) = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
        jobs.start_verifying(s, a, worker="w1")
    with session_factory.begin() as s:
        result = jobs.pause_job(s, job_id)
    assert result.active_file_ids == [a] and result.enqueue_file_ids == []
    assert job_status(session_factory, job_id) == (JobStatus.PAUSED, [F.PAUSED, F.PAUSED])
    with session_factory() as s:
        assert jobs.get_file(s, a).worker is None
    # The worker that was verifying cannot complete it afterwards.
    with session_factory.begin() as s:
        assert jobs.finish_file(s, a, F.COMPLETED, worker="w1") is None
    assert job_status(session_factory, job_id)[1] == [F.PAUSED, F.PAUSED]


def test_cancel_gives_up_a_failed_job_and_keeps_its_error(
    session_factory: sessionmaker[Session],
) -> None:
    job_id, (a, b) = make_job(session_factory)
    with session_factory.begin() as s:
        for fid in (a, b):
            jobs.claim_file(s, fid, worker="w")
            jobs.finish_file(s, fid, F.FAILED, worker="w", error="HTTP 500")
    with session_factory.begin() as s:
        result = jobs.cancel_job(s, job_id)
    assert result.status is JobStatus.CANCELLED
    assert result.active_file_ids == [] and result.enqueue_file_ids == []
    assert job_status(session_factory, job_id) == (
        JobStatus.CANCELLED,
        [F.CANCELLED, F.CANCELLED],
    )
    with session_factory() as s:
        job = jobs.get_job(s, job_id)
        assert job.error == "2 of 2 files failed; f0.bin: HTTP 500"
        assert job.finished_at is not None
        assert all(f.finished_at is not None for f in job.files)


def test_a_job_under_way_is_not_deleted(session_factory: sessionmaker[Session]) -> None:
    job_id, (a, _) = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w")
    with session_factory() as s, pytest.raises(IllegalTransitionError, match="cancel it first"):
        jobs.delete_job(s, job_id)
    assert row_counts(session_factory) == (1, 2)
