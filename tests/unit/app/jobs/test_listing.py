"""Reading jobs (app/jobs/listing.py): by id, page by page, and the live list."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app import jobs
from app.errors import NotFoundError, ValidationError
from app.models import DownloadJob, JobStatus, utcnow
from tests.unit.app.jobs.support import make_job


def test_unknown_ids_are_not_found(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        with pytest.raises(NotFoundError):
            jobs.pause_job(s, "0" * 32)
        with pytest.raises(NotFoundError):
            jobs.get_file(s, "0" * 32)
        assert jobs.claim_file(s, "0" * 32, worker="w") is None


def test_get_file_sees_changes_made_by_others(session_factory: sessionmaker[Session]) -> None:
    _, (a, _) = make_job(session_factory)
    with session_factory() as reader:
        assert jobs.get_file(reader, a).bytes_done == 0
        reader.commit()
        with session_factory.begin() as writer:
            jobs.claim_file(writer, a, worker="w")
            jobs.record_progress(writer, a, worker="w", bytes_done=77)
        # The reader's session still holds the row it read first.
        assert jobs.get_file(reader, a).bytes_done == 77


def _created(factory: sessionmaker[Session], stamps: dict[str, object]) -> None:
    with factory.begin() as s:
        for job_id, stamp in stamps.items():
            s.execute(update(DownloadJob).where(DownloadJob.id == job_id).values(created_at=stamp))


def test_pages_go_newest_first_and_end(session_factory: sessionmaker[Session]) -> None:
    old, _ = make_job(session_factory, 1)
    tie_a, _ = make_job(session_factory, 1)
    tie_b, _ = make_job(session_factory, 1)
    t0 = utcnow()
    # Two jobs created in the same microsecond are told apart by their ids.
    _created(
        session_factory,
        {old: t0, tie_a: t0 + timedelta(seconds=1), tie_b: t0 + timedelta(seconds=1)},
    )
    newest_first = [*sorted([tie_a, tie_b], reverse=True), old]
    seen: list[str] = []
    cursor: str | None = None
    with session_factory() as s:
        for _ in range(3):
            page, cursor = jobs.list_jobs(s, limit=1, cursor=cursor)
            seen += [j.id for j in page]
            if cursor is None:
                break
        assert cursor is None
        assert seen == newest_first
        page, cursor = jobs.list_jobs(s, limit=2)
        assert [j.id for j in page] == newest_first[:2] and cursor is not None
        page, cursor = jobs.list_jobs(s, limit=2, cursor=cursor)
        assert ([j.id for j in page], cursor) == ([old], None)
        assert [f.file_name for f in page[0].files] == ["f0.bin"]


def test_a_page_can_hold_one_status_only(session_factory: sessionmaker[Session]) -> None:
    paused, _ = make_job(session_factory)
    make_job(session_factory)
    with session_factory.begin() as s:
        jobs.pause_job(s, paused)
    with session_factory() as s:
        page, cursor = jobs.list_jobs(s, status=JobStatus.PAUSED)
        assert ([j.id for j in page], cursor) == ([paused], None)
        assert jobs.list_jobs(s, status=JobStatus.FAILED) == ([], None)


def test_a_cursor_points_just_past_its_job(session_factory: sessionmaker[Session]) -> None:
    job_id, _ = make_job(session_factory, 1)
    with session_factory() as s:
        job = jobs.get_job(s, job_id)
        assert jobs.decode_cursor(jobs.encode_cursor(job)) == (job.created_at, job.id)


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        _cursor("no separator"),
        _cursor(f"2024-01-01T00:00:00+00:00|{'a' * 32}|extra"),
        _cursor(f"2024-01-01T00:00:00|{'a' * 32}"),  # no time zone
        _cursor("2024-01-01T00:00:00+00:00|short"),
        _cursor(f"yesterday|{'a' * 32}"),
        _cursor(f"1999-12-31T23:59:59+00:00|{'a' * 32}"),
        _cursor(f"9999-12-31T23:59:59-12:00|{'a' * 32}"),
        base64.urlsafe_b64encode(b"\xff\xfe|x").decode(),
    ],
)
def test_a_cursor_this_service_never_gave_out_is_refused(cursor: str) -> None:
    with pytest.raises(ValidationError) as info:
        jobs.decode_cursor(cursor)
    assert info.value.field == "cursor"


def test_the_live_list_holds_jobs_under_way_and_those_just_ended(
    session_factory: sessionmaker[Session],
) -> None:
    queued, _ = make_job(session_factory)
    just_ended, _ = make_job(session_factory)
    long_ended, _ = make_job(session_factory)
    with session_factory.begin() as s:
        jobs.cancel_job(s, just_ended)
        jobs.cancel_job(s, long_ended)
        s.execute(
            update(DownloadJob)
            .where(DownloadJob.id == long_ended)
            .values(finished_at=utcnow() - timedelta(hours=1))
        )
    t0 = utcnow()
    _created(session_factory, {queued: t0, just_ended: t0 + timedelta(seconds=1)})
    with session_factory() as s:
        assert [j.id for j in jobs.active_jobs(s)] == [just_ended, queued]
        assert [j.id for j in jobs.active_jobs(s, limit=1)] == [just_ended]
        assert [j.id for j in jobs.active_jobs(s, recent_seconds=0)] == [queued]
        assert len(jobs.active_jobs(s, recent_seconds=7200)) == 3
