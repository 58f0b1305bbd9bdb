"""The range transfer on its own: what its checkpoints claim, and that it ends its threads."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from app.errors import CancelledError, PausedError
from tests.hub import GeneratedFile, ImitationHub
from worker.engine.base import Control, ProgressMeter
from worker.engine.hashing import PrefixHasher
from worker.engine.hub import HubClient
from worker.engine.ranges import RangeSet
from worker.engine.terms import Tuning
from worker.engine.transfer import Transfer

MiB = 1 << 20
REPO, FILE, SIZE = "org/models", "big.gguf", 12 * MiB


@pytest.fixture
def repo_hub(hub: ImitationHub) -> ImitationHub:
    hub.add_repo(REPO, {FILE: GeneratedFile(size=SIZE, seed=7)})
    return hub


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "big.part", os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, SIZE)
    yield fd
    os.close(fd)


def transfer(hub: ImitationHub, fd: int, **kw: object) -> Transfer:
    resolved = HubClient(hub.url).resolve(REPO, FILE)
    tuning = Tuning(
        connections=4,
        min_split=MiB,
        chunk_size=64 * 1024,
        backoff_base=0.05,
        backoff_max=0.5,
        sidecar_interval=0.02,
        control_interval=0.0,
    )
    return Transfer(
        fd,
        RangeSet(),
        resolved=resolved,
        client=HubClient(hub.url),
        hasher=PrefixHasher(fd, SIZE, with_sha1=False),
        meter=ProgressMeter(None),
        control=kw.get("control"),  # type: ignore[arg-type]
        checkpoint=kw.get("checkpoint", lambda done, validator: None),  # type: ignore[arg-type]
        tuning=tuning,
    )


def connection_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("modelpull-")]


def test_every_checkpoint_claims_only_bytes_already_on_disk(
    repo_hub: ImitationHub, fd: int
) -> None:
    expected = repo_hub.file_info(REPO, FILE).disk_path.read_bytes()
    repo_hub.faults.add(path=FILE, host="cdn", bandwidth=8 * MiB, times=None)
    claims: list[tuple[tuple[int, int], ...]] = []

    def checkpoint(done: Iterable[tuple[int, int]], validator: str | None) -> None:
        spans = tuple(done)
        for start, end in spans:  # what a crash right now would resume from
            assert os.pread(fd, end - start, start) == expected[start:end]
        claims.append(spans)

    job = transfer(repo_hub, fd, checkpoint=checkpoint)
    job.run()
    assert len(claims) >= 5 and any(claims)  # it saved several times while bytes arrived
    assert job.done.covers(SIZE) and job.transferred == SIZE
    assert os.pread(fd, SIZE, 0) == expected
    job.hasher.advance(SIZE, budget=SIZE)
    assert job.hasher.sha256() == repo_hub.file_info(REPO, FILE).sha256
    assert not connection_threads()


@pytest.mark.parametrize(
    ("action", "error"), [(Control.PAUSE, PausedError), (Control.CANCEL, CancelledError)]
)
def test_pause_and_cancel_stop_every_thread(
    repo_hub: ImitationHub, fd: int, action: Control, error: type[Exception]
) -> None:
    repo_hub.faults.add(path=FILE, host="cdn", bandwidth=2 * MiB, times=None)
    job = transfer(repo_hub, fd, control=lambda: action if job.done.total >= MiB else None)
    with pytest.raises(error):
        job.run()
    assert MiB <= job.done.total < SIZE
    assert not connection_threads()  # none left writing into a file the caller may delete
