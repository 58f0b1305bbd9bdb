"""The command lines of the service's processes: the web tier under gunicorn and a download
worker under Celery. `modelpull up`, `modelpull web`, `modelpull worker`, the Procfile, the
compose file and the test stack all start their processes from these."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# Each open WebSocket holds a gunicorn thread for its whole life: 128 leave room for about a
# hundred dashboards (bench/scale.py drives 50 live clients) plus the API.
WEB_THREADS = 128
WEB_APP = "app:create_app()"


def gunicorn_argv(
    host: str,
    port: int,
    *,
    threads: int = WEB_THREADS,
    workers: int = 1,
    options: Sequence[str] = (),
) -> list[str]:
    """The web tier: gunicorn's threaded workers (flask-sock needs a thread per socket);
    `options` are more gunicorn flags (timeouts, log files)."""
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{host}:{port}",
        "--worker-class", "gthread",
        "--workers", str(workers),
        "--threads", str(threads),
        # gunicorn 27 shares one control socket per user: several instances would clash.
        "--no-control-socket",
        *options,
        WEB_APP,
    ]  # fmt: skip


def worker_argv(concurrency: int, name: str | None = None) -> list[str]:
    """One download worker on the `downloads` queue."""
    node = name or f"modelpull-{os.getpid()}-{os.urandom(3).hex()}@%h"
    return [
        sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
        "-Q", "downloads",
        "--concurrency", str(concurrency),
        "--loglevel", "INFO",
        "-n", node,
        # No gossip or mingle: workers coordinate through the job store, not each other.
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
