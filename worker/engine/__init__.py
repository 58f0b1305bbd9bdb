"""Download engines: plain Python, no Celery, testable and benchmarkable alone."""

from worker.engine.base import (
    Control,
    ControlFn,
    DownloadRequest,
    DownloadResult,
    Engine,
    Progress,
    ProgressFn,
)

__all__ = [
    "Control",
    "ControlFn",
    "DownloadRequest",
    "DownloadResult",
    "Engine",
    "Progress",
    "ProgressFn",
]
