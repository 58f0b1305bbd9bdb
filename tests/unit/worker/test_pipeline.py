"""`process_file` with a fake engine: how each way a transfer ends settles the row, its
attempts, `published_at`, the task message for a retry and the events. A real job store and a
private Redis (broker, flags, leases and the event channel); no worker process, no Hub."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis

from app import jobs, services, storage
from app.digest import sha256_file
from app.dispatch import QUEUE, TASK_NAME
from app.errors import (
    CancelledError,
    GatedRepoError,
    PausedError,
    TransientDownloadError,
)
from app.models import DownloadFile, FileStatus, JobStatus, utcnow
from tests.stack import EventCollector
from tests.support import wait_for
from tests.unit.worker.fakes import CONTENT, SIZE, FakeEngine, place
from worker.engine.base import (
    Control,
    ControlFn,
    DownloadRequest,
    DownloadResult,
    Progress,
    ProgressFn,
)
from worker.lease import DestLease
from worker.pipeline import process_file
from worker.runtime import Runtime

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(download_lease_seconds=30, download_max_attempts=2)


def submit(rt: Runtime, name: str = "w.gguf", **spec: Any) -> tuple[str, str]:
    """A job of one file, committed; returns (job id, file id)."""
    with rt.sessions.begin() as s:
        job = jobs.create_job(s, [jobs.FileSpec("org/r", name, **spec)], method="native")
        return job.id, job.files[0].id


def row(rt: Runtime, file_id: str) -> DownloadFile:
    with rt.sessions() as s:
        return jobs.get_file(s, file_id)


def job_status(rt: Runtime, job_id: str) -> JobStatus:
    with rt.sessions() as s:
        return jobs.get_job(s, job_id).status


def messages(rt: Runtime) -> list[dict[str, Any]]:
    """The task messages waiting in the broker's queue."""
    raw = redis.Redis.from_url(rt.settings.redis_url).lrange(QUEUE, 0, -1)
    return [json.loads(m) for m in raw]


def message_args(message: dict[str, Any]) -> list[Any]:
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return list(args)


def types_of(collector: EventCollector, job_id: str) -> list[tuple[str, str | None]]:
    """(type, scope) of the job's events, in order."""
    return [(e["type"], e["data"].get("scope")) for e in collector.for_job(job_id)]


def between(value: datetime | None, low: datetime, high: datetime) -> bool:
    return value is not None and low <= value <= high


def test_a_finished_transfer_completes_the_file_and_the_job(
    rt: Runtime, collector: EventCollector
) -> None:
    engine = FakeEngine(lambda req, progress, control, commit: place(req, progress, commit))
    rt.engine = engine
    job_id, file_id = submit(rt)

    assert process_file(rt, file_id) == "completed"

    done = row(rt, file_id)
    assert done.status is FileStatus.COMPLETED and done.attempts == 1
    assert done.bytes_done == done.size == SIZE and done.sha256 == sha256_file(
        rt.settings.models_dir / "w.gguf"
    )
    assert done.worker is not None and done.finished_at is not None
    assert job_status(rt, job_id) is JobStatus.COMPLETED
    assert engine.requests[0].repo == "org/r" and engine.requests[0].token is None
    events = collector.until_job_event(job_id)
    kinds = types_of(collector, job_id)
    assert kinds[0] == ("progress", None) and kinds[-2:] == [
        ("complete", None),
        ("complete", "job"),
    ]
    assert events[-2]["data"]["bytesDownloaded"] == SIZE


def test_a_file_already_at_its_destination_is_not_downloaded_again(rt: Runtime) -> None:
    engine = FakeEngine(lambda *_: pytest.fail("the engine must not run"))
    rt.engine = engine
    dest = rt.settings.models_dir / "w.gguf"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(CONTENT)
    job_id, file_id = submit(rt, size=SIZE, sha256=sha256_file(dest))

    assert process_file(rt, file_id) == "completed"
    assert engine.requests == []
    assert row(rt, file_id).bytes_done == SIZE
    assert job_status(rt, job_id) is JobStatus.COMPLETED


