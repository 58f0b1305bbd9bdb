"""The sweeper against a real job store and a private Redis (no workers needed)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import update

from app import jobs, models, storage
from app.db import db_now
from app.dispatch import QUEUE
from app.models import DownloadFile, FileStatus, JobStatus, utcnow
from tests.support import wait_for
from tests.unit.app.jobs.support import skew_clock
from worker.engine.hf_hub import STAGING_MARKER, staging_dir
from worker.lease import DestLease
from worker.runtime import Runtime
from worker.sweeper import DEAD_GRACE_S, Sweeper, alive_key, keep_alive


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(download_lease_seconds=5, download_max_attempts=2)


def _age(path: Path, seconds: float) -> None:
    """Make `path` and everything under it look last written `seconds` ago."""
    then = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (then, then), follow_symlinks=False)


def _staging(rt: Runtime, dest: str, *, marker: str | None = "") -> Path:
    """An hf_hub staging folder for `dest` as a worker leaves it mid-download."""
    folder = staging_dir(rt.settings.models_dir, dest)
    blob = folder / ".cache" / "huggingface" / "download" / "x.incomplete"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"\0" * 4096)
    if marker is not None:
        (folder / STAGING_MARKER).write_text(marker or dest)
    return folder


def _queued(rt: Runtime) -> list[bytes]:
    return list(redis.Redis.from_url(rt.settings.redis_url).lrange(QUEUE, 0, -1))


def _job(rt: Runtime, *names: str) -> list[str]:
    with rt.sessions.begin() as s:
        job = jobs.create_job(s, [jobs.FileSpec("org/r", n) for n in names], method="native")
        return [f.id for f in job.files]


def test_lost_files_are_requeued_or_failed_and_unsent_ones_sent(rt: Runtime) -> None:
    lost, poison, unsent = _job(rt, "a.bin", "b.bin", "c.bin")
    long_ago = utcnow() - timedelta(minutes=5)
    with rt.sessions.begin() as s:
        jobs.claim_file(s, lost, worker="dead:1:x", now=long_ago)
        jobs.claim_file(s, poison, worker="dead:1:y", now=long_ago)
        # The poison file has killed a worker before without getting any further: one more.
        s.execute(
            update(DownloadFile)
            .where(DownloadFile.id == poison)
            .values(attempts=2, stalled_losses=1)
        )
    result = Sweeper(rt).sweep()
    assert result["requeued"] == [lost] and result["failed"] == [poison]
    assert set(result["sent"]) == {lost, unsent}
    with rt.sessions() as s:
        assert jobs.get_file(s, lost).status is FileStatus.QUEUED
        failed = jobs.get_file(s, poison)
        assert failed.status is FileStatus.FAILED and "lost 2 times" in (failed.error or "")
        assert "in a row without getting any further" in (failed.error or "")
        assert jobs.get_file(s, unsent).published_at is not None
        assert jobs.get_job(s, failed.job_id).status is JobStatus.DOWNLOADING
    assert len(_queued(rt)) == 2
    # Nothing left to do: a second sweep sends nothing more (the queue is not empty).
    assert Sweeper(rt).sweep()["sent"] == []


def test_a_file_that_moved_on_before_its_worker_died_is_not_taken_for_poison(
    rt: Runtime,
) -> None:
    # A big file whose machines keep restarting: every claim resumes and gets further.
    (big,) = _job(rt, "big.gguf")
    long_ago = utcnow() - timedelta(minutes=5)
    for attempt in range(1, 5):
        with rt.sessions.begin() as s:
            assert jobs.claim_file(s, big, worker=f"dead:{attempt}:x", now=long_ago)
            jobs.record_progress(
                s, big, worker=f"dead:{attempt}:x", bytes_done=attempt * 100, now=long_ago
            )
        assert Sweeper(rt).sweep()["requeued"] == [big]
    with rt.sessions() as s:
        row = jobs.get_file(s, big)
        assert row.status is FileStatus.QUEUED and row.attempts == 4 > 2
    # Then lost twice in a row without a byte more (max attempts 2): it is given up.
    with rt.sessions.begin() as s:
        assert jobs.claim_file(s, big, worker="dead:5:x", now=long_ago)
    assert Sweeper(rt).sweep()["requeued"] == [big]
    with rt.sessions.begin() as s:
        assert jobs.claim_file(s, big, worker="dead:6:x", now=long_ago)
    assert Sweeper(rt).sweep()["failed"] == [big]


def test_a_dead_workers_file_is_requeued_before_its_lease_lapses(
    make_runtime: Callable[..., Runtime],
) -> None:
    rt = make_runtime(download_lease_seconds=600)
    dead, living = _job(rt, "dead.bin", "living.bin")
    quiet = utcnow() - timedelta(seconds=DEAD_GRACE_S + 5)  # well within the lease
    with rt.sessions.begin() as s:
        jobs.claim_file(s, dead, worker="gone:4242:aa", now=quiet)
        # Alive but slow to heartbeat (a long DB stall): its key says it lives.
        jobs.claim_file(s, living, worker="busy:77:bb", now=quiet)
    rt.redis.set(alive_key("busy:77"), "1", ex=60)
    result = Sweeper(rt).sweep()
    assert result["requeued"] == [dead] and result["sent"] == [dead]
    with rt.sessions() as s:
        assert jobs.get_file(s, dead).status is FileStatus.QUEUED
        assert jobs.get_file(s, living).status is FileStatus.DOWNLOADING
    # A running worker keeps its own key alive, and drops it when it stops.
    stop = threading.Event()
    thread = threading.Thread(target=keep_alive, args=(rt, stop))
    thread.start()
    try:
        wait_for(lambda: rt.redis.exists(alive_key(rt.name)), 5, "the alive key")
        assert 0 < rt.redis.ttl(alive_key(rt.name)) <= 5
    finally:
        stop.set()
        thread.join(5)
    assert not rt.redis.exists(alive_key(rt.name))


def test_a_delayed_retry_is_not_sent_early(rt: Runtime) -> None:
    (file_id,) = _job(rt, "a.bin")
    rt.dispatcher.enqueue(rt.sessions, [file_id], countdown=600)
    redis.Redis.from_url(rt.settings.redis_url).delete(QUEUE)  # as if held by a worker
    assert Sweeper(rt).sweep()["sent"] == []


def test_messages_lost_with_a_restarted_broker_are_sent_again_at_once(rt: Runtime) -> None:
    waiting = _job(rt, "a.bin", "b.bin")
    rt.dispatcher.enqueue(rt.sessions, waiting)
    broker = redis.Redis.from_url(rt.settings.redis_url)
    # A broker without the marker may have lost anything (a restart of `modelpull up`'s
    # private Redis): what waits is sent again, which a claim makes harmless.
    assert sorted(Sweeper(rt).sweep()["sent"]) == sorted(waiting)
    broker.delete(QUEUE)
    other = _job(rt, "c.bin")
    rt.dispatcher.enqueue(rt.sessions, other)
    assert Sweeper(rt).sweep()["sent"] == []  # messages in flight are left alone
    broker.flushall()  # Redis restarted without persistence: queue and marker gone
    sent = Sweeper(rt).sweep()["sent"]
    assert sorted(sent) == sorted(waiting + other)
    assert len(_queued(rt)) == 3
    assert Sweeper(rt).sweep()["sent"] == []  # once


def test_orphan_partials_are_deleted_and_wanted_ones_kept(rt: Runtime) -> None:
    models = rt.settings.models_dir
    (wanted,) = _job(rt, "kept.bin")
    paths = {}
    for dest in ("kept.bin", "org/x/orphan.bin", "fresh.bin"):
        part = storage.partial_path(models, dest)
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(b"x")
        storage.sidecar_path(models, dest).write_text("{}")
        paths[dest] = part
    old = time.time() - 60
    for dest in ("kept.bin", "org/x/orphan.bin"):
        os.utime(paths[dest], (old, old))
    assert Sweeper(rt).sweep()["cleaned"] == ["org/x/orphan.bin"]
    assert not paths["org/x/orphan.bin"].exists()
    assert not storage.sidecar_path(models, "org/x/orphan.bin").exists()
    assert paths["kept.bin"].exists() and paths["fresh.bin"].exists()
    assert wanted


@pytest.mark.parametrize(
    ("worker_clock", "sweeper_clock"),
    [(-timedelta(minutes=5), timedelta(0)), (timedelta(0), timedelta(minutes=5))],
    ids=["worker-behind", "sweeper-ahead"],
)
def test_a_live_file_stays_with_its_worker_whatever_the_clocks_say(
    make_runtime: Callable[..., Runtime],
    monkeypatch: pytest.MonkeyPatch,
    worker_clock: timedelta,
    sweeper_clock: timedelta,
) -> None:
    lease = 60
    rt = make_runtime(download_lease_seconds=lease)
    (file_id,) = _job(rt, "a.bin")
    rt.redis.set(alive_key("w:1"), "1", ex=600)  # its process lives
    # The worker claims (as the pipeline does) and heartbeats, on its machine's clock.
    skew_clock(monkeypatch, worker_clock)
    with rt.sessions.begin() as s:
        stale_before = models.utcnow() - timedelta(seconds=lease)
        assert jobs.claim_file(s, file_id, worker="w:1:a", stale_before=stale_before)
    with rt.sessions.begin() as s:
        assert jobs.record_progress(s, file_id, worker="w:1:a", bytes_done=100)
    # The sweeper, on another machine's clock, does not take it away.
    skew_clock(monkeypatch, sweeper_clock)
    result = Sweeper(rt).sweep()
    assert (result["requeued"], result["failed"]) == ([], [])
    with rt.sessions() as s:
        row = jobs.get_file(s, file_id)
        assert (row.status, row.worker) == (FileStatus.DOWNLOADING, "w:1:a")
    # Once it has really been silent for a lease (by the store's clock), it is handed back.
    with rt.sessions.begin() as s:
        past = db_now(s) - timedelta(seconds=2 * lease)
        assert jobs.record_progress(s, file_id, worker="w:1:a", bytes_done=100, now=past)
    assert Sweeper(rt).sweep()["requeued"] == [file_id]


def test_staging_left_by_a_dead_worker_is_removed_but_a_live_or_fresh_one_kept(
    rt: Runtime,
) -> None:
    # The lease is 5 s: a folder is quiet after 10 s without a write.
    dead = _staging(rt, "org/dead.gguf")
    stalled = _staging(rt, "org/stalled.gguf")  # quiet, but its worker holds the lease
    fresh = _staging(rt, "org/fresh.gguf")
    for folder in (dead, stalled, fresh):
        _age(folder, 60)
    # A transfer still writes deep inside the fresh one.
    (fresh / ".cache" / "huggingface" / "download" / "x.incomplete").write_bytes(b"more")
    held = DestLease(rt.redis, "org/stalled.gguf", ttl_seconds=60)
    assert held.try_acquire()
    result = Sweeper(rt).sweep()
    assert not dead.exists() and stalled.exists() and fresh.exists()
    assert result["staging"] == [dead.name]
    # The stalled worker is gone for good: its lease lapses (released here), then it goes.
    held.release()
    result = Sweeper(rt).sweep()
    assert not stalled.exists() and fresh.exists()
    assert result["staging"] == [stalled.name]
    assert held.try_acquire()  # the sweeper let go of the lease it cleaned under


def test_staging_without_a_marker_is_removed_only_after_a_long_silence(rt: Runtime) -> None:
    old = _staging(rt, "org/old.gguf", marker=None)  # left by a version without markers
    recent = _staging(rt, "org/recent.gguf", marker=None)
    forged = _staging(rt, "org/forged.gguf", marker="org/other.gguf")  # names another dest
    _age(old, 2 * 86400)
    _age(recent, 600)  # quiet for a lease, but not for long
    _age(forged, 600)
    # The other destination's lease is held: a marker that does not belong is not trusted.
    assert DestLease(rt.redis, "org/other.gguf", ttl_seconds=60).try_acquire()
    result = Sweeper(rt).sweep()
    assert not old.exists() and recent.exists() and forged.exists()
    assert result["staging"] == [old.name]
    _age(forged, 2 * 86400)
    Sweeper(rt).sweep()
    assert not forged.exists()


def test_work_files_left_without_their_partial_are_removed(rt: Runtime) -> None:
    models = rt.settings.models_dir
    (wanted,) = _job(rt, "kept.bin")
    work = storage.work_dir(models)
    files = {
        "sidecar": work / "org/x/a.bin.part.json",  # its partial was deleted, then a crash
        "tmp": work / "org/x/b.bin.part.json.tmp",  # a sidecar save cut short
        "unknown": work / "c.tmp",
        "beside": work / "kept.bin.part.json.tmp",  # its partial is there and wanted
        "held": work / "held.bin.part.json",  # its destination's lease is held
        "fresh": work / "fresh.bin.part.json",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    storage.partial_path(models, "kept.bin").write_bytes(b"x")
    for name in ("sidecar", "tmp", "unknown", "beside", "held"):
        _age(files[name], 60)
    assert DestLease(rt.redis, "held.bin", ttl_seconds=60).try_acquire()
    result = Sweeper(rt).sweep()
    assert [name for name, path in files.items() if path.exists()] == ["beside", "held", "fresh"]
    assert sorted(result["strays"]) == [
        "c.tmp",
        "org/x/a.bin.part.json",
        "org/x/b.bin.part.json.tmp",
    ]
    assert storage.partial_path(models, "kept.bin").exists() and wanted
