"""Celery tasks: thin, idempotent, by id. The work is in `worker.pipeline`."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.dispatch import TASK_NAME
from worker.pipeline import process_file


@shared_task(name=TASK_NAME, bind=True, ignore_result=True)
def download_file(self: Any, file_id: str) -> str:
    """Download one file of a job (claim, engine, outcome). No token travels in arguments."""
    return process_file(self.app.runtime, file_id, task_id=self.request.id)
