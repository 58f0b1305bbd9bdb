"""The finish line, with the real native engine against the imitation Hub: a verified file at
its destination is always recorded completed (whatever a pause or cancel did meanwhile), the
row says `verifying` while the final checksum runs, a file counts as present only when its
content matches, the fence fails closed, and what cannot be helped (a full disk, a trickle)
settles the row the right way."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app import events, jobs, services, storage
from app.digest import sha256_file
from app.errors import DiskFullError, IllegalTransitionError
from app.models import DownloadFile, FileStatus, JobStatus
from tests.hub import BytesFile, GeneratedFile, ImitationHub
from tests.stack import EventCollector
from tests.support import RedisServer
from tests.unit.worker.fakes import FakeEngine
from worker.engine.base import DownloadRequest, Progress, ProgressFn
from worker.engine.native import NativeEngine
from worker.engine.terms import Trickle
from worker.pipeline import process_file
from worker.runtime import Runtime

pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20
REPO = "org/finish"
BIG, BIG_SIZE = "w.gguf", 6 * MiB
CONFIG = "config.json"


@pytest.fixture
def repo_hub(hub: ImitationHub) -> ImitationHub:
    hub.add_repo(
        REPO,
        {
            BIG: GeneratedFile(size=BIG_SIZE, seed=51),
            CONFIG: BytesFile(b'{"model_type": "right"}\n', lfs=False),
        },
    )
    return hub


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime], repo_hub: ImitationHub) -> Runtime:
    runtime = make_runtime(
        hf_endpoint=repo_hub.url, download_lease_seconds=30, download_max_attempts=2
    )
    runtime.engine = NativeEngine(
        2, min_split=2 * MiB, sidecar_interval=0.05, control_interval=0.05, backoff_base=0.05
    )
    return runtime


def submit(rt: Runtime, name: str = BIG) -> tuple[str, str]:
    with rt.sessions.begin() as s:
        job = jobs.create_job(s, [jobs.FileSpec(REPO, name)], method="native")
        return job.id, job.files[0].id


def row(rt: Runtime, file_id: str) -> DownloadFile:
    with rt.sessions() as s:
        return jobs.get_file(s, file_id)


def agree(rt: Runtime, file_id: str, hub: ImitationHub, name: str = BIG) -> None:
    """The row and the disk agree: completed with the right bytes at the destination, or not
    completed and nothing there."""
    current = row(rt, file_id)
    dest = rt.settings.models_dir / current.dest
    if current.status is FileStatus.COMPLETED:
        assert dest.is_file(), "completed, but no file at the destination"
        assert sha256_file(dest) == hub.file_info(REPO, name).sha256
        assert current.bytes_done == current.size == dest.stat().st_size
    else:
        assert not dest.exists(), f"a file at the destination under a {current.status} row"


def user(rt: Runtime, job_id: str, action: str) -> None:
    """A user's pause or cancel, through the API's code; too late once the job ended."""
    with contextlib.suppress(IllegalTransitionError):
        services.control_job(rt.sessions, rt.dispatcher, job_id, action)


class Hooked(NativeEngine):
    """The native engine with a user's action slipped in at one moment of the finish."""

    def __init__(self, moment: str, act: Callable[[], None], **kw: Any) -> None:
        super().__init__(2, min_split=2 * MiB, control_interval=0.05, **kw)
        self.moment, self.act = moment, act

    def download(self, request: DownloadRequest, **kw: Any) -> Any:  # type: ignore[override]
        progress: ProgressFn = kw["progress"]
        fence: Callable[[], None] = kw["before_commit"]

        def on_progress(p: Progress) -> None:
            progress(p)
            if p.status == "verifying" and self.moment == "verifying":
                self.act()

        def before_commit() -> None:
            if self.moment == "fence":
                self.act()
            fence()

        kw.update(progress=on_progress, before_commit=before_commit)
        result = super().download(request, **kw)
        if self.moment == "placed":
            self.act()
        return result


@pytest.mark.parametrize("action", ["pause", "cancel"])
@pytest.mark.parametrize("moment", ["verifying", "fence", "placed"])
def test_a_control_racing_the_final_rename_never_leaves_row_and_disk_apart(
    rt: Runtime, repo_hub: ImitationHub, collector: EventCollector, action: str, moment: str
) -> None:
    job_id, file_id = submit(rt)
    rt.engine = Hooked(
        moment, lambda: services.control_job(rt.sessions, rt.dispatcher, job_id, action)
    )
    process_file(rt, file_id)
    agree(rt, file_id, repo_hub)
    # At these moments the bytes were verified before the request: the rule keeps them.
    assert row(rt, file_id).status is FileStatus.COMPLETED
    assert collector.for_job(job_id)[-1]["data"]["status"] == "completed"


