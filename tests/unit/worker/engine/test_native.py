"""The native engine against the imitation Hub over real loopback sockets."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app import storage
from app.digest import sha256_file
from app.errors import (
    CancelledError,
    ChecksumMismatchError,
    DiskFullError,
    EntryNotFoundError,
    GatedRepoError,
    PausedError,
    RepoNotFoundError,
    RevisionNotFoundError,
    TransientDownloadError,
    UnauthorizedError,
    UnsafePathError,
)
from tests.hub import BAD_TOKEN, VALID_TOKEN, GeneratedFile, ImitationHub
from tests.unit.worker.engine.support import REPO, request_for
from worker.engine.base import Control, DownloadRequest, Progress
from worker.engine.native import NativeEngine

MiB = 1 << 20
BIG = "big.gguf"
BIG_SIZE = 40 * MiB


@pytest.fixture
def repo_hub(hub: ImitationHub) -> ImitationHub:
    hub.add_repo(
        REPO,
        {
            BIG: GeneratedFile(size=BIG_SIZE, seed=11),
            "config.json": b'{"arch": "test"}\n',
            "sub/small.safetensors": GeneratedFile(size=3 * MiB, seed=12),
        },
    )
    return hub


def fast_engine(**kw: object) -> NativeEngine:
    """An engine with short waits so fault tests stay quick."""
    defaults: dict[str, object] = {
        "connections": 4,
        "min_split": 2 * MiB,
        "backoff_base": 0.05,
        "backoff_max": 0.5,
        "stall_timeout": 2.0,
        "progress_interval": 0.0,
        "sidecar_interval": 0.05,
        "control_interval": 0.0,
    }
    defaults.update(kw)
    return NativeEngine(**defaults)  # type: ignore[arg-type]


def request(
    hub: ImitationHub, models: Path, file: str = BIG, dest: str | None = None, **kw: object
) -> DownloadRequest:
    return request_for(hub, models, file, dest, **kw)


def assert_clean(models: Path, dest: str = BIG) -> None:
    assert not storage.partial_path(models, dest).exists()
    assert not storage.sidecar_path(models, dest).exists()


def cdn_gets(hub: ImitationHub) -> list[object]:
    return [r for r in hub.requests if r.host == "cdn" and r.method == "GET"]


def test_parallel_download_through_the_cdn_is_verified_and_placed(
    repo_hub: ImitationHub, models: Path
) -> None:
    reports: list[Progress] = []
    result = fast_engine(connections=8).download(
        request(repo_hub, models, token=VALID_TOKEN), progress=reports.append
    )
    info = repo_hub.file_info(REPO, BIG)
    assert result.path == models.resolve() / BIG
    assert sha256_file(result.path) == info.sha256 == result.sha256
    assert (result.size, result.etag, result.commit) == (BIG_SIZE, info.sha256, info.commit)
    assert result.bytes_transferred == BIG_SIZE and result.resumed_from == 0
    assert_clean(models)
    # Several ranged connections went to the CDN host, none of them with the token.
    gets = cdn_gets(repo_hub)
    assert len(gets) >= 4
    assert all(r.header("Range") for r in gets)  # type: ignore[attr-defined]
    assert not any(r.header("Authorization") for r in gets)  # type: ignore[attr-defined]
    heads = [r for r in repo_hub.requests if r.host == "hub" and r.method == "HEAD"]
    assert heads and all(r.header("Authorization") == f"Bearer {VALID_TOKEN}" for r in heads)
    # Progress: monotonic bytes, a verifying step, and a final 100 %.
    done = [p.bytes_done for p in reports]
    assert done == sorted(done)
    assert [p.status for p in reports][-2:] == ["verifying", "completed"]
    # The result tells how many connections ran, and how long the verify-and-sync tail took.
    assert result.connections == 8
    assert 0 <= result.tail_s < 5
    assert {p.connections for p in reports if p.status == "downloading"} == {8}
    assert reports[-1].percent == 100.0


def test_small_regular_file_uses_one_connection_and_its_git_blob_id(
    repo_hub: ImitationHub, models: Path
) -> None:
    result = fast_engine().download(request(repo_hub, models, "config.json", "cfg/config.json"))
    assert (models / "cfg" / "config.json").read_bytes() == b'{"arch": "test"}\n'
    assert result.etag == repo_hub.file_info(REPO, "config.json").git_sha1
    gets = [r for r in repo_hub.requests if r.method == "GET"]
    assert len(gets) == 1 and gets[0].host == "hub"


def test_a_dropped_connection_is_resumed(repo_hub: ImitationHub, models: Path) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", drop_after=3 * MiB, times=3)
    result = fast_engine().download(request(repo_hub, models))
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256
    # The dropped pieces were continued, not fetched again from their start.
    assert result.bytes_transferred == BIG_SIZE


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(repo_hub: ImitationHub, models: Path, status: int) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", status=status, times=2)
    result = fast_engine().download(request(repo_hub, models))
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256
    assert [r.status for r in cdn_gets(repo_hub)].count(status) == 2


def test_429_waits_for_retry_after(repo_hub: ImitationHub, models: Path) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", status=429, retry_after=1, times=1)
    fast_engine(connections=1).download(request(repo_hub, models))
    gets = cdn_gets(repo_hub)
    limited = next(r for r in gets if r.status == 429)
    after = [r for r in gets if r.time > limited.time]
    assert after and after[0].time - limited.time >= 0.95


def test_a_hub_error_on_resolve_is_retried(repo_hub: ImitationHub, models: Path) -> None:
    repo_hub.faults.add(path=BIG, host="hub", method="HEAD", status=503, times=2)
    result = fast_engine().download(request(repo_hub, models))
    assert result.size == BIG_SIZE


def test_persistent_failure_gives_up_and_keeps_the_partial(
    repo_hub: ImitationHub, models: Path
) -> None:
    _slow(repo_hub)
    control, seen = _after_bytes(3 * MiB, Control.PAUSE)
    with pytest.raises(PausedError):
        fast_engine().download(request(repo_hub, models), progress=seen.append, control=control)
    kept = storage.partial_bytes(models, BIG)
    repo_hub.faults.clear()
    repo_hub.faults.add(path=BIG, host="cdn", status=503, times=None)
    with pytest.raises(TransientDownloadError) as info:
        fast_engine(connections=1, max_retries=2).download(request(repo_hub, models))
    assert "HTTP 503" in str(info.value) and info.value.transient
    assert not (models / BIG).exists()
    assert kept and storage.partial_bytes(models, BIG) == kept


def test_a_server_ignoring_range_is_downloaded_in_one_piece(
    repo_hub: ImitationHub, models: Path
) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", ignore_range=True, times=None)
    result = fast_engine(connections=8).download(request(repo_hub, models))
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256
    assert any(r.status == 200 and not r.header("Range") for r in cdn_gets(repo_hub))


def test_a_stalled_connection_is_reconnected_without_using_retries(
    repo_hub: ImitationHub, models: Path
) -> None:
    # Ten stalls, but only one retry allowed: each stall came after bytes, so none counts.
    repo_hub.faults.add(
        path=BIG, host="cdn", stall_after=MiB, stall_seconds=5, stall_then="close", times=10
    )
    started = time.monotonic()
    result = fast_engine(connections=2, stall_timeout=0.3, max_retries=1).download(
        request(repo_hub, models)
    )
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256
    assert time.monotonic() - started < 20  # the 5 s stalls were cut short


def test_a_corrupt_byte_is_caught_discarded_and_fetched_again(
    repo_hub: ImitationHub, models: Path
) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", corrupt_offset=BIG_SIZE // 2, times=1)
    result = fast_engine().download(request(repo_hub, models))
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256
    assert result.bytes_transferred == BIG_SIZE  # the second, clean attempt


def test_a_repeated_checksum_mismatch_fails_and_leaves_nothing(
    repo_hub: ImitationHub, models: Path
) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", corrupt_offset=7, times=None)
    with pytest.raises(ChecksumMismatchError, match=r"expected .*discarded"):
        fast_engine().download(request(repo_hub, models))
    assert not (models / BIG).exists()
    assert_clean(models)


def test_a_pinned_sha256_that_the_hub_contradicts_fails_before_downloading(
    repo_hub: ImitationHub, models: Path
) -> None:
    with pytest.raises(ChecksumMismatchError, match="catalog pins sha256"):
        fast_engine().download(request(repo_hub, models, sha256="0" * 64))
    assert not cdn_gets(repo_hub)


def test_an_expired_cdn_url_is_resolved_again(repo_hub: ImitationHub, models: Path) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", status=403, times=1)
    result = fast_engine(connections=1).download(request(repo_hub, models))
    assert result.size == BIG_SIZE
    heads = [r for r in repo_hub.requests if r.host == "hub" and r.method == "HEAD"]
    assert len(heads) == 2


@pytest.mark.parametrize(
    ("repo", "file", "revision", "token", "error", "advice"),
    [
        ("org/gated", "config.json", "main", None, GatedRepoError, "accept its licence"),
        ("org/nope", "x.bin", "main", None, RepoNotFoundError, "check the name"),
        ("org/private", "config.json", "main", None, RepoNotFoundError, "set HF_TOKEN"),
        (REPO, "config.json", "v9", None, RevisionNotFoundError, "revision 'v9'"),
        (REPO, "missing.bin", "main", None, EntryNotFoundError, "does not exist"),
        (REPO, "config.json", "main", BAD_TOKEN, UnauthorizedError, "rejected HF_TOKEN"),
    ],
)
def test_hub_errors_are_typed_with_advice_and_no_token(
    repo_hub: ImitationHub,
    models: Path,
    repo: str,
    file: str,
    revision: str,
    token: str | None,
    error: type[Exception],
    advice: str,
) -> None:
    with pytest.raises(error) as info:
        fast_engine().download(
            request(repo_hub, models, file, repo=repo, revision=revision, token=token)
        )
    assert advice in str(info.value)
    assert BAD_TOKEN not in str(info.value)
    assert not list(models.iterdir())


def test_a_gated_repo_downloads_with_an_approved_token(
    repo_hub: ImitationHub, models: Path
) -> None:
    result = fast_engine().download(
        request(repo_hub, models, "model.safetensors", repo="org/gated", token=VALID_TOKEN)
    )
    assert sha256_file(result.path) == repo_hub.file_info("org/gated", "model.safetensors").sha256


@pytest.mark.parametrize(
    ("file", "dest"),
    [("../../etc/passwd", None), ("ok.bin", "../outside.bin"), ("ok.bin", "/abs.bin")],
)
def test_paths_escaping_the_models_dir_are_refused_before_any_request(
    repo_hub: ImitationHub, models: Path, file: str, dest: str | None
) -> None:
    with pytest.raises(UnsafePathError, match="refused"):
        fast_engine().download(request(repo_hub, models, file, dest))
    assert not repo_hub.requests


def _slow(hub: ImitationHub, rate: int = 4 * MiB) -> None:
    hub.faults.add(path=BIG, host="cdn", bandwidth=rate, times=None)


def _after_bytes(n: int, action: Control) -> tuple[Callable[[], Control | None], list[Progress]]:
    seen: list[Progress] = []

    def control() -> Control | None:
        return action if seen and seen[-1].bytes_done >= n else None

    return control, seen


def test_pause_keeps_the_partial_and_resume_fetches_only_the_rest(
    repo_hub: ImitationHub, models: Path
) -> None:
    _slow(repo_hub)
    control, seen = _after_bytes(4 * MiB, Control.PAUSE)
    with pytest.raises(PausedError):
        fast_engine().download(request(repo_hub, models), progress=seen.append, control=control)
    assert not (models / BIG).exists()
    kept = storage.partial_bytes(models, BIG)
    assert kept is not None and 4 * MiB <= kept < BIG_SIZE
    repo_hub.faults.clear()
    result = fast_engine().download(request(repo_hub, models))
    assert result.resumed_from == kept
    assert result.bytes_transferred == BIG_SIZE - kept
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256
    assert_clean(models)


def test_cancel_removes_the_partial(repo_hub: ImitationHub, models: Path) -> None:
    _slow(repo_hub)
    control, seen = _after_bytes(2 * MiB, Control.CANCEL)
    with pytest.raises(CancelledError):
        fast_engine().download(request(repo_hub, models), progress=seen.append, control=control)
    assert not (models / BIG).exists()
    assert_clean(models)


def test_a_changed_file_restarts_cleanly(repo_hub: ImitationHub, models: Path) -> None:
    _slow(repo_hub)
    control, seen = _after_bytes(3 * MiB, Control.PAUSE)
    with pytest.raises(PausedError):
        fast_engine().download(request(repo_hub, models), progress=seen.append, control=control)
    repo_hub.faults.clear()
    repo_hub.put_file(REPO, BIG, GeneratedFile(size=BIG_SIZE - 12345, seed=99))
    result = fast_engine().download(request(repo_hub, models))
    new = repo_hub.file_info(REPO, BIG)
    assert result.resumed_from == 0 and result.size == new.size
    assert sha256_file(result.path) == new.sha256


def test_no_token_in_the_sidecar(repo_hub: ImitationHub, models: Path) -> None:
    _slow(repo_hub)
    control, seen = _after_bytes(MiB, Control.PAUSE)
    with pytest.raises(PausedError):
        fast_engine().download(
            request(repo_hub, models, token=VALID_TOKEN), progress=seen.append, control=control
        )
    text = storage.sidecar_path(models, BIG).read_text()
    assert VALID_TOKEN not in text and "sig=" not in text
    assert json.loads(text)["etag"] == repo_hub.file_info(REPO, BIG).sha256


def test_before_commit_can_stop_the_final_rename(repo_hub: ImitationHub, models: Path) -> None:
    class LostLease(Exception):
        pass

    def fence() -> None:
        raise LostLease

    with pytest.raises(LostLease):
        fast_engine().download(request(repo_hub, models), before_commit=fence)
    assert not (models / BIG).exists()


def test_too_little_free_space_fails_before_downloading(
    repo_hub: ImitationHub, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(
        "worker.engine.disk.shutil.disk_usage",
        lambda p: real(p)._replace(free=10 * MiB),
    )
    with pytest.raises(DiskFullError, match="MiB more, 10 MiB are free"):
        fast_engine().download(request(repo_hub, models))
    assert not cdn_gets(repo_hub)


def test_a_disk_that_fills_up_mid_download_fails_clearly(
    repo_hub: ImitationHub, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwritev = os.pwritev
    written = [0]

    def pwritev(fd: int, pieces: list[memoryview], offset: int) -> int:
        if written[0] > 6 * MiB:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_pwritev(fd, pieces, offset)
        written[0] += n
        return n

    monkeypatch.setattr("worker.engine.disk.os.pwritev", pwritev)
    with pytest.raises(DiskFullError, match="disk filled up"):
        fast_engine().download(request(repo_hub, models))
    assert not (models / BIG).exists()
    assert storage.partial_path(models, BIG).exists()  # kept: free space, then resume


KILLABLE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from worker.engine.base import DownloadRequest
    from worker.engine.native import NativeEngine
    models, url = Path(sys.argv[1]), sys.argv[2]
    req = DownloadRequest(repo="org/models", file_name="big.gguf", dest="big.gguf",
                          models_dir=models, endpoint=url)
    NativeEngine(4, min_split=2 << 20, sidecar_interval=0.1).download(req)
    """
)


