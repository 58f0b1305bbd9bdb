"""Celery tasks: thin, idempotent, by id. The work is in `worker.pipeline`."""

from __future__ import annotations

from typing import Any

from worker.celery_app import celery
from worker.pipeline import process_file
from worker.runtime import get_runtime


@celery.task(name="worker.tasks.download_file", bind=True, ignore_result=True)
def download_file(self: Any, file_id: str) -> str:
    """Download one file of a job (claim, engine, outcome). No token travels in arguments."""
    return process_file(get_runtime(), file_id, task_id=self.request.id)
