"""The relay: ONE Redis subscription per web process, fanned out to its WebSocket clients.

Each client gets a bounded queue: a client too slow to keep up loses its backlog and gets a
fresh snapshot instead, so it never slows the others. After a Redis outage the relay
resubscribes and every client is told to resync from the job store (events during the outage
are lost; the DB is the truth).
"""

from __future__ import annotations

import logging
import queue
import threading

from app.dispatch import redis_client
from app.events import CHANNEL

log = logging.getLogger(__name__)

CLIENT_QUEUE = 512


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
