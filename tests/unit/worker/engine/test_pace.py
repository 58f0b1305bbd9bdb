"""A transfer against the imitation Hub's sockets: pieces in order so the sha256 keeps pace,
connections reused from piece to piece, the last piece shared, and a connection count that
adapts to the server (more behind a per-connection cap, fewer on 503, never over the host's
limit)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.hub import GeneratedFile, ImitationHub
from worker.engine.adapt import HOSTS
from worker.engine.base import Progress, ProgressMeter
from worker.engine.hashing import PrefixHasher
from worker.engine.hub import HubClient
from worker.engine.ranges import RangeSet
from worker.engine.terms import Tuning
from worker.engine.transfer import Transfer

MiB = 1 << 20
REPO, FILE, SIZE = "org/pace", "w.gguf", 24 * MiB


@pytest.fixture
def repo_hub(hub: ImitationHub) -> ImitationHub:
    hub.add_repo(REPO, {FILE: GeneratedFile(size=SIZE, seed=11)})
    return hub


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    """The partial file, open and sized."""
    fd = open_part(tmp_path / "w.part")
    yield fd
    os.close(fd)


def open_part(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, SIZE)
    return fd


class SlowHasher(PrefixHasher):
    """A hasher on a busy machine: about 25 MB/s, much slower than loopback transfers."""

    delay = 0.01

    def advance(self, upto: int, budget: int = 64 * MiB) -> None:
        time.sleep(self.delay)
        super().advance(upto, budget=min(budget, 256 * 1024))


def make(
    hub: ImitationHub,
    fd: int,
    progress: Any = None,
    hasher: type[PrefixHasher] = PrefixHasher,
    done: RangeSet | None = None,
    **tuning: Any,
) -> Transfer:
    resolved = HubClient(hub.url).resolve(REPO, FILE)
    settings: dict[str, Any] = {
        "connections": 4,
        "min_split": MiB,
        "chunk_size": 64 * 1024,
        "backoff_base": 0.05,
        "backoff_max": 0.2,
        "sidecar_interval": 0.05,
        "control_interval": 0.0,
    }
    settings.update(tuning)
    return Transfer(
        fd,
        done or RangeSet(),
        resolved=resolved,
        client=HubClient(hub.url),
        hasher=hasher(fd, SIZE, with_sha1=False),
        meter=ProgressMeter(progress, interval=0.0),
        control=None,
        checkpoint=lambda done, validator: None,
        tuning=Tuning(**settings),
    )


def cdn_gets(hub: ImitationHub) -> list[Any]:
    return [r for r in hub.requests if r.host == "cdn" and r.method == "GET"]


def range_starts(hub: ImitationHub) -> list[int]:
    """Where each ranged GET to the CDN began, in the order they came."""
    return [int(r.headers["range"][6:].split("-")[0]) for r in cdn_gets(hub)]


def finish(job: Transfer, hub: ImitationHub) -> None:
    """Hash what is left and check the bytes are the Hub's."""
    while job.hasher.pos < SIZE:
        job.hasher.advance(SIZE, budget=SIZE)
    assert job.hasher.sha256() == hub.file_info(REPO, FILE).sha256


def test_the_hasher_keeps_pace_so_little_is_left_to_hash_at_the_end(
    repo_hub: ImitationHub, fd: int
) -> None:
    job = make(repo_hub, fd, hasher=SlowHasher, hash_lag=2 * MiB)
    job.run()
    # Pieces go out in order and connections wait while the hasher is more than
    # `hash_lag` behind: when the last byte lands, at most that lag and the pieces in
    # flight are left to hash, not the file.
    assert SIZE - job.hasher.pos <= 2 * MiB + 4 * MiB
    starts = range_starts(repo_hub)
    # Taken in file order: the first four requests are the first four pieces.
    assert sorted(starts[:4]) == [0, MiB, 2 * MiB, 3 * MiB]
    finish(job, repo_hub)


def test_connections_are_reused_from_piece_to_piece(repo_hub: ImitationHub, fd: int) -> None:
    job = make(repo_hub, fd)
    job.run()
    gets = cdn_gets(repo_hub)
    assert len(gets) >= SIZE // MiB  # one request per piece
    # Each connection keeps its TCP connection: a few client ports, not one per piece.
    assert len({r.client for r in gets}) <= 4
    finish(job, repo_hub)


