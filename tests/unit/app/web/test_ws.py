"""The relay: one Redis subscription per process, bounded fan-out, resync after outages."""

from __future__ import annotations

import threading
from pathlib import Path

import redis

from app.events import CHANNEL
from app.web.relay import CLIENT_QUEUE, Relay
from tests.support import RedisServer, wait_for


def _publish(port: int, n: int, start: int = 0) -> None:
    client = redis.Redis(port=port)
    for i in range(start, start + n):
        client.publish(CHANNEL, f'{{"n": {i}}}')


def test_one_subscription_fans_out_and_a_slow_client_slows_no_one(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    relay = Relay(server.url)
    try:
        fast, slow, other = relay.add(), relay.add(), relay.add()
        assert relay.connected.wait(5)
        assert redis.Redis(port=server.port).pubsub_numsub(CHANNEL) == [(CHANNEL.encode(), 1)]
        got: list[str] = []
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set() or not fast.events.empty():
                try:
                    got.append(fast.events.get(timeout=0.1))
                except Exception:  # noqa: S112 (queue.Empty while waiting)
                    continue

        reader = threading.Thread(target=drain)
        reader.start()
        total = CLIENT_QUEUE * 2
        _publish(server.port, total)
        wait_for(lambda: len(got) == total, 10, "the fast client to get every event")
        stop.set()
        reader.join(5)
        # The slow client's queue stayed bounded and it was told to resync from a snapshot.
        assert slow.events.qsize() <= CLIENT_QUEUE and slow.resync.is_set()
        assert got == [f'{{"n": {i}}}' for i in range(total)]
        assert relay.dropped > 0 and relay.fanned_out >= total
        relay.remove(other)
        assert relay.client_count() == 2
    finally:
        relay.stop()
        server.stop()


def test_after_a_redis_outage_the_relay_resubscribes_and_clients_resync(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    relay = Relay(server.url)
    try:
        client = relay.add()
        assert relay.connected.wait(5)
        server.stop()
        wait_for(lambda: not relay.connected.is_set(), 10, "the relay to notice the outage")
        server.start()
        wait_for(lambda: relay.connected.is_set(), 15, "the relay to resubscribe")
        assert client.resync.is_set()  # what happened meanwhile comes from the DB
        _publish(server.port, 1, start=7)
        assert client.events.get(timeout=5) == '{"n": 7}'
    finally:
        relay.stop()
        server.stop()
