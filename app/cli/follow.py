"""`modelpull pull`: start a job (or find the one already under way), then follow it to its
end over the WebSocket with a bar per file and one for the whole job, falling back to
polling the API. Sizes and speeds are in binary units (MiB, MiB/s), like every table."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

import simple_websocket
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

from app.cli.client import ApiClient, ClientError
from app.cli.tables import file_error, human
from app.models import JOB_TERMINAL

# The API sends statuses as plain strings.
ENDED = frozenset(status.value for status in JOB_TERMINAL)
# How long the service may not answer before `pull` stops following: long enough for the
# web tier to restart, short enough that a stopped service is reported promptly.
LOST_AFTER_S = 5.0
# A file in these states has no speed to show.
STILL = frozenset({"queued", "paused", "failed", "cancelled"})
# Narrower than this, the bars leave out the speed and the state.
WIDE = 80


class SizeColumn(ProgressColumn):
    """'1.5 MiB / 12.0 MiB': rich's DownloadColumn writes '1.5/12.0 MiB' and picks its unit
    from the total, so a small file read '0.0/0.5 MiB'."""

    def render(self, task: Task) -> Text:
        total = None if task.total is None else int(task.total)
        return Text(f"{human(int(task.completed))} / {human(total)}", style="progress.download")


class SpeedColumn(ProgressColumn):
    """'3.2 MiB/s': rich's TransferSpeedColumn writes decimal MB/s."""

    def render(self, task: Task) -> Text:
        if task.fields.get("state") in STILL:
            return Text("")
        speed = task.finished_speed or task.speed
        if speed is None:  # too soon to tell, or a file done in one step
            return Text("" if task.finished else "?", style="progress.data.speed")
        shown = f"{human(int(speed))}/s"
        return Text(shown, style="progress.data.speed")


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


class Follower:
    """Follows one job to its end with a progress bar per file (and the job's, for more
    than one file)."""

    def __init__(self, client: ApiClient, job: dict[str, Any], console: Console) -> None:
        self.client = client
        self.job = job
        self.console = console
        # A bar per file, named by the file's name; on a narrow terminal the speed and
        # the state go, so the name and the bar keep room.
        columns: list[ProgressColumn] = [
            TextColumn(
                "{task.description}",
                markup=False,  # a file may be called "x[v2].gguf"
                table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"),
            ),
            BarColumn(bar_width=None, table_column=Column(ratio=1)),
            SizeColumn(),
        ]
        if console.width >= WIDE:
            state = TextColumn("{task.fields[state]}", markup=False)
            columns += [SpeedColumn(), TimeRemainingColumn(), state]
        else:
            columns.append(TimeRemainingColumn())
        self.progress = Progress(*columns, console=console, expand=True)
        self.tasks: dict[str, TaskID] = {}
        self.overall: TaskID | None = None

    def _update(self, file_id: str, done: int, size: int | None, state: str) -> None:
        task = self.tasks.get(file_id)
        if task is None:
            return
        self.progress.update(task, completed=done, total=size, state=state)
        if self.overall is not None:
            by_id = {t.id: t for t in self.progress.tasks}
            done_all = sum(by_id[t].completed for t in self.tasks.values())
            self.progress.update(self.overall, completed=done_all)

    def _apply_job(self, job: dict[str, Any]) -> None:
        self.job = job
        if self.overall is not None:
            self.progress.update(self.overall, total=job["totalBytes"], state=job["status"])
        for f in job["files"]:
            size = f["size"] if f["status"] != "completed" else f["bytesDownloaded"]
            self._update(f["fileId"], f["bytesDownloaded"], size, f["status"])

    def run(self) -> str:
        """Show progress until the job ends; returns its final status. A service that stops
        answering for LOST_AFTER_S raises ClientError (unreachable)."""
        with self.progress:
            files = self.job["files"]
            if len(files) > 1:
                self.overall = self.progress.add_task(
                    f"all {_files(len(files))}", total=self.job["totalBytes"], state=""
                )
            for f in files:
                name = f["dest"].rsplit("/", 1)[-1]
                self.tasks[f["fileId"]] = self.progress.add_task(
                    name, total=f["size"], state=f["status"]
                )
            self._apply_job(self.job)
            # Any trouble with the WebSocket (a proxy without upgrades, a drop): poll instead.
            with contextlib.suppress(Exception):
                self._follow_ws()
            while self.job["status"] not in ENDED:
                time.sleep(1)
                self._poll()
        return str(self.job["status"])

    def _status_path(self) -> str:
        return f"/api/models/download/status/{self.job['jobId']}"

    def _poll(self) -> None:
        """Re-read the job; a service that does not answer gets LOST_AFTER_S to come back."""
        deadline = time.monotonic() + LOST_AFTER_S
        while True:
            try:
                self._apply_job(self.client.request("GET", self._status_path()))
                return
            except ClientError as exc:
                if not exc.unreachable or time.monotonic() >= deadline:
                    raise
            time.sleep(0.5)

    def _follow_ws(self) -> None:
        ws = simple_websocket.Client.connect(self.client.ws_url(), headers=self.client.ws_headers())
        try:
            ws.send(json.dumps({"type": "subscribe", "channel": "download"}))
            # Events after the snapshot: re-read the job once so nothing between is lost.
            self._apply_job(self.client.request("GET", self._status_path()))
            while self.job["status"] not in ENDED:
                raw = ws.receive(timeout=5)
                if raw is None:
                    self._apply_job(self.client.request("GET", self._status_path()))
                    continue
                self._apply_message(json.loads(raw))
        finally:
            with contextlib.suppress(Exception):
                ws.close()

    def _apply_message(self, msg: dict[str, Any]) -> None:
        data = msg.get("data") or {}
        if msg.get("type") == "snapshot":
            for job in data.get("jobs", []):
                if job["jobId"] == self.job["jobId"]:
                    self._apply_job(job)
            return
        if data.get("jobId") != self.job["jobId"]:
            return
        if data.get("scope") == "job":
            if data.get("status") in ENDED:
                self._apply_job(self.client.request("GET", self._status_path()))
            return
        self._update(
            data["fileId"], data["bytesDownloaded"], data.get("totalBytes"), data["status"]
        )

    def report(self) -> None:
        """Say how it ended, with each failed file's error."""
        status, job_id = self.job["status"], self.job["jobId"]
        if status == "completed":
            size = human(self.job["totalBytes"])
            done = Text.assemble(("done", "green"), f": job {job_id}, {size}")
            self.console.print(done, soft_wrap=True)
            return
        self.console.print(Text.assemble((status, "red"), f": job {job_id}"), soft_wrap=True)
        for f in self.job["files"]:
            if f["status"] == "failed":
                self.console.print(Text(f"  {f['repo']}/{f['fileName']}: {file_error(f)}"))