def test_a_transient_failure_requeues_with_backoff_then_fails_once_attempts_are_spent(
    rt: Runtime, collector: EventCollector
) -> None:
    def drop(*_: Any) -> DownloadResult:
        raise TransientDownloadError("the connection dropped", repo="org/r", file="w.gguf")

    rt.engine = FakeEngine(drop)
    job_id, file_id = submit(rt)

    before = utcnow()
    assert process_file(rt, file_id) == "requeued"
    after = utcnow()
    first = row(rt, file_id)
    assert first.status is FileStatus.QUEUED and first.attempts == 1 and first.worker is None
    # Marked sent for when the delayed message is due (5 s after the first failure), so the
    # sweeper does not send it again early.
    assert between(first.published_at, before + timedelta(seconds=5), after + timedelta(seconds=5))
    (message,) = messages(rt)
    assert message["headers"]["task"] == TASK_NAME and message_args(message) == [file_id]
    assert message["headers"]["eta"] is not None
    wait_for(lambda: ("queued", None) in types_of(collector, job_id), 5, "the queued event")

    # The second claim (max attempts 2) gets no further: the file fails with the error.
    assert process_file(rt, file_id) == "failed"
    failed = row(rt, file_id)
    assert failed.status is FileStatus.FAILED and failed.attempts == 2
    assert "the connection dropped" in (failed.error or "")
    assert job_status(rt, job_id) is JobStatus.FAILED
    events = collector.until_job_event(job_id)
    assert events[-2]["type"] == "failed" and "dropped" in events[-2]["data"]["error"]


