"""The WebSocket relay, `GET /ws`.

A client sends `{"type": "subscribe", "channel": "download"}` and gets a snapshot of the
active jobs from the job store, then every event of the channel. Each web process holds ONE
Redis subscription (a thread started with the first client) and fans events out to bounded
per-client queues: a client too slow to keep up loses its backlog and gets a fresh snapshot
instead, so it never slows the others. After a Redis outage the relay resubscribes and every
client gets a fresh snapshot (events during the outage are lost; the DB is the truth).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app
from flask_sock import Sock

from app import jobs
from app.events import CHANNEL, job_to_dict
from app.queue import redis_client
from app.web.state import state_of

log = logging.getLogger(__name__)

bp = Blueprint("ws", __name__)
sock = Sock()

CLIENT_QUEUE = 512
SUBSCRIBE_TIMEOUT_S = 30
MAX_MESSAGE = 16 * 1024


class Client:
    """One connected WebSocket: a bounded queue of events and a resync flag."""

    def __init__(self) -> None:
        self.events: queue.Queue[str] = queue.Queue(maxsize=CLIENT_QUEUE)
        self.resync = threading.Event()

    def offer(self, message: str) -> bool:
        """Queue an event; on overflow drop the backlog and ask for a snapshot instead."""
        try:
            self.events.put_nowait(message)
            return True
        except queue.Full:
            while True:
                try:
                    self.events.get_nowait()
                except queue.Empty:
                    break
            self.resync.set()
            return False


class Relay:
    """One Redis subscription per process, fanned out to every client."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._clients: set[Client] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.fanned_out = 0
        self.dropped = 0
        self.connected = threading.Event()

    def client_count(self) -> int:
        """Clients connected now."""
        with self._lock:
            return len(self._clients)

    def add(self) -> Client:
        """Register a client (and start the subscription with the first one)."""
        client = Client()
        with self._lock:
            self._clients.add(client)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="modelpull-relay", daemon=True
                )
                self._thread.start()
        return client

    def remove(self, client: Client) -> None:
        """Forget a client."""
        with self._lock:
            self._clients.discard(client)

    def stop(self) -> None:
        """Stop the subscription thread (tests)."""
        self._stop.set()

    def fan_out(self, message: str) -> None:
        """Give one event to every client."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            if client.offer(message):
                self.fanned_out += 1
            else:
                self.dropped += 1

    def _resync_all(self) -> None:
        with self._lock:
            for client in self._clients:
                client.resync.set()

    def _run(self) -> None:
        backoff = 0.2
        first = True
        while not self._stop.is_set():
            try:
                pubsub = redis_client(self.redis_url).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self.connected.set()
                if not first:
                    self._resync_all()  # whatever happened meanwhile comes from the DB
                first, backoff = False, 0.2
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self.fan_out(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:
                self.connected.clear()
                log.warning("relay lost Redis (%s); reconnecting", type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                first = False


def _snapshot() -> str:
    state = state_of(current_app)
    with state.sessions() as session:
        data = [job_to_dict(j) for j in jobs.active_jobs(session)]
    return json.dumps({"channel": CHANNEL, "type": "snapshot", "data": {"jobs": data}})


def _error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "error": code, "message": message})


def _parse(raw: Any) -> tuple[dict[str, Any] | None, str | None]:
    if not isinstance(raw, str):
        return None, "messages must be JSON text"
    try:
        msg = json.loads(raw)
    except ValueError:
        return None, "messages must be JSON"
    if not isinstance(msg, dict):
        return None, "a message must be a JSON object"
    return msg, None


@sock.route("/ws", bp=bp)
def socket(ws: Any) -> None:
    """Subscribe, snapshot, then events; bad messages get an error frame."""
    relay = state_of(current_app).relay
    snapshot: Callable[[], str] = _snapshot
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
    while True:
        raw = ws.receive(timeout=max(0.1, deadline - time.monotonic()))
        if raw is None:
            ws.close(reason=1008, message="subscribe first")
            return
        msg, problem = _parse(raw)
        if msg is not None and msg.get("type") == "subscribe" and msg.get("channel") == CHANNEL:
            break
        ws.send(_error("bad_request", problem or 'send {"type":"subscribe","channel":"download"}'))
    client = relay.add()
    # Subscribed before the snapshot is read: an event may repeat what the snapshot says,
    # but none falls in a gap between the two.
    relay.connected.wait(2)
    try:
        ws.send(snapshot())
        while True:
            if client.resync.is_set():
                client.resync.clear()
                ws.send(snapshot())
            with contextlib.suppress(queue.Empty):
                ws.send(client.events.get(timeout=0.25))
            raw = ws.receive(timeout=0)
            if raw is None:
                continue
            msg, problem = _parse(raw)
            if msg is None:
                ws.send(_error("bad_request", problem or "bad message"))
            elif msg.get("type") == "subscribe" and msg.get("channel") == CHANNEL:
                ws.send(snapshot())
            elif msg.get("type") == "ping":
                ws.send(json.dumps({"type": "pong"}))
            else:
                ws.send(_error("bad_request", f"unknown message type {msg.get('type')!r}"))
    finally:
        relay.remove(client)


def init_app(app: Any) -> None:
    """Bind flask-sock with a frame size limit and a ping interval, and the route."""
    app.config.setdefault(
        "SOCK_SERVER_OPTIONS", {"max_message_size": MAX_MESSAGE, "ping_interval": 25}
    )
    sock.init_app(app)
    app.register_blueprint(bp)
