"""The hf_hub engine's staging folder names its destination, so that what a killed worker
leaves behind can be tied to the destination's lease and cleaned by the sweeper."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app import storage
from app.errors import CancelledError
from tests.hub import GeneratedFile, ImitationHub
from tests.support import wait_for
from tests.unit.worker.engine.support import REPO, request_for
from worker.engine.base import Control
from worker.engine.hf_hub import STAGING_MARKER, HfHubEngine, staging_dir
from worker.runtime import Runtime
from worker.sweeper import Sweeper

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[4]
DEST = "org/models/renamed.gguf"  # not the file's own name: the marker names the dest

# The engine alone in a process of its own, as a worker runs it.
_CHILD = """
import json, sys
from pathlib import Path
from worker.engine.base import DownloadRequest
from worker.engine.hf_hub import HfHubEngine
spec = json.loads(sys.argv[1])
HfHubEngine().download(DownloadRequest(
    repo=spec["repo"], file_name=spec["file"], dest=spec["dest"],
    models_dir=Path(spec["models"]), endpoint=spec["endpoint"],
))
"""


@pytest.fixture
def slow_hub(hub: ImitationHub) -> ImitationHub:
    hub.add_repo(REPO, {"w.gguf": GeneratedFile(size=12 * MiB, seed=5)})
    hub.faults.add(path="w.gguf", host="cdn", bandwidth=MiB, times=None)
    return hub


def _incomplete(folder: Path) -> list[Path]:
    """huggingface_hub's file being downloaded, once it has opened it."""
    return list(folder.rglob("*.incomplete")) if folder.is_dir() else []


def test_the_staging_folder_names_its_destination_while_the_download_runs(
    slow_hub: ImitationHub, models: Path
) -> None:
    folder = staging_dir(models, DEST)
    markers: list[str] = []

    def control() -> Control | None:
        # Called while huggingface_hub's process runs: the marker is there already.
        markers.append((folder / STAGING_MARKER).read_text(encoding="utf-8"))
        return Control.CANCEL

    with pytest.raises(CancelledError):
        HfHubEngine(control_interval=0.05).download(
            request_for(slow_hub, models, "w.gguf", dest=DEST), control=control
        )
    assert markers == [DEST]
    assert not folder.exists()  # a live engine cleans up after itself


def test_a_killed_workers_staging_names_its_destination_and_is_swept(
    slow_hub: ImitationHub, make_runtime: Callable[..., Runtime]
) -> None:
    rt = make_runtime(download_lease_seconds=5)
    models = rt.settings.models_dir
    models.mkdir(parents=True, exist_ok=True)
    folder = staging_dir(models, DEST)
    spec = {"repo": REPO, "file": "w.gguf", "dest": DEST, "models": str(models)}
    spec["endpoint"] = slow_hub.url
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(spec)], cwd=ROOT, start_new_session=True
    )
    try:
        wait_for(lambda: _incomplete(folder), 30, "huggingface_hub to start writing")
    finally:
        # The machine dies: the engine and huggingface_hub's process, with no clean-up.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert (folder / STAGING_MARKER).read_text(encoding="utf-8") == DEST
    assert _incomplete(folder)
    assert not storage.dest_path(models, DEST).exists()
    # Quiet for two leases (its writer is gone), and nobody holds the destination's lease.
    then = time.time() - 60
    for p in [folder, *folder.rglob("*")]:
        os.utime(p, (then, then), follow_symlinks=False)
    assert Sweeper(rt).sweep()["staging"] == [folder.name]
    assert not folder.exists()
