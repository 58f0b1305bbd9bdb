"""The connection plan on a fake clock: how the count grows, holds, drops and halves; the
per-host slots; and the pieces' order and steals."""

from __future__ import annotations

import pytest

from worker.engine import adapt
from worker.engine.adapt import ConnectionPlan, HostSlots
from worker.engine.pieces import PieceQueue

MiB = 1 << 20
STEP = adapt.SETTLE_S + adapt.WINDOW_S


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plan(clock: Clock, **kw: object) -> ConnectionPlan:
    args: dict[str, object] = {
        "fixed": None,
        "start": 4,
        "ceiling": 32,
        "remaining": 4096 * MiB,
        "piece_size": 8 * MiB,
    }
    args.update(kw)
    return ConnectionPlan(clock=clock, **args)  # type: ignore[arg-type]


def run_step(
    p: ConnectionPlan, clock: Clock, rate_per_conn: float, moved: int, waited: bool = False
) -> int:
    """Let one settle-and-measure step pass with each connection at `rate_per_conn` (capped at
    a total of 1 GB/s), the connections waiting for the hasher during it if `waited`; returns
    the bytes moved by its end."""
    p.observe(moved, 0)  # settle begins
    clock.now += adapt.SETTLE_S + 1e-6
    p.observe(moved, 0)  # the window opens
    rate = min(1e9, rate_per_conn * p.target)
    clock.now += adapt.WINDOW_S + 1e-6
    moved += int(rate * adapt.WINDOW_S)
    p.observe(moved, 3 if waited else 0)  # judged
    return moved


def test_a_fixed_count_never_moves() -> None:
    clock = Clock()
    p = plan(clock, fixed=8)
    assert p.observe(0) == 8 and not p.adaptive
    clock.now += 60
    assert p.observe(10**9) == 8


def test_a_small_file_gets_no_more_connections_than_pieces() -> None:
    assert plan(Clock(), remaining=20 * MiB).target == 3
    assert plan(Clock(), fixed=16, remaining=20 * MiB).target == 3


def test_the_count_doubles_while_it_pays_then_drops_what_did_not() -> None:
    clock = Clock()
    p = plan(clock)
    moved, seen = 0, [p.target]
    for _ in range(6):
        moved = run_step(p, clock, 50e6, moved)  # 50 MB/s each, 1 GB/s in all at most
        seen.append(p.target)
    # 4, 8, 16 pay (200, 400, 800 MB/s); 32 brings 1 GB/s, 25 % more: it stays, and the
    # ceiling holds it there.
    assert seen[:4] == [4, 8, 16, 32]
    assert p.target == 32


def test_a_step_that_brings_too_little_is_taken_back() -> None:
    clock = Clock()
    p = plan(clock)
    moved = 0
    for _ in range(4):
        moved = run_step(p, clock, 120e6, moved)  # 480 MB/s at 4, 960 at 8, 1 GB/s at 16
    assert p.target == 8  # 16 brought 4 %: dropped again


def test_waiting_for_the_hasher_holds_the_count() -> None:
    clock = Clock()
    p = plan(clock)
    moved = run_step(p, clock, 50e6, 0)  # 4 -> 8
    moved = run_step(p, clock, 50e6, moved, waited=True)  # the hasher held them back
    assert p.target == 8
    clock.now += 1.0
    assert p.observe(moved, 3) == 8  # settled, no further step for a while


def test_a_settled_count_probes_again_later() -> None:
    clock = Clock()
    p = plan(clock)
    moved = 0
    for _ in range(4):
        moved = run_step(p, clock, 120e6, moved)
    assert p.target == 8
    clock.now += adapt.REPROBE_S
    assert p.observe(moved) == 12


def test_a_refusal_halves_the_count_and_lowers_the_ceiling() -> None:
    clock = Clock()
    p = plan(clock, start=16)
    p.throttled()
    assert (p.target, p.ceiling) == (8, 8)
    p.throttled()  # the same burst of refusals from several connections: counted once
    assert p.target == 8
    clock.now += adapt.THROTTLE_QUIET_S
    p.throttled()
    assert (p.target, p.ceiling) == (4, 4)
    clock.now += adapt.REPROBE_S * 3
    assert p.observe(0) <= 4  # never above the lowered ceiling again


def test_host_slots_grant_within_the_limit_and_come_back() -> None:
    slots = HostSlots()
    assert slots.take("cdn:443", 6, 8) == 6
    assert slots.take("cdn:443", 6, 8) == 2  # what is left
    assert slots.take("cdn:443", 1, 8) == 0
    assert slots.take("other:443", 3, 8) == 3  # another host has its own
    slots.give("cdn:443", 8)
    assert slots.used("cdn:443") == 0 and slots.used("other:443") == 3


def test_pieces_go_out_in_file_order_and_a_steal_takes_the_back_half() -> None:
    q = PieceQueue([(0, 10 * MiB), (12 * MiB, 14 * MiB)], 4 * MiB, margin=MiB)
    taken = [q.take() for _ in range(4)]
    assert [(p.start, p.end) for p in taken if p] == [
        (0, 4 * MiB), (4 * MiB, 8 * MiB), (8 * MiB, 10 * MiB), (12 * MiB, 14 * MiB)
    ]  # fmt: skip
    for piece in taken[1:]:
        assert piece is not None
        piece.reach = piece.end - MiB  # nearly done
    first = taken[0]
    assert first is not None
    first.reach = MiB  # its reader has asked for the first MiB: it has the most to come
    stolen = q.take()  # nothing left in order: steal from the piece with most to come
    assert stolen is not None and first.end == stolen.start
    assert first.end >= first.reach + MiB  # the read in flight is never cut
    assert stolen.end == 4 * MiB


def test_a_piece_given_back_is_taken_first() -> None:
    q = PieceQueue([(0, 8 * MiB)], 4 * MiB, margin=MiB)
    a = q.take()
    assert a is not None
    q.put_back(a, 3 * MiB)
    b = q.take()
    assert b is not None and (b.start, b.end) == (3 * MiB, 4 * MiB)


@pytest.mark.parametrize("left", [0, MiB])
def test_no_steal_of_a_piece_nearly_done(left: int) -> None:
    q = PieceQueue([(0, 4 * MiB)], 4 * MiB, margin=MiB)
    p = q.take()
    assert p is not None
    p.reach = 4 * MiB - left - MiB
    assert q.take() is None
