"""The commands that talk to a service over its HTTP API and WebSocket: pull, models, jobs,
status and the job actions, against `modelpull up` or a remote deployment alike.

What a command shows goes to standard output; what went wrong goes to standard error, one
line starting `modelpull:`, and the exit status is 1."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from app.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from app.cli.client import ApiClient

    RemoteCommand = Callable[[argparse.Namespace, ApiClient, Console], int]

ACTIONS = ("cancel", "pause", "resume", "retry")
URL_HELP = "the service (MODELPULL_URL, http://127.0.0.1:8000)"
TOKEN_HELP = "API token (MODELPULL_TOKEN; never put it in a URL)"  # noqa: S105 (help text)
# What Flask says for a path no route takes: a job id the service cannot even look up.
_NO_ROUTE = "The requested URL was not found"


def add_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--url and --token; on the main parser with default None, on each remote command with
    SUPPRESS, so `modelpull --url X jobs` and `modelpull jobs --url X` both work and the
    command's parser never overwrites the main one's value with its own default."""
    parser.add_argument("--url", default=default, help=URL_HELP)
    parser.add_argument("--token", default=default, help=TOKEN_HELP)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """pull, models, jobs, status, cancel, pause, resume, retry."""
    pull = _add(sub, "pull", "download a catalog model or repo files, with progress", pull_model)
    pull.add_argument("target", help="a model id from `modelpull models`, or org/repo")
    pull.add_argument("files", nargs="*", help="files of org/repo to download")
    pull.add_argument("--revision", default="main", help="branch, tag or commit (main)")
    pull.add_argument(
        "--cancel-on-exit", action="store_true", help="cancel the job on Ctrl-C (default: keep it)"
    )
    _add(sub, "models", "the catalog: present or missing, sizes, gated", show_models)
    jobs = _add(sub, "jobs", "the newest jobs", show_jobs)
    jobs.add_argument("--limit", type=int, default=20)
    job_help = "a job id, or its first characters (4 or more)"
    status = _add(sub, "status", "a job and its files", show_job)
    status.add_argument("job", help=job_help)
    for action in ACTIONS:
        _add(sub, action, f"{action} a job", control_job).add_argument("job", help=job_help)


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    command: RemoteCommand,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    add_options(parser, argparse.SUPPRESS)
    parser.set_defaults(func=partial(run_remote, command))
    return parser


def run_remote(command: RemoteCommand, args: argparse.Namespace) -> int:
    """Run `command` with a client for the service; no token, a refusal or no answer is
    exit status 1."""
    from rich.console import Console

    from app.cli.client import NO_TOKEN, ApiClient, ClientError

    settings = load_settings()
    token, token_from = getattr(args, "token", None), "--token"
    if not token:
        token, token_from = settings.modelpull_token, "MODELPULL_TOKEN"
    if not token:
        print(f"modelpull: {NO_TOKEN}", file=sys.stderr)
        return 1
    url = getattr(args, "url", None) or settings.modelpull_url
    client = ApiClient(url, token, token_from=token_from)
    try:
        # No markup: names and errors from the service are printed as they are, brackets
        # and all.
        return command(args, client, Console(markup=False))
    except ClientError as exc:
        print(f"modelpull: {exc}", file=sys.stderr)
        return 1


def job_path(job: str, action: str | None = None) -> str:
    """The API path of a job (named by its id or a prefix), or of an action on it."""
    named = quote(job, safe="")
    if action is None:
        return f"/api/models/download/status/{named}"
    return f"/api/models/download/{named}/{action}"


def job_request(client: ApiClient, method: str, job: str, action: str | None = None) -> Any:
    """A request about one job; a 404 says `no job '<what was typed>'`, whatever route the
    service could not match."""
    from app.cli.client import ClientError

    try:
        return client.request(method, job_path(job, action))
    except ClientError as exc:
        if exc.status == 404 and str(exc).startswith(_NO_ROUTE):
            raise ClientError(f"no job {job!r}", status=404) from None
        raise


def show_models(args: argparse.Namespace, client: ApiClient, console: Console) -> int:
    """`modelpull models`: the catalog, each model present or missing, with its size."""
    from app.cli.tables import models_view

    for part in models_view(console, client.request("GET", "/api/models")):
        console.print(part)
    return 0


def show_jobs(args: argparse.Namespace, client: ApiClient, console: Console) -> int:
    """`modelpull jobs`: the newest jobs."""
    from app.cli.tables import jobs_view

    console.print(
        jobs_view(console, client.request("GET", f"/api/models/download/jobs?limit={args.limit}"))
    )
    return 0


def show_job(args: argparse.Namespace, client: ApiClient, console: Console) -> int:
    """`modelpull status JOB`: a job and its files."""
    from app.cli.tables import job_view

    for part in job_view(console, job_request(client, "GET", args.job)):
        console.print(part)
    return 0


def control_job(args: argparse.Namespace, client: ApiClient, console: Console) -> int:
    """`modelpull cancel|pause|resume|retry JOB`: the action, then the job as it now is."""
    from app.cli.tables import job_view

    for part in job_view(console, job_request(client, "POST", args.job, args.command)):
        console.print(part)
    return 0


def pull_model(args: argparse.Namespace, client: ApiClient, console: Console) -> int:
    """`modelpull pull`: start a job for a catalog model or repo files and follow it."""
    from app.cli.follow import pull

    return pull(args, client, console)