@pytest.mark.timeout(120)
def test_a_killed_process_resumes_from_the_sidecar(repo_hub: ImitationHub, models: Path) -> None:
    _slow(repo_hub, rate=2 * MiB)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, str(models), repo_hub.url],
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        deadline = time.monotonic() + 60
        while (storage.partial_bytes(models, BIG) or 0) < 8 * MiB:
            assert time.monotonic() < deadline, "the child made no progress"
            assert proc.poll() is None, "the child ended early"
            time.sleep(0.05)
            # Never visible incomplete at the destination.
            assert not (models / BIG).exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    recorded = storage.partial_bytes(models, BIG)
    assert recorded is not None and recorded < BIG_SIZE
    assert not (models / BIG).exists()
    repo_hub.faults.clear()
    result = fast_engine().download(request(repo_hub, models))
    assert result.resumed_from == recorded
    assert result.bytes_transferred == BIG_SIZE - recorded
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256


def test_without_ranges_a_broken_transfer_starts_again_from_zero(
    repo_hub: ImitationHub, models: Path
) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", ignore_range=True, drop_after=4 * MiB, times=1)
    repo_hub.faults.add(path=BIG, host="cdn", ignore_range=True, times=None)
    result = fast_engine().download(request(repo_hub, models))
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256


def test_without_ranges_and_always_dropping_it_gives_up(
    repo_hub: ImitationHub, models: Path
) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", ignore_range=True, drop_after=MiB, times=None)
    with pytest.raises(TransientDownloadError, match="does not support ranges"):
        fast_engine(max_retries=2).download(request(repo_hub, models))
    assert not (models / BIG).exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EOPNOTSUPP])
def test_preallocation_failures(
    repo_hub: ImitationHub, models: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def fallocate(fd: int, offset: int, length: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr("worker.engine.disk.os.posix_fallocate", fallocate)
    if code == errno.ENOSPC:
        with pytest.raises(DiskFullError, match="not enough free space"):
            fast_engine().download(request(repo_hub, models))
        assert not cdn_gets(repo_hub)
    else:  # a filesystem without fallocate: the file is sized another way and works
        result = fast_engine().download(request(repo_hub, models))
        assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256


def test_if_range_uses_the_cdns_own_etag(repo_hub: ImitationHub, models: Path) -> None:
    # A real CDN's ETag (an S3 md5) is not the Hub's sha256; If-Range with the sha256
    # would make every ranged answer a full 200.
    repo_hub.cdn_etag = "opaque"
    result = fast_engine(connections=4).download(request(repo_hub, models))
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256
    gets = cdn_gets(repo_hub)
    validators = {r.header("If-Range") for r in gets} - {None}  # type: ignore[attr-defined]
    assert len(validators) == 1 and repo_hub.file_info(REPO, BIG).sha256 not in validators.pop()
    assert all(r.status == 206 for r in gets)  # type: ignore[attr-defined]