def test_an_idle_connection_takes_half_of_a_slow_piece(repo_hub: ImitationHub, fd: int) -> None:
    # The first piece asked for comes at 256 KB/s: 8 s alone for 2 MiB.
    repo_hub.faults.add(path=FILE, host="cdn", method="GET", bandwidth=256_000, times=1)
    job = make(repo_hub, fd, min_split=2 * MiB)
    job.run()
    starts = range_starts(repo_hub)
    # Another connection asked for the back of a piece: a start inside a piece.
    assert any(s % (2 * MiB) for s in starts)
    finish(job, repo_hub)


def test_behind_a_per_connection_cap_the_count_grows(repo_hub: ImitationHub, fd: int) -> None:
    repo_hub.bandwidth = 3 * MiB  # every response, as a CDN that caps each connection
    seen: list[int] = []

    def progress(p: Progress) -> None:
        if p.connections is not None:
            seen.append(p.connections)

    job = make(repo_hub, fd, progress, connections=None, start_connections=2)
    job.run()
    # It started with two and added more while the rate grew; the progress data said so.
    assert seen[0] == 2 and max(seen) >= 4
    assert job.plan.most >= 4
    finish(job, repo_hub)


def test_a_503_halves_the_connections(repo_hub: ImitationHub, fd: int) -> None:
    repo_hub.faults.add(path=FILE, host="cdn", method="GET", status=503, times=2)
    job = make(repo_hub, fd, connections=None, start_connections=8, max_connections=8)
    job.run()
    # The server said "slow down": half as many from then on, never more again.
    assert job.plan.ceiling <= 4 and job.plan.target <= 4
    finish(job, repo_hub)


def test_transfers_to_one_host_share_its_connection_limit(
    repo_hub: ImitationHub, tmp_path: Path
) -> None:
    repo_hub.bandwidth = 4 * MiB
    fds = [open_part(tmp_path / f"{i}.part") for i in range(2)]
    jobs = [make(repo_hub, fd, connections=3, host_connections=4) for fd in fds]
    host = urlsplit(jobs[0].resolved.url).netloc.lower()
    most, done = 0, threading.Event()

    def watch() -> None:
        nonlocal most
        while not done.wait(0.002):
            most = max(most, HOSTS.used(host))

    watcher = threading.Thread(target=watch)
    watcher.start()
    runners = [threading.Thread(target=job.run) for job in jobs]
    try:
        for t in runners:
            t.start()
        for t in runners:
            t.join(60)
    finally:
        done.set()
        watcher.join()
    try:
        # Six wanted, four allowed: the second file ran with what the first left it.
        assert 3 <= most <= 4
        assert HOSTS.used(host) == 0  # every slot given back
        for job in jobs:
            assert job.done.covers(SIZE)
            finish(job, repo_hub)
    finally:
        for fd in fds:
            os.close(fd)


def test_a_resume_does_not_idle_the_network_while_its_kept_bytes_are_hashed(
    repo_hub: ImitationHub, fd: int
) -> None:
    expected = repo_hub.file_info(REPO, FILE).disk_path.read_bytes()
    try:
        os.pwrite(fd, expected[: 16 * MiB], 0)  # a resume: the first 16 MiB are kept
        SlowHasher.delay = 0.05  # 5 MB/s: 3 s to re-read the kept bytes, the rest takes less
        job = make(repo_hub, fd, hasher=SlowHasher, hash_lag=MiB, done=RangeSet([(0, 16 * MiB)]))
        job.run()
        # The missing 8 MiB came while the slow hasher was still re-reading the kept bytes.
        assert job.hasher.pos < 16 * MiB - MiB
        assert job.transferred == 8 * MiB
        SlowHasher.delay = 0.0
        finish(job, repo_hub)
    finally:
        SlowHasher.delay = 0.01


def test_a_connection_that_cannot_start_fails_the_transfer_instead_of_hanging(
    repo_hub: ImitationHub, fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:

    def no_descriptor(fd: int) -> int:
        raise OSError(24, "Too many open files")

    job = make(repo_hub, fd)
    host = urlsplit(job.resolved.url).netloc.lower()
    monkeypatch.setattr("worker.engine.transfer.os.dup", no_descriptor)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            job.run()
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(20)
    assert not runner.is_alive(), "the transfer hung"
    assert errors and "Too many open files" in str(errors[0])
    assert HOSTS.used(host) == 0  # the slots came back
