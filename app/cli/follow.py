"""`modelpull pull`'s progress: one job followed to its end over the WebSocket, with a bar per
file, falling back to polling the API."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import simple_websocket
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from app.cli.client import ApiClient
from app.models import JOB_TERMINAL

# The API sends statuses as plain strings.
ENDED = frozenset(status.value for status in JOB_TERMINAL)


class Follower:
    """Follows one job to its end with a progress bar per file."""

    def __init__(self, client: ApiClient, job: dict[str, Any], console: Console) -> None:
        self.client = client
        self.job = job
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[state]}"),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}

    def _update(self, file_id: str, done: int, size: int | None, state: str) -> None:
        task = self.tasks.get(file_id)
        if task is None:
            return
        self.progress.update(task, completed=done, total=size, state=state)

    def _apply_job(self, job: dict[str, Any]) -> None:
        self.job = job
        for f in job["files"]:
            size = f["size"] if f["status"] != "completed" else f["bytesDownloaded"]
            self._update(f["fileId"], f["bytesDownloaded"], size, f["status"])

    def run(self) -> str:
        """Show progress until the job ends; returns its final status."""
        with self.progress:
            for f in self.job["files"]:
                self.tasks[f["fileId"]] = self.progress.add_task(
                    f["dest"], total=f["size"], state=f["status"]
                )
            # Any trouble with the WebSocket (a proxy without upgrades, a drop): poll instead.
            with contextlib.suppress(Exception):
                self._follow_ws()
            while self.job["status"] not in ENDED:
                time.sleep(1)
                self._apply_job(self.client.request("GET", self._status_path()))
        return str(self.job["status"])

    def _status_path(self) -> str:
        return f"/api/models/download/status/{self.job['jobId']}"

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
        status = self.job["status"]
        if status == "completed":
            self.console.print(f"[green]done[/]: job {self.job['jobId']}")
            return
        self.console.print(f"[red]{status}[/]: job {self.job['jobId']}")
        for f in self.job["files"]:
            if f["status"] == "failed":
                self.console.print(f"  {f['repo']}/{f['fileName']}: {f['error']}")
