"""Slow links through real worker processes: a pause and a SIGTERM take effect within 2 s on
a connection that delivers a kilobyte a second, and such a connection is not taken for a
working one."""

from __future__ import annotations

import signal
import time

import pytest

from app import jobs, services
from app.models import FileStatus
from tests.hub import GeneratedFile
from tests.stack import Stack
from tests.support import MiB, wait_for

pytestmark = pytest.mark.timeout(120)

WITHIN_S = 2.0


def trickling(stack: Stack) -> jobs.FileSpec:
    """A file whose every CDN answer sends 256 KiB, then 1000 bytes a second."""
    stack.hub.add_repo("org/slow", {"slow.gguf": GeneratedFile(size=24 * MiB, seed=71)})
    stack.hub.faults.add(
        path="slow.gguf", host="cdn", trickle_after=256 * 1024, trickle_rate=1000, times=None
    )
    return jobs.FileSpec("org/slow", "slow.gguf")


def stopped_event_at(stack: Stack, file_id: str, status: str, after: float) -> float | None:
    """When the worker itself said the file stopped (its own events carry seq > 0)."""
    for event in list(stack.collector.events):
        data = event["data"]
        if (
            data.get("fileId") == file_id
            and data.get("seq")
            and data.get("status") == status
            and data["sentAt"] / 1000 >= after
        ):
            return float(data["sentAt"]) / 1000
    return None


def test_a_pause_on_a_1_kb_per_s_connection_takes_effect_within_2_s(stack: Stack) -> None:
    spec = trickling(stack)
    stack.start_worker("w1")
    job = stack.submit(spec)
    file_id = job["files"][0]["fileId"]
    stack.wait_file(file_id, lambda r: r.bytes_done >= 256 * 1024, "the fast head")
    time.sleep(1.0)  # well into the trickle, in the middle of a chunk
    asked = time.time()
    services.control_job(stack.sessions, stack.dispatcher, job["jobId"], "pause")
    stopped = wait_for(
        lambda: stopped_event_at(stack, file_id, "paused", asked), 10, "the worker's paused event"
    )
    print(f"\npause on a 1 KB/s connection took effect in {stopped - asked:.2f} s")
    assert stopped - asked < WITHIN_S
    assert stack.job(job["jobId"])[1][0].status is FileStatus.PAUSED


def test_sigterm_on_a_1_kb_per_s_connection_hands_back_within_2_s(stack: Stack) -> None:
    spec = trickling(stack)
    stack.start_worker("w1", DOWNLOAD_LEASE_SECONDS="60")
    job = stack.submit(spec)
    file_id = job["files"][0]["fileId"]
    stack.wait_file(file_id, lambda r: r.bytes_done >= 256 * 1024, "the fast head")
    time.sleep(1.0)
    asked = time.time()
    stack.workers["w1"].send_signal(signal.SIGTERM)
    stopped = wait_for(
        lambda: stopped_event_at(stack, file_id, "queued", asked), 10, "the hand-back event"
    )
    print(f"\nSIGTERM on a 1 KB/s connection handed the file back in {stopped - asked:.2f} s")
    assert stopped - asked < WITHIN_S
    stack.workers["w1"].wait(30)
    row = stack.job(job["jobId"])[1][0]
    assert row.status is FileStatus.QUEUED and row.worker is None  # for another worker
