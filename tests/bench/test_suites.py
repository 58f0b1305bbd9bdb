"""The short versions of the bench suites, so they keep working (their figures are recorded
from full runs in bench/results/; nothing here is timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(900)


def run_quick(module: str, out: Path, *extra: str) -> dict[str, Any]:
    """Run `python -m <module> --quick` from the project root; its results."""
    proc = subprocess.run(
        [sys.executable, "-m", module, "--quick", "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=800,
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert out.with_suffix(".md").is_file()
    data: dict[str, Any] = json.loads(out.read_text())
    assert data["machine"]["cores"]
    return data


def test_chaos_quick_loses_and_corrupts_nothing(tmp_path: Path) -> None:
    data = run_quick("bench.chaos", tmp_path / "chaos.json")
    assert data["downloads"] == data["completed"] > 0
    assert data["corrupt"] == 0
    assert data["visible_incomplete"] == 0 and data["watcher_polls"] > 100
    assert data["row_disk_disagree"] == 0
    # Every kind of fault happened, the killed worker's files came back, and the pauses were
    # seen to take effect.
    kinds = ("kill", "redis", "hub", "trickle", "branch", "control")
    assert all(data["events"][k] >= 1 for k in kinds), data["timeline"]
    assert data["recover_s_max"] is not None
    assert data["control_effect_s_max"] is not None
    # Resumes re-fetch little: far from downloading everything twice.
    assert 1.0 <= data["bytes_ratio"] < 1.5


def test_scale_quick_measures_every_part(tmp_path: Path) -> None:
    pg = os.environ.get("TEST_DATABASE_URL")
    server = pg.rsplit("/", 1)[0] + "/postgres" if pg else "postgresql+psycopg://x@127.0.0.1:9/x"
    data = run_quick("bench.scale", tmp_path / "scale.json", "--pg-url", server)
    assert all(data["files_per_s"][w] > 0 for w in ("1", "2", "4"))
    progress = data["detail"]["progress"]
    assert progress["samples"] > 0 and progress["clients_connected"] == progress["clients"]
    # Every client saw every job complete: nobody was starved by the others.
    assert progress["clients_saw_every_job_complete"] == progress["clients"]
    assert 0 < data["progress_ms"]["p50"] <= data["progress_ms"]["p99"]
    assert data["job_list_p99_ms"]["sqlite"] > 0
    if pg:  # CI has PostgreSQL: its part must have run
        assert data["job_list_p99_ms"]["postgres"] > 0
    assert data["worker_peak_rss_mb"] > 0
