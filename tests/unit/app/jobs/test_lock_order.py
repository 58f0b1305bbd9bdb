"""Row locks in one order (app/jobs): the sweeper handing back a job's stale files, a user
pausing, resuming or cancelling the same job, and workers taking over and finishing its
files, all at once, never deadlock and always leave the job's status true to its files."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app import jobs
from app.errors import IllegalTransitionError
from app.models import ACTIVE, FileStatus, utcnow
from tests.unit.app.jobs.support import make_job

F = FileStatus
ROUNDS = 30
FILES = 8
LEASE = timedelta(seconds=60)

Step = Callable[[Session], object]


def _user(action: str, job_id: str) -> Step:
    act = {"pause": jobs.pause_job, "cancel": jobs.cancel_job, "resume": jobs.resume_job}[action]

    def run(s: Session) -> object:
        try:
            return act(s, job_id)
        except IllegalTransitionError:
            return None  # a 409 for the user: the job had moved on meanwhile, not a failure

    return run


def _sweeper(s: Session) -> object:
    return jobs.requeue_stale(s, stale_before=utcnow() - LEASE, max_attempts=5)


def _take_over(file_id: str) -> Step:
    return lambda s: jobs.claim_file(s, file_id, worker="taker", stale_before=utcnow() - LEASE)


def _finish(file_id: str) -> Step:
    return lambda s: jobs.finish_file(s, file_id, F.COMPLETED, worker="live")


def _race(factory: sessionmaker[Session], steps: list[Step]) -> list[BaseException]:
    """Run each step in its own transaction on its own thread, all released at once."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(steps))

    def run(step: Step) -> None:
        try:
            barrier.wait(10)
            with factory.begin() as s:
                step(s)
        except BaseException as exc:  # every failure is the test's finding
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(step,)) for step in steps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a transaction never ended"
    return errors


def _setup_round(
    factory: sessionmaker[Session], rng: random.Random, action: str
) -> tuple[str, list[str]]:
    """A job whose files are all held: one by a live worker, the rest by dead ones (or, for
    a resume, the same job paused)."""
    job_id, ids = make_job(factory, FILES)
    long_ago = utcnow() - 10 * LEASE
    # Claim in a random order: the sweeper's scan then meets the rows in varied orders.
    order = list(ids)
    rng.shuffle(order)
    with factory.begin() as s:
        for fid in order:
            live = fid == ids[-1]
            stamp = utcnow() if live else long_ago
            assert jobs.claim_file(s, fid, worker="live" if live else "dead", now=stamp)
    if action == "resume":
        with factory.begin() as s:
            jobs.pause_job(s, job_id)
    return job_id, ids


def _check_round(factory: sessionmaker[Session], job_id: str, action: str) -> None:
    with factory() as s:
        job = jobs.get_job(s, job_id)
        files = job.files
        statuses = [f.status for f in files]
        for f in files:
            assert f.status in FileStatus
            if f.status in ACTIVE:
                assert f.worker and f.heartbeat_at is not None, f"{f.file_name} held by nobody"
            if f.status in (F.COMPLETED, F.CANCELLED):
                assert f.finished_at is not None
        started = job.started_at is not None or any(st is not F.QUEUED for st in statuses)
        assert job.status is jobs.derive_job_status(statuses, started=started), statuses
        # What the user asked for holds, whatever ran beside it.
        if action == "cancel":
            assert set(statuses) <= {F.COMPLETED, F.CANCELLED}, statuses
        if action == "pause":
            assert set(statuses) <= {F.COMPLETED, F.PAUSED}, statuses
        if action == "resume":
            assert set(statuses) <= {F.QUEUED, F.DOWNLOADING}, statuses


@pytest.mark.timeout(600)
def test_recovery_users_and_workers_never_deadlock_on_one_job(
    session_factory: sessionmaker[Session],
) -> None:
    rng = random.Random(16)
    for round_no in range(ROUNDS):
        action = rng.choice(["pause", "cancel", "resume"])
        job_id, ids = _setup_round(session_factory, rng, action)
        steps = [
            _sweeper,
            _user(action, job_id),
            _take_over(ids[rng.randrange(FILES - 1)]),
            _finish(ids[-1]),
        ]
        rng.shuffle(steps)
        errors = _race(session_factory, steps)
        assert not errors, f"round {round_no} ({action}): {errors!r}"
        _check_round(session_factory, job_id, action)
