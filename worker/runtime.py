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
from app.queue import Dispatcher, redis_client
from app.settings import Downloader, Settings
from worker.downloadlog import setup_download_log
from worker.engine.base import Engine

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
        from worker.engine.hf_hub import HfHubEngine

        return HfHubEngine()
    from worker.engine.native import NativeEngine

    return NativeEngine(settings.download_connections)


def build_runtime(settings: Settings, celery: Celery | None = None) -> Runtime:
    """Build the runtime of this worker process."""
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


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, built on first use (after the worker has started)."""
    global _runtime
    with _lock:
        if _runtime is None:
            from app.settings import load_settings
            from worker.celery_app import celery

            _runtime = build_runtime(load_settings(), celery)
        return _runtime
