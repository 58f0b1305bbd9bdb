"""States and transitions (app/jobs/states.py): the legal moves and how a job settles."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.orm import Session, sessionmaker

from app import jobs
from app.models import DownloadFile, FileStatus, JobStatus, utcnow
from tests.unit.app.jobs.support import job_status, make_job

F = FileStatus

ALL = list(FileStatus)


@pytest.mark.parametrize("current", ALL, ids=lambda s: s.value)
def test_every_file_transition_is_allowed_exactly_when_legal(
    session_factory: sessionmaker[Session], current: FileStatus
) -> None:
    expected_legal = {
        F.QUEUED: {F.DOWNLOADING, F.PAUSED, F.CANCELLED, F.FAILED},
        F.DOWNLOADING: {F.VERIFYING, F.PAUSED, F.QUEUED, F.COMPLETED, F.FAILED, F.CANCELLED},
        F.VERIFYING: {F.COMPLETED, F.FAILED, F.PAUSED, F.QUEUED, F.CANCELLED},
        F.PAUSED: {F.QUEUED, F.CANCELLED},
        F.FAILED: {F.QUEUED, F.CANCELLED},
        F.COMPLETED: set(),
        F.CANCELLED: set(),
    }[current]
    _, ids = make_job(session_factory, len(ALL))
    with session_factory.begin() as s:
        s.execute(update(DownloadFile).where(DownloadFile.id.in_(ids)).values(status=current))
    for fid, target in zip(ids, ALL, strict=True):
        with session_factory.begin() as s:
            moved = jobs.transition_file(s, fid, target)
        with session_factory() as s:
            now = jobs.get_file(s, fid).status
        legal = target in expected_legal
        assert moved is legal, f"{current} -> {target}"
        assert (target in jobs.FILE_TRANSITIONS[current]) is legal
        assert now is (target if legal else current)


def test_terminal_states() -> None:
    assert {s for s in FileStatus if s.is_terminal} == {F.COMPLETED, F.FAILED, F.CANCELLED}
    assert {s for s in JobStatus if s.is_terminal} == {
        JobStatus.COMPLETED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    }
    assert all(not jobs.FILE_TRANSITIONS[s] for s in (F.COMPLETED, F.CANCELLED))


@pytest.mark.parametrize(
    ("statuses", "started", "expected"),
    [
        ([F.QUEUED, F.QUEUED], False, JobStatus.QUEUED),
        ([F.QUEUED, F.COMPLETED], True, JobStatus.DOWNLOADING),
        ([F.DOWNLOADING, F.PAUSED], True, JobStatus.DOWNLOADING),
        ([F.VERIFYING, F.COMPLETED], True, JobStatus.DOWNLOADING),
        ([F.PAUSED, F.COMPLETED], True, JobStatus.PAUSED),
        ([F.PAUSED, F.FAILED], True, JobStatus.PAUSED),
        ([F.CANCELLED, F.COMPLETED], True, JobStatus.CANCELLED),
        ([F.CANCELLED, F.FAILED], True, JobStatus.CANCELLED),
        ([F.FAILED, F.COMPLETED], True, JobStatus.FAILED),
        ([F.COMPLETED, F.COMPLETED], True, JobStatus.COMPLETED),
    ],
)
def test_job_status_is_derived_from_its_files(
    statuses: list[FileStatus], started: bool, expected: JobStatus
) -> None:
    assert jobs.derive_job_status(statuses, started=started) is expected


def test_finishing_the_last_file_settles_the_job(session_factory: sessionmaker[Session]) -> None:
    job_id, (a, b) = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
        jobs.claim_file(s, b, worker="w2")
    with session_factory.begin() as s:
        assert jobs.start_verifying(s, a, worker="w1")
        assert jobs.finish_file(s, a, F.COMPLETED, worker="w1", bytes_done=10) is (
            JobStatus.DOWNLOADING
        )
    with session_factory.begin() as s:
        assert jobs.finish_file(s, b, F.COMPLETED, worker="w2") is JobStatus.COMPLETED
    with session_factory() as s:
        job = jobs.get_job(s, job_id)
        assert job.status is JobStatus.COMPLETED
        assert job.finished_at is not None and job.started_at is not None
        assert all(f.finished_at is not None for f in job.files)


def test_a_failed_file_fails_the_job_with_its_error_once_all_end(
    session_factory: sessionmaker[Session],
) -> None:
    job_id, (a, b) = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w")
        jobs.claim_file(s, b, worker="w")
        st = jobs.finish_file(s, a, F.FAILED, worker="w", error="gated repo", stderr="trace\n")
        assert st is JobStatus.DOWNLOADING
        assert jobs.finish_file(s, b, F.COMPLETED, worker="w") is JobStatus.FAILED
    with session_factory() as s:
        job = jobs.get_job(s, job_id)
        assert job.error == "1 of 2 files failed; f0.bin: gated repo"
        assert (job.files[0].error, job.files[0].stderr) == ("gated repo", "trace\n")


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_workers_finishing_the_last_files_at_once_complete_the_job(
    session_factory: sessionmaker[Session],
) -> None:
    # Without the job-row lock each transaction would read the other's file as still
    # downloading and the job would stay 'downloading' forever.
    job_id, (a, b) = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
        jobs.claim_file(s, b, worker="w2")
    first = session_factory()
    outcome: list[JobStatus | None] = []

    def second() -> None:
        with session_factory.begin() as s:
            outcome.append(jobs.finish_file(s, b, F.COMPLETED, worker="w2"))

    t = threading.Thread(target=second)
    try:
        assert jobs.finish_file(first, a, F.COMPLETED, worker="w1") is JobStatus.DOWNLOADING
        t.start()
        # Wait until the second transaction is blocked on the job row, then commit the first.
        with session_factory() as probe:
            for _ in range(500):
                waiting = probe.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                )
                # pg_stat_activity is read once per transaction: end it to see a fresh one.
                probe.rollback()
                if waiting:
                    break
                threading.Event().wait(0.01)
            assert waiting, "the second finisher never waited for the job row lock"
        first.commit()
    finally:
        # On a failure, rolling back frees the job row so the second finisher and the
        # fixture's TRUNCATE do not wait forever.
        first.close()
        if t.is_alive():
            t.join(timeout=30)
    assert outcome == [JobStatus.COMPLETED]
    assert job_status(session_factory, job_id)[0] is JobStatus.COMPLETED


def test_settling_an_ended_job_again_keeps_when_it_ended(
    session_factory: sessionmaker[Session],
) -> None:
    job_id, (a,) = make_job(session_factory, 1)
    ended = utcnow() - timedelta(hours=1)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w", now=ended)
        assert jobs.finish_file(s, a, F.COMPLETED, worker="w", now=ended) is JobStatus.COMPLETED
    with session_factory.begin() as s:
        assert jobs.settle_job(s, job_id) is JobStatus.COMPLETED
    with session_factory() as s:
        job = jobs.get_job(s, job_id)
        assert (job.started_at, job.finished_at) == (ended, ended)


def test_a_job_that_is_under_way_again_has_not_ended(
    session_factory: sessionmaker[Session],
) -> None:
    job_id, (a,) = make_job(session_factory, 1)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w")
        jobs.finish_file(s, a, F.FAILED, worker="w", error="HTTP 500")
    with session_factory.begin() as s:
        assert jobs.transition_file(s, a, F.QUEUED)
        assert jobs.settle_job(s, job_id) is JobStatus.DOWNLOADING
    with session_factory() as s:
        job = jobs.get_job(s, job_id)
        assert (job.status, job.finished_at, job.error) == (JobStatus.DOWNLOADING, None, None)


def test_a_transition_can_be_limited_to_some_sources_and_a_holder(
    session_factory: sessionmaker[Session],
) -> None:
    _, (a, b) = make_job(session_factory)
    with session_factory.begin() as s:
        # queued -> paused is legal, but not from the states the caller allows.
        assert not jobs.transition_file(s, a, F.PAUSED, only_from=[F.DOWNLOADING])
        jobs.claim_file(s, b, worker="w1")
        assert not jobs.transition_file(s, b, F.PAUSED, held_by="w2")
        assert jobs.transition_file(s, b, F.PAUSED, held_by="w1", worker=None)
    with session_factory() as s:
        assert jobs.get_file(s, a).status is F.QUEUED
        row = jobs.get_file(s, b)
        assert (row.status, row.worker) == (F.PAUSED, None)
