"""The hf_hub engine: huggingface_hub in a child process, against the imitation Hub."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app import storage
from app.errors import (
    CancelledError,
    ChecksumMismatchError,
    EntryNotFoundError,
    GatedRepoError,
    PausedError,
    RepoNotFoundError,
    TransientDownloadError,
    UnsafePathError,
)
from app.scrub import register_secrets, scrub
from tests.hub import VALID_TOKEN, GeneratedFile, ImitationHub
from tests.unit.worker.engine.support import REPO, request_for
from worker.engine.base import Control, DownloadRequest, Progress
from worker.engine.hf_hub import HfHubEngine

MiB = 1 << 20


@pytest.fixture
def repo_hub(hub: ImitationHub) -> ImitationHub:
    hub.add_repo(REPO, {"w.gguf": GeneratedFile(size=12 * MiB, seed=5), "a.json": b"{}\n"})
    return hub


def req(hub: ImitationHub, models: Path, file: str = "w.gguf", **kw: object) -> DownloadRequest:
    return request_for(hub, models, file, **kw)


def no_staging_left(models: Path) -> bool:
    hf = storage.work_dir(models).parent / "hf"
    return not hf.exists() or not any(hf.iterdir())


def test_downloads_with_progress_and_places_the_verified_file(
    repo_hub: ImitationHub, models: Path
) -> None:
    reports: list[Progress] = []
    result = HfHubEngine(progress_interval=0).download(
        req(repo_hub, models, token=VALID_TOKEN), progress=reports.append
    )
    info = repo_hub.file_info(REPO, "w.gguf")
    data = (models / "w.gguf").read_bytes()
    assert hashlib.sha256(data).hexdigest() == info.sha256 == result.sha256
    assert (result.etag, result.commit) == (info.sha256, info.commit)
    assert len(reports) >= 3 and reports[-1].status == "completed"
    assert any(p.status == "downloading" and p.bytes_done > 0 for p in reports)
    assert no_staging_left(models)
    # huggingface_hub too must not send the token to the CDN host.
    cdn = [r for r in repo_hub.requests if r.host == "cdn"]
    assert cdn and not any(r.header("Authorization") for r in cdn)


def test_a_gated_repo_fails_with_advice_and_the_whole_traceback(
    repo_hub: ImitationHub, models: Path
) -> None:
    with pytest.raises(GatedRepoError) as info:
        HfHubEngine().download(req(repo_hub, models, "config.json", repo="org/gated"))
    err = info.value
    assert "HF_TOKEN" in str(err) and err.repo == "org/gated" and err.file == "config.json"
    assert err.stderr is not None
    assert err.stderr.count("Traceback (most recent call last):") == 1
    # Multi-line: the traceback's frames and the final exception line are all there.
    assert "hf_hub_download" in err.stderr
    assert "huggingface_hub.errors.GatedRepoError" in err.stderr
    assert not (models / "config.json").exists() and no_staging_left(models)


@pytest.mark.parametrize(
    ("repo", "file", "error"),
    [("org/nope", "x", RepoNotFoundError), (REPO, "nope.bin", EntryNotFoundError)],
)
def test_hub_errors_are_typed(
    repo_hub: ImitationHub, models: Path, repo: str, file: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        HfHubEngine().download(req(repo_hub, models, file, repo=repo))
    assert "Traceback" in (info.value.stderr or "")  # type: ignore[attr-defined]


def test_a_server_error_is_transient(repo_hub: ImitationHub, models: Path) -> None:
    repo_hub.faults.add(path="w.gguf", host="cdn", status=500, times=None)
    with pytest.raises(TransientDownloadError) as info:
        HfHubEngine().download(req(repo_hub, models))
    assert "500" in str(info.value)


@pytest.mark.parametrize(
    ("action", "error"), [(Control.CANCEL, CancelledError), (Control.PAUSE, PausedError)]
)
def test_cancel_and_pause_terminate_the_child(
    repo_hub: ImitationHub, models: Path, action: Control, error: type[Exception]
) -> None:
    repo_hub.faults.add(path="w.gguf", host="cdn", bandwidth=MiB, times=None)
    seen: list[Progress] = []

    def control() -> Control | None:
        return action if any(p.bytes_done > 0 for p in seen) else None

    with pytest.raises(error):
        HfHubEngine(progress_interval=0, control_interval=0.05).download(
            req(repo_hub, models), progress=seen.append, control=control
        )
    assert not (models / "w.gguf").exists() and no_staging_left(models)


def test_a_pinned_sha256_mismatch_is_refused(repo_hub: ImitationHub, models: Path) -> None:
    with pytest.raises(ChecksumMismatchError):
        HfHubEngine().download(req(repo_hub, models, "a.json", sha256="f" * 64))
    assert not (models / "a.json").exists()


def test_unsafe_destinations_are_refused(repo_hub: ImitationHub, models: Path) -> None:
    with pytest.raises(UnsafePathError):
        HfHubEngine().download(req(repo_hub, models, dest="../../x"))
    assert not repo_hub.requests


def test_the_engine_scrubs_the_token_it_was_given() -> None:
    # The one scrubber; the engine registers its request's token before anything can fail.
    register_secrets("hf_abc")
    assert scrub("Bearer hf_abc failed") == "Bearer *** failed"
    assert scrub("nothing") == "nothing"
