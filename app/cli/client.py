"""The CLI's side of the service: its HTTP API and WebSocket, so it works against a remote
deployment as well as `modelpull up` (`--url`/`MODELPULL_URL`, `--token`/`MODELPULL_TOKEN`)."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import requests
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
from rich.table import Table

TERMINAL = ("completed", "failed", "cancelled")


class ClientError(Exception):
    """The service refused or could not be reached; the message says why."""


class ApiClient:
    """A thin JSON client with the bearer token."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the API; JSON errors become ClientError with the server's message."""
        try:
            resp = self.session.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ClientError(f"cannot reach {self.url}: {type(exc).__name__}") from None
        if resp.status_code == 401:
            raise ClientError("the service refused the token: set --token or MODELPULL_TOKEN")
        if resp.status_code == 204:
            return None
        try:
            body = resp.json()
        except ValueError:
            raise ClientError(f"{self.url} answered {resp.status_code}, not JSON") from None
        if resp.status_code >= 400:
            raise ClientError(body.get("message") or f"HTTP {resp.status_code}")
        return body

    def ws_url(self) -> str:
        """The WebSocket URL of the service."""
        return self.url.replace("http", "ws", 1) + "/ws"

    def ws_headers(self) -> dict[str, str]:
        """Bearer header for the WebSocket handshake (never a token in the URL)."""
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}


def human(n: int | None) -> str:
    """Bytes in binary units."""
    from app.catalog import human_size

    return human_size(n) or "?"


def models_table(client: ApiClient) -> Table:
    """The catalog with present / missing."""
    table = Table(title="Models")
    for col in ("id", "name", "state", "files"):
        table.add_column(col)
    for m in client.request("GET", "/api/models")["models"]:
        state = "[green]present[/]" if m["allPresent"] else "[red]missing[/]"
        table.add_row(m["id"], m["name"], state, str(len(m["files"])))
    return table


def jobs_table(client: ApiClient, limit: int = 20) -> Table:
    """The newest jobs."""
    table = Table(title="Jobs (newest first)")
    table.add_column("job", no_wrap=True)  # ids are for copying: never wrapped
    for col in ("what", "state", "done", "created"):
        table.add_column(col)
    for j in client.request("GET", f"/api/models/download/jobs?limit={limit}")["jobs"]:
        what = j["modelId"] or j["files"][0]["repo"]
        done = f"{human(j['bytesDownloaded'])} / {human(j['totalBytes'])}"
        table.add_row(j["jobId"], what, j["status"], done, j["createdAt"])
    return table


def job_table(job: dict[str, Any]) -> Table:
    """One job with its files."""
    table = Table(title=f"Job {job['jobId']}: {job['status']}")
    for col in ("file", "repo", "state", "done", "error"):
        table.add_column(col)
    for f in job["files"]:
        done = f"{human(f['bytesDownloaded'])} / {human(f['size'])}"
        table.add_row(f["dest"], f["repo"], f["status"], done, f["error"] or "")
    return table


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
            while self.job["status"] not in TERMINAL:
                time.sleep(1)
                self._apply_job(self.client.request("GET", self._status_path()))
        return str(self.job["status"])

    def _status_path(self) -> str:
        return f"/api/models/download/status/{self.job['jobId']}"

    def _follow_ws(self) -> None:
        import simple_websocket

        ws = simple_websocket.Client.connect(self.client.ws_url(), headers=self.client.ws_headers())
        try:
            ws.send(json.dumps({"type": "subscribe", "channel": "download"}))
            # Events after the snapshot: re-read the job once so nothing between is lost.
            self._apply_job(self.client.request("GET", self._status_path()))
            while self.job["status"] not in TERMINAL:
                raw = ws.receive(timeout=5)
                if raw is None:
                    self._apply_job(self.client.request("GET", self._status_path()))
                    continue
                msg = json.loads(raw)
                data = msg.get("data") or {}
                if msg.get("type") == "snapshot":
                    for job in data.get("jobs", []):
                        if job["jobId"] == self.job["jobId"]:
                            self._apply_job(job)
                    continue
                if data.get("jobId") != self.job["jobId"]:
                    continue
                if data.get("scope") == "job":
                    if data.get("status") in TERMINAL:
                        self._apply_job(self.client.request("GET", self._status_path()))
                    continue
                self._update(
                    data["fileId"], data["bytesDownloaded"], data.get("totalBytes"), data["status"]
                )
        finally:
            with contextlib.suppress(Exception):
                ws.close()

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
