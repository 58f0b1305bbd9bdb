"""Use cases shared by the web tier and the CLI: start and control downloads.

Each opens its own transaction, commits, and only then talks to the broker and Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app import events, hubcache, jobs
from app.catalog import Catalog, CatalogModel, human_size, model_status
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


def _fill_sizes(session: Session, job: DownloadJob) -> None:
    """Sizes the Hub told before (the catalog's, the repo picker's) on files that have none:
    the job's total is known from the start, so its bar never moves backwards as files
    start. The worker records the Hub's answer at the job's commit over these."""
    unknown = [f for f in job.files if f.size is None]
    known = hubcache.facts(session, {(f.repo, f.revision) for f in unknown})
    for f in unknown:
        fact = known.get((f.repo, f.revision))
        f.size = fact.sizes.get(f.file_name) if fact is not None else None
    session.flush()


def start_model_download(
    factory: sessionmaker[Session],
    dispatcher: Dispatcher,
    settings: Settings,
    model: CatalogModel,
) -> dict[str, Any]:
    """A job for the model's missing files, committed and enqueued; the model's job under way
    instead (`existing: true`) if it has one."""
    with factory.begin() as session:
        jobs.lock_creation(session, f"model:{model.id}")
        under_way = jobs.job_under_way_for_model(session, model.id)
        if under_way is not None:
            return {**events.job_to_dict(under_way), "existing": True}
        job = jobs.create_model_job(
            session, model, method=settings.downloader.value, models_dir=settings.models_dir
        )
        _fill_sizes(session, job)
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
    """A job for repo files, committed and enqueued. An ad-hoc request (no `model_id`) gets
    the job under way that holds all of them instead (`existing: true`), if there is one;
    two models may share a file, and each has its own job."""
    # Checked before anything is looked up: names come from users.
    files = jobs.validate_specs(files)
    repos = {(f.repo, f.revision) for f in files}
    with factory.begin() as session:
        if model_id is None and len(repos) == 1:
            repo, revision = next(iter(repos))
            jobs.lock_creation(session, f"repo:{repo}@{revision}")
            wanted = [(f.file_name, f.dest or f.file_name) for f in files]
            under_way = jobs.job_under_way_with(session, repo, revision, wanted)
            if under_way is not None:
                return {**events.job_to_dict(under_way), "existing": True}
        job: DownloadJob = jobs.create_job(
            session, files, method=settings.downloader.value, model_id=model_id
        )
        _fill_sizes(session, job)
        job_id, ids = job.id, [f.id for f in job.files]
    return _enqueue_new(factory, dispatcher, job_id, ids)


def _enqueue_new(
    factory: sessionmaker[Session], dispatcher: Dispatcher, job_id: str, ids: list[str]
) -> dict[str, Any]:
    # Announce before sending: a worker's first progress event must not overtake "queued".
    _announce(factory, dispatcher, job_id)
    dispatcher.enqueue(factory, ids)
    return {**_snapshot(factory, job_id), "existing": False}


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


def catalog_view(
    factory: sessionmaker[Session], settings: Settings, catalog: Catalog
) -> tuple[list[dict[str, Any]], bool]:
    """The catalog as the dashboard and `modelpull models` show it: each file's state on disk
    and its size (the catalog's, else the Hub's as last learnt), each model's total, what is
    left to download, whether it is gated, and its job under way; and whether some repo of
    the catalog was never asked about yet (read together, so the two always agree)."""
    keys = hubcache.catalog_keys(catalog)
    with factory() as session:
        known = hubcache.facts(session, keys)
        under_way = {m: events.job_to_dict(j) for m, j in jobs.models_under_way(session).items()}
    out = []
    for model in catalog.models:
        status = model_status(settings.models_dir, model)
        facts = [known.get((f.repo, f.revision)) for f in model.files]
        sizes: list[int | None] = []
        for wire, f, fact in zip(status["files"], model.files, facts, strict=True):
            remote = fact.sizes.get(f.file_name) if fact is not None else None
            wire["remoteSize"] = remote
            wire["gated"] = bool(fact and fact.gated)
            if wire["humanSize"] is None and remote is not None:
                wire["humanSize"] = human_size(remote)
            sizes.append(f.size if f.size is not None else remote)
        missing = [n for n, w in zip(sizes, status["files"], strict=True) if not w["present"]]
        errors = sorted({fact.error for fact in facts if fact is not None and fact.error})
        checked = [fact.checked_at for fact in facts if fact is not None]
        job = under_way.get(model.id)
        status.update(
            missing=not status["allPresent"],
            totalBytes=None if None in sizes else sum(s or 0 for s in sizes),
            missingBytes=None if None in missing else sum(s or 0 for s in missing),
            gated=any(w["gated"] for w in status["files"]),
            hubError=errors[0] if errors else None,
            checkedAt=events.iso(min(checked)) if len(checked) == len(facts) else None,
            activeJob=None if job is None else {"jobId": job["jobId"], "status": job["status"]},
        )
        out.append(status)
    return out, len(known) < len(keys)
