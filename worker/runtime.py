"""What a worker process builds once and every task shares: settings, the job store,
Redis, the dispatcher, the engine, the download log."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_session_factory
from app.dispatch import Dispatcher, redis_client
from app.scrub import register_secrets
from app.settings import Downloader, Settings
from worker.downloadlog import setup_download_log
from worker.engine.base import Engine
from worker.engine.hf_hub import HfHubEngine
from worker.engine.native import NativeEngine

if TYPE_CHECKING:
    from celery import Celery


@dataclass
class Runtime:
    """Per-process collaborators of the tasks."""

    settings: Settings
    sessions: sessionmaker[Session]
    redis: Any
    dispatcher: Dispatcher
    engine: Engine
    log: logging.Logger
    name: str
    # Set when the worker is asked to stop: running downloads hand their files back.
    shutting_down: threading.Event = field(default_factory=threading.Event)


def make_engine_for(settings: Settings) -> Engine:
    """The engine DOWNLOADER selects."""
    if settings.downloader is Downloader.HF_HUB:
        return HfHubEngine()
    return NativeEngine(
        settings.download_connections,
        max_connections=settings.download_max_connections,
        host_connections=settings.download_host_connections,
        trickle_bytes=settings.download_trickle_bytes,
        trickle_window=settings.download_trickle_seconds,
    )


def build_runtime(settings: Settings, celery: Celery | None = None) -> Runtime:
    """Build the runtime of this worker process (`celery`: the worker's app, which then also
    sends its requeued messages; without one a producer is made on first use)."""
    # Before anything can fail: every error, event and log line from here on is scrubbed.
    register_secrets(settings.hf_token, settings.api_token)
    redis = redis_client(settings.redis_url)
    return Runtime(
        settings=settings,
        sessions=make_session_factory(make_engine(settings.database_url)),
        redis=redis,
        dispatcher=Dispatcher(settings, celery=celery, redis=redis),
        engine=make_engine_for(settings),
        log=setup_download_log(settings),
        name=f"{socket.gethostname()}:{os.getpid()}",
    )
