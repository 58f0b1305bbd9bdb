"""What the sweeper asks (app/jobs/recovery.py): unsent and untaken messages, quiet holders,
lost files handed back or failed, and partials another file still needs."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from app import jobs
from app.models import FileStatus, JobStatus, utcnow
from tests.unit.app.jobs.support import job_status, make_job

F = FileStatus


def test_sent_files_leave_the_unsent_list_and_wait_for_a_taker(
    session_factory: sessionmaker[Session],
) -> None:
    _, (a, b, c) = make_job(session_factory, 3)
    t0 = utcnow()
    with session_factory.begin() as s:
        assert set(jobs.unpublished_files(s)) == {a, b, c}
        assert len(jobs.unpublished_files(s, limit=2)) == 2
        jobs.mark_published(s, [a, b], now=t0)
        jobs.mark_published(s, [], now=t0)
    with session_factory.begin() as s:
        assert jobs.unpublished_files(s) == [c]
        assert jobs.queued_published_before(s, t0) == []
        assert set(jobs.queued_published_before(s, t0 + timedelta(seconds=1))) == {a, b}
        jobs.claim_file(s, a, worker="w1")
    with session_factory() as s:
        # A claimed file's message was taken: it is no longer waiting.
        assert jobs.queued_published_before(s, t0 + timedelta(seconds=1)) == [b]


def test_quiet_holders_are_those_whose_heartbeat_stopped(
    session_factory: sessionmaker[Session],
) -> None:
    _, (quiet, live, _) = make_job(session_factory, 3)
    t0 = utcnow()
    with session_factory.begin() as s:
        jobs.claim_file(s, quiet, worker="host:1:a", now=t0 - timedelta(seconds=120))
        jobs.claim_file(s, live, worker="host:2:b", now=t0)
    with session_factory() as s:
        assert jobs.quiet_holders(s, quiet_before=t0 - timedelta(seconds=60)) == [
            (quiet, "host:1:a")
        ]
        assert sorted(jobs.quiet_holders(s, quiet_before=t0 + timedelta(seconds=1))) == sorted(
            [(quiet, "host:1:a"), (live, "host:2:b")]
        )


def test_a_lost_file_is_queued_again_and_a_live_one_is_left_alone(
    session_factory: sessionmaker[Session],
) -> None:
    job_id, (lost, live) = make_job(session_factory)
    t0 = utcnow()
    with session_factory.begin() as s:
        jobs.claim_file(s, lost, worker="dead", now=t0 - timedelta(seconds=120))
        jobs.claim_file(s, live, worker="alive", now=t0)
    with session_factory.begin() as s:
        result = jobs.requeue_stale(s, stale_before=t0 - timedelta(seconds=60), max_attempts=3)
    assert (result.requeued, result.failed) == ([lost], [])
    assert job_status(session_factory, job_id) == (JobStatus.DOWNLOADING, [F.QUEUED, F.DOWNLOADING])
    with session_factory() as s:
        row = jobs.get_file(s, lost)
        assert (row.worker, row.published_at, row.stalled_losses) == (None, None, 1)
        assert jobs.get_file(s, live).worker == "alive"
    # The dead worker's late writes no longer land.
    with session_factory.begin() as s:
        assert not jobs.record_progress(s, lost, worker="dead", bytes_done=10)


def test_a_file_that_keeps_killing_workers_fails(session_factory: sessionmaker[Session]) -> None:
    job_id, (poison,) = make_job(session_factory, 1)
    t0 = utcnow()
    for loss in (1, 2):
        claimed_at = t0 + timedelta(seconds=loss)
        with session_factory.begin() as s:
            assert jobs.claim_file(s, poison, worker=f"w{loss}", now=claimed_at) is not None
        with session_factory.begin() as s:
            result = jobs.requeue_stale(
                s,
                stale_before=claimed_at + timedelta(seconds=1),
                max_attempts=2,
                now=claimed_at + timedelta(seconds=2),
            )
    assert (result.requeued, result.failed) == ([], [poison])
    with session_factory() as s:
        row = jobs.get_file(s, poison)
        assert (row.status, row.stalled_losses, row.worker) == (F.FAILED, 2, None)
        assert row.error is not None and "lost 2 times in a row" in row.error
        assert row.finished_at == t0 + timedelta(seconds=4)
        job = jobs.get_job(s, job_id)
        assert job.status is JobStatus.FAILED and job.error is not None
        assert "lost 2 times in a row" in job.error


def test_a_file_that_moves_on_between_losses_is_never_given_up(
    session_factory: sessionmaker[Session],
) -> None:
    _, (big,) = make_job(session_factory, 1)
    t0 = utcnow()
    for loss in (1, 2, 3):
        claimed_at = t0 + timedelta(seconds=loss)
        with session_factory.begin() as s:
            jobs.claim_file(s, big, worker=f"w{loss}", now=claimed_at)
            assert jobs.record_progress(
                s, big, worker=f"w{loss}", bytes_done=100 * loss, now=claimed_at
            )
        with session_factory.begin() as s:
            result = jobs.requeue_stale(
                s, stale_before=claimed_at + timedelta(seconds=1), max_attempts=1
            )
        assert (result.requeued, result.failed) == ([big], [])
    with session_factory() as s:
        row = jobs.get_file(s, big)
        assert (row.status, row.stalled_losses, row.bytes_done) == (F.QUEUED, 0, 300)


def test_the_sweep_can_be_limited_to_some_files(session_factory: sessionmaker[Session]) -> None:
    _, (a, b) = make_job(session_factory)
    t0 = utcnow()
    with session_factory.begin() as s:
        jobs.claim_file(s, a, worker="gone", now=t0)
        jobs.claim_file(s, b, worker="slow", now=t0)
    with session_factory.begin() as s:
        result = jobs.requeue_stale(
            s, stale_before=t0 + timedelta(seconds=1), max_attempts=3, file_ids=[a]
        )
    assert result.requeued == [a]
    with session_factory() as s:
        assert jobs.get_file(s, a).status is F.QUEUED
        assert (jobs.get_file(s, b).status, jobs.get_file(s, b).worker) == (F.DOWNLOADING, "slow")


def test_a_destination_is_wanted_while_another_file_may_still_need_it(
    session_factory: sessionmaker[Session],
) -> None:
    _, (mine, _) = make_job(session_factory)
    other_job, (theirs, _) = make_job(session_factory)
    with session_factory() as s:
        # Both jobs download f0.bin: the other one still needs the partial.
        assert jobs.dest_wanted_elsewhere(s, "f0.bin", besides=mine)
        assert not jobs.dest_wanted_elsewhere(s, "elsewhere.bin", besides=mine)
    with session_factory.begin() as s:
        jobs.claim_file(s, theirs, worker="w")
        jobs.finish_file(s, theirs, F.FAILED, worker="w", error="HTTP 500")
    with session_factory() as s:
        # A failed file may be retried: it keeps its partial.
        assert jobs.dest_wanted_elsewhere(s, "f0.bin", besides=mine)
    with session_factory.begin() as s:
        jobs.cancel_job(s, other_job)
    with session_factory() as s:
        assert not jobs.dest_wanted_elsewhere(s, "f0.bin", besides=mine)
