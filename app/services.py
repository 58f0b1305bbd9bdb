"""Use cases shared by the web tier and the CLI: start and control downloads.

Each opens its own transaction, commits, and only then talks to the broker and Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app import events, jobs
from app.catalog import CatalogModel
from app.dispatch import Dispatcher
from app.models import DownloadJob, FileStatus
from app.settings import Settings


def _announce(factory: sessionmaker[Session], dispatcher: Dispatcher, job_id: str) -> None:
    with factory() as session:
        job = jobs.get_job(session, job_id)
        # A downloading file's own worker announces it, with its speed.
        batch = [
            events.row_event(job, f) for f in job.files if f.status is not FileStatus.DOWNLOADING
        ]
        batch.append(events.job_event(job))
    dispatcher.publish(batch)


def _snapshot(factory: sessionmaker[Session], job_id: str) -> dict[str, Any]:
    with factory() as session:
        return events.job_to_dict(jobs.get_job(session, job_id))


def start_model_download(
    factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    settings: Settings,
    model: CatalogModel,
) -> dict[str, Any]:
    """A job for the model's missing files, committed and enqueued."""
    with factory.begin() as session:
        job = jobs.create_model_job(
            session, model, method=settings.downloader.value, models_dir=settings.models_dir
        )
        job_id, ids = job.id, [f.id for f in job.files]
    return _enqueue_new(factory, dispatcher, job_id, ids)


def start_files_download(
    factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    settings: Settings,
    files: Sequence[jobs.FileSpec],
    *,
    model_id: str | None = None,
) -> dict[str, Any]:
    """An ad-hoc job for repo files, committed and enqueued."""
    with factory.begin() as session:
        job: DownloadJob = jobs.create_job(
            session, files, method=settings.downloader.value, model_id=model_id
        )
        job_id, ids = job.id, [f.id for f in job.files]
    return _enqueue_new(factory, dispatcher, job_id, ids)


def _enqueue_new(
    factory: sessionmaker[Session], dispatcher: Dispatcher, job_id: str, ids: list[str]
) -> dict[str, Any]:
    # Announce before sending: a worker's first progress event must not overtake "queued".
    _announce(factory, dispatcher, job_id)
    dispatcher.enqueue(factory, ids)
    return _snapshot(factory, job_id)


ACTIONS = {
    "pause": jobs.pause_job,
    "resume": jobs.resume_job,
    "cancel": jobs.cancel_job,
    "retry": jobs.retry_job,
}


def control_job(
    factory: sessionmaker[Session], dispatcher: Dispatcher, job_id: str, action: str
) -> dict[str, Any]:
    """Pause, resume, cancel or retry a job; raises NotFoundError / IllegalTransitionError."""
    with factory.begin() as session:
        result = ACTIONS[action](session, job_id)
        cancelled_idle: list[str] = []
        if action == "cancel":
            cancelled_idle = [
                f.id
                for f in jobs.get_job(session, job_id).files
                if f.status is FileStatus.CANCELLED and f.id not in result.active_file_ids
            ]
    _announce(factory, dispatcher, job_id)
    if action in ("pause", "cancel"):
        dispatcher.set_control(result.active_file_ids, action)
    if result.enqueue_file_ids:
        dispatcher.clear_control(result.enqueue_file_ids)
        dispatcher.enqueue(factory, result.enqueue_file_ids)
    if cancelled_idle:
        # Nobody holds these files: a task message lets a worker delete their partials.
        dispatcher.enqueue(factory, cancelled_idle)
    return _snapshot(factory, job_id)
