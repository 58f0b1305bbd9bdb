"""The wire events of the `download` channel (DESIGN.md "Wire events"): each field a client
reads, the event type per status, the job's API shape, and publication on a real Redis."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from app import events, jobs
from app.cli.localstack import free_port
from app.events import file_event, job_event, job_to_dict, percent, publish, row_event
from app.models import DownloadFile, DownloadJob, FileStatus, JobStatus
from tests.stack import EventCollector
from tests.support import RedisServer, wait_for

pytestmark = pytest.mark.timeout(30)

FILE_FIELDS = {
    "jobId",
    "fileId",
    "modelId",
    "repo",
    "method",
    "fileIndex",
    "totalFiles",
    "fileName",
    "fileProgress",
    "overallProgress",
    "bytesDownloaded",
    "totalBytes",
    "speed",
    "eta",
    "status",
    "seq",
    "sentAt",
}


def make_job(*sizes: int | None, method: str = "native") -> DownloadJob:
    """A job of files with the given sizes, as objects (no store: the events only read them)."""
    job = DownloadJob(id="j" * 32, model_id="z-image-turbo", method=method, status=JobStatus.QUEUED)
    for index, size in enumerate(sizes):
        job.files.append(
            DownloadFile(
                id=f"{index:032d}",
                file_index=index,
                repo="org/name",
                revision="main",
                file_name=f"part-{index}.safetensors",
                dest=f"part-{index}.safetensors",
                size=size,
                bytes_done=0,
                status=FileStatus.QUEUED,
                attempts=0,
            )
        )
    return job


def progress_of(
    job: DownloadJob, status: FileStatus, *, done: int = 0, total: int | None = 100, **kw: Any
) -> dict[str, Any]:
    """A file event for the job's second file."""
    return file_event(
        job,
        job.files[1],
        status=status,
        bytes_done=done,
        total=total,
        overall_done=kw.pop("overall_done", done),
        overall_total=kw.pop("overall_total", total),
        **kw,
    )


def now_ms() -> int:
    return int(time.time() * 1000)


# --- file_event ----------------------------------------------------------------------------


def test_a_progress_event_carries_the_wire_fields_in_camel_case() -> None:
    job = make_job(5678, 5678, 1000)
    before = now_ms()
    event = file_event(
        job,
        job.files[1],
        status=FileStatus.DOWNLOADING,
        bytes_done=2345,
        total=5678,
        overall_done=8023,
        overall_total=12356,
        speed=52428800.04,
        eta=31.54,
        seq=7,
    )
    after = now_ms()
    assert event["channel"] == "download" and event["type"] == "progress"
    data = event["data"]
    assert set(data) == FILE_FIELDS
    assert data == {
        "jobId": job.id,
        "fileId": job.files[1].id,
        "modelId": "z-image-turbo",
        "repo": "org/name",
        "method": "native",
        "fileIndex": 1,
        "totalFiles": 3,
        "fileName": "part-1.safetensors",
        "fileProgress": 41.3,
        "overallProgress": 64.9,
        "bytesDownloaded": 2345,
        "totalBytes": 5678,
        "speed": 52428800.0,
        "eta": 31.5,
        "status": "downloading",
        "seq": 7,
        "sentAt": data["sentAt"],
    }
    # Unix milliseconds, made now: a client tells a stale event by it.
    assert before <= data["sentAt"] <= after
    # It goes on the wire as JSON unchanged.
    assert json.loads(json.dumps(event)) == event


@pytest.mark.parametrize(
    ("status", "wire_type"),
    [
        (FileStatus.QUEUED, "queued"),
        (FileStatus.DOWNLOADING, "progress"),
        (FileStatus.VERIFYING, "progress"),
        (FileStatus.PAUSED, "paused"),
        (FileStatus.COMPLETED, "complete"),
        (FileStatus.FAILED, "failed"),
        (FileStatus.CANCELLED, "cancelled"),
    ],
)
def test_each_file_status_is_announced_with_its_event_type(
    status: FileStatus, wire_type: str
) -> None:
    event = progress_of(make_job(100, 100), status, done=50)
    assert event["type"] == wire_type
    assert event["data"]["status"] == status.value


def test_percentages_are_rounded_to_one_decimal_and_capped_at_100() -> None:
    job = make_job(3, 3)
    third = progress_of(job, FileStatus.DOWNLOADING, done=1, total=3, overall_total=6)
    assert third["data"]["fileProgress"] == 33.3 and third["data"]["overallProgress"] == 16.7
    # More bytes than announced (a size that grew): never above 100.
    over = progress_of(job, FileStatus.DOWNLOADING, done=7, total=5, overall_total=6)
    assert over["data"]["fileProgress"] == 100.0 and over["data"]["overallProgress"] == 100.0


