"""What a resume keeps and checks: the CDN's validator, the space a partial already holds, the
bytes a short write left out, and names at the filesystem's limit."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from app import storage
from app.digest import sha256_file
from app.errors import PausedError
from tests.hub import GeneratedFile, ImitationHub
from tests.unit.worker.engine.support import REPO, request_for
from worker.engine.base import Control, Progress
from worker.engine.native import NativeEngine

MiB = 1 << 20
BIG = "big.gguf"
BIG_SIZE = 24 * MiB


@pytest.fixture
def repo_hub(hub: ImitationHub) -> ImitationHub:
    hub.add_repo(REPO, {BIG: GeneratedFile(size=BIG_SIZE, seed=41)})
    return hub


def engine(**kw: object) -> NativeEngine:
    defaults: dict[str, object] = {
        "connections": 2,
        "min_split": 2 * MiB,
        "sidecar_interval": 0.05,
        "progress_interval": 0.0,
        "control_interval": 0.0,
        "backoff_base": 0.05,
    }
    defaults.update(kw)
    return NativeEngine(**defaults)  # type: ignore[arg-type]


def pause_after(n: int) -> tuple[Callable[[], Control | None], list[Progress]]:
    seen: list[Progress] = []

    def control() -> Control | None:
        return Control.PAUSE if seen and seen[-1].bytes_done >= n else None

    return control, seen


def paused_partial(hub: ImitationHub, models: Path, at: int = 6 * MiB) -> int:
    """Download until `at` bytes, pause; returns the bytes the partial keeps."""
    fault = hub.faults.add(path=BIG, host="cdn", bandwidth=4 * MiB, times=None)
    control, seen = pause_after(at)
    with pytest.raises(PausedError):
        engine().download(request_for(hub, models, BIG), control=control, progress=seen.append)
    hub.faults.remove(fault.id)
    kept = storage.partial_bytes(models, BIG)
    assert kept is not None and at <= kept < BIG_SIZE
    return kept


def cdn_gets(hub: ImitationHub) -> list[object]:
    return [r for r in hub.requests if r.host == "cdn" and r.method == "GET"]


def test_a_resume_sends_the_validator_the_cdn_sent_before(
    repo_hub: ImitationHub, models: Path
) -> None:
    repo_hub.cdn_etag = "opaque"  # a CDN whose ETag is not the Hub's sha256
    paused_partial(repo_hub, models)
    saved = json.loads(storage.sidecar_path(models, BIG).read_text())
    cdn_etag = next(r for r in cdn_gets(repo_hub) if r.status in (200, 206))
    assert saved["validator"] and saved["validator"] != repo_hub.file_info(REPO, BIG).sha256
    repo_hub.clear_requests()
    result = engine().download(request_for(repo_hub, models, BIG))
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256
    # Every ranged request after the resume carried If-Range, the first one included.
    gets = cdn_gets(repo_hub)
    assert gets and all(r.header("If-Range") == saved["validator"] for r in gets)  # type: ignore[attr-defined]
    assert cdn_etag is not None


def test_a_partial_whose_sidecar_has_no_validator_is_kept(
    repo_hub: ImitationHub, models: Path
) -> None:
    kept = paused_partial(repo_hub, models)
    side = storage.sidecar_path(models, BIG)
    data = json.loads(side.read_text())
    data.pop("validator", None)  # what a CDN without ETags (the Xet bridge) leaves
    side.write_text(json.dumps(data))
    result = engine().download(request_for(repo_hub, models, BIG))
    assert result.resumed_from == kept and result.bytes_transferred == BIG_SIZE - kept
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256


def test_a_cdn_without_validators_still_resumes_and_is_checked_at_the_end(
    repo_hub: ImitationHub, models: Path
) -> None:
    repo_hub.cdn_etag = "none"  # like the Hub's Xet bridge: no ETag, no Last-Modified
    kept = paused_partial(repo_hub, models)
    assert "validator" not in json.loads(storage.sidecar_path(models, BIG).read_text())
    repo_hub.clear_requests()
    result = engine().download(request_for(repo_hub, models, BIG))
    assert result.resumed_from == kept and result.bytes_transferred == BIG_SIZE - kept
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256
    assert not any(r.header("If-Range") for r in cdn_gets(repo_hub))  # type: ignore[attr-defined]


def test_a_resume_on_a_nearly_full_disk_counts_the_blocks_the_partial_holds(
    repo_hub: ImitationHub, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused_partial(repo_hub, models, at=2 * MiB)
    part = storage.partial_path(models, BIG)
    assert os.stat(part).st_blocks * 512 >= BIG_SIZE  # preallocated: the space is taken
    real = shutil.disk_usage
    # The disk has 20 MiB free: not the 22 MiB still to fetch, but those bytes already have
    # their blocks in the partial, so nothing more is needed.
    monkeypatch.setattr(
        "worker.engine.disk.shutil.disk_usage", lambda p: real(p)._replace(free=20 * MiB)
    )
    result = engine().download(request_for(repo_hub, models, BIG))
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256


def test_short_writes_are_continued_never_recorded_as_done(
    repo_hub: ImitationHub, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwritev

    def short_pwritev(fd: int, pieces: list[memoryview], offset: int) -> int:
        return real(fd, [pieces[0][:1000]], offset)  # the kernel may take less than given

    monkeypatch.setattr("worker.engine.disk.os.pwritev", short_pwritev)
    result = engine(chunk_size=256 * 1024).download(request_for(repo_hub, models, BIG))
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256


def test_a_write_that_takes_nothing_fails_and_claims_nothing(
    repo_hub: ImitationHub, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.engine.disk.os.pwritev", lambda fd, pieces, offset: 0)
    with pytest.raises(Exception, match="took no bytes"):
        engine(max_retries=0).download(request_for(repo_hub, models, BIG))
    assert not (models / BIG).exists()
    assert not storage.partial_bytes(models, BIG)


def name_of(length: int) -> str:
    return "m" * (length - len(".gguf")) + ".gguf"


def test_the_longest_name_the_validator_accepts_downloads(hub: ImitationHub, models: Path) -> None:
    longest = name_of(storage.MAX_SEGMENT_BYTES)
    hub.add_repo(REPO, {longest: GeneratedFile(size=3 * MiB, seed=42)})
    storage.check_relative_path(longest)
    # Paused and resumed, so the sidecar and its temporary name are written too.
    control, seen = pause_after(MiB)
    fault = hub.faults.add(path=longest, host="cdn", bandwidth=2 * MiB, times=None)
    with pytest.raises(PausedError):
        engine().download(request_for(hub, models, longest), control=control, progress=seen.append)
    hub.faults.remove(fault.id)
    result = engine().download(request_for(hub, models, longest))
    assert sha256_file(result.path) == hub.file_info(REPO, longest).sha256
    with pytest.raises(ValueError, match="longer than"):
        storage.check_relative_path(name_of(storage.MAX_SEGMENT_BYTES + 1))
