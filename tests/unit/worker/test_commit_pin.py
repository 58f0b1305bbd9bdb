"""One commit per job, and one destination per revision, with the real native engine against
the imitation Hub, whose branch moves to a new commit with other bytes in the middle of a job."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app import jobs, storage
from app.digest import sha256_file
from app.models import DownloadFile, FileStatus
from tests.hub import GeneratedFile, ImitationHub
from worker.engine.native import NativeEngine
from worker.pipeline import process_file
from worker.runtime import Runtime

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20
REPO = "org/moving"
A, B = "a.safetensors", "b.safetensors"


@pytest.fixture
def repo_hub(hub: ImitationHub) -> ImitationHub:
    hub.add_repo(
        REPO, {A: GeneratedFile(size=3 * MiB, seed=61), B: GeneratedFile(size=3 * MiB, seed=62)}
    )
    return hub


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime], repo_hub: ImitationHub) -> Runtime:
    runtime = make_runtime(hf_endpoint=repo_hub.url, download_lease_seconds=30)
    runtime.engine = NativeEngine(2, min_split=MiB, sidecar_interval=0.05)
    return runtime


def submit(rt: Runtime, *names: str, revision: str = "main") -> list[str]:
    with rt.sessions.begin() as s:
        specs = [
            jobs.FileSpec(REPO, n, revision, dest=storage.repo_dest(REPO, n, revision))
            for n in names
        ]
        job = jobs.create_job(s, specs, method="native")
        return [f.id for f in job.files]


def row(rt: Runtime, file_id: str) -> DownloadFile:
    with rt.sessions() as s:
        return jobs.get_file(s, file_id)


def test_a_branch_that_moves_between_two_files_does_not_mix_commits(
    rt: Runtime, repo_hub: ImitationHub
) -> None:
    first = repo_hub.commit(REPO)
    old_b = repo_hub.file_info(REPO, B)
    a_id, b_id = submit(rt, A, B)
    assert process_file(rt, a_id) == "completed"
    # main moves on: b.safetensors now has other bytes.
    repo_hub.put_file(REPO, B, GeneratedFile(size=3 * MiB + 7, seed=63))
    assert repo_hub.commit(REPO) != first
    assert process_file(rt, b_id) == "completed"
    b = row(rt, b_id)
    dest = rt.settings.models_dir / b.dest
    assert sha256_file(dest) == old_b.sha256  # the job's commit, not the new main
    assert b.commit == row(rt, a_id).commit == first
    # The row records what the Hub answered at that commit.
    assert (b.etag, b.size, b.sha256) == (old_b.sha256, old_b.size, old_b.sha256)
    resolves = [r for r in repo_hub.requests if r.host == "hub" and "/resolve/" in r.path]
    assert resolves and all(f"/resolve/{first}/" in r.path for r in resolves[-2:])


def test_a_retry_after_the_branch_moved_stays_on_the_jobs_commit(
    rt: Runtime, repo_hub: ImitationHub
) -> None:
    first = repo_hub.commit(REPO)
    old_a = repo_hub.file_info(REPO, A)
    (a_id,) = submit(rt, A)
    repo_hub.faults.add(path=A, host="cdn", status=503, times=None)
    rt.engine = NativeEngine(2, min_split=MiB, max_retries=0, backoff_base=0.01)
    assert process_file(rt, a_id) == "requeued"
    assert row(rt, a_id).commit == first
    repo_hub.faults.clear()
    repo_hub.put_file(REPO, A, GeneratedFile(size=2 * MiB, seed=64))
    assert process_file(rt, a_id) == "completed"
    assert sha256_file(rt.settings.models_dir / row(rt, a_id).dest) == old_a.sha256


def test_an_answer_that_no_longer_matches_the_record_starts_over_and_says_so(
    rt: Runtime, repo_hub: ImitationHub, caplog: pytest.LogCaptureFixture
) -> None:
    (a_id,) = submit(rt, A)
    with rt.sessions.begin() as s:
        # What an earlier attempt recorded, and a partial of those other bytes.
        file = jobs.get_file(s, a_id)
        file.commit, file.etag, file.size = repo_hub.commit(REPO), "f" * 64, 5 * MiB
    part = storage.partial_path(rt.settings.models_dir, row(rt, a_id).dest)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\1" * 5 * MiB)
    with caplog.at_level("INFO", logger=rt.log.name):
        assert process_file(rt, a_id) == "completed"
    assert any("starting over" in r.getMessage() for r in caplog.records)
    a = row(rt, a_id)
    assert sha256_file(rt.settings.models_dir / a.dest) == repo_hub.file_info(REPO, A).sha256
    assert (a.etag, a.size) == (repo_hub.file_info(REPO, A).sha256, 3 * MiB)


def test_two_revisions_of_a_file_get_their_own_destinations(
    rt: Runtime, repo_hub: ImitationHub
) -> None:
    old = repo_hub.commit(REPO)
    old_a = repo_hub.file_info(REPO, A)
    repo_hub.put_file(REPO, A, GeneratedFile(size=2 * MiB, seed=65))
    repo_hub.set_branch(REPO, "v1.0", old)
    (main_id,) = submit(rt, A)
    (v1_id,) = submit(rt, A, revision="v1.0")
    main, v1 = row(rt, main_id), row(rt, v1_id)
    assert main.dest == f"{REPO}/{A}" and v1.dest == f"{REPO}@v1.0/{A}"
    assert process_file(rt, main_id) == "completed"
    assert process_file(rt, v1_id) == "completed"
    models = rt.settings.models_dir
    assert sha256_file(models / main.dest) == repo_hub.file_info(REPO, A).sha256
    assert sha256_file(models / v1.dest) == old_a.sha256
    assert row(rt, v1_id).status is FileStatus.COMPLETED and row(rt, v1_id).commit == old
