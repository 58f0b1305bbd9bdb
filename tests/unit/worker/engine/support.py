"""What the engine tests hand an engine: a request for a file of the test repo."""

from __future__ import annotations

from pathlib import Path

from tests.hub import ImitationHub
from worker.engine.base import DownloadRequest

REPO = "org/models"


def request_for(
    hub: ImitationHub, models: Path, file: str, dest: str | None = None, **kw: object
) -> DownloadRequest:
    """A request for `file` of `REPO` (or `repo=`) from `hub` into `models` (at `dest`)."""
    return DownloadRequest(
        repo=str(kw.pop("repo", REPO)),
        file_name=file,
        dest=dest or file,
        models_dir=models,
        endpoint=hub.url,
        **kw,  # type: ignore[arg-type]
    )