def test_an_unknown_total_reads_as_zero_percent_and_no_eta_stays_none() -> None:
    job = make_job(None, None)
    event = progress_of(job, FileStatus.DOWNLOADING, done=4096, total=None, eta=None)
    data = event["data"]
    assert data["fileProgress"] == 0.0 and data["overallProgress"] == 0.0
    assert data["totalBytes"] is None and data["bytesDownloaded"] == 4096
    assert data["eta"] is None


def test_a_failed_file_event_adds_its_error_and_stderr() -> None:
    event = progress_of(
        make_job(100, 100),
        FileStatus.FAILED,
        done=10,
        error="org/name/part-1.safetensors: checksum mismatch",
        stderr="Traceback ...\nChecksumMismatchError",
    )
    assert event["type"] == "failed"
    assert event["data"]["error"] == "org/name/part-1.safetensors: checksum mismatch"
    assert event["data"]["stderr"] == "Traceback ...\nChecksumMismatchError"
    # Without one, the keys are still there (a client need not test for them).
    bare = progress_of(make_job(100, 100), FileStatus.FAILED)
    assert bare["data"]["error"] is None and bare["data"]["stderr"] is None


@pytest.mark.parametrize("status", [s for s in FileStatus if s is not FileStatus.FAILED])
def test_only_a_failed_file_event_carries_error_and_stderr(status: FileStatus) -> None:
    event = progress_of(make_job(100, 100), status, error="old error", stderr="old stderr")
    assert "error" not in event["data"] and "stderr" not in event["data"]
    assert set(event["data"]) == FILE_FIELDS


def test_method_is_the_jobs_unless_the_engine_is_named() -> None:
    job = make_job(100, 100, method="hf_hub")
    assert progress_of(job, FileStatus.QUEUED)["data"]["method"] == "hf_hub"
    named = progress_of(job, FileStatus.DOWNLOADING, method="native")
    assert named["data"]["method"] == "native"


# --- row_event -----------------------------------------------------------------------------


def test_a_row_event_announces_the_row_as_it_stands() -> None:
    job = make_job(1000, 3000)
    first, second = job.files
    first.bytes_done, first.status = 1000, FileStatus.COMPLETED
    second.bytes_done, second.status = 750, FileStatus.FAILED
    second.error, second.stderr = "HTTP 403 (gated)", "stderr text"
    event = row_event(job, second)
    assert event["type"] == "failed"
    data = event["data"]
    assert data["fileId"] == second.id and data["status"] == "failed"
    assert data["bytesDownloaded"] == 750 and data["totalBytes"] == 3000
    assert data["fileProgress"] == 25.0
    # The job's bytes over the job's total: (1000 + 750) / 4000.
    assert data["overallProgress"] == 43.8
    assert data["error"] == "HTTP 403 (gated)" and data["stderr"] == "stderr text"
    # No transfer measures speed for a row: none is claimed.
    assert data["speed"] == 0.0 and data["eta"] is None

    second.status, second.error = FileStatus.PAUSED, None
    paused = row_event(job, second)
    assert paused["type"] == "paused" and paused["data"]["status"] == "paused"
    assert "error" not in paused["data"]


# --- job_event -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "wire_type"),
    [
        (JobStatus.QUEUED, "queued"),
        (JobStatus.DOWNLOADING, "progress"),
        (JobStatus.PAUSED, "paused"),
        (JobStatus.COMPLETED, "complete"),
        (JobStatus.FAILED, "failed"),
        (JobStatus.CANCELLED, "cancelled"),
    ],
)
def test_a_job_event_is_scoped_to_the_job_and_typed_by_its_status(
    status: JobStatus, wire_type: str
) -> None:
    job = make_job(1000, 3000)
    job.status, job.error = status, "1 of 2 files failed"
    job.files[0].bytes_done = 1000
    before = now_ms()
    event = job_event(job, seq=3)
    assert event["channel"] == "download" and event["type"] == wire_type
    data = event["data"]
    assert data["scope"] == "job" and data["status"] == status.value
    assert data["jobId"] == job.id and data["modelId"] == "z-image-turbo"
    assert data["method"] == "native" and data["totalFiles"] == 2 and data["seq"] == 3
    assert data["bytesDownloaded"] == 1000 and data["totalBytes"] == 4000
    assert data["overallProgress"] == 25.0
    assert before <= data["sentAt"] <= now_ms()
    # A job event names no file.
    assert "fileId" not in data and "fileName" not in data
    if status is JobStatus.FAILED:
        assert data["error"] == "1 of 2 files failed"
    else:
        assert "error" not in data


