"""The wire events of the `download` channel (the README's "Wire events"): camelCase JSON.

Every error and stderr text an event or the API's job shows is scrubbed here (app.scrub),
so a row written before a secret was known, or by an older worker, never shows one."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import object_session

from app.db import db_now
from app.models import ACTIVE, DownloadFile, DownloadJob, FileStatus, JobStatus, utcnow
from app.scrub import scrub

CHANNEL = "download"
# A worker that holds a file heartbeats every second: silent this long, it is gone.
SILENT_WORKER_S = 5.0

# A file's status as the event type that announces it.
FILE_EVENT_TYPES: dict[FileStatus, str] = {
    FileStatus.QUEUED: "queued",
    FileStatus.DOWNLOADING: "progress",
    FileStatus.VERIFYING: "progress",
    FileStatus.PAUSED: "paused",
    FileStatus.COMPLETED: "complete",
    FileStatus.FAILED: "failed",
    FileStatus.CANCELLED: "cancelled",
}
JOB_EVENT_TYPES: dict[JobStatus, str] = {
    JobStatus.QUEUED: "queued",
    JobStatus.DOWNLOADING: "progress",
    JobStatus.PAUSED: "paused",
    JobStatus.COMPLETED: "complete",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


def percent(done: int, total: int | None) -> float:
    """0 to 100 with one decimal; 0 while the total is unknown."""
    if not total:
        return 0.0
    return round(min(100.0, 100.0 * done / total), 1)


def sent_at() -> int:
    """When an event was made, in Unix milliseconds: lets a client see how old it is."""
    return time.time_ns() // 1_000_000


def file_event(
    job: DownloadJob,
    file: DownloadFile,
    *,
    status: FileStatus,
    bytes_done: int,
    total: int | None,
    overall_done: int,
    overall_total: int | None,
    speed: float = 0.0,
    eta: float | None = None,
    error: str | None = None,
    stderr: str | None = None,
    seq: int = 0,
    method: str | None = None,
    connections: int | None = None,
) -> dict[str, Any]:
    """A file's event: progress or a change of state (`method`: the engine, if known;
    `connections`: how many it runs for the file now, while it downloads)."""
    data: dict[str, Any] = {
        "jobId": job.id,
        "fileId": file.id,
        "modelId": job.model_id,
        "repo": file.repo,
        "method": method or job.method,
        "fileIndex": file.file_index,
        "totalFiles": len(job.files),
        "fileName": file.file_name,
        "fileProgress": percent(bytes_done, total),
        "overallProgress": percent(overall_done, overall_total),
        "bytesDownloaded": bytes_done,
        "totalBytes": total,
        "speed": round(speed, 1),
        "eta": None if eta is None else round(eta, 1),
        "status": status.value,
        "seq": seq,
        "sentAt": sent_at(),
    }
    if connections is not None and status is FileStatus.DOWNLOADING:
        data["connections"] = connections
    if status is FileStatus.FAILED:
        data["error"] = scrub(error)
        data["stderr"] = scrub(stderr)
    return {"channel": CHANNEL, "type": FILE_EVENT_TYPES[status], "data": data}


def row_event(job: DownloadJob, file: DownloadFile) -> dict[str, Any]:
    """A file's event as its row stands (status, bytes, error): what the job store announces
    after a user's action or a sweep, when no transfer is measuring speed."""
    return file_event(
        job,
        file,
        status=file.status,
        bytes_done=file.bytes_done,
        total=file.size,
        overall_done=job.bytes_done,
        overall_total=job.total_bytes,
        error=file.error,
        stderr=file.stderr,
    )


def publish(redis: Any, events: Iterable[dict[str, Any]]) -> None:
    """Send events on the `download` channel in one round trip; raises what Redis raises
    (each caller decides how hard to try: pub/sub only notifies, the DB is the truth)."""
    with redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.publish(CHANNEL, json.dumps(event))
        pipe.execute()


def job_event(job: DownloadJob, *, seq: int = 0) -> dict[str, Any]:
    """A job's event, sent when its status settles (`scope` = "job")."""
    total = job.total_bytes
    data: dict[str, Any] = {
        "scope": "job",
        "jobId": job.id,
        "modelId": job.model_id,
        "method": job.method,
        "totalFiles": len(job.files),
        "overallProgress": percent(job.bytes_done, total),
        "bytesDownloaded": job.bytes_done,
        "totalBytes": total,
        "status": job.status.value,
        "seq": seq,
        "sentAt": sent_at(),
    }
    if job.status is JobStatus.FAILED:
        data["error"] = scrub(job.error)
    return {"channel": CHANNEL, "type": JOB_EVENT_TYPES[job.status], "data": data}


def iso(value: datetime | None) -> str | None:
    """A UTC time as the wire shows it (ISO 8601 with Z)."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _waiting_for_worker(file: DownloadFile, now: datetime) -> bool:
    # A worker that holds a file says so every second; one silent for longer has died or
    # lost the network, and the file waits for its lease to run out and another worker.
    if file.status not in ACTIVE:
        return False
    beat = file.heartbeat_at or file.started_at
    return beat is None or (now - beat).total_seconds() > SILENT_WORKER_S


def _clock_of(job: DownloadJob) -> datetime:
    # The database's clock only when a file is held: a page of finished jobs asks nothing.
    session = object_session(job)
    if session is None or not any(f.status in ACTIVE for f in job.files):
        return utcnow()
    return db_now(session)


def job_to_dict(job: DownloadJob, *, now: datetime | None = None) -> dict[str, Any]:
    """A job with its files, as the API and the WebSocket snapshot show it (`now`: the
    database's clock, which heartbeats are written with; else this process's)."""
    now = now or _clock_of(job)
    return {
        "jobId": job.id,
        "modelId": job.model_id,
        "status": job.status.value,
        "method": job.method,
        "createdAt": iso(job.created_at),
        "startedAt": iso(job.started_at),
        "finishedAt": iso(job.finished_at),
        "error": scrub(job.error),
        "totalBytes": job.total_bytes,
        "bytesDownloaded": job.bytes_done,
        "overallProgress": percent(job.bytes_done, job.total_bytes),
        "files": [
            {
                "fileId": f.id,
                "fileIndex": f.file_index,
                "repo": f.repo,
                "revision": f.revision,
                "fileName": f.file_name,
                "dest": f.dest,
                "size": f.size,
                "sha256": f.sha256,
                "status": f.status.value,
                "bytesDownloaded": f.bytes_done,
                "fileProgress": percent(f.bytes_done, f.size),
                "attempts": f.attempts,
                "error": scrub(f.error),
                "stderr": scrub(f.stderr),
                "heartbeatAt": iso(f.heartbeat_at),
                "waitingForWorker": _waiting_for_worker(f, now),
            }
            for f in job.files
        ],
    }