def test_pause_and_cancel_at_random_moments_around_the_finish(
    rt: Runtime, repo_hub: ImitationHub
) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", bandwidth=24 * MiB, times=None)
    rng = random.Random(12)
    outcomes: set[FileStatus] = set()
    for _ in range(12):
        job_id, file_id = submit(rt)
        (rt.settings.models_dir / row(rt, file_id).dest).unlink(missing_ok=True)
        action = rng.choice(["pause", "cancel"])
        timer = threading.Timer(rng.uniform(0.05, 0.45), user, args=(rt, job_id, action))
        timer.start()
        process_file(rt, file_id)
        timer.join()
        agree(rt, file_id, repo_hub)
        outcomes.add(row(rt, file_id).status)
        if row(rt, file_id).status is FileStatus.PAUSED:
            with rt.sessions.begin() as s:
                jobs.cancel_job(s, job_id)
            storage.remove_partial(rt.settings.models_dir, row(rt, file_id).dest)
    assert len(outcomes) >= 2, f"every round ended the same way: {outcomes}"


def test_the_row_says_verifying_while_the_final_checksum_runs(
    rt: Runtime, repo_hub: ImitationHub, collector: EventCollector
) -> None:
    job_id, file_id = submit(rt)
    seen: dict[str, Any] = {}

    def look() -> None:  # called by the engine as the final checksum begins
        seen["row"] = row(rt, file_id).status
        with rt.sessions() as s:
            seen["api"] = events.job_to_dict(jobs.get_job(s, job_id))["files"][0]["status"]

    rt.engine = Hooked("verifying", look)
    assert process_file(rt, file_id) == "completed"
    assert seen == {"row": FileStatus.VERIFYING, "api": "verifying"}
    statuses = [e["data"].get("status") for e in collector.for_job(job_id)]
    assert "verifying" in statuses
    assert statuses.index("verifying") < statuses.index("completed")


@pytest.mark.parametrize("name", [CONFIG, BIG], ids=["regular file", "LFS file"])
def test_a_same_size_file_with_other_bytes_is_replaced(
    rt: Runtime, repo_hub: ImitationHub, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    right = repo_hub.file_info(REPO, name)
    _, file_id = submit(rt, name)
    dest = rt.settings.models_dir / row(rt, file_id).dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(b"x" * right.size)  # the size matches, the content does not
    with caplog.at_level("INFO", logger=rt.log.name):
        assert process_file(rt, file_id) == "completed"
    assert sha256_file(dest) == right.sha256
    assert any("replacing" in r.getMessage() for r in caplog.records)


def test_a_file_that_is_already_there_is_checked_not_downloaded(
    rt: Runtime, repo_hub: ImitationHub
) -> None:
    right = repo_hub.file_info(REPO, CONFIG)
    _, file_id = submit(rt, CONFIG)
    dest = rt.settings.models_dir / row(rt, file_id).dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(right.read_bytes())
    repo_hub.clear_requests()
    assert process_file(rt, file_id) == "completed"
    assert not [r for r in repo_hub.requests if r.method == "GET"]  # only asked, not fetched


def test_the_fence_fails_closed_and_keeps_the_verified_partial(
    rt: Runtime, repo_hub: ImitationHub, redis_server: RedisServer
) -> None:
    _, file_id = submit(rt)
    rt.engine = Hooked("fence", redis_server.stop)
    assert process_file(rt, file_id) == "requeued"
    dest = rt.settings.models_dir / row(rt, file_id).dest
    assert not dest.exists()
    assert row(rt, file_id).status is FileStatus.QUEUED
    assert storage.partial_bytes(rt.settings.models_dir, row(rt, file_id).dest) == BIG_SIZE
    redis_server.start()
    rt.engine = NativeEngine(2, min_split=2 * MiB)
    repo_hub.clear_requests()
    assert process_file(rt, file_id) == "completed"
    assert sha256_file(dest) == repo_hub.file_info(REPO, BIG).sha256
    assert not [r for r in repo_hub.requests if r.host == "cdn"]  # nothing fetched again


def test_a_full_disk_waits_for_space_instead_of_failing(rt: Runtime) -> None:
    def full(*_: Any) -> Any:
        raise DiskFullError("not enough free space", repo=REPO, file=BIG)

    rt.engine = FakeEngine(full)
    _, file_id = submit(rt)
    assert process_file(rt, file_id) == "requeued"
    assert row(rt, file_id).status is FileStatus.QUEUED


def test_a_file_that_only_trickles_fails_once_its_attempts_are_spent(rt: Runtime) -> None:
    def trickle(req: DownloadRequest, progress: ProgressFn, *_: Any) -> Any:
        progress(Progress(row(rt, file_id).bytes_done + 30_000, BIG_SIZE, 1000.0, None))
        raise Trickle("the connection brought only 30000 bytes in 30 s", repo=REPO, file=BIG)

    rt.engine = FakeEngine(trickle)
    job_id, file_id = submit(rt)
    results = [process_file(rt, file_id) for _ in range(2)]
    # Each attempt moved the file on a little, but a trickle does not earn more attempts.
    assert results == ["requeued", "failed"]
    assert row(rt, file_id).status is FileStatus.FAILED
    with rt.sessions() as s:
        assert jobs.get_job(s, job_id).status is JobStatus.FAILED


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    yield
    for t in threading.enumerate():
        if t.name.startswith("modelpull-conn"):
            t.join(5)
