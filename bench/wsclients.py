"""Many WebSocket clients in one process, for bench.scale: how old is each progress event
when it reaches a client?

    .venv/bin/python -m bench.wsclients URL TOKEN N

Connects N clients to URL/ws with the bearer token, subscribes each to the `download`
channel and prints `ready` once every client has its snapshot. Then it receives until its
standard input closes, and prints one JSON line: the age in ms of every progress event at
arrival (now - the event's `sentAt`, same machine clock), and per client the counts of
events and of jobs seen complete. Its own process, so the clients' parsing does not share a
GIL with the stack being measured.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import simple_websocket


class Client(threading.Thread):
    """One dashboard-like client."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.token = token
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.ages: list[float] = []
        self.events = 0
        self.snapshots = 0
        self.completed_jobs: set[str] = set()
        self.error: str | None = None

    def run(self) -> None:
        try:
            ws = simple_websocket.Client.connect(
                self.url.replace("http", "ws", 1) + "/ws",
                headers={"Authorization": f"Bearer {self.token}"},
            )
        except Exception as exc:
            self.error = f"connect: {exc!r}"
            self.ready.set()
            return
        try:
            ws.send(json.dumps({"type": "subscribe", "channel": "download"}))
            while not self.stop.is_set():
                raw = ws.receive(timeout=0.5)
                if raw is None:
                    continue
                now_ms = time.time_ns() / 1e6
                self._take(json.loads(raw), now_ms)
        except Exception as exc:
            self.error = f"receive: {exc!r}"
        finally:
            self.ready.set()
            ws.close()

    def _take(self, message: dict[str, Any], now_ms: float) -> None:
        kind = message.get("type")
        if kind == "snapshot":
            # The first one, or a resync after this client fell behind: it carries the truth.
            self.snapshots += 1
            for job in message.get("data", {}).get("jobs", []):
                if job.get("status") == "completed":
                    self.completed_jobs.add(job["jobId"])
            self.ready.set()
            return
        self.events += 1
        data = message.get("data", {})
        if kind == "progress" and data.get("scope") != "job" and "sentAt" in data:
            self.ages.append(now_ms - data["sentAt"])
        if kind == "complete" and data.get("scope") == "job":
            self.completed_jobs.add(data["jobId"])


def main() -> int:
    url, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    clients = [Client(url, token) for _ in range(count)]
    for c in clients:
        c.start()
    for c in clients:
        c.ready.wait(60)
    print("ready", flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    for c in clients:
        c.stop.set()
    for c in clients:
        c.join(5)
    result = {
        "ages_ms": [round(a, 2) for c in clients for a in c.ages],
        "events": [c.events for c in clients],
        "completed_jobs": [len(c.completed_jobs) for c in clients],
        "resyncs": sum(max(0, c.snapshots - 1) for c in clients),
        "errors": [c.error for c in clients if c.error],
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