# --- job_to_dict ---------------------------------------------------------------------------


def test_a_job_from_the_store_has_the_apis_shape(session_factory: sessionmaker[Session]) -> None:
    specs = [
        jobs.FileSpec("org/name", "a.gguf", size=1000, sha256="ab" * 32),
        jobs.FileSpec("org/name", "b.gguf", revision="v2", dest="sub/b.gguf", size=3000),
    ]
    with session_factory.begin() as s:
        job = jobs.create_job(s, specs, method="native", model_id="m")
        job_id, (first, second) = job.id, [f.id for f in job.files]
    with session_factory.begin() as s:
        jobs.claim_file(s, second, worker="w:1:a")
        jobs.record_progress(s, second, worker="w:1:a", bytes_done=1200)
        jobs.claim_file(s, first, worker="w:1:b")
        jobs.finish_file(s, first, FileStatus.FAILED, worker="w:1:b", error="boom", stderr="tb")
    with session_factory() as s:
        shown = job_to_dict(jobs.get_job(s, job_id))

    assert list(shown) == [
        "jobId",
        "modelId",
        "status",
        "method",
        "createdAt",
        "startedAt",
        "finishedAt",
        "error",
        "totalBytes",
        "bytesDownloaded",
        "overallProgress",
        "files",
    ]
    assert shown["jobId"] == job_id and shown["modelId"] == "m"
    assert shown["status"] == "downloading" and shown["method"] == "native"
    assert shown["totalBytes"] == 4000 and shown["bytesDownloaded"] == 1200
    assert shown["overallProgress"] == 30.0
    assert shown["finishedAt"] is None
    # ISO 8601 in UTC with a Z, as a browser's Date parses it.
    for key in ("createdAt", "startedAt"):
        stamp = shown[key]
        assert stamp.endswith("Z") and "+" not in stamp, stamp
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert abs((datetime.now(UTC) - parsed).total_seconds()) < 60

    a, b = shown["files"]
    assert set(a) == {
        "fileId",
        "fileIndex",
        "repo",
        "revision",
        "fileName",
        "dest",
        "size",
        "sha256",
        "status",
        "bytesDownloaded",
        "fileProgress",
        "attempts",
        "error",
        "stderr",
        "heartbeatAt",
        "waitingForWorker",
    }
    assert (a["fileId"], a["fileIndex"], a["fileName"], a["dest"]) == (
        first,
        0,
        "a.gguf",
        "a.gguf",
    )
    assert a["status"] == "failed" and a["error"] == "boom" and a["stderr"] == "tb"
    assert a["sha256"] == "ab" * 32 and a["attempts"] == 1 and a["size"] == 1000
    assert (b["fileId"], b["revision"], b["dest"], b["status"]) == (
        second,
        "v2",
        "sub/b.gguf",
        "downloading",
    )
    assert b["bytesDownloaded"] == 1200 and b["fileProgress"] == 40.0 and b["error"] is None
    # A failed file waits for nobody; a held one is judged by its worker's heartbeat.
    assert a["waitingForWorker"] is False
    json.dumps(shown)  # all of it is JSON


# --- percent -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("done", "total", "expected"),
    [
        (0, 100, 0.0),
        (1, 3, 33.3),
        (2, 3, 66.7),
        (999, 1000, 99.9),
        (100, 100, 100.0),
        (150, 100, 100.0),
        (5, None, 0.0),
        (5, 0, 0.0),
    ],
)
def test_percent(done: int, total: int | None, expected: float) -> None:
    assert percent(done, total) == expected


# --- publish -------------------------------------------------------------------------------


def test_publish_delivers_json_events_to_a_subscriber_in_order(redis_server: RedisServer) -> None:
    collector = EventCollector(redis_server.port)
    collector.start()
    try:
        job = make_job(100, 100)
        sent = [progress_of(job, FileStatus.DOWNLOADING, done=n, seq=n) for n in range(1, 6)]
        sent.append(job_event(job, seq=6))
        client = redis.Redis.from_url(redis_server.url)
        publish(client, sent)
        wait_for(lambda: len(collector.events) >= len(sent), 10, "the events")
        assert collector.events == sent
        assert [e["data"]["seq"] for e in collector.events] == [1, 2, 3, 4, 5, 6]
        # On the `download` channel and nowhere else.
        assert events.CHANNEL == "download"
    finally:
        collector.stop()


def test_publish_lets_the_caller_see_that_redis_is_down() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError):
        publish(client, [progress_of(make_job(1, 1), FileStatus.QUEUED)])
