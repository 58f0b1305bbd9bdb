"""What every engine takes and returns: the progress meter and the destination check."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import UnsafePathError
from worker.engine.base import DownloadRequest, Progress, ProgressMeter, safe_dest


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_meter_throttles_smooths_speed_and_computes_eta() -> None:
    clock = Clock()
    seen: list[Progress] = []
    meter = ProgressMeter(seen.append, interval=0.25, window=2.0, clock=clock)
    assert meter.update(0, 1000) is not None  # the first report goes out at once
    clock.now = 0.1
    assert meter.update(10, 1000) is None  # throttled
    clock.now = 1.0
    report = meter.update(100, 1000)
    assert report is not None and report.speed == pytest.approx(100.0)
    assert report.eta == pytest.approx(9.0) and report.percent == 10.0
    clock.now = 5.0  # old samples leave the window: speed reflects the recent rate
    meter.update(900, 1000)
    clock.now = 6.0
    report = meter.update(1000, 1000, status="verifying", force=True)
    assert report is not None and report.speed == pytest.approx(100.0)
    assert report.status == "verifying" and report.eta == 0.0
    assert len(seen) == 4
    assert Progress(5, None, 0.0, None).percent == 0.0


def _request(models: Path, file_name: str, dest: str) -> DownloadRequest:
    return DownloadRequest(
        repo="org/m", file_name=file_name, dest=dest, models_dir=models, endpoint="http://hub"
    )


def test_safe_dest_is_inside_the_models_dir_or_refused(tmp_path: Path) -> None:
    assert safe_dest(_request(tmp_path, "a/b.gguf", "x/b.gguf")) == tmp_path.resolve() / "x/b.gguf"
    for file_name, dest in [("../b.gguf", "b.gguf"), ("b.gguf", "../../b.gguf")]:
        with pytest.raises(UnsafePathError, match="refused") as info:
            safe_dest(_request(tmp_path, file_name, dest))
        assert (info.value.repo, info.value.file) == ("org/m", file_name)
