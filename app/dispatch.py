"""Sending work to the workers: task messages by name, control flags, state events.

The web tier never imports `worker`: it sends `worker.tasks.download_file` by name, and only
after the rows it names are committed. Every call here is best-effort about the broker:
a message that cannot be sent leaves `published_at` NULL, and the workers' sweeper sends
it once the broker is back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import redis
from sqlalchemy.orm import Session, sessionmaker

from app import jobs
from app.events import publish
from app.models import utcnow

if TYPE_CHECKING:
    from celery import Celery

    from app.settings import Settings

log = logging.getLogger(__name__)

TASK_NAME = "worker.tasks.download_file"
QUEUE = "downloads"
CONTROL_TTL_S = 7 * 24 * 3600


def control_key(file_id: str) -> str:
    """The Redis key a running download polls for pause / cancel."""
    return f"modelpull:control:{file_id}"


def redis_client(url: str) -> redis.Redis:
    """A Redis client that fails fast instead of hanging a request or a download."""
    return redis.Redis.from_url(
        url, socket_timeout=3, socket_connect_timeout=3, health_check_interval=15
    )


def producer(broker_url: str) -> Celery:
    """A Celery app that only sends messages (no tasks registered here)."""
    # Celery is slow to import; only a process that sends a message pays for it.
    from celery import Celery

    app = Celery("modelpull-producer", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_timeout=3,
        broker_connection_retry_on_startup=False,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
    )
    return app


class Dispatcher:
    """Publishes task messages, control flags and events for the job store's changes."""

    def __init__(
        self,
        settings: Settings,
        *,
        celery: Celery | None = None,
        redis: redis.Redis | None = None,
    ) -> None:
        self.settings = settings
        self._celery = celery
        self._redis = redis

    @cached_property
    def celery(self) -> Celery:
        """The producer (created on first use)."""
        return self._celery or producer(self.settings.celery_broker_url)

    @cached_property
    def redis(self) -> redis.Redis:
        """The Redis client for flags and events (created on first use)."""
        return self._redis or redis_client(self.settings.redis_url)

    def enqueue(
        self, factory: sessionmaker[Session], file_ids: Iterable[str], *, countdown: float = 0
    ) -> list[str]:
        """Send one task per file, then record which reached the broker."""
        sent: list[str] = []
        for file_id in file_ids:
            try:
                self.celery.send_task(
                    TASK_NAME,
                    args=[file_id],
                    queue=QUEUE,
                    countdown=countdown or None,
                )
            except Exception as exc:  # any broker failure: the sweeper sends it later
                log.warning("broker unavailable, %s left for the sweeper: %s", file_id, exc)
                break
            sent.append(file_id)
        if sent:
            # A delayed message counts as sent when it is due, so the sweeper does not send
            # it again early and undo the backoff.
            due = utcnow() + timedelta(seconds=countdown)
            with factory.begin() as session:
                jobs.mark_published(session, sent, now=due)
        return sent

    def set_control(self, file_ids: Iterable[str], action: str) -> None:
        """Raise a pause/cancel flag that running downloads see within a fraction of a second."""
        try:
            with self.redis.pipeline() as pipe:
                for file_id in file_ids:
                    pipe.set(control_key(file_id), action, ex=CONTROL_TTL_S)
                pipe.execute()
        except Exception as exc:  # the DB state is the truth; workers also poll it
            log.warning("could not raise control flags: %s", exc)

    def clear_control(self, file_ids: Iterable[str]) -> None:
        """Drop flags of files that are queued again."""
        ids = [control_key(f) for f in file_ids]
        if not ids:
            return
        try:
            self.redis.delete(*ids)
        except Exception as exc:
            log.warning("could not clear control flags: %s", exc)

    def publish(self, events: Iterable[dict[str, Any]]) -> None:
        """Best-effort publication on the `download` channel."""
        if not self.settings.download_websocket_progress:
            return
        try:
            publish(self.redis, events)
        except Exception as exc:
            log.debug("event not published: %s", exc)