def test_a_transient_failure_after_progress_earns_another_attempt(rt: Runtime) -> None:
    def advance_then_drop(req: DownloadRequest, progress: ProgressFn, *_: Any) -> DownloadResult:
        progress(Progress(SIZE // 4 * (row(rt, file_id).attempts), SIZE, 1.0, None))
        raise TransientDownloadError("reset", repo="org/r", file="w.gguf")

    rt.engine = FakeEngine(advance_then_drop)
    _, file_id = submit(rt)
    # Past the maximum of two attempts, each claim moves the file on: it is retried.
    for attempt in (1, 2, 3):
        assert process_file(rt, file_id) == "requeued", attempt
    assert row(rt, file_id).attempts == 3


def test_a_permanent_error_fails_the_file_at_once_with_what_to_do(
    rt: Runtime, collector: EventCollector
) -> None:
    def gated(*_: Any) -> DownloadResult:
        raise GatedRepoError(
            "repository org/r is gated: accept its licence", repo="org/r", status=403
        )

    rt.engine = FakeEngine(gated)
    job_id, file_id = submit(rt)

    assert process_file(rt, file_id) == "failed"
    failed = row(rt, file_id)
    assert failed.status is FileStatus.FAILED and failed.attempts == 1
    assert "is gated" in (failed.error or "") and "HTTP 403" in (failed.error or "")
    assert messages(rt) == []  # not retried
    events = collector.until_job_event(job_id)
    assert events[-2]["type"] == "failed" and "gated" in events[-2]["data"]["error"]
    assert events[-1]["data"]["status"] == "failed"


def test_a_pause_stops_the_transfer_and_keeps_the_bytes_it_reached(
    rt: Runtime, collector: EventCollector
) -> None:
    seen: list[Control | None] = []

    def paused_by_user(req: DownloadRequest, progress: ProgressFn, control: ControlFn, _: Any):
        progress(Progress(SIZE // 3, SIZE, 1.0, None))
        services.control_job(rt.sessions, rt.dispatcher, job_id, "pause")  # as the API does
        seen.append(control())
        raise PausedError("paused", repo="org/r", file="w.gguf")

    rt.engine = FakeEngine(paused_by_user)
    job_id, file_id = submit(rt)

    assert process_file(rt, file_id) == "paused"
    assert seen == [Control.PAUSE]
    paused = row(rt, file_id)
    assert paused.status is FileStatus.PAUSED and paused.bytes_done == SIZE // 3
    assert job_status(rt, job_id) is JobStatus.PAUSED
    assert messages(rt) == []
    wait_for(lambda: ("paused", None) in types_of(collector, job_id), 5, "the paused event")


def test_a_stopping_worker_claims_nothing_and_passes_the_message_on(rt: Runtime) -> None:
    rt.engine = FakeEngine(lambda *_: pytest.fail("a stopping worker must not download"))
    _, file_id = submit(rt)
    rt.redis.delete(QUEUE)
    rt.shutting_down.set()  # SIGTERM came; a pool thread is still handed this message

    assert process_file(rt, file_id) == "passed on"
    left = row(rt, file_id)
    assert left.status is FileStatus.QUEUED and left.attempts == 0 and left.worker is None
    (message,) = messages(rt)
    assert message_args(message) == [file_id]


def test_a_stopping_worker_hands_its_file_back_for_another_at_once(rt: Runtime) -> None:
    def interrupted(*_: Any) -> DownloadResult:
        rt.shutting_down.set()  # SIGTERM reached the worker mid-transfer
        raise PausedError("handback", repo="org/r", file="w.gguf")

    rt.engine = FakeEngine(interrupted)
    _, file_id = submit(rt)

    before = utcnow()
    assert process_file(rt, file_id) == "requeued"
    handed = row(rt, file_id)
    assert handed.status is FileStatus.QUEUED and handed.worker is None
    assert between(handed.published_at, before, utcnow())  # due now, no backoff
    (message,) = messages(rt)
    assert message_args(message) == [file_id] and message["headers"]["eta"] is None


def test_a_lost_destination_lease_places_nothing_and_requeues(rt: Runtime) -> None:
    def overtaken(req: DownloadRequest, progress: ProgressFn, _: ControlFn, commit: Any):
        # Another worker's lease replaced ours (we were frozen past its expiry).
        lease = DestLease(rt.redis, req.dest, ttl_seconds=30)
        rt.redis.set(lease.key, "another-holder")
        return place(req, progress, commit)

    rt.engine = FakeEngine(overtaken)
    _, file_id = submit(rt)

    before = utcnow()
    assert process_file(rt, file_id) == "requeued"
    assert not (rt.settings.models_dir / "w.gguf").exists()
    requeued = row(rt, file_id)
    assert requeued.status is FileStatus.QUEUED
    assert between(
        requeued.published_at, before + timedelta(seconds=1), utcnow() + timedelta(seconds=1)
    )


def test_a_cancel_settles_the_file_cancelled(rt: Runtime, collector: EventCollector) -> None:
    def cancelled(*_: Any) -> DownloadResult:
        raise CancelledError("cancelled", repo="org/r", file="w.gguf")

    rt.engine = FakeEngine(cancelled)
    job_id, file_id = submit(rt)

    assert process_file(rt, file_id) == "cancelled"
    assert row(rt, file_id).status is FileStatus.CANCELLED
    assert job_status(rt, job_id) is JobStatus.CANCELLED
    wait_for(lambda: ("cancelled", None) in types_of(collector, job_id), 5, "the event")


def test_an_unexpected_error_fails_with_its_traceback_once_attempts_are_spent(
    rt: Runtime,
) -> None:
    def bug(*_: Any) -> DownloadResult:
        raise RuntimeError("a bug in the engine")

    rt.engine = FakeEngine(bug)
    _, file_id = submit(rt)

    assert process_file(rt, file_id) == "requeued"
    assert process_file(rt, file_id) == "failed"
    failed = row(rt, file_id)
    assert (
        failed.error is not None and "unexpected RuntimeError: a bug in the engine" in failed.error
    )
    assert failed.stderr is not None and "Traceback" in failed.stderr


def test_a_message_for_a_file_another_worker_holds_is_skipped(rt: Runtime) -> None:
    rt.engine = FakeEngine(lambda *_: pytest.fail("the engine must not run"))
    _, file_id = submit(rt)
    with rt.sessions.begin() as s:
        assert jobs.claim_file(s, file_id, worker="alive:1:aa")

    assert process_file(rt, file_id) == "skipped"
    held = row(rt, file_id)
    assert held.worker == "alive:1:aa" and held.attempts == 1


def test_a_message_for_a_cancelled_file_deletes_its_partial(rt: Runtime) -> None:
    rt.engine = FakeEngine(lambda *_: pytest.fail("the engine must not run"))
    job_id, file_id = submit(rt)
    part = storage.partial_path(rt.settings.models_dir, "w.gguf")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"half")
    storage.sidecar_path(rt.settings.models_dir, "w.gguf").write_text("{}")
    with rt.sessions.begin() as s:
        jobs.cancel_job(s, job_id)

    assert process_file(rt, file_id) == "cleaned"
    assert not part.exists()
    assert not storage.sidecar_path(rt.settings.models_dir, "w.gguf").exists()
