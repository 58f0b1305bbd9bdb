"""The destination lease against a real (private) Redis server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import RedisServer
from worker.lease import DestLease, LeaseLostError


@pytest.fixture
def client(tmp_path: Path) -> Iterator[redis.Redis]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield redis.Redis(port=server.port)
    finally:
        server.stop()


def test_one_holder_at_a_time_and_release(client: redis.Redis) -> None:
    a = DestLease(client, "m.gguf", ttl_seconds=5)
    b = DestLease(client, "m.gguf", ttl_seconds=5)
    other = DestLease(client, "other.gguf", ttl_seconds=5)
    assert a.try_acquire() and not b.try_acquire() and other.try_acquire()
    a.fence()  # still ours
    a.release()
    assert b.try_acquire()
    a.release()  # a no-op: a no longer holds it
    assert client.get(b.key) == b.token.encode()


def test_a_holder_woken_after_expiry_cannot_commit(client: redis.Redis) -> None:
    # The holder stalls (SIGSTOP, a long GC pause) past its lease; another takes over.
    stale = DestLease(client, "m.gguf", ttl_seconds=0.3)
    assert stale.try_acquire()
    time.sleep(0.5)
    fresh = DestLease(client, "m.gguf", ttl_seconds=5)
    assert fresh.try_acquire()
    with pytest.raises(LeaseLostError, match="another worker"):
        stale.fence()
    assert not stale.renew()
    fresh.fence()


def test_a_lease_lost_with_a_redis_restart_is_taken_back(client: redis.Redis) -> None:
    lease = DestLease(client, "m.gguf", ttl_seconds=5)
    assert lease.try_acquire()
    client.flushall()  # what a restart without persistence leaves
    assert lease.renew() and client.pttl(lease.key) > 0
    lease.fence()


def test_fencing_with_redis_unreachable_fails_closed() -> None:
    # Nobody can say whether another worker took the destination over: do not place.
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)
    lease = DestLease(dead, "m.gguf", ttl_seconds=5)
    with pytest.raises(LeaseLostError, match="Redis unreachable") as info:
        lease.fence()
    assert info.value.transient  # the file is handed back, not failed
    lease.held = True
    lease.release()  # best-effort, no error
    assert not lease.held
