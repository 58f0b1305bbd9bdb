"""The distributed pipeline end to end: real workers, a private Redis, the imitation Hub."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from app import jobs, services, storage
from app.catalog import load_catalog
from app.digest import sha256_file
from app.models import FileStatus, JobStatus, utcnow
from app.settings import DEFAULT_CATALOG
from tests.hub import VALID_TOKEN, GeneratedFile
from tests.stack import DestinationWatcher, Stack, cdn_bytes
from tests.support import MiB, wait_for

pytestmark = pytest.mark.timeout(180)

BIG = 40 * MiB


def big_repo(stack: Stack, *, size: int = BIG, rate: int | None = 2 * MiB) -> jobs.FileSpec:
    """A repo with one big LFS file, each CDN connection capped at `rate` bytes/s."""
    stack.hub.add_repo("org/big", {"big.gguf": GeneratedFile(size=size, seed=21)})
    if rate:
        stack.hub.faults.add(path="big.gguf", host="cdn", bandwidth=rate, times=None)
    return jobs.FileSpec("org/big", "big.gguf")


def test_z_image_turbo_end_to_end_with_events_in_order(stack: Stack) -> None:
    sizes = {
        ("leejet/Z-Image-Turbo-GGUF", "z_image_turbo-Q8_0.gguf"): 24 * MiB,
        ("black-forest-labs/FLUX.1-schnell", "ae.safetensors"): 6 * MiB,
        ("unsloth/Qwen3-4B-Instruct-2507-GGUF", "Qwen3-4B-Instruct-2507-Q8_0.gguf"): 12 * MiB,
    }
    for seed, ((repo, name), size) in enumerate(sizes.items()):
        stack.hub.add_repo(repo, {name: GeneratedFile(size=size, seed=100 + seed)})
    stack.hub.faults.add(host="cdn", bandwidth=8 * MiB, times=None)
    stack.start_worker("w1")
    stack.start_worker("w2")
    model = load_catalog(DEFAULT_CATALOG).get("z-image-turbo")
    assert model is not None
    job = services.start_model_download(stack.sessions, stack.dispatcher, stack.settings, model)
    files = stack.wait_job(job["jobId"], JobStatus.COMPLETED, timeout=120)

    for f in files:
        info = stack.hub.file_info(f.repo, f.file_name)
        assert sha256_file(stack.models / f.dest) == info.sha256 == f.sha256
        assert f.bytes_done == f.size == info.size
    assert not any(storage.work_dir(stack.models).rglob("*.part"))

    evts = stack.collector.until_job_event(job["jobId"])
    assert evts[-1]["type"] == "complete" and evts[-1]["data"]["overallProgress"] == 100.0
    assert evts[0]["type"] == "queued"
    for f in files:
        mine = [e for e in evts if e["data"].get("fileId") == f.id]
        progress = [e["data"]["bytesDownloaded"] for e in mine if e["type"] == "progress"]
        assert progress == sorted(progress) and len(progress) >= 2, f.file_name
        seqs = [e["data"]["seq"] for e in mine if e["data"]["seq"]]
        assert seqs == sorted(seqs)
        assert mine[-1]["type"] == "complete" and mine[-1]["data"]["fileProgress"] == 100.0
        assert mine[-1]["data"]["totalFiles"] == 3 and mine[-1]["data"]["repo"] == f.repo
    # The wire schema: camelCase fields (the README's "Wire events").
    sample = next(e for e in evts if e["type"] == "progress")["data"]
    assert {
        "jobId", "repo", "method", "fileIndex", "totalFiles", "fileName", "fileProgress",
        "overallProgress", "bytesDownloaded", "totalBytes", "speed", "eta", "status",
    } <= set(sample)  # fmt: skip
    # While a file downloads, the native engine's connection count rides along (once the
    # engine has reported; the start is announced before it has).
    counts: dict[str, set[int]] = {}
    for e in evts:
        if e["data"].get("status") == "downloading" and "connections" in e["data"]:
            counts.setdefault(e["data"]["fileId"], set()).add(e["data"]["connections"])
    assert counts and all(min(c) >= 1 for c in counts.values())


def test_a_killed_worker_is_replaced_and_the_file_resumes(
    stack: Stack, record_property: pytest.RecordProperty
) -> None:
    spec = big_repo(stack)
    stack.start_worker("w1")
    stack.start_worker("w2")
    job = stack.submit(spec)
    file_id = job["files"][0]["fileId"]
    info = stack.hub.file_info("org/big", "big.gguf")
    with DestinationWatcher(stack.models / "big.gguf", BIG) as watcher:
        stack.wait_file(file_id, lambda r: r.bytes_done >= 12 * MiB, "12 MiB downloaded")
        victim = stack.worker_of(file_id)
        assert victim is not None
        killed_at = time.time()
        stack.workers[victim].send_signal(signal.SIGKILL)
        stack.workers[victim].wait(10)
        recorded = storage.partial_bytes(stack.models, "big.gguf") or 0
        stack.wait_file(
            file_id,
            lambda r: r.status is FileStatus.DOWNLOADING and r.attempts == 2,
            "another worker to take the file over",
        )
        taken_over = time.time() - killed_at
        files = stack.wait_job(job["jobId"], JobStatus.COMPLETED, timeout=120)
        recovered = time.time() - killed_at
    record_property("takeover_s", round(taken_over, 2))
    record_property("recovered_s", round(recovered, 2))
    print(f"\nworker killed: taken over after {taken_over:.1f} s, complete after {recovered:.1f} s")
    assert sha256_file(stack.models / "big.gguf") == info.sha256
    assert watcher.violations == []  # never visible incomplete
    assert files[0].attempts == 2
    # Resumed, not restarted: the second worker fetched only what the sidecar lacked.
    assert recorded >= 8 * MiB
    assert cdn_bytes(stack.hub, since=killed_at) <= BIG - recorded + MiB
    ranges = [
        r.header("Range")
        for r in stack.hub.requests
        if r.host == "cdn" and r.time > killed_at and r.header("Range")
    ]
    assert ranges and "bytes=0-" not in [r[: len("bytes=0-")] for r in ranges]


def test_two_jobs_for_the_same_file_transfer_it_once(stack: Stack) -> None:
    spec = big_repo(stack, size=24 * MiB, rate=4 * MiB)
    stack.start_worker("w1")
    stack.start_worker("w2")
    # Two models that share a file (as z-image-turbo and flux1-schnell share ae.safetensors):
    # a job each, one transfer.
    first = stack.submit(spec, model_id="one")
    second = stack.submit(spec, model_id="two")
    assert first["jobId"] != second["jobId"]
    for job in (first, second):
        stack.wait_job(job["jobId"], JobStatus.COMPLETED, timeout=90)
    assert (
        sha256_file(stack.models / "big.gguf") == stack.hub.file_info("org/big", "big.gguf").sha256
    )
    assert cdn_bytes(stack.hub) == 24 * MiB  # one transfer, not two
    log = (stack.data / "logs" / "downloads.log").read_text()
    assert "waiting for the destination held by another transfer" in log
    assert "present" in log


def test_pause_then_resume_continues_from_the_partial(stack: Stack) -> None:
    spec = big_repo(stack)
    stack.start_worker("w1")
    job = stack.submit(spec)
    file_id = job["files"][0]["fileId"]
    stack.wait_file(file_id, lambda r: r.bytes_done >= 8 * MiB, "8 MiB downloaded")
    paused = services.control_job(stack.sessions, stack.dispatcher, job["jobId"], "pause")
    assert paused["status"] == "paused"
    # The worker lets go within a moment and keeps the partial.
    wait_for(lambda: "paused" in (stack.data / "logs" / "downloads.log").read_text(), 10, "pause")
    kept = storage.partial_bytes(stack.models, "big.gguf")
    assert kept is not None and 8 * MiB <= kept < BIG
    time.sleep(1.5)
    assert storage.partial_bytes(stack.models, "big.gguf") == kept  # nothing more is written
    resumed_at = time.time()
    services.control_job(stack.sessions, stack.dispatcher, job["jobId"], "resume")
    files = stack.wait_job(job["jobId"], JobStatus.COMPLETED, timeout=90)
    assert files[0].status is FileStatus.COMPLETED
    assert (
        sha256_file(stack.models / "big.gguf") == stack.hub.file_info("org/big", "big.gguf").sha256
    )
    assert cdn_bytes(stack.hub, since=resumed_at) <= BIG - kept + MiB
    types = wait_for(
        lambda: (
            (t := [e["type"] for e in stack.collector.for_job(job["jobId"])])
            and t[-1] == "complete"
            and t
        ),
        10,
        "the final event",
    )
    assert "paused" in types


def test_cancel_removes_partials_and_settles_cancelled(stack: Stack) -> None:
    spec = big_repo(stack)
    stack.start_worker("w1")
    running = stack.submit(spec)
    stack.wait_file(running["files"][0]["fileId"], lambda r: r.bytes_done >= 4 * MiB, "progress")
    result = services.control_job(stack.sessions, stack.dispatcher, running["jobId"], "cancel")
    assert result["status"] == "cancelled"
    part = storage.partial_path(stack.models, "big.gguf")
    wait_for(lambda: not part.exists(), 15, "the partial to be deleted")
    assert not storage.sidecar_path(stack.models, "big.gguf").exists()
    assert not (stack.models / "big.gguf").exists()
    status, files = stack.job(running["jobId"])
    assert status is JobStatus.CANCELLED and files[0].status is FileStatus.CANCELLED
    # The worker's own last word comes after it has let go (and may follow a late progress).
    wait_for(
        lambda: stack.collector.for_job(running["jobId"])[-1]["type"] == "cancelled",
        10,
        "the worker's cancelled event",
    )


def test_cancelling_a_paused_job_deletes_its_partial_too(stack: Stack) -> None:
    spec = big_repo(stack)
    stack.start_worker("w1")
    job = stack.submit(spec)
    stack.wait_file(job["files"][0]["fileId"], lambda r: r.bytes_done >= 4 * MiB, "progress")
    services.control_job(stack.sessions, stack.dispatcher, job["jobId"], "pause")
    part = storage.partial_path(stack.models, "big.gguf")
    wait_for(lambda: "paused" in (stack.data / "logs" / "downloads.log").read_text(), 10, "pause")
    assert part.exists()
    services.control_job(stack.sessions, stack.dispatcher, job["jobId"], "cancel")
    wait_for(lambda: not part.exists(), 15, "a worker to delete the idle partial")


def test_a_permanent_error_fails_the_file_with_its_message_and_stderr(stack: Stack) -> None:
    stack.hub.add_repo("org/open", {"ok.json": b'{"ok": true}\n'})
    stack.start_worker("w1", DOWNLOADER="hf_hub")
    job = stack.submit(
        jobs.FileSpec("org/gated", "model.safetensors"), jobs.FileSpec("org/open", "ok.json")
    )
    files = stack.wait_job(job["jobId"], JobStatus.FAILED, timeout=90)
    gated, ok = files
    assert gated.status is FileStatus.FAILED and ok.status is FileStatus.COMPLETED
    assert "gated" in (gated.error or "") and "HF_TOKEN" in (gated.error or "")
    assert gated.stderr and "Traceback (most recent call last)" in gated.stderr
    assert "GatedRepoError" in gated.stderr
    status, _ = stack.job(job["jobId"])
    assert status is JobStatus.FAILED
    failed = wait_for(
        lambda: [e for e in stack.collector.for_job(job["jobId"]) if e["type"] == "failed"],
        10,
        "the failed event",
    )
    assert failed[0]["data"]["stderr"] == gated.stderr
    log = (stack.data / "logs" / "downloads.log").read_text()
    line = next(x for x in log.splitlines() if " failed " in x)
    assert f"job={job['jobId']}" in line and "repo=org/gated" in line and "engine=hf_hub" in line
    assert "Traceback (most recent call last)" in line  # the stderr, whole, on its line


def test_a_missing_file_fails_at_once_with_the_native_engine(stack: Stack) -> None:
    stack.hub.add_repo("org/open", {"ok.json": b"{}"})
    stack.start_worker("w1")
    job = stack.submit(jobs.FileSpec("org/open", "nope.gguf"))
    files = stack.wait_job(job["jobId"], JobStatus.FAILED, timeout=60)
    assert files[0].attempts == 1 and "does not exist" in (files[0].error or "")


def test_redis_restart_during_a_download(stack: Stack) -> None:
    spec = big_repo(stack, size=48 * MiB, rate=MiB)
    stack.start_worker("w1")
    job = stack.submit(spec)
    file_id = job["files"][0]["fileId"]
    stack.wait_file(file_id, lambda r: r.bytes_done >= 6 * MiB, "progress before the restart")
    stack.redis.stop()
    with stack.sessions() as s:
        at_restart = jobs.get_file(s, file_id).bytes_done
    time.sleep(2)
    stack.redis.start()
    files = stack.wait_job(job["jobId"], JobStatus.COMPLETED, timeout=120)
    assert (
        sha256_file(stack.models / "big.gguf") == stack.hub.file_info("org/big", "big.gguf").sha256
    )
    assert files[0].attempts == 1  # the download went on through the outage
    # Events resumed once Redis was back: progress past the restart point, then the end.
    evts = stack.collector.until_job_event(job["jobId"])
    assert evts[-1]["type"] == "complete"
    assert any(
        e["type"] == "progress" and e["data"]["bytesDownloaded"] > at_restart + 4 * MiB
        for e in evts
    )


def test_sigterm_hands_the_file_back_promptly(stack: Stack) -> None:
    # A lease far longer than the test: the file can only come back through the handback,
    # and a slow machine's late heartbeat cannot look like a dead worker.
    lease = 60
    spec = big_repo(stack)
    stack.start_worker("w1", DOWNLOAD_LEASE_SECONDS=str(lease))
    stack.start_worker("w2", DOWNLOAD_LEASE_SECONDS=str(lease))
    job = stack.submit(spec)
    file_id = job["files"][0]["fileId"]
    stack.wait_file(file_id, lambda r: r.bytes_done >= 6 * MiB, "progress")
    holder = stack.worker_of(file_id)
    assert holder is not None
    started = time.monotonic()
    signalled_at = utcnow()
    stack.workers[holder].send_signal(signal.SIGTERM)
    stack.workers[holder].wait(30)
    stopped_in = time.monotonic() - started
    print(f"\nSIGTERM: the worker handed its file back and exited in {stopped_in:.1f} s")
    assert stopped_in < 10
    log = stack.data / "logs" / "downloads.log"
    assert "handed back" in log.read_text()
    files = stack.wait_job(job["jobId"], JobStatus.COMPLETED, timeout=120)
    assert files[0].attempts == 2, log.read_text()
    # The other worker took it over long before a lease could have expired, and went on
    # from the partial the first one left.
    assert files[0].started_at is not None
    assert (files[0].started_at - signalled_at).total_seconds() < lease
    completed = [line for line in log.read_text().splitlines() if " completed " in line]
    assert completed and "resumed_from=0 " not in completed[-1], completed
    assert (
        sha256_file(stack.models / "big.gguf") == stack.hub.file_info("org/big", "big.gguf").sha256
    )


def test_rows_whose_messages_never_left_are_sent_by_the_sweeper(stack: Stack) -> None:
    stack.hub.add_repo("org/open", {"a.bin": GeneratedFile(size=MiB, seed=3)})
    with stack.sessions.begin() as s:  # as if Redis had been down when the job was created
        job = jobs.create_job(s, [jobs.FileSpec("org/open", "a.bin")], method="native")
        job_id = job.id
    stack.start_worker("w1")
    files = stack.wait_job(job_id, JobStatus.COMPLETED, timeout=30)
    assert files[0].published_at is not None


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_on_postgres_two_workers_share_the_queue(stack: Stack) -> None:
    names = [f"f{i}.bin" for i in range(6)]
    stack.hub.add_repo(
        "org/many", {n: GeneratedFile(size=2 * MiB, seed=40 + i) for i, n in enumerate(names)}
    )
    stack.start_worker("w1")
    stack.start_worker("w2")
    job = stack.submit(*[jobs.FileSpec("org/many", n) for n in names])
    files = stack.wait_job(job["jobId"], JobStatus.COMPLETED, timeout=90)
    assert all(f.attempts == 1 for f in files)
    processes = {(f.worker or "").split(":")[-2] for f in files}  # host:pid:claim
    assert len(processes) == 2  # both workers took part
    for f in files:
        assert (
            sha256_file(stack.models / f.dest)
            == stack.hub.file_info("org/many", f.file_name).sha256
        )


def test_the_log_holds_every_operation_and_never_the_token(stack: Stack) -> None:
    stack.hub.add_repo(
        "org/secret", {"w.gguf": GeneratedFile(size=3 * MiB, seed=9)}, gated="manual",
        approved_tokens=(VALID_TOKEN,),
    )  # fmt: skip
    stack.start_worker("w1", HF_TOKEN=VALID_TOKEN)
    job = stack.submit(jobs.FileSpec("org/secret", "w.gguf"), jobs.FileSpec("org/secret", "x.gguf"))
    stack.wait_job(job["jobId"], JobStatus.FAILED, timeout=60)
    log_path = stack.data / "logs" / "downloads.log"
    # The job's last line follows its commit by a moment.
    wait_for(lambda: " job failed " in log_path.read_text(), 10, "the job's log line")
    log = log_path.read_text()
    for op in ("claimed", "start", "progress", "completed", "failed", "job failed"):
        assert f" {op} " in log, (op, log)
    for line in log.splitlines():
        assert f"job={job['jobId']}" in line, line
        assert "repo=org/secret" in line and "engine=native" in line and "file=" in line, line
    everything = [log, stack.worker_log("w1")]
    with stack.sessions() as s:
        for f in jobs.get_job(s, job["jobId"]).files:
            everything += [f.error or "", f.stderr or ""]
    everything += [str(e) for e in stack.collector.for_job(job["jobId"])]
    assert not any(VALID_TOKEN in text for text in everything)
    sidecars = list(Path(storage.work_dir(stack.models)).rglob("*.json"))
    assert not any(VALID_TOKEN in p.read_text() for p in sidecars)
