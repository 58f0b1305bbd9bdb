"""The WebSocket relay on a real gunicorn server, fed by a real worker's download."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import simple_websocket

from tests.hub import GeneratedFile
from tests.stack import Stack
from tests.support import MiB, wait_for

pytestmark = pytest.mark.timeout(120)
TOKEN = "ws-test-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def connect(url: str) -> simple_websocket.Client:
    ws = simple_websocket.Client.connect(url.replace("http", "ws", 1) + "/ws", headers=BEARER)
    ws.send(json.dumps({"type": "subscribe", "channel": "download"}))
    return ws


def receive(ws: simple_websocket.Client, timeout: float = 10) -> dict[str, Any]:
    raw = ws.receive(timeout=timeout)
    assert raw is not None, "no message"
    message: dict[str, Any] = json.loads(raw)
    return message


def test_events_of_a_real_download_with_a_reconnect_in_the_middle(stack: Stack) -> None:
    stack.hub.add_repo("org/big", {"big.gguf": GeneratedFile(size=24 * MiB, seed=31)})
    stack.hub.faults.add(path="big.gguf", host="cdn", bandwidth=MiB, times=None)
    stack.start_worker("w1")
    url = stack.start_web(API_TOKEN=TOKEN)
    ws = connect(url)
    try:
        first = receive(ws)
        assert first["type"] == "snapshot" and first["data"]["jobs"] == []
        resp = requests.post(
            f"{url}/api/downloads",
            headers=BEARER,
            json={"repo": "org/big", "files": ["big.gguf"]},
            timeout=10,
        )
        assert resp.status_code == 202
        job_id = resp.json()["jobId"]
        seen: list[dict[str, Any]] = []
        while not any(
            e["type"] == "progress" and e["data"]["bytesDownloaded"] > 4 * MiB for e in seen
        ):
            seen.append(receive(ws))
        assert seen[0]["type"] == "queued" and all(e["data"]["jobId"] == job_id for e in seen)
        # A bad message gets an error frame; the connection lives on.
        ws.send("this is not json")
        while (msg := receive(ws))["type"] != "error":
            pass
        assert msg["error"] == "bad_request"
    finally:
        ws.close()

    ws = connect(url)  # the page reloads or the network blips
    try:
        snapshot = receive(ws)
        assert snapshot["type"] == "snapshot"
        (job,) = snapshot["data"]["jobs"]
        assert job["jobId"] == job_id and job["status"] == "downloading"
        assert job["files"][0]["bytesDownloaded"] > 0
        events = []
        while not (events and events[-1]["data"].get("scope") == "job"):
            events.append(receive(ws, timeout=60))
        assert events[-1]["type"] == "complete"
        progress = [e["data"]["bytesDownloaded"] for e in events if e["type"] == "progress"]
        assert progress == sorted(progress) and progress[0] >= job["files"][0]["bytesDownloaded"]
        ws.send(json.dumps({"type": "ping"}))
        assert receive(ws)["type"] == "pong"
    finally:
        ws.close()
    metrics = requests.get(f"{url}/metrics", headers=BEARER, timeout=10).text
    fanned = next(
        line for line in metrics.splitlines() if line.startswith("modelpull_events_fanned")
    )
    assert float(fanned.split()[-1]) > 5


def _handshake(url: str, headers: dict[str, str]) -> str:
    """A raw WebSocket handshake; returns the status line (before any upgrade)."""
    parts = urlsplit(url)
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {parts.netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in headers.items()),
        "",
        "",
    ]
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as s:
        s.sendall("\r\n".join(lines).encode())
        return s.recv(4096).split(b"\r\n", 1)[0].decode()


def test_the_handshake_is_refused_before_the_upgrade(stack: Stack) -> None:
    url = stack.start_web(API_TOKEN=TOKEN)
    browser = requests.Session()
    assert (
        browser.post(
            f"{url}/login", data={"token": TOKEN}, allow_redirects=False, timeout=10
        ).status_code
        == 302
    )
    cookie = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    assert _handshake(url, {}).endswith("401 UNAUTHORIZED")
    assert _handshake(url, {"Authorization": "Bearer wrong"}).endswith("401 UNAUTHORIZED")
    evil = {"Cookie": cookie, "Origin": "https://evil.example"}
    assert _handshake(url, evil).endswith("403 FORBIDDEN")
    own = {"Cookie": cookie, "Origin": url}
    assert _handshake(url, own).endswith("101 Switching Protocols")
    assert "101" in _handshake(url, BEARER)


def test_oversized_frames_close_the_connection(stack: Stack) -> None:
    url = stack.start_web(API_TOKEN=TOKEN)
    ws = connect(url)
    try:
        assert receive(ws)["type"] == "snapshot"
        ws.send("x" * 100_000)
        deadline = time.monotonic() + 10
        with pytest.raises(simple_websocket.ConnectionClosed):
            while time.monotonic() < deadline:
                ws.receive(timeout=0.5)
                ws.send(json.dumps({"type": "ping"}))
        assert ws.close_reason == 1009  # "message too big"
    finally:
        with contextlib.suppress(simple_websocket.ConnectionClosed):
            ws.close()
    # The server is fine and serves the next client.
    assert wait_for(lambda: requests.get(f"{url}/healthz", timeout=2).ok, 5, "the server")
