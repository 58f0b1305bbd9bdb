"""A downloading file's reporter (worker/progress.py): the progress events a dashboard sees,
the milestones in the download log, what a Redis outage does to both, the heartbeat that
keeps the row (and the destination's lease) alive, and the pause/cancel/hand-back checks the
engine makes between chunks. A real job store, a private Redis, no worker process."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis

from app import events, jobs
from app.models import DownloadFile, FileStatus, utcnow
from tests.stack import EventCollector
from tests.support import RedisServer, wait_for
from worker.engine.base import Control, Progress
from worker.lease import DestLease
from worker.progress import PUBLISH_INTERVAL_S, REDIS_RETRY_S, FileReporter
from worker.runtime import Runtime

pytestmark = pytest.mark.timeout(60)

PAUSED_NOTE = "events paused, Redis unreachable"


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(download_lease_seconds=30)


def claimed(
    rt: Runtime,
    sizes: tuple[int | None, ...] = (1000, 3000),
    *,
    method: str = "native",
    dests: tuple[str, ...] = (),
) -> FileReporter:
    """A job of files of these sizes whose first file this worker has claimed, and the
    reporter the pipeline would make for it."""
    specs = [
        jobs.FileSpec("org/r", f"f{i}.bin", size=size, dest=dests[i] if i < len(dests) else None)
        for i, size in enumerate(sizes)
    ]
    with rt.sessions.begin() as s:
        job = jobs.create_job(s, specs, method=method)
        job_id, file_id = job.id, job.files[0].id
    holder = f"{rt.name}:test{len(sizes)}"
    with rt.sessions.begin() as s:
        assert jobs.claim_file(s, file_id, worker=holder) is not None
    return reporter_for(rt, job_id, file_id, holder)


def reporter_for(rt: Runtime, job_id: str, file_id: str, holder: str) -> FileReporter:
    with rt.sessions() as s:
        job = jobs.get_job(s, job_id)
        file = next(f for f in job.files if f.id == file_id)
    return FileReporter(rt, job, file, holder=holder)


def row(rt: Runtime, file_id: str) -> DownloadFile:
    with rt.sessions() as s:
        return jobs.get_file(s, file_id)


def log_lines(rt: Runtime, needle: str) -> list[str]:
    """Lines of the download log (DATA_DIR/logs/downloads.log) that contain `needle`."""
    path = rt.settings.download_log_path
    text = path.read_text() if path.exists() else ""
    return [line for line in text.splitlines() if needle in line]


def file_events(collector: EventCollector, r: FileReporter) -> list[dict[str, Any]]:
    return [e for e in collector.for_job(r.job.id) if e["data"].get("fileId") == r.file.id]


def publish_marker(rt: Runtime, collector: EventCollector, r: FileReporter) -> None:
    """Send an event straight to Redis and wait for it: whatever was published before it
    has then arrived too."""
    marker = {"channel": "download", "type": "marker", "data": {"jobId": r.job.id}}
    events.publish(rt.redis, [marker])
    wait_for(lambda: any(e["type"] == "marker" for e in collector.events), 10, "the marker")


def p(done: int, total: int | None = 1000, status: str = "downloading") -> Progress:
    return Progress(done, total, speed=1000.0, eta=1.0, status=status)


# --- progress events -----------------------------------------------------------------------


def test_progress_is_published_at_most_four_times_a_second(
    rt: Runtime, collector: EventCollector
) -> None:
    r = claimed(rt, (100_000,))
    calls, started = 0, time.monotonic()
    while time.monotonic() - started < 0.9:
        calls += 1
        r.on_progress(p(calls, 100_000))
        time.sleep(0.002)
    publish_marker(rt, collector, r)

    sent = [e for e in file_events(collector, r) if e["type"] == "progress"]
    assert calls > 50
    # One at once, then one per PUBLISH_INTERVAL_S (0.25 s): 4 in 0.9 s, however many calls.
    assert PUBLISH_INTERVAL_S == 0.25
    assert 3 <= len(sent) <= 5, [e["data"]["seq"] for e in sent]
    stamps = [e["data"]["sentAt"] for e in sent]
    assert all(b - a >= 150 for a, b in itertools.pairwise(stamps)), stamps
    seqs = [e["data"]["seq"] for e in sent]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Each carries the bytes of the moment it was sent.
    done = [e["data"]["bytesDownloaded"] for e in sent]
    assert done[0] == 1 and done == sorted(done) and done[-1] <= calls
    assert all(e["data"]["status"] == "downloading" for e in sent)


def test_verifying_is_published_as_progress_and_a_completed_report_is_not(
    rt: Runtime, collector: EventCollector
) -> None:
    r = claimed(rt)
    r.on_progress(p(1000, status="verifying"))
    time.sleep(PUBLISH_INTERVAL_S + 0.05)
    r.on_progress(p(1000, status="completed"))  # the pipeline announces completion itself
    publish_marker(rt, collector, r)
    [verifying] = file_events(collector, r)
    assert verifying["type"] == "progress" and verifying["data"]["status"] == "verifying"
    assert verifying["data"]["fileProgress"] == 100.0


def test_the_engines_connection_count_rides_on_progress_and_is_logged_when_it_changes(
    rt: Runtime, collector: EventCollector
) -> None:
    r = claimed(rt, (100_000,))
    for done, conns in ((10, 4), (20, 4), (30, 8)):
        r.on_progress(Progress(done, 100_000, 1000.0, 1.0, "downloading", conns))
        time.sleep(PUBLISH_INTERVAL_S + 0.02)
    r.on_progress(p(100_000, 100_000, status="verifying"))
    publish_marker(rt, collector, r)
    sent = file_events(collector, r)
    assert [e["data"].get("connections") for e in sent] == [4, 4, 8, None]
    # The log says when the count changed, not with every report.
    assert [line.split("connections=")[1].split()[0] for line in log_lines(rt, "connections ")] == [
        "4",
        "8",
    ]


def test_milestones_are_logged_once_each(rt: Runtime) -> None:
    r = claimed(rt)
    for done in (100, 260, 260, 300, 499, 500, 510, 760, 900, 1000, 1000):
        r.on_progress(p(done))
    lines = log_lines(rt, "progress ")
    assert [line.split("percent=")[1].split()[0] for line in lines] == ["25", "50", "75"]
    # Logged when reached, with the bytes at that moment and the ids of the download.
    for line, done in zip(lines, (260, 500, 760), strict=True):
        assert f"bytes={done}" in line
        for part in (f"job={r.job.id}", f"file={r.file.id}", "repo=org/r", "name=f0.bin"):
            assert part in line
        assert "engine=native" in line and " INFO " in line


def test_a_jump_past_several_milestones_logs_each_of_them(rt: Runtime) -> None:
    r = claimed(rt)
    r.on_progress(p(10))
    r.on_progress(p(800))
    r.on_progress(p(10_000, None))  # an unknown total is 0 %: nothing new, nothing again
    lines = log_lines(rt, "progress ")
    assert [line.split("percent=")[1].split()[0] for line in lines] == ["25", "50", "75"]
    assert all("bytes=800" in line for line in lines)


def test_nothing_is_published_when_websocket_progress_is_off(
    make_runtime: Callable[..., Runtime], collector: EventCollector
) -> None:
    off = make_runtime(download_lease_seconds=30, download_websocket_progress=False)
    r = claimed(off)
    r.publish(r.event(FileStatus.DOWNLOADING))
    r.on_progress(p(300))
    r.publish(r.event(FileStatus.PAUSED))
    publish_marker(off, collector, r)
    assert file_events(collector, r) == []
    # The log still has what happened.
    assert len(log_lines(off, "percent=25")) == 1
    off.sessions.kw["bind"].dispose()


# --- a Redis outage ------------------------------------------------------------------------


def test_with_redis_down_progress_is_skipped_quietly_and_state_changes_are_tried(
    rt: Runtime, redis_server: RedisServer
) -> None:
    r = claimed(rt)
    r.publish(r.event(FileStatus.DOWNLOADING))  # a connection in the pool, as in a download
    redis_server.stop()

    r.on_progress(p(300))  # must not raise
    [first] = log_lines(rt, PAUSED_NOTE)
    assert "error=ConnectionError" in first and f"file={r.file.id}" in first
    assert " WARNING " in first
    # Within the pause, progress is not even tried: no second warning, and no delay.
    time.sleep(PUBLISH_INTERVAL_S + 0.05)
    started = time.monotonic()
    r.on_progress(p(600))
    assert time.monotonic() - started < 0.2
    assert len(log_lines(rt, PAUSED_NOTE)) == 1

    # A state change is tried regardless, a few times, then given up with a warning.
    started = time.monotonic()
    r.publish(r.event(FileStatus.PAUSED))
    assert time.monotonic() - started >= 0.5  # three tries, 0.3 s apart
    assert len(log_lines(rt, PAUSED_NOTE)) == 2


def subscribed(redis_server: RedisServer) -> bool:
    try:
        counts = redis.Redis(port=redis_server.port).pubsub_numsub(events.CHANNEL)
    except redis.RedisError:
        return False
    return bool(counts and counts[0][1] >= 1)


def test_after_an_outage_state_changes_get_through_at_once_and_progress_resumes(
    rt: Runtime, redis_server: RedisServer, collector: EventCollector
) -> None:
    r = claimed(rt)
    redis_server.stop()
    r.on_progress(p(100))  # fails: progress pauses for REDIS_RETRY_S
    failed_at = time.monotonic()
    redis_server.start()
    wait_for(lambda: subscribed(redis_server), 10, "the subscriber to come back")

    r.publish(r.event(FileStatus.PAUSED))
    wait_for(lambda: file_events(collector, r), 5, "the state change")
    assert time.monotonic() - failed_at < REDIS_RETRY_S, "too slow to tell the pause apart"

    def progress_arrived() -> bool:
        r.on_progress(p(r.bytes_done + 1))
        return any(e["type"] == "progress" for e in file_events(collector, r))

    wait_for(progress_arrived, 10, "progress events to resume", every=0.05)
    assert time.monotonic() - failed_at >= REDIS_RETRY_S - 0.1
    assert file_events(collector, r)[0]["type"] == "paused"


# --- heartbeat -----------------------------------------------------------------------------


def test_the_heartbeat_writes_the_bytes_about_once_a_second_until_stopped(rt: Runtime) -> None:
    r = claimed(rt, (None, 3000))
    fid = r.file.id
    r.start_heartbeat()
    try:
        r.on_progress(p(400, 1000))
        first = wait_for(lambda: (f := row(rt, fid)).bytes_done == 400 and f, 5, "400 bytes")
        assert first.size == 1000  # the size learned from the transfer
        r.on_progress(p(700, 1000))
        second = wait_for(lambda: (f := row(rt, fid)).bytes_done == 700 and f, 5, "700 bytes")
        assert first.heartbeat_at is not None and second.heartbeat_at is not None
        gap = (second.heartbeat_at - first.heartbeat_at).total_seconds()
        assert 0.7 <= gap <= 2.5, gap
        assert second.status is FileStatus.DOWNLOADING and not r.lost
    finally:
        r.stop_heartbeat()
    r.on_progress(p(900, 1000))
    time.sleep(1.1)
    assert row(rt, fid).bytes_done == 700  # stopped: nothing written any more


@pytest.mark.parametrize(
    ("action", "reason", "control"),
    [
        ("pause", "pause", Control.PAUSE),
        ("cancel", "cancel", Control.CANCEL),
    ],
)
def test_the_heartbeat_notices_a_user_taking_the_file_back(
    rt: Runtime, action: str, reason: str, control: Control
) -> None:
    r = claimed(rt)
    r.start_heartbeat()
    try:
        assert r.why_stop() is None
        with rt.sessions.begin() as s:
            (jobs.pause_job if action == "pause" else jobs.cancel_job)(s, r.job.id)
        # No control flag raised: the row alone tells the worker.
        wait_for(lambda: r.lost, 5, "the heartbeat to notice")
        assert r.why_stop() == reason
        assert r.control() is control
    finally:
        r.stop_heartbeat()


def test_the_heartbeat_notices_another_worker_taking_the_file_over(rt: Runtime) -> None:
    r = claimed(rt)
    r.start_heartbeat()
    try:
        with rt.sessions.begin() as s:
            later = utcnow() + timedelta(seconds=5)
            assert jobs.claim_file(s, r.file.id, worker="other:2:x", stale_before=later)
        wait_for(lambda: r.lost, 5, "the heartbeat to notice")
        assert r.why_stop() == "lost"
        assert r.control() is Control.PAUSE  # stop, delete nothing: the new holder goes on
        assert row(rt, r.file.id).worker == "other:2:x"
    finally:
        r.stop_heartbeat()


def test_the_heartbeat_renews_the_destination_lease_and_stops_when_another_holds_it(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer
) -> None:
    short = make_runtime(download_lease_seconds=2)
    r = claimed(short)
    lease = DestLease(short.redis, r.file.dest, ttl_seconds=2)
    assert lease.try_acquire()
    r.lease = lease
    r.start_heartbeat()
    try:
        started = time.monotonic()
        client = redis.Redis(port=redis_server.port)
        # 1.2 s after taking a 2 s lease, over 1 s left means the heartbeat renewed it.
        wait_for(
            lambda: time.monotonic() - started >= 1.2 and client.pttl(lease.key) > 1000,
            5,
            "the heartbeat to renew the lease",
        )
        assert client.get(lease.key) == lease.token.encode() and not r.lost
        client.set(lease.key, "another-worker", px=60_000)
        wait_for(lambda: r.lost, 5, "the heartbeat to notice the lease is gone")
    finally:
        r.stop_heartbeat()
        short.sessions.kw["bind"].dispose()


# --- control -------------------------------------------------------------------------------


def test_nothing_stops_a_download_nobody_touched(rt: Runtime) -> None:
    r = claimed(rt)
    assert r.why_stop() is None and r.control() is None


@pytest.mark.parametrize(
    ("action", "control"), [("pause", Control.PAUSE), ("cancel", Control.CANCEL)]
)
def test_a_control_flag_stops_the_download(rt: Runtime, action: str, control: Control) -> None:
    r = claimed(rt)
    other = claimed(rt, dests=("elsewhere.bin",))
    rt.dispatcher.set_control([r.file.id], action)
    assert r.why_stop() == action and r.control() is control
    assert other.why_stop() is None  # a flag is per file
    rt.dispatcher.clear_control([r.file.id])
    assert r.why_stop() is None


def test_a_cancel_pauses_instead_when_another_job_still_wants_the_destination(
    rt: Runtime,
) -> None:
    r = claimed(rt, (1000,), dests=("shared/model.gguf",))
    with rt.sessions.begin() as s:
        jobs.create_job(s, [jobs.FileSpec("org/r", "f0.bin", dest="shared/model.gguf")], method="x")
    rt.dispatcher.set_control([r.file.id], "cancel")
    assert r.why_stop() == "cancel"
    # Cancelling would delete the partial the other job goes on from.
    assert r.control() is Control.PAUSE


def test_a_cancel_cancels_when_the_other_job_on_the_destination_has_ended(rt: Runtime) -> None:
    r = claimed(rt, (1000,), dests=("shared/model.gguf",))
    with rt.sessions.begin() as s:
        ended = jobs.create_job(
            s, [jobs.FileSpec("org/r", "f0.bin", dest="shared/model.gguf")], method="x"
        )
        jobs.cancel_job(s, ended.id)
    rt.dispatcher.set_control([r.file.id], "cancel")
    assert r.control() is Control.CANCEL


def test_a_stopping_worker_hands_the_file_back_whatever_the_flag(rt: Runtime) -> None:
    r = claimed(rt)
    rt.dispatcher.set_control([r.file.id], "cancel")
    rt.shutting_down.set()
    assert r.why_stop() == "handback"
    assert r.control() is Control.PAUSE


def test_with_redis_down_the_control_check_carries_on(
    rt: Runtime, redis_server: RedisServer
) -> None:
    r = claimed(rt)
    rt.dispatcher.set_control([r.file.id], "pause")
    redis_server.stop()
    started = time.monotonic()
    assert r.why_stop() is None and r.control() is None  # no flag readable: keep going
    assert time.monotonic() - started < 1


# --- the event -----------------------------------------------------------------------------


def test_the_event_carries_the_jobs_overall_progress_from_the_other_files(rt: Runtime) -> None:
    r = claimed(rt, (1000, 3000), method="hf_hub")
    with rt.sessions.begin() as s:
        other = r.job.files[1].id
        jobs.claim_file(s, other, worker="w:2:b")
        jobs.finish_file(s, other, FileStatus.COMPLETED, worker="w:2:b", bytes_done=3000)
    r = reporter_for(rt, r.job.id, r.file.id, r.holder)
    r.on_progress(Progress(500, 1000, speed=2048.04, eta=0.24))
    first, second = r.event(FileStatus.DOWNLOADING), r.event(FileStatus.DOWNLOADING)
    data = first["data"]
    assert data["fileProgress"] == 50.0
    assert data["overallProgress"] == 87.5  # (3000 + 500) / 4000
    assert (data["bytesDownloaded"], data["totalBytes"]) == (500, 1000)
    assert (data["speed"], data["eta"]) == (2048.0, 0.2)
    assert data["method"] == "native"  # the engine that moves the bytes, not the job's choice
    assert second["data"]["seq"] == data["seq"] + 1


def test_the_overall_progress_waits_for_every_size(rt: Runtime) -> None:
    r = claimed(rt, (None, None))
    r.on_progress(p(500, 1000))  # this file's size is now known, the other's is not
    data = r.event(FileStatus.DOWNLOADING)["data"]
    assert data["fileProgress"] == 50.0 and data["totalBytes"] == 1000
    assert data["overallProgress"] == 0.0
