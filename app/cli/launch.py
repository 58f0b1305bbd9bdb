"""The process launchers: `modelpull up`, `modelpull web` and `modelpull worker`, and the one
place that builds the command lines of the service's processes (the web tier under gunicorn,
a download worker under Celery). `up`, `web`, `worker`, the Procfile and the compose file
(through `modelpull web` / `modelpull worker`) and the test stack all start them from here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from app.settings import load_settings

# Each open WebSocket holds a gunicorn thread for its whole life: 128 leave room for about a
# hundred dashboards (bench/scale.py drives 50 live clients) plus the API.
WEB_THREADS = 128
WEB_APP = "app:create_app()"
# `modelpull up` gives each child 15 s to stop before SIGKILL: gunicorn's graceful stop
# (30 s by default) must end within that.
UP_WEB_OPTIONS = ("--graceful-timeout", "10")


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


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """up, web, worker."""
    up = sub.add_parser("up", help="run the whole service on this machine (Redis, SQLite, web)")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    up.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    up.add_argument("--models-dir", help="where model files go (MODELS_DIR, ./models)")
    up.add_argument("--data-dir", help="database, logs and tokens (DATA_DIR, ./data)")
    up.add_argument("--concurrency", type=int, help="parallel downloads (WORKER_CONCURRENCY, 2)")
    up.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the web tier's, the worker's and Redis's logs here (default: DATA_DIR/logs)",
    )
    up.set_defaults(func=run_up)

    web = sub.add_parser("web", help="run the web tier under gunicorn")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument(
        "--threads", type=int, default=WEB_THREADS, help="threads; one per open WebSocket"
    )
    web.set_defaults(func=run_web)

    worker = sub.add_parser("worker", help="run a download worker (Celery, queue 'downloads')")
    worker.add_argument(
        "--concurrency", type=int, help="parallel downloads (WORKER_CONCURRENCY, 2)"
    )
    worker.add_argument("--name", help="worker node name (default: a unique one on this host)")
    worker.set_defaults(func=run_worker)


def run_up(args: argparse.Namespace) -> int:
    """`modelpull up`: Redis, the job store, a worker and the web tier under one supervisor."""
    from app.catalog import load_catalog
    from app.cli.localstack import Stack

    env = dict(os.environ)
    if args.models_dir:
        env["MODELS_DIR"] = str(_home_path(args.models_dir))
    if args.data_dir:
        env["DATA_DIR"] = str(_home_path(args.data_dir))
    if args.concurrency:
        env["WORKER_CONCURRENCY"] = str(args.concurrency)
    settings = load_settings(env)
    # The web tier reads the catalog as it starts: a bad one stops `up` here instead, as a
    # configuration error with its own message, before anything is started.
    load_catalog(settings.models_catalog)
    stack = Stack(
        settings=settings,
        host=args.host,
        port=args.port,
        web_argv=gunicorn_argv(args.host, args.port, options=UP_WEB_OPTIONS),
        worker_argv=worker_argv(settings.worker_concurrency),
        verbose=args.verbose,
    )
    return stack.run()


def run_web(args: argparse.Namespace) -> int:
    """`modelpull web`: this process becomes the gunicorn web tier."""
    load_settings()  # fail here, with a clear message, rather than inside gunicorn
    argv = gunicorn_argv(args.host, args.port, threads=args.threads)
    os.execv(sys.executable, argv)  # noqa: S606 (replace this process with gunicorn)


def run_worker(args: argparse.Namespace) -> int:
    """`modelpull worker`: this process becomes a Celery download worker."""
    settings = load_settings()
    argv = worker_argv(args.concurrency or settings.worker_concurrency, args.name)
    os.execv(sys.executable, argv)  # noqa: S606 (replace this process with celery)


def _home_path(p: str) -> Path:
    """Expand ~ and make absolute, for CLI flags."""
    return Path(p).expanduser().resolve()
