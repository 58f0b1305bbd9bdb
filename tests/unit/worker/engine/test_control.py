"""Control at any speed: a pause or cancel ends the native engine's work within 2 s whatever it
is waiting on, and a connection that only trickles is treated as stalled."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app import storage
from app.digest import sha256_file
from app.errors import CancelledError, PausedError, TransientDownloadError
from tests.hub import GeneratedFile, ImitationHub
from tests.support import wait_for
from tests.unit.worker.engine.support import REPO, request_for
from worker.engine.base import Control, Progress
from worker.engine.native import NativeEngine
from worker.engine.terms import Trickle

MiB = 1 << 20
BIG = "big.gguf"
BIG_SIZE = 24 * MiB
# The promise: a control takes effect within this long, whatever the transfer is doing.
WITHIN_S = 2.0


@pytest.fixture
def repo_hub(hub: ImitationHub) -> ImitationHub:
    hub.add_repo(REPO, {BIG: GeneratedFile(size=BIG_SIZE, seed=31)})
    return hub


def engine(**kw: object) -> NativeEngine:
    """Production waits (the stall timeout, the control interval) unless a test says."""
    defaults: dict[str, object] = {"connections": 2, "min_split": 4 * MiB, "sidecar_interval": 0.1}
    defaults.update(kw)
    return NativeEngine(**defaults)  # type: ignore[arg-type]


class Switch:
    """A control that answers `action` once `arm()` was called; records when."""

    def __init__(self, action: Control) -> None:
        self.action = action
        self.armed_at: float | None = None

    def arm(self) -> None:
        self.armed_at = time.monotonic()

    def __call__(self) -> Control | None:
        return self.action if self.armed_at is not None else None


def run_in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def stop_and_time(
    switch: Switch, thread: threading.Thread, errors: list[BaseException]
) -> tuple[float, BaseException]:
    """Arm the control, then how long the engine took to end, and what it raised."""
    switch.arm()
    thread.join(30)
    assert not thread.is_alive(), "the engine never obeyed"
    assert switch.armed_at is not None and errors, "the engine ended without an error"
    return time.monotonic() - switch.armed_at, errors[0]


@pytest.mark.parametrize("action", [Control.PAUSE, Control.CANCEL])
def test_pause_or_cancel_in_the_middle_of_a_1_kb_per_s_chunk(
    repo_hub: ImitationHub, models: Path, action: Control
) -> None:
    # Every connection trickles at 1 KB/s: a 1 MiB chunk would take 17 minutes to fill.
    repo_hub.faults.add(path=BIG, host="cdn", bandwidth=1000, times=None)
    switch, seen = Switch(action), list[Progress]()
    thread, errors = run_in_thread(
        lambda: engine().download(
            request_for(repo_hub, models, BIG), control=switch, progress=seen.append
        )
    )
    wait_for(lambda: any(p.bytes_done > 0 for p in seen), 20, "the first bytes")
    took, error = stop_and_time(switch, thread, errors)
    assert took < WITHIN_S
    kept = storage.partial_bytes(models, BIG)
    if action is Control.PAUSE:
        assert isinstance(error, PausedError)
        # What arrived is kept for the resume, and the bytes shown moved while it trickled.
        assert kept is not None and 0 < kept < 64 * 1024
    else:
        assert isinstance(error, CancelledError) and kept is None


def test_pause_while_a_resolve_waits_out_retry_after(repo_hub: ImitationHub, models: Path) -> None:
    repo_hub.faults.add(path=BIG, host="hub", method="HEAD", status=429, retry_after=120)
    switch = Switch(Control.PAUSE)
    thread, errors = run_in_thread(
        lambda: engine().download(request_for(repo_hub, models, BIG), control=switch)
    )
    wait_for(lambda: any(r.status == 429 for r in repo_hub.requests), 20, "the fault to be met")
    took, error = stop_and_time(switch, thread, errors)
    assert isinstance(error, PausedError) and took < WITHIN_S


def test_pause_during_a_backoff_sleep(repo_hub: ImitationHub, models: Path) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", status=503, times=None)
    switch = Switch(Control.PAUSE)
    thread, errors = run_in_thread(
        lambda: engine(backoff_base=60, backoff_max=60).download(
            request_for(repo_hub, models, BIG), control=switch
        )
    )
    wait_for(
        lambda: sum(r.status == 503 for r in repo_hub.requests) >= 2, 20, "the fault to be met"
    )
    took, error = stop_and_time(switch, thread, errors)
    assert isinstance(error, PausedError) and took < WITHIN_S


def test_pause_while_a_plain_restart_waits(repo_hub: ImitationHub, models: Path) -> None:
    # No ranges, and the connection drops: the only way on is from byte 0, after a backoff.
    repo_hub.faults.add(path=BIG, host="cdn", ignore_range=True, drop_after=MiB, times=None)
    switch = Switch(Control.PAUSE)
    thread, errors = run_in_thread(
        lambda: engine(backoff_base=60, backoff_max=60).download(
            request_for(repo_hub, models, BIG), control=switch
        )
    )
    wait_for(
        lambda: any(r.status == 200 and r.host == "cdn" for r in repo_hub.requests),
        20,
        "the fault to be met",
    )
    time.sleep(0.3)  # into the backoff
    took, error = stop_and_time(switch, thread, errors)
    assert isinstance(error, PausedError) and took < WITHIN_S


def test_pause_while_the_server_sends_nothing_at_all(repo_hub: ImitationHub, models: Path) -> None:
    # A silent connection is only noticed by the 30 s stall timeout; a pause does not wait.
    repo_hub.faults.add(path=BIG, host="cdn", stall_after=MiB, stall_seconds=120, times=None)
    switch, seen = Switch(Control.PAUSE), list[Progress]()
    thread, errors = run_in_thread(
        lambda: engine().download(
            request_for(repo_hub, models, BIG), control=switch, progress=seen.append
        )
    )
    wait_for(lambda: any(p.bytes_done >= MiB for p in seen), 20, "the fault to be met")
    took, error = stop_and_time(switch, thread, errors)
    assert isinstance(error, PausedError) and took < WITHIN_S


def test_a_trickling_connection_is_reconnected(repo_hub: ImitationHub, models: Path) -> None:
    # The first answer trickles at 2 KB/s; the window notices, a new connection goes at full
    # speed.
    repo_hub.faults.add(path=BIG, host="cdn", bandwidth=2000, times=1)
    result = engine(connections=1, trickle_bytes=32 * 1024, trickle_window=1.0).download(
        request_for(repo_hub, models, BIG)
    )
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256
    gets = [r for r in repo_hub.requests if r.host == "cdn" and r.method == "GET"]
    assert len(gets) >= 2 and gets[1].header("Range") is not None


def test_a_connection_that_always_trickles_uses_up_its_retries(
    repo_hub: ImitationHub, models: Path
) -> None:
    repo_hub.faults.add(path=BIG, host="cdn", bandwidth=4000, times=None)
    seen: list[Progress] = []
    started = time.monotonic()
    with pytest.raises(Trickle, match="brought only") as info:
        engine(
            connections=1,
            trickle_bytes=32 * 1024,
            trickle_window=0.5,
            max_retries=2,
            backoff_base=0.05,
            progress_interval=0.0,
        ).download(request_for(repo_hub, models, BIG), progress=seen.append)
    assert isinstance(info.value, TransientDownloadError)
    assert time.monotonic() - started < 15
    # Meanwhile the speed shown was the trickle's, not a frozen figure.
    speeds = [p.speed for p in seen if p.bytes_done > 0]
    assert speeds and 0 < max(speeds) < 20_000


def test_a_fast_connection_that_turns_into_a_trickle_is_cut(
    repo_hub: ImitationHub, models: Path
) -> None:
    # Fast enough for whole-chunk reads, then 300 B/s in the middle of one: the read that
    # waits longer than the window is cut, and a new connection goes on at full speed.
    repo_hub.faults.add(path=BIG, host="cdn", trickle_after=4 * MiB, trickle_rate=300, times=1)
    started = time.monotonic()
    result = engine(connections=1, trickle_window=1.0).download(request_for(repo_hub, models, BIG))
    assert sha256_file(result.path) == repo_hub.file_info(REPO, BIG).sha256
    assert time.monotonic() - started < 20
    gets = [r for r in repo_hub.requests if r.host == "cdn" and r.method == "GET"]
    assert len(gets) >= 2
