"""The worker's composition root: the runtime is built when the worker starts, the task
reaches it through its app, and a stopping worker tells its downloads to hand back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import signals

from app import jobs
from app.dispatch import TASK_NAME
from app.models import FileStatus
from app.settings import Settings
from tests.support import RedisServer, wait_for
from tests.unit.worker.fakes import SIZE, FakeEngine, place
from worker.celery_app import WorkerApp, create_celery
from worker.sweeper import alive_key

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app(tmp_path: Path, db_url: str, redis_server: RedisServer) -> Iterator[WorkerApp]:
    settings = Settings(
        models_dir=tmp_path / "models",
        data_dir=tmp_path / "data",
        database_url=db_url,
        redis_url=redis_server.url,
    )
    worker_app = create_celery(settings)
    yield worker_app
    worker_app.hand_back()


@dataclass(frozen=True)
class FakeWorkController:
    """The sender of `worker_init`: Celery's WorkController, of which only `.app` is read."""

    app: Any


def start(app: WorkerApp) -> None:
    """What `celery worker` does when its process starts."""
    signals.worker_init.send(sender=FakeWorkController(app))


def test_the_runtime_is_built_once_when_the_worker_starts(app: WorkerApp) -> None:
    with pytest.raises(RuntimeError, match="has not started"):
        _ = app.runtime
    # Another app's worker starting in this process is not this app's start.
    signals.worker_init.send(sender=FakeWorkController(object()))
    with pytest.raises(RuntimeError):
        _ = app.runtime

    start(app)
    rt = app.runtime
    assert rt.settings is app.settings
    start(app)
    assert app.runtime is rt  # built once
    # The sweeper's companion keeps this process's alive key, so its files are not taken.
    wait_for(lambda: rt.redis.exists(alive_key(rt.name)), 5, "the alive key")


def test_the_task_downloads_through_the_runtime_of_its_app(app: WorkerApp) -> None:
    start(app)
    app.runtime.engine = FakeEngine(lambda req, progress, _c, commit: place(req, progress, commit))
    with app.runtime.sessions.begin() as s:
        file_id = (
            jobs.create_job(s, [jobs.FileSpec("org/r", "w.gguf")], method="native").files[0].id
        )
    app.loader.import_default_modules()

    result = app.tasks[TASK_NAME].apply(args=[file_id])

    assert result.get() == "completed"
    with app.runtime.sessions() as s:
        row = jobs.get_file(s, file_id)
    assert row.status is FileStatus.COMPLETED and row.bytes_done == SIZE
    assert (app.settings.models_dir / "w.gguf").stat().st_size == SIZE


def test_a_stopping_worker_hands_back_and_drops_its_alive_key(app: WorkerApp) -> None:
    start(app)
    rt = app.runtime
    wait_for(lambda: rt.redis.exists(alive_key(rt.name)), 5, "the alive key")

    signals.worker_shutting_down.send(sender="test@host", sig="TERM", how="warm", exitcode=0)

    assert rt.shutting_down.is_set()
    wait_for(lambda: not rt.redis.exists(alive_key(rt.name)), 5, "the alive key to go")
