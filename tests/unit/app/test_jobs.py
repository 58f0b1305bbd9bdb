"""The job state machine against a real job store (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from app import jobs
from app.catalog import parse_catalog
from app.errors import (
    IllegalTransitionError,
    NotFoundError,
    NothingToDownloadError,
    ValidationError,
)
from app.models import DownloadFile, DownloadJob, FileStatus, JobStatus, utcnow

F = FileStatus

CATALOG = parse_catalog(
    """
models:
  pair:
    files:
      - {repo: org/one, file: a.gguf}
      - {repo: org/two, file: sub/b.safetensors, dest: b.safetensors, size: 4}
"""
)


def _job(factory: sessionmaker[Session], n: int = 2) -> tuple[str, list[str]]:
    with factory.begin() as s:
        job = jobs.create_job(
            s,
            [jobs.FileSpec("org/repo", f"f{i}.bin") for i in range(n)],
            method="native",
        )
        return job.id, [f.id for f in job.files]


def _status(factory: sessionmaker[Session], job_id: str) -> tuple[JobStatus, list[FileStatus]]:
    with factory() as s:
        job = jobs.get_job(s, job_id)
        return job.status, [f.status for f in job.files]


def _count(factory: sessionmaker[Session]) -> tuple[int, int]:
    with factory() as s:
        return (
            s.scalar(select(func.count()).select_from(DownloadJob)) or 0,
            s.scalar(select(func.count()).select_from(DownloadFile)) or 0,
        )


def test_create_job_writes_queued_rows_in_order(session_factory: sessionmaker[Session]) -> None:
    job_id, _ = _job(session_factory, 3)
    with session_factory() as s:
        job = jobs.get_job(s, job_id)
        assert job.status is JobStatus.QUEUED
        assert [f.file_index for f in job.files] == [0, 1, 2]
        assert [f.dest for f in job.files] == ["f0.bin", "f1.bin", "f2.bin"]
        assert all(f.status is F.QUEUED and f.bytes_done == 0 for f in job.files)
        assert job.created_at.tzinfo is not None
        assert job.total_bytes is None


def test_model_job_takes_only_missing_files(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    model = CATALOG.get("pair")
    assert model is not None
    (tmp_path / "b.safetensors").write_bytes(b"1234")
    with session_factory.begin() as s:
        job = jobs.create_model_job(s, model, method="native", models_dir=tmp_path)
        assert job.model_id == "pair"
        assert [(f.repo, f.file_name, f.dest) for f in job.files] == [
            ("org/one", "a.gguf", "a.gguf")
        ]


def test_model_job_for_a_present_model_is_refused(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    model = CATALOG.get("pair")
    assert model is not None
    (tmp_path / "a.gguf").write_bytes(b"x")
    (tmp_path / "b.safetensors").write_bytes(b"1234")
    with session_factory() as s, pytest.raises(NothingToDownloadError, match="already present"):
        jobs.create_model_job(s, model, method="native", models_dir=tmp_path)
    assert _count(session_factory) == (0, 0)


@pytest.mark.parametrize(
    ("specs", "field"),
    [
        ([], "files"),
        ([jobs.FileSpec("not a repo", "a.bin")], "repo"),
        ([jobs.FileSpec("../etc", "a.bin")], "repo"),
        ([jobs.FileSpec("org/repo", "../../etc/passwd")], "files[0]"),
        ([jobs.FileSpec("org/repo", "/etc/passwd")], "files[0]"),
        ([jobs.FileSpec("org/repo", "a.bin", dest="../x")], "files[0].dest"),
        ([jobs.FileSpec("org/repo", "a.bin", dest=".modelpull/partial/x")], "files[0].dest"),
        ([jobs.FileSpec("org/repo", "a.bin", revision="a b")], "revision"),
        ([jobs.FileSpec("org/repo", "a.bin"), jobs.FileSpec("org/other", "a.bin")], "files[1]"),
    ],
)
def test_bad_requests_name_the_field_and_write_nothing(
    session_factory: sessionmaker[Session], specs: list[jobs.FileSpec], field: str
) -> None:
    with session_factory() as s:
        with pytest.raises(ValidationError) as info:
            jobs.create_job(s, specs, method="native")
        s.commit()
    assert info.value.field == field
    assert _count(session_factory) == (0, 0)


def test_a_second_claimer_gets_nothing(session_factory: sessionmaker[Session]) -> None:
    job_id, (fid, _) = _job(session_factory)
    with session_factory() as first, session_factory() as second:
        got = jobs.claim_file(first, fid, worker="w1", task_id="t1")
        first.commit()
        assert jobs.claim_file(second, fid, worker="w2", task_id="t2") is None
        second.commit()
    assert got is not None and got.status is F.DOWNLOADING and got.attempts == 1
    with session_factory() as s:
        row = jobs.get_file(s, fid)
        assert (row.worker, row.task_id, row.attempts) == ("w1", "t1", 1)
    assert _status(session_factory, job_id)[0] is JobStatus.DOWNLOADING


def test_concurrent_claims_have_exactly_one_winner(session_factory: sessionmaker[Session]) -> None:
    _, (fid, _) = _job(session_factory)
    winners: list[str] = []
    barrier = threading.Barrier(4)

    def claim(name: str) -> None:
        barrier.wait()
        with session_factory() as s:
            if jobs.claim_file(s, fid, worker=name) is not None:
                winners.append(name)
            s.commit()

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(winners) == 1


def test_a_stale_lease_is_taken_over_but_a_live_one_is_not(
    session_factory: sessionmaker[Session],
) -> None:
    _, (fid, _) = _job(session_factory)
    t0 = utcnow()
    with session_factory.begin() as s:
        assert jobs.claim_file(s, fid, worker="dead", now=t0) is not None
    with session_factory.begin() as s:
        live = jobs.claim_file(s, fid, worker="w2", stale_before=t0 - timedelta(seconds=60))
        assert live is None
    with session_factory.begin() as s:
        taken = jobs.claim_file(s, fid, worker="w2", stale_before=t0 + timedelta(seconds=1))
        assert taken is not None and taken.worker == "w2" and taken.attempts == 2
    # The dead worker's late writes no longer land.
    with session_factory.begin() as s:
        assert not jobs.record_progress(s, fid, worker="dead", bytes_done=10)
        assert jobs.finish_file(s, fid, F.COMPLETED, worker="dead") is None


def test_progress_renews_the_lease_and_stops_after_pause(
    session_factory: sessionmaker[Session],
) -> None:
    job_id, (fid, _) = _job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, fid, worker="w1")
    with session_factory.begin() as s:
        assert jobs.record_progress(s, fid, worker="w1", bytes_done=500, size=1000)
        assert not jobs.record_progress(s, fid, worker="intruder", bytes_done=900)
    with session_factory() as s:
        row = jobs.get_file(s, fid)
        assert (row.bytes_done, row.size) == (500, 1000)
    with session_factory.begin() as s:
        result = jobs.pause_job(s, job_id)
        assert result.active_file_ids == [fid]
    with session_factory.begin() as s:
        assert not jobs.record_progress(s, fid, worker="w1", bytes_done=600)
    with session_factory() as s:
        assert jobs.get_file(s, fid).bytes_done == 500


def test_finishing_the_last_file_settles_the_job(session_factory: sessionmaker[Session]) -> None:
    job_id, (a, b) = _job(session_factory)
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
    job_id, (a, b) = _job(session_factory)
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


def test_a_handed_back_file_is_queued_for_another_worker(
    session_factory: sessionmaker[Session],
) -> None:
    _, (a, _) = _job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
        assert jobs.finish_file(s, a, F.QUEUED, worker="w1", bytes_done=42) is not None
    with session_factory.begin() as s:
        row = jobs.claim_file(s, a, worker="w2")
        assert row is not None and row.bytes_done == 42 and row.attempts == 2


def test_finish_file_refuses_non_outcomes(session_factory: sessionmaker[Session]) -> None:
    _, (a, _) = _job(session_factory)
    with session_factory() as s, pytest.raises(ValueError, match="not an outcome"):
        jobs.finish_file(s, a, F.VERIFYING)


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
    _, ids = _job(session_factory, len(ALL))
    with session_factory.begin() as s:
        s.execute(
            DownloadFile.__table__.update()
            .where(DownloadFile.id.in_(ids))
            .values(status=current.value)
        )
    for fid, target in zip(ids, ALL, strict=True):
        with session_factory.begin() as s:
            moved = jobs.transition_file(s, fid, target)
        with session_factory() as s:
            now = jobs.get_file(s, fid).status
        legal = target in expected_legal
        assert moved is legal, f"{current} -> {target}"
        assert jobs.can_transition(current, target) is legal
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


def test_pause_then_resume_requeues_unfinished_files(
    session_factory: sessionmaker[Session],
) -> None:
    job_id, (a, b) = _job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
    with session_factory.begin() as s:
        paused = jobs.pause_job(s, job_id)
    assert paused.status is JobStatus.PAUSED
    assert paused.active_file_ids == [a] and paused.enqueue_file_ids == []
    assert _status(session_factory, job_id) == (JobStatus.PAUSED, [F.PAUSED, F.PAUSED])
    with session_factory.begin() as s:
        resumed = jobs.resume_job(s, job_id)
    assert resumed.enqueue_file_ids == [a, b]
    assert resumed.status is JobStatus.DOWNLOADING  # it had started before the pause
    assert _status(session_factory, job_id)[1] == [F.QUEUED, F.QUEUED]
    with session_factory() as s:
        row = jobs.get_file(s, a)
        assert row.worker is None and row.attempts == 0  # a user's resume starts afresh


def test_cancel_stops_everything_not_completed(session_factory: sessionmaker[Session]) -> None:
    job_id, (a, b) = _job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
        jobs.finish_file(s, a, F.COMPLETED, worker="w1")
        jobs.claim_file(s, b, worker="w1")
    with session_factory.begin() as s:
        result = jobs.cancel_job(s, job_id)
    assert result.status is JobStatus.CANCELLED and result.active_file_ids == [b]
    assert _status(session_factory, job_id) == (JobStatus.CANCELLED, [F.COMPLETED, F.CANCELLED])
    # The worker that held it cannot complete it afterwards.
    with session_factory.begin() as s:
        assert jobs.finish_file(s, b, F.COMPLETED, worker="w1") is None
    assert _status(session_factory, job_id)[0] is JobStatus.CANCELLED


def test_retry_requeues_only_failed_files(session_factory: sessionmaker[Session]) -> None:
    job_id, (a, b) = _job(session_factory)
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
    job_id, ids = _job(session_factory)
    with session_factory.begin() as s:
        if setup == "completed":
            for fid in ids:
                jobs.claim_file(s, fid, worker="w")
                jobs.finish_file(s, fid, F.COMPLETED, worker="w")
        elif setup == "paused":
            jobs.pause_job(s, job_id)
        elif setup == "cancelled":
            jobs.cancel_job(s, job_id)
    before = _status(session_factory, job_id)
    with session_factory() as s:
        with pytest.raises(IllegalTransitionError, match="cannot"):
            action(s, job_id)  # type: ignore[operator]
        s.commit()
    assert _status(session_factory, job_id) == before


def test_delete_forgets_a_finished_job(session_factory: sessionmaker[Session]) -> None:
    job_id, _ = _job(session_factory)
    with session_factory.begin() as s:
        jobs.cancel_job(s, job_id)
    with session_factory.begin() as s:
        jobs.delete_job(s, job_id)
    assert _count(session_factory) == (0, 0)
    with session_factory() as s, pytest.raises(NotFoundError):
        jobs.get_job(s, job_id)


def test_unknown_ids_are_not_found(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        with pytest.raises(NotFoundError):
            jobs.pause_job(s, "0" * 32)
        with pytest.raises(NotFoundError):
            jobs.get_file(s, "0" * 32)
        assert jobs.claim_file(s, "0" * 32, worker="w") is None


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_two_workers_finishing_the_last_files_at_once_complete_the_job(
    session_factory: sessionmaker[Session],
) -> None:
    # Without the job-row lock each transaction would read the other's file as still
    # downloading and the job would stay 'downloading' forever.
    job_id, (a, b) = _job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
        jobs.claim_file(s, b, worker="w2")
    first = session_factory()
    assert jobs.finish_file(first, a, F.COMPLETED, worker="w1") is JobStatus.DOWNLOADING
    outcome: list[JobStatus | None] = []

    def second() -> None:
        with session_factory.begin() as s:
            outcome.append(jobs.finish_file(s, b, F.COMPLETED, worker="w2"))

    t = threading.Thread(target=second)
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
            if waiting:
                break
            threading.Event().wait(0.01)
        assert waiting, "the second finisher never waited for the job row lock"
    first.commit()
    first.close()
    t.join(timeout=30)
    assert outcome == [JobStatus.COMPLETED]
    assert _status(session_factory, job_id)[0] is JobStatus.COMPLETED
