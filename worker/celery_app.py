"""The worker's composition root: `celery -A worker.celery_app worker -Q downloads`.

The settings are read once, here, when the module builds the Celery app; the per-process
runtime (job store, Redis, engine, download log) is built when the worker process starts
(`worker_init`) and reached by the tasks through their app (`self.app.runtime`).

Settings for multi-GB tasks on Celery over Redis, whose defaults fail such tasks:
- late acks and reject-on-worker-lost: a task lost with its worker is redelivered;
- prefetch of one, JSON only;
- the thread pool: downloads are I/O bound and run their own connection threads, and a
  stopping worker can tell its running downloads to hand their files back at once;
- a long visibility timeout (6 h): Redis re-delivers a message whose worker vanished only
  after it, so recovery does not wait for it: the job store's lease (heartbeat every second,
  expiry DOWNLOAD_LEASE_SECONDS) and the sweeper requeue the file. A duplicate delivery, from
  this or from a broker reconnect, is harmless: the claim lets one run win;
- running tasks are not cancelled on a broker connection loss: the download goes on and its
  claim keeps any redelivered copy out.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery, signals
from kombu import Queue

from app.dispatch import QUEUE
from app.settings import Settings, load_settings
from worker.runtime import Runtime, build_runtime
from worker.sweeper import Sweeper, keep_alive


class WorkerApp(Celery):
    """The Celery app of a download worker: its settings and, once started, its runtime."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("modelpull", broker=settings.celery_broker_url, include=["worker.tasks"])
        self.settings = settings
        self._runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        """What the tasks share; built when the worker process starts."""
        if self._runtime is None:
            raise RuntimeError("the worker has not started: its runtime is not built yet")
        return self._runtime

    def start_runtime(self) -> Runtime:
        """Build the runtime (once) and start the sweeper and the alive key beside it."""
        if self._runtime is None:
            rt = build_runtime(self.settings, self)
            self._runtime = rt
            for name, target, args in (
                ("sweeper", Sweeper(rt).run, (rt.shutting_down,)),
                ("alive", keep_alive, (rt, rt.shutting_down)),
            ):
                thread = threading.Thread(
                    target=target, args=args, name=f"modelpull-{name}", daemon=True
                )
                thread.start()
        return self._runtime

    def hand_back(self) -> None:
        """The worker is stopping: running downloads return their files to the queue (they
        see this between chunks) and the sweeper stops."""
        if self._runtime is not None:
            self._runtime.shutting_down.set()


def create_celery(settings: Settings) -> WorkerApp:
    """The Celery app for workers, with the signal handlers that start and stop it."""
    app = WorkerApp(settings)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=QUEUE,
        task_queues=(Queue(QUEUE),),
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        broker_transport_options={"visibility_timeout": 6 * 3600},
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )

    # The worker's own signals (one worker per process): weak=False keeps these closures.
    def on_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            app.start_runtime()

    def on_shutting_down(**_: Any) -> None:
        app.hand_back()

    signals.worker_init.connect(on_init, weak=False)
    signals.worker_shutting_down.connect(on_shutting_down, weak=False)
    return app


celery = create_celery(load_settings())
