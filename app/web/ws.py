"""The WebSocket endpoint, `GET /ws`.

A client sends `{"type": "subscribe", "channel": "download"}` and gets a snapshot of the
active jobs from the job store, then every event of the channel, as the process's relay
(`app.web.relay`) hands them over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app
from flask_sock import Sock

from app import jobs
from app.db import db_now
from app.events import CHANNEL, job_to_dict
from app.web.state import state_of

log = logging.getLogger(__name__)

bp = Blueprint("ws", __name__)
sock = Sock()

SUBSCRIBE_TIMEOUT_S = 30
MAX_MESSAGE = 16 * 1024


def _snapshot() -> str:
    state = state_of(current_app)
    with state.sessions() as session:
        now = db_now(session)  # one clock for the snapshot, not one query per job
        data = [job_to_dict(j, now=now) for j in jobs.active_jobs(session)]
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
