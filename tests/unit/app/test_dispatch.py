"""Sending work to the workers: the task messages in the broker and `published_at` in the
job store, the pause/cancel flags in Redis, the state events, and what each does when the
broker or Redis is away. A private Redis (broker, flags, channel) and the real job store."""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from app import jobs
from app.cli.localstack import free_port
from app.dispatch import CONTROL_TTL_S, Dispatcher, control_key, producer
from app.models import utcnow
from app.settings import Settings
from tests.stack import EventCollector
from tests.support import RedisServer, wait_for

pytestmark = pytest.mark.timeout(60)

# What the workers consume (worker/tasks.py, worker/celery_app.py): written out, not imported,
# so a change on one side only is caught here.
TASK_NAME = "worker.tasks.download_file"
QUEUE = "downloads"


def settings_for(settings: Settings, redis_url: str, **overrides: Any) -> Settings:
    """The test's settings on another Redis (built anew: the broker URL follows REDIS_URL)."""
    return Settings(
        models_dir=settings.models_dir,
        data_dir=settings.data_dir,
        redis_url=redis_url,
        **overrides,
    )


def refused_url() -> str:
    """A Redis URL where nothing listens: every connection is refused at once."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def dispatcher(settings: Settings, redis_server: RedisServer) -> Dispatcher:
    return Dispatcher(settings_for(settings, redis_server.url))


def broker(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


def queued_messages(redis_server: RedisServer) -> list[dict[str, Any]]:
    """The task messages waiting in the `downloads` queue, oldest first."""
    raw = broker(redis_server).lrange(QUEUE, 0, -1)
    return [json.loads(m) for m in reversed(raw)]


def task_call(message: dict[str, Any]) -> tuple[str, list[Any], dict[str, Any]]:
    """(task name, args, kwargs) of a kombu message (JSON body, base64 on the wire)."""
    assert message["content-type"] == "application/json"
    args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return message["headers"]["task"], args, kwargs


def new_files(factory: sessionmaker[Session], *names: str) -> list[str]:
    with factory.begin() as s:
        job = jobs.create_job(s, [jobs.FileSpec("org/r", n) for n in names], method="native")
        return [f.id for f in job.files]


def published_at(factory: sessionmaker[Session], file_id: str) -> datetime | None:
    with factory() as s:
        return jobs.get_file(s, file_id).published_at


# --- enqueue -------------------------------------------------------------------------------


def test_enqueue_sends_one_download_task_per_file_and_marks_them_published(
    dispatcher: Dispatcher, redis_server: RedisServer, session_factory: sessionmaker[Session]
) -> None:
    ids = new_files(session_factory, "a.bin", "b.bin", "c.bin")
    before = utcnow()
    assert dispatcher.enqueue(session_factory, ids) == ids
    after = utcnow()

    messages = queued_messages(redis_server)
    assert [task_call(m) for m in messages] == [(TASK_NAME, [i], {}) for i in ids]
    for message in messages:
        assert message["properties"]["delivery_info"]["routing_key"] == QUEUE
        assert message["headers"]["eta"] is None  # due at once
    for file_id in ids:
        stamp = published_at(session_factory, file_id)
        assert stamp is not None and before - timedelta(seconds=1) <= stamp <= after


def test_a_delayed_send_counts_as_published_when_it_is_due(
    dispatcher: Dispatcher, redis_server: RedisServer, session_factory: sessionmaker[Session]
) -> None:
    [file_id] = new_files(session_factory, "a.bin")
    before = utcnow()
    assert dispatcher.enqueue(session_factory, [file_id], countdown=120) == [file_id]
    after = utcnow()

    [message] = queued_messages(redis_server)
    assert task_call(message) == (TASK_NAME, [file_id], {})
    eta = datetime.fromisoformat(message["headers"]["eta"])
    assert before + timedelta(seconds=119) <= eta <= after + timedelta(seconds=121)
    # Marked as sent two minutes from now, so the sweeper does not send it again early.
    stamp = published_at(session_factory, file_id)
    assert stamp is not None
    assert before + timedelta(seconds=119) <= stamp <= after + timedelta(seconds=121)


def test_with_the_broker_unreachable_nothing_is_sent_or_marked_and_nothing_raises(
    settings: Settings,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = new_files(session_factory, "a.bin", "b.bin")
    down = Dispatcher(settings_for(settings, refused_url()))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="app.dispatch"):
        assert down.enqueue(session_factory, ids) == []
    # A request that enqueues must not hang on a dead broker.
    assert time.monotonic() - started < 15
    assert all(published_at(session_factory, i) is None for i in ids)
    # Left for the sweeper, which sends what has no published_at.
    with session_factory() as s:
        assert set(jobs.unpublished_files(s)) == set(ids)
    assert f"broker unavailable, {ids[0]} left for the sweeper" in caplog.text


class FakeFlakyBroker:
    """A producer whose broker goes away after `ok` messages (the rest raise)."""

    def __init__(self, real: Celery, ok: int) -> None:
        self.real = real
        self.ok = ok
        self.calls = 0

    def send_task(self, name: str, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls > self.ok:
            raise ConnectionError("broker went away")
        return self.real.send_task(name, **kwargs)


def test_only_the_messages_that_reached_the_broker_are_marked(
    settings: Settings, redis_server: RedisServer, session_factory: sessionmaker[Session]
) -> None:
    ids = new_files(session_factory, "a.bin", "b.bin", "c.bin")
    flaky = FakeFlakyBroker(producer(redis_server.url), ok=1)
    dispatcher = Dispatcher(settings_for(settings, redis_server.url), celery=flaky)
    assert dispatcher.enqueue(session_factory, ids) == ids[:1]
    # The first failure stops the loop: the broker is down for the rest too.
    assert flaky.calls == 2
    assert [task_call(m)[1] for m in queued_messages(redis_server)] == [ids[:1]]
    assert published_at(session_factory, ids[0]) is not None
    assert published_at(session_factory, ids[1]) is None
    assert published_at(session_factory, ids[2]) is None


def test_enqueue_of_nothing_sends_nothing(
    dispatcher: Dispatcher, redis_server: RedisServer, session_factory: sessionmaker[Session]
) -> None:
    assert dispatcher.enqueue(session_factory, []) == []
    assert queued_messages(redis_server) == []


# --- control flags -------------------------------------------------------------------------


def test_control_key_names_the_file() -> None:
    assert control_key("0123abcd") == "modelpull:control:0123abcd"


@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_set_control_raises_a_flag_per_file_that_expires(
    dispatcher: Dispatcher, redis_server: RedisServer, action: str
) -> None:
    dispatcher.set_control(["f1", "f2"], action)
    client = broker(redis_server)
    for file_id in ("f1", "f2"):
        key = control_key(file_id)
        assert client.get(key) == action.encode()
        # Flags of files nobody downloads any more must not stay forever.
        assert CONTROL_TTL_S - 60 <= client.ttl(key) <= CONTROL_TTL_S
    assert client.get(control_key("f3")) is None


def test_clear_control_drops_the_flags_of_the_named_files_only(
    dispatcher: Dispatcher, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher.set_control(["f1", "f2", "f3"], "pause")
    dispatcher.clear_control(["f1", "f2"])
    client = broker(redis_server)
    assert client.get(control_key("f1")) is None and client.get(control_key("f2")) is None
    assert client.get(control_key("f3")) == b"pause"
    with caplog.at_level(logging.WARNING, logger="app.dispatch"):
        dispatcher.clear_control([])  # nothing to clear is not an error
    assert client.get(control_key("f3")) == b"pause"
    assert caplog.records == []


def test_flags_with_redis_down_are_given_up_with_a_warning(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    down = Dispatcher(settings_for(settings, refused_url()))
    with caplog.at_level(logging.WARNING, logger="app.dispatch"):
        down.set_control(["f1"], "cancel")
        down.clear_control(["f1"])
    assert "could not raise control flags" in caplog.text
    assert "could not clear control flags" in caplog.text


# --- events --------------------------------------------------------------------------------


def event(n: int) -> dict[str, Any]:
    return {"channel": "download", "type": "progress", "data": {"jobId": "j", "seq": n}}


def test_publish_sends_the_events_on_the_download_channel(
    dispatcher: Dispatcher, collector: EventCollector
) -> None:
    dispatcher.publish([event(1), event(2)])
    wait_for(lambda: len(collector.events) >= 2, 10, "two events")
    assert collector.events == [event(1), event(2)]


def test_publish_sends_nothing_when_websocket_progress_is_off(
    settings: Settings, redis_server: RedisServer, dispatcher: Dispatcher, collector: EventCollector
) -> None:
    off = Dispatcher(settings_for(settings, redis_server.url, download_websocket_progress=False))
    off.publish([event(1)])
    # A marker sent afterwards by one that is on: whatever `off` sent would arrive first.
    dispatcher.publish([event(2)])
    wait_for(lambda: collector.events, 10, "the marker event")
    assert collector.events == [event(2)]


def test_publish_with_redis_down_never_raises(settings: Settings) -> None:
    down = Dispatcher(settings_for(settings, refused_url()))
    down.publish([event(1)])  # the DB is the truth: an event lost is not an error