def _start(args: argparse.Namespace, client: ApiClient) -> dict[str, Any]:
    if args.files:
        body = {"repo": args.target, "files": args.files, "revision": args.revision}
        return dict(client.request("POST", "/api/downloads", json=body))
    return dict(client.request("POST", f"/api/models/{args.target}/download"))


def pull(args: argparse.Namespace, client: ApiClient, console: Console) -> int:
    """`modelpull pull`: start a job for a catalog model or repo files (or join the one
    already under way for them) and follow it."""
    job = _start(args, client)
    if job.get("allPresent"):
        console.print(Text(f"{args.target} is already present", style="green"))
        return 0
    job_id, status = job["jobId"], job["status"]
    if job.get("existing"):
        if status == "paused":
            console.print(
                f"already downloading: job {job_id} (paused); "
                f"resume it with 'modelpull resume {job_id}'",
                soft_wrap=True,
            )
            return 1
        console.print(f"already downloading: job {job_id} ({status})", soft_wrap=True)
    else:
        size = f", {human(job['totalBytes'])}" if job.get("totalBytes") is not None else ""
        console.print(f"job {job_id}: {_files(len(job['files']))}{size}", soft_wrap=True)
    follower = Follower(client, job, console)
    try:
        ended = follower.run()
    except KeyboardInterrupt:
        # A job this pull joined (someone else's) is never cancelled by it.
        if args.cancel_on_exit and not job.get("existing"):
            client.request("POST", f"/api/models/download/{job_id}/cancel")
            console.print(f"cancelled job {job_id}", soft_wrap=True)
        else:
            console.print(
                "stopped following; the download goes on: follow it with "
                f"'modelpull status {job_id}'",
                soft_wrap=True,
            )
        return 130
    except ClientError as exc:
        if not exc.unreachable:
            raise
        print(
            "modelpull: the service stopped answering; the download goes on in the service: "
            f"follow it with 'modelpull status {job_id}'",
            file=sys.stderr,
        )
        return 1
    follower.report()
    return 0 if ended == "completed" else 1
