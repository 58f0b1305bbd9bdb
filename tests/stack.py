"""A real stack for pipeline tests and the bench suites: a private Redis, real Celery worker
processes, the job store (SQLite or PostgreSQL), and the imitation Hub over loopback.

Importable without pytest, so `bench/` drives the same stack the tests do."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from sqlalchemy.orm import Session, sessionmaker

from app import jobs, services
from app.cli.launch import gunicorn_argv, worker_argv
from app.cli.localstack import free_port
from app.db import make_engine, make_session_factory
from app.dispatch import Dispatcher
from app.events import CHANNEL
from app.models import DownloadFile, JobStatus
from app.settings import Settings
from tests.hub import ImitationHub
from tests.support import RedisServer, wait_for

ROOT = Path(__file__).resolve().parents[1]


class EventCollector:
    """Subscribes to the `download` channel and keeps every event; survives Redis restarts."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[dict[str, Any]] = []
        self.reconnects = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "could not subscribe"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self._ready.set()
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=0.2)
                    if msg and msg["type"] == "message":
                        self.events.append(json.loads(msg["data"]))
            except (redis.RedisError, OSError):
                self.reconnects += 1
                time.sleep(0.1)

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["data"].get("jobId") == job_id]

    def until_job_event(self, job_id: str, timeout: float = 10) -> list[dict[str, Any]]:
        """The job's events once the last one is the job's own (it follows the commit)."""

        def ended() -> list[dict[str, Any]] | None:
            events = self.for_job(job_id)
            return events if events and events[-1]["data"].get("scope") == "job" else None

        result: list[dict[str, Any]] = wait_for(ended, timeout, f"job {job_id}'s final event")
        return result


@dataclass
class Stack:
    """Everything a pipeline test drives."""

    tmp: Path
    hub: ImitationHub
    db_url: str
    redis: RedisServer
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.models = self.tmp / "models"
        self.data = self.tmp / "data"
        self.models.mkdir(exist_ok=True)
        self.data.mkdir(exist_ok=True)
        self.logs = self.tmp / "worker-logs"
        self.logs.mkdir(exist_ok=True)
        self.engine = make_engine(self.db_url)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self.settings = Settings(
            models_dir=self.models,
            data_dir=self.data,
            database_url=self.db_url,
            redis_url=self.redis.url,
            hf_endpoint=self.hub.url,
        )
        self.dispatcher = Dispatcher(self.settings)
        self.collector = EventCollector(self.redis.port)

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HF_", "DATABASE_URL", "REDIS_URL", "CELERY_", "DOWNLOAD"))
        }
        env.update(
            DATABASE_URL=self.db_url,
            REDIS_URL=self.redis.url,
            MODELS_DIR=str(self.models),
            DATA_DIR=str(self.data),
            HF_ENDPOINT=self.hub.url,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            DOWNLOAD_CONNECTIONS="4",
            DOWNLOAD_LEASE_SECONDS="3",
            SWEEP_INTERVAL_SECONDS="1",
            WORKER_CONCURRENCY="2",
            NO_PROXY="127.0.0.1,localhost",
        )
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def start_worker(
        self, name: str, *, concurrency: int = 2, **env: str
    ) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (lives with the process)
        argv = worker_argv(concurrency, f"{name}@test")
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env(**env), stdout=log, stderr=log)
        self.workers[name] = proc
        wait_for(
            lambda: (
                b"ready." in (self.logs / f"{name}.log").read_bytes() or proc.poll() is not None
            ),
            60,
            f"worker {name} to start",
        )
        assert proc.poll() is None, self.worker_log(name)
        return proc

    def start_web(
        self,
        threads: int = 16,
        *,
        port: int | None = None,
        options: Sequence[str] = (),
        **env: str,
    ) -> str:
        """gunicorn with threads, as in production; returns its base URL. `port`: a given
        one, so a test can stop the web tier and start it again where a page expects it."""
        port = port or free_port()
        log = open(self.logs / "web.log", "ab")  # noqa: SIM115 (lives with the process)
        argv = gunicorn_argv("127.0.0.1", port, threads=threads, options=options)
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env(**env), stdout=log, stderr=log)
        self.workers["web"] = proc
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, (self.logs / "web.log").read_text()
            try:
                return requests.get(f"{url}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, 30, "the web server to start", every=0.1)
        return url

    def worker_log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def worker_of(self, file_id: str) -> str | None:
        """Which test worker holds the file, by the pid in its row."""
        with self.sessions() as s:
            holder = jobs.get_file(s, file_id).worker
        if holder is None:
            return None
        pid = int(holder.split(":")[-2])  # host:pid:claim
        return next((n for n, p in self.workers.items() if p.pid == pid), None)

    def stop_workers(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def submit(self, *specs: jobs.FileSpec, model_id: str | None = None) -> dict[str, Any]:
        return services.start_files_download(
            self.sessions, self.dispatcher, self.settings, list(specs), model_id=model_id
        )

    def job(self, job_id: str) -> tuple[JobStatus, list[DownloadFile]]:
        with self.sessions() as s:
            job = jobs.get_job(s, job_id)
            return job.status, list(job.files)

    def wait_job(
        self, job_id: str, *statuses: JobStatus, timeout: float = 60
    ) -> list[DownloadFile]:
        def done() -> list[DownloadFile] | None:
            status, files = self.job(job_id)
            return files if status in statuses else None

        return wait_for(done, timeout, f"job {job_id} to become {statuses}", every=0.1)

    def wait_file(
        self,
        file_id: str,
        predicate: Callable[[DownloadFile], bool],
        what: str,
        timeout: float = 60,
    ) -> DownloadFile:
        def check() -> DownloadFile | None:
            with self.sessions() as s:
                row = jobs.get_file(s, file_id)
            return row if predicate(row) else None

        return wait_for(check, timeout, what, every=0.05)

    def close(self) -> None:
        self.stop_workers()
        self.collector.stop()
        self.engine.dispose()


class DestinationWatcher:
    """Polls a destination path: it must never exist with anything but the final bytes."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.violations: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DestinationWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            with contextlib.suppress(FileNotFoundError):
                got = self.path.stat().st_size
                if got != self.size:
                    self.violations.append(got)


def cdn_bytes(hub: ImitationHub, since: float = 0.0) -> int:
    """Body bytes the CDN sent since a time (monotonic clock of the request log)."""
    return sum(r.body_bytes for r in hub.requests if r.host == "cdn" and r.time >= since)
