"""What the remote commands print: the catalog, the job list and one job, as rich tables."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from app.catalog import human_size
from app.cli.client import ApiClient


def human(n: int | None) -> str:
    """Bytes in binary units."""
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
