"""The `modelpull` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from app.cli.launch import gunicorn_argv, worker_argv
from app.errors import ConfigError

if TYPE_CHECKING:
    from app.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelpull",
        description="Distributed, resumable, verified downloads of Hugging Face Hub models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def remote(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--url", help="the service (MODELPULL_URL, http://127.0.0.1:8000)")
        p.add_argument("--token", help="API token (MODELPULL_TOKEN; never put it in a URL)")
        return p

    pull = remote(
        sub.add_parser("pull", help="download a catalog model or repo files, with progress")
    )
    pull.add_argument("target", help="a model id from `modelpull models`, or org/repo")
    pull.add_argument("files", nargs="*", help="files of org/repo to download")
    pull.add_argument("--revision", default="main", help="branch, tag or commit (main)")
    pull.add_argument(
        "--cancel-on-exit", action="store_true", help="cancel the job on Ctrl-C (default: keep it)"
    )
    remote(sub.add_parser("models", help="the catalog, present or missing"))
    jobs_cmd = remote(sub.add_parser("jobs", help="the newest jobs"))
    jobs_cmd.add_argument("--limit", type=int, default=20)
    status = remote(sub.add_parser("status", help="a job and its files"))
    status.add_argument("job")
    for action in ("cancel", "pause", "resume", "retry"):
        remote(sub.add_parser(action, help=f"{action} a job")).add_argument("job")

    up = sub.add_parser("up", help="run the whole service on this machine (Redis, SQLite, web)")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    up.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    up.add_argument("--models-dir", help="where model files go (MODELS_DIR, ./models)")
    up.add_argument("--data-dir", help="database, logs and tokens (DATA_DIR, ./data)")
    up.add_argument("--concurrency", type=int, help="parallel downloads (WORKER_CONCURRENCY, 2)")

    web = sub.add_parser("web", help="run the web tier under gunicorn")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=8000)
    web.add_argument("--threads", type=int, default=128, help="threads; one per open WebSocket")

    worker = sub.add_parser("worker", help="run a download worker (Celery, queue 'downloads')")
    worker.add_argument(
        "--concurrency", type=int, help="parallel downloads (WORKER_CONCURRENCY, 2)"
    )
    worker.add_argument("--name", help="worker node name (default: a unique one on this host)")

    token = sub.add_parser("token", help="API tokens (stored hashed; shown once)")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_sub.add_parser("create", help="create a token and print it once")
    create.add_argument("name", help="what the token is for, e.g. 'laptop' or 'ci'")
    token_sub.add_parser("list", help="list tokens (never their values)")
    revoke = token_sub.add_parser("revoke", help="revoke a token by id or prefix")
    revoke.add_argument("token_id")

    db = sub.add_parser("db", help="job store maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_sub.add_parser("upgrade", help="apply the schema migrations")
    upgrade.add_argument("--revision", default="head")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a modelpull command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"modelpull: configuration error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from app.settings import load_settings

    if args.command == "up":
        from app.cli.localstack import home_path, run_stack

        env = dict(os.environ)
        if args.models_dir:
            env["MODELS_DIR"] = str(home_path(args.models_dir))
        if args.data_dir:
            env["DATA_DIR"] = str(home_path(args.data_dir))
        if args.concurrency:
            env["WORKER_CONCURRENCY"] = str(args.concurrency)
        return run_stack(load_settings(env), host=args.host, port=args.port)
    if args.command in ("pull", "models", "jobs", "status", "cancel", "pause", "resume", "retry"):
        return _remote(args, load_settings())
    if args.command == "web":
        load_settings()  # fail here, with a clear message, rather than inside gunicorn
        argv = gunicorn_argv(args.host, args.port, threads=args.threads)
        os.execv(sys.executable, argv)  # noqa: S606 (replace this process with gunicorn)
    if args.command == "worker":
        settings = load_settings()
        argv = worker_argv(args.concurrency or settings.worker_concurrency, args.name)
        os.execv(sys.executable, argv)  # noqa: S606 (replace this process with celery)
    if args.command == "token":
        return _token(args, load_settings())
    if args.command == "db" and args.db_command == "upgrade":
        from app import migrate

        settings = load_settings()
        migrate.upgrade(settings.database_url, args.revision)
        print(f"database is at revision {args.revision}: {_safe_url(settings.database_url)}")
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def _remote(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from app.cli.client import ApiClient, ClientError, Follower, job_table, jobs_table, models_table

    console = Console(stderr=False)
    client = ApiClient(args.url or settings.modelpull_url, args.token or settings.modelpull_token)
    try:
        if args.command == "models":
            console.print(models_table(client))
            return 0
        if args.command == "jobs":
            console.print(jobs_table(client, args.limit))
            return 0
        if args.command == "status":
            console.print(
                job_table(client.request("GET", f"/api/models/download/status/{args.job}"))
            )
            return 0
        if args.command in ("cancel", "pause", "resume", "retry"):
            job = client.request("POST", f"/api/models/download/{args.job}/{args.command}")
            console.print(job_table(job))
            return 0
        if args.files:
            body = {"repo": args.target, "files": args.files, "revision": args.revision}
            job = client.request("POST", "/api/downloads", json=body)
        else:
            job = client.request("POST", f"/api/models/{args.target}/download")
            if job.get("allPresent"):
                console.print(f"[green]{args.target} is already present[/]")
                return 0
        console.print(f"job {job['jobId']}: {len(job['files'])} file(s)")
        follower = Follower(client, job, console)
        try:
            status = follower.run()
        except KeyboardInterrupt:
            if args.cancel_on_exit:
                client.request("POST", f"/api/models/download/{job['jobId']}/cancel")
                console.print(f"cancelled job {job['jobId']}")
            else:
                console.print(
                    f"stopped following; the download goes on: modelpull status {job['jobId']}"
                )
            return 130
        follower.report()
        return 0 if status == "completed" else 1
    except ClientError as exc:
        console.print(f"[red]modelpull:[/] {exc}")
        return 1


def _token(args: argparse.Namespace, settings: Settings) -> int:
    from app import tokens
    from app.db import make_engine, make_session_factory
    from app.errors import NotFoundError, ValidationError

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            action = args.token_command
            if action == "create":
                row, plain = tokens.create_token(session, args.name)
                print(plain)
                print(f"created token {row.id} ({row.name}); it is shown only now", file=sys.stderr)
            elif action == "list":
                for row in tokens.list_tokens(session):
                    state = "revoked" if row.revoked_at else "active"
                    used = row.last_used_at.isoformat() if row.last_used_at else "never"
                    print(f"{row.id}  {row.prefix}…  {state:7}  used {used}  {row.name}")
            else:
                row = tokens.revoke_token(session, args.token_id)
                print(f"revoked {row.id} ({row.name})")
    except (NotFoundError, ValidationError) as exc:
        print(f"modelpull: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
