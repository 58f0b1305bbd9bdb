"""The commands that talk to a service over its HTTP API and WebSocket: pull, models, jobs,
status and the job actions, against `modelpull up` or a remote deployment alike."""

from __future__ import annotations

import argparse
from functools import partial
from typing import TYPE_CHECKING

from app.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from app.cli.client import ApiClient

    RemoteCommand = Callable[[argparse.Namespace, ApiClient, Console], int]

ACTIONS = ("cancel", "pause", "resume", "retry")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """pull, models, jobs, status, cancel, pause, resume, retry."""
    pull = _add(sub, "pull", "download a catalog model or repo files, with progress", pull_model)
    pull.add_argument("target", help="a model id from `modelpull models`, or org/repo")
    pull.add_argument("files", nargs="*", help="files of org/repo to download")
    pull.add_argument("--revision", default="main", help="branch, tag or commit (main)")
    pull.add_argument(
        "--cancel-on-exit", action="store_true", help="cancel the job on Ctrl-C (default: keep it)"
    )
    _add(sub, "models", "the catalog, present or missing", show_models)
    jobs = _add(sub, "jobs", "the newest jobs", show_jobs)
    jobs.add_argument("--limit", type=int, default=20)
    status = _add(sub, "status", "a job and its files", show_job)
    status.add_argument("job")
    for action in ACTIONS:
        _add(sub, action, f"{action} a job", control_job).add_argument("job")


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    command: RemoteCommand,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument("--url", help="the service (MODELPULL_URL, http://127.0.0.1:8000)")
    parser.add_argument("--token", help="API token (MODELPULL_TOKEN; never put it in a URL)")
    parser.set_defaults(func=partial(run_remote, command))
    return parser


def run_remote(command: RemoteCommand, args: argparse.Namespace) -> int:
    """Run `command` with a client for the service; a refusal or no answer is exit status 1."""
    from rich.console import Console

    from app.cli.client import ApiClient, ClientError

    settings = load_settings()
    console = Console(stderr=False)
    client = ApiClient(args.url or settings.modelpull_url, args.token or settings.modelpull_token)
    try:
        return command(args, client, console)
    except ClientError as exc:
        console.print(f"[red]modelpull:[/] {exc}")
        return 1


def show_models(args: argparse.Namespace, client: ApiClient, console: Console) -> int:
    """`modelpull models`: the catalog, each model present or missing."""
    from app.cli.tables import models_table

    console.print(models_table(client))
    return 0


def show_jobs(args: argparse.Namespace, client: ApiClient, console: Console) -> int:
    """`modelpull jobs`: the newest jobs."""
    from app.cli.tables import jobs_table

    console.print(jobs_table(client, args.limit))
    return 0


def show_job(args: argparse.Namespace, client: ApiClient, console: Console) -> int:
    """`modelpull status JOB`: a job and its files."""
    from app.cli.tables import job_table

    console.print(job_table(client.request("GET", f"/api/models/download/status/{args.job}")))
    return 0


def control_job(args: argparse.Namespace, client: ApiClient, console: Console) -> int:
    """`modelpull cancel|pause|resume|retry JOB`: the action, then the job as it now is."""
    from app.cli.tables import job_table

    job = client.request("POST", f"/api/models/download/{args.job}/{args.command}")
    console.print(job_table(job))
    return 0


def pull_model(args: argparse.Namespace, client: ApiClient, console: Console) -> int:
    """`modelpull pull`: start a job for a catalog model or repo files and follow it."""
    from app.cli.follow import Follower

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
