"""The worker's composition root: `celery -A worker.celery_app worker -Q downloads`.

Settings for multi-GB tasks on Redis (see ../shared/reference/reliability.md):
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

from app.queue import QUEUE
from app.settings import Settings, load_settings


def create_celery(settings: Settings) -> Celery:
    """The Celery app for workers."""
    app = Celery("modelpull", broker=settings.celery_broker_url, include=["worker.tasks"])
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
    return app


celery = create_celery(load_settings())
_sweeper_stop = threading.Event()


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    from worker.runtime import get_runtime
    from worker.sweeper import Sweeper, keep_alive

    rt = get_runtime()
    for target, name in ((Sweeper(rt).run, "sweeper"), (keep_alive, "alive")):
        args = (_sweeper_stop,) if name == "sweeper" else (rt, _sweeper_stop)
        threading.Thread(target=target, args=args, name=f"modelpull-{name}", daemon=True).start()


@signals.worker_shutting_down.connect
def _hand_back(**_: Any) -> None:
    # Running downloads see this between chunks and return their files to the queue.
    from worker.runtime import get_runtime

    _sweeper_stop.set()
    get_runtime().shutting_down.set()
