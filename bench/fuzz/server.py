"""The gunicorn pass: the web tier as in production (gthread, access log on) on a job store of
its own. Tokens in URLs are refused and not logged, a cross-origin WebSocket upgrade gets 403
on the raw socket before any 101, oversized chunked bodies get 413, and nothing refused
changes the job store or sends anything."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import redis
import requests
from sqlalchemy import inspect

from app import migrate
from app.cli.launch import gunicorn_argv
from app.cli.localstack import free_port
from app.db import make_engine
from app.dispatch import QUEUE
from app.events import CHANNEL
from bench.common import ROOT
from bench.fuzz.tally import Tally
from bench.fuzz.target import Target, store_digest
from tests.support import MiB, wait_for
from tests.webapp import UPGRADE

SUITE = "gunicorn"
# Where a token may hide in a URL; every one is refused on API, page and WebSocket routes.
TOKEN_PARAMS = ["token", "access_token", "api_key", "apiKey", "auth", "X-Amz-Signature"]


class Gunicorn:
    """The web tier as in production (gthread), its access log on, on a job store of its own."""

    def __init__(self, workdir: Path, secret: str, redis_url: str, catalog: Path) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True)
        (workdir / "models").mkdir()
        self.db_url = f"sqlite:///{workdir / 'web.db'}"
        migrate.upgrade(self.db_url)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATA_DIR": str(workdir / "data"),
            "MODELS_DIR": str(workdir / "models"),
            "DATABASE_URL": self.db_url,
            "REDIS_URL": redis_url,
            "MODELS_CATALOG": str(catalog),
            "API_TOKEN": secret,
            "HF_ENDPOINT": "http://127.0.0.1:9",
            # The catalog refresher writes what the Hub said (here: nothing) while the checks
            # run; its rows would look like a refusal that changed the store.
            "CATALOG_REFRESH_SECONDS": "0",
        }
        argv = gunicorn_argv(
            "127.0.0.1",
            self.port,
            threads=8,
            options=[
                "--graceful-timeout", "3",
                "--access-logfile", str(self.logs / "access.log"),
                "--error-logfile", str(self.logs / "error.log"),
                "--log-level", "debug",
            ],
        )  # fmt: skip
        self.out = open(self.logs / "stdout.log", "wb")  # noqa: SIM115 (lives with the process)
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT
        )
        wait_for(self.healthy, 30, "gunicorn to start", every=0.1)

    def healthy(self) -> bool:
        """Whether /healthz answers 200; raises if gunicorn exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {(self.logs / 'stdout.log').read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.out.close()

    def raw(self, request: bytes, *, read: int = 4096) -> bytes:
        """Send bytes on a fresh socket; what came back before the server stopped talking."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(request)
            data = b""
            with contextlib.suppress(TimeoutError, ConnectionError):
                while b"\r\n\r\n" not in data and len(data) < read:
                    chunk = sock.recv(read)
                    if not chunk:
                        break
                    data += chunk
            return data


class Probe:
    """Requests to the server, each judged: the status allowed, no 5xx, no traceback, no
    token in the answer, and a refusal changes no row and sends nothing."""

    def __init__(self, tally: Tally, secret: str, server: Gunicorn, redis_url: str) -> None:
        self.tally = tally
        self.secret = secret
        self.server = server
        self.engine = make_engine(server.db_url)
        self.tables = sorted(inspect(self.engine).get_table_names())
        self.broker = redis.Redis.from_url(redis_url)
        self.pubsub = self.broker.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(CHANNEL)

    def close(self) -> None:
        """Let go of the job store and Redis."""
        self.pubsub.close()
        self.engine.dispose()

    def state(self) -> tuple[str, int]:
        """The job store's digest, and what was sent: queued messages, events, control flags."""
        events = 0
        while self.pubsub.get_message(timeout=0.01):
            events += 1
        sent = int(self.broker.llen(QUEUE)) + events + len(self.broker.keys("modelpull:control:*"))
        return store_digest(self.engine, self.tables), sent

    def judge(
        self, label: str, status: int, body: bytes, allowed: set[int], before: tuple[str, int]
    ) -> None:
        """Count one answer and run the checks on it."""
        after = self.state()
        tally, name = self.tally, SUITE
        where: dict[str, Any] = {"operation": label, "request": label, "status": status}
        tally.request(name, label, status)
        tally.check(
            name,
            "expected_status",
            status in allowed,
            detail=f"expected {sorted(allowed)}: {body[:200]!r}",
            **where,
        )
        tally.check(name, "no_server_error", status < 500, **where)
        traceback = b"Traceback" in body or b'File "' in body
        tally.check(name, "no_traceback", not traceback, **where)
        tally.check(name, "no_secret_in_answer", self.secret.encode() not in body, **where)
        if 400 <= status < 500:
            tally.check(name, "refusal_keeps_db", after[0] == before[0], **where)
            tally.check(name, "refusal_sends_nothing", after[1] == before[1], **where)

    def http(self, method: str, path: str, allowed: set[int], **kwargs: Any) -> None:
        """One request with `requests`, judged."""
        before = self.state()
        resp = requests.request(
            method, self.server.url + path, timeout=30, allow_redirects=False, **kwargs
        )
        label = f"{method} {path.split('?')[0]}"
        self.judge(label, resp.status_code, resp.content, allowed, before)

    def raw(self, label: str, request: bytes, allowed: set[int]) -> None:
        """Bytes on a fresh socket, the answer judged (status 0: no HTTP answer at all)."""
        before = self.state()
        reply = self.server.raw(request)
        status = int(reply.split()[1]) if reply.startswith(b"HTTP/") else 0
        self.judge(label, status, reply, allowed, before)


def run_gunicorn(target: Target, workdir: Path) -> None:
    """One pass against a real gunicorn: tokens in URLs are refused and not logged (access
    log on), the WebSocket refuses a foreign origin on the raw socket before any 101,
    oversized chunked bodies get 413, and nothing refused changes the job store."""
    redis_url = target.redis.url.rsplit("/", 1)[0] + "/1"  # a broker database of its own
    server = Gunicorn(workdir, target.secret, redis_url, target.settings.models_catalog)
    probe = Probe(target.tally, target.secret, server, redis_url)
    try:
        tokens_in_urls(probe)
        oversized_requests(probe)
        websocket_handshakes(probe)
    finally:
        probe.close()
        server.stop()
    check_server_logs(target.tally, target.secret, server.logs)


def tokens_in_urls(probe: Probe) -> None:
    """Tokens in the URL (and in a Referer) are refused on API, page and WebSocket routes."""
    secret, http = probe.secret, probe.http
    for path in [
        "/api/models",
        "/api/models/download/jobs",
        "/api/openapi.json",
        "/metrics",
        "/ws",
    ]:
        for param in TOKEN_PARAMS:
            http("GET", f"{path}?{param}={secret}&limit=5", {401})
    body = {"repo": "org/x", "files": ["a"]}
    http("POST", f"/api/downloads?token={secret}", {401}, json=body)
    http("GET", "/api/models", {401}, headers={"Referer": f"http://127.0.0.1/?token={secret}"})
    http("GET", f"/models?token={secret}", {302})
    http("GET", f"/login?next=/api/models&token={secret}", {200})


def oversized_requests(probe: Probe) -> None:
    """Oversized bodies, declared or chunked, a huge request line, and a body both
    Content-Length and chunked (request smuggling's shape)."""
    bearer = {"Authorization": f"Bearer {probe.secret}"}
    json_headers = {**bearer, "Content-Type": "application/json"}
    big = json.dumps({"repo": "org/name", "files": ["x" * (5 * MiB)]}).encode()
    probe.http("POST", "/api/downloads", {413}, data=big, headers=json_headers)
    chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
    probe.http("POST", "/api/downloads", {400, 413}, data=chunks, headers=json_headers)
    probe.http("POST", "/api/models/pair/download", {413}, data=big, headers=bearer)
    line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    probe.raw("GET (9000-byte request line)", line, {400, 414})
    smuggled = (
        b"POST /api/downloads HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    probe.raw("POST /api/downloads (CL and TE)", smuggled, {400, 401})


def websocket_handshakes(probe: Probe) -> None:
    """The WebSocket on the raw socket: a cookie from a foreign origin (or none) gets 403,
    not 101; the service's own origin gets 101; a token in the URL gets 401."""
    server, secret = probe.server, probe.secret
    login = requests.post(
        f"{server.url}/login", data={"token": secret}, allow_redirects=False, timeout=10
    )
    cookie = login.cookies.get("modelpull_session")
    probe.tally.check(
        SUITE,
        "signed_in",
        bool(cookie),
        operation="POST /login",
        request="POST /login",
        status=login.status_code,
    )
    host = f"Host: 127.0.0.1:{server.port}".encode()
    upgrade = [f"{k}: {v}".encode() for k, v in UPGRADE.items()]
    for origin, allowed in [
        ("https://evil.example", {403}),
        ("null", {403}),
        (f"http://127.0.0.1:{server.port}.evil.example", {403}),
        (None, {403}),
        (f"http://127.0.0.1:{server.port}", {101}),
    ]:
        lines = [
            b"GET /ws HTTP/1.1",
            host,
            *upgrade,
            f"Cookie: modelpull_session={cookie}".encode(),
        ]
        if origin is not None:
            lines.append(f"Origin: {origin}".encode())
        request = b"\r\n".join(lines) + b"\r\n\r\n"
        probe.raw(f"GET /ws (cookie, Origin {origin})", request, allowed)
    for query in [f"access_token={secret}", f"token={secret}"]:
        lines = [f"GET /ws?{query} HTTP/1.1".encode(), host, *upgrade]
        probe.raw("GET /ws (token in the URL)", b"\r\n".join(lines) + b"\r\n\r\n", {401})


def check_server_logs(tally: Tally, secret: str, logs: Path) -> None:
    """Every request above was logged (so the access log was on) and none of it shows the
    token."""
    access = (logs / "access.log").read_text(errors="replace")
    tally.check(
        SUITE,
        "access_log_written",
        access.count("\n") >= 40,
        operation="(gunicorn access log)",
        detail=f"{access.count(chr(10))} lines",
    )
    for log_file in sorted(logs.iterdir()):
        text = log_file.read_text(errors="replace")
        leaked = [line for line in text.splitlines() if secret in line]
        tally.check(
            SUITE,
            "secret_not_logged",
            not leaked,
            operation=f"(gunicorn {log_file.name})",
            request=f"{len(text.splitlines())} lines",
            detail="; ".join(leaked[:3])[:600],
        )
