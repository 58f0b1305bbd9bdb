"""Claims and leases (app/jobs/claims.py): one holder per file, and only its writes land."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app import jobs, models
from app.db import db_now
from app.models import FileStatus, JobStatus, utcnow
from tests.unit.app.jobs.support import job_status, make_job, skew_clock

F = FileStatus
SKEW = timedelta(minutes=5)
LEASE = timedelta(seconds=60)


def test_a_second_claimer_gets_nothing(session_factory: sessionmaker[Session]) -> None:
    job_id, (fid, _) = make_job(session_factory)
    with session_factory() as first, session_factory() as second:
        got = jobs.claim_file(first, fid, worker="w1", task_id="t1")
        first.commit()
        assert jobs.claim_file(second, fid, worker="w2", task_id="t2") is None
        second.commit()
    assert got is not None and got.status is F.DOWNLOADING and got.attempts == 1
    with session_factory() as s:
        row = jobs.get_file(s, fid)
        assert (row.worker, row.task_id, row.attempts) == ("w1", "t1", 1)
    assert job_status(session_factory, job_id)[0] is JobStatus.DOWNLOADING


def test_concurrent_claims_have_exactly_one_winner(session_factory: sessionmaker[Session]) -> None:
    _, (fid, _) = make_job(session_factory)
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
    _, (fid, _) = make_job(session_factory)
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
    job_id, (fid, _) = make_job(session_factory)
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


def test_a_handed_back_file_is_queued_for_another_worker(
    session_factory: sessionmaker[Session],
) -> None:
    _, (a, _) = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
        assert jobs.finish_file(s, a, F.QUEUED, worker="w1", bytes_done=42) is not None
    with session_factory.begin() as s:
        row = jobs.claim_file(s, a, worker="w2")
        assert row is not None and row.bytes_done == 42 and row.attempts == 2


def test_finish_file_refuses_non_outcomes(session_factory: sessionmaker[Session]) -> None:
    _, (a, _) = make_job(session_factory)
    with session_factory() as s, pytest.raises(ValueError, match="not an outcome"):
        jobs.finish_file(s, a, F.VERIFYING)


def test_metadata_is_stored_only_for_the_holder(session_factory: sessionmaker[Session]) -> None:
    _, (a, _) = make_job(session_factory)
    digest = "ab" * 32
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
    with session_factory.begin() as s:
        assert jobs.record_metadata(
            s, a, worker="w1", size=10, sha256=digest, etag="e1", commit="c" * 40
        )
        assert not jobs.record_metadata(s, a, worker="intruder", size=99, etag="e2")
        # Nothing learned: nothing to write, and not a lost hold either.
        assert jobs.record_metadata(s, a, worker="intruder")
    with session_factory() as s:
        row = jobs.get_file(s, a)
        assert (row.size, row.sha256, row.etag, row.commit) == (10, digest, "e1", "c" * 40)


def test_stopped_bytes_land_only_on_a_paused_file(session_factory: sessionmaker[Session]) -> None:
    job_id, (a, _) = make_job(session_factory)
    _, (other, _) = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
        assert jobs.record_progress(s, a, worker="w1", bytes_done=100)
        jobs.pause_job(s, job_id)
    with session_factory.begin() as s:
        jobs.record_stopped_bytes(s, a, bytes_done=300)
        jobs.record_stopped_bytes(s, other, bytes_done=300)
    with session_factory() as s:
        assert jobs.get_file(s, a).bytes_done == 300
        assert jobs.get_file(s, other).bytes_done == 0


def test_only_the_holder_starts_verifying(session_factory: sessionmaker[Session]) -> None:
    _, (a, _) = make_job(session_factory)
    with session_factory.begin() as s:
        assert not jobs.start_verifying(s, a, worker="w1")  # queued: nobody holds it yet
        jobs.claim_file(s, a, worker="w1")
        assert not jobs.start_verifying(s, a, worker="intruder")
    with session_factory() as s:
        assert jobs.get_file(s, a).status is F.DOWNLOADING
    with session_factory.begin() as s:
        assert jobs.start_verifying(s, a, worker="w1")
        # A verifying file is still held: its worker's progress renews the lease.
        assert jobs.record_progress(s, a, worker="w1", bytes_done=4)
    with session_factory() as s:
        assert jobs.get_file(s, a).status is F.VERIFYING


def test_finishing_stores_what_the_worker_learned(session_factory: sessionmaker[Session]) -> None:
    _, (a, _) = make_job(session_factory)
    digest = "cd" * 32
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="w1")
        jobs.finish_file(s, a, F.COMPLETED, worker="w1", bytes_done=5, size=5, sha256=digest)
    with session_factory() as s:
        row = jobs.get_file(s, a)
        assert (row.status, row.bytes_done, row.size, row.sha256) == (F.COMPLETED, 5, 5, digest)
        assert row.finished_at is not None and row.error is None


def test_a_handed_back_file_is_let_go_and_sent_again(
    session_factory: sessionmaker[Session],
) -> None:
    _, (a, _) = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.mark_published(s, [a])
        jobs.claim_file(s, a, worker="w1")
        jobs.finish_file(s, a, F.QUEUED, worker="w1")
    with session_factory() as s:
        row = jobs.get_file(s, a)
        assert (row.status, row.worker, row.published_at) == (F.QUEUED, None, None)
        assert row.finished_at is None
        assert a in jobs.unpublished_files(s)


def test_heartbeats_carry_the_database_clock_not_the_workers(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, (a, _) = make_job(session_factory)
    skew_clock(monkeypatch, -SKEW)  # the worker's machine is five minutes behind
    with session_factory.begin() as s:
        assert jobs.claim_file(s, a, worker="slow") is not None
    with session_factory.begin() as s:
        assert jobs.record_progress(s, a, worker="slow", bytes_done=10)
    with session_factory() as s:
        beat, now = jobs.get_file(s, a).heartbeat_at, db_now(s)
    # Stamped by the store: it does not look minutes old to a sweeper on the right time.
    assert beat is not None and abs((now - beat).total_seconds()) < 30


def test_a_worker_with_a_fast_clock_does_not_take_over_a_live_file(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, (a, _) = make_job(session_factory)
    with session_factory.begin() as s:
        assert jobs.claim_file(s, a, worker="live") is not None
    skew_clock(monkeypatch, SKEW)  # the would-be taker's machine is five minutes ahead
    with session_factory.begin() as s:
        # As the pipeline asks: "stale" measured on the worker's own clock.
        stale_before = models.utcnow() - LEASE
        assert jobs.claim_file(s, a, worker="fast", stale_before=stale_before) is None
        assert jobs.claim_file(s, a, worker="fast", lease_seconds=LEASE.seconds) is None
    with session_factory() as s:
        assert jobs.get_file(s, a).worker == "live"
    # Once the holder has really been silent for a lease (by the store's clock), it is taken.
    with session_factory.begin() as s:
        assert jobs.record_progress(s, a, worker="live", bytes_done=1, now=db_now(s) - 2 * LEASE)
    with session_factory.begin() as s:
        taken = jobs.claim_file(s, a, worker="fast", stale_before=models.utcnow() - LEASE)
        assert taken is not None and taken.worker == "fast"
