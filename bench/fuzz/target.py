"""The app under fuzzing: `create_app` on a fresh SQLite job store, a private Redis as the
broker and a dispatcher that counts what it sends, behind an observer that sees every request
any suite makes and runs the checks every answer must pass:

- no_server_error: no 5xx;
- no_traceback: no "Traceback" or 'File "' in the body;
- error_body_json: a 4xx/5xx body is JSON `{"error": str, "message": str}` (the HTML
  sign-in form's own 401 aside);
- refusal_keeps_db: a 4xx leaves every row of every table as it was (digest before/after);
- refusal_sends_nothing: a 4xx enqueues nothing, raises no control flag, publishes no event,
  and the broker's queue does not grow;
- no_secret_in_answer: the API token (a random canary) never appears in an answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, inspect, select, update

from app import create_app, jobs, migrate
from app.db import make_engine, make_session_factory
from app.dispatch import QUEUE, Dispatcher
from app.models import DownloadFile, DownloadJob, FileStatus
from app.settings import Settings
from bench.fuzz.tally import Tally
from tests.hub.samples import add_sample_repos
from tests.hub.server import ImitationHub
from tests.support import RedisServer
from tests.webapp import web_settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

# What `new_job` moves a fresh job to, by name.
JOB_STATES = {
    "queued": None,
    "paused": FileStatus.PAUSED,
    "failed": FileStatus.FAILED,
    "completed": FileStatus.COMPLETED,
    "cancelled": FileStatus.CANCELLED,
}


class CountingDispatcher(Dispatcher):
    """The real dispatcher (to the private Redis), counting everything it is asked to send."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sent: Counter[str] = Counter()

    def enqueue(self, factory: Any, file_ids: Iterable[str], *, countdown: float = 0) -> list[str]:
        ids = list(file_ids)
        self.sent["enqueue"] += len(ids)
        return super().enqueue(factory, ids, countdown=countdown)

    def set_control(self, file_ids: Iterable[str], action: str) -> None:
        ids = list(file_ids)
        self.sent["set_control"] += len(ids)
        super().set_control(ids, action)

    def clear_control(self, file_ids: Iterable[str]) -> None:
        ids = list(file_ids)
        self.sent["clear_control"] += len(ids)
        super().clear_control(ids)

    def publish(self, events: Iterable[dict[str, Any]]) -> None:
        batch = list(events)
        self.sent["publish"] += len(batch)
        super().publish(batch)

    def total(self) -> int:
        """Everything sent so far."""
        return sum(self.sent.values())


@dataclass
class Exchange:
    """One request the app answered, with what it changed."""

    suite: str
    operation: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int
    response_headers: list[tuple[str, str]]
    response_body: bytes
    db_changed: bool
    sent: int

    def describe(self) -> str:
        """The request, enough to replay it."""
        shown = {
            k: (v if len(v) <= 80 else f"{v[:80]}…({len(v)} chars)")
            for k, v in self.headers.items()
        }
        body = self.body[:200].decode("utf-8", "backslashreplace")
        more = f"…({len(self.body)} bytes)" if len(self.body) > 200 else ""
        query = f"?{self.query[:300]}" if self.query else ""
        return f"{self.method} {self.path[:300]!r}{query} headers={shown} body={body!r}{more}"

    def json(self) -> Any:
        """The answer's JSON, or None."""
        try:
            return json.loads(self.response_body)
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        """A response header."""
        return next((v for k, v in self.response_headers if k.lower() == name.lower()), None)


def openapi_path(rule: str) -> str:
    """Werkzeug's `/a/<x>` as OpenAPI's `/a/{x}`."""
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def store_digest(engine: Engine, tables: Sequence[str]) -> str:
    """A digest of every row of every table: the same before and after means nothing changed."""
    h = hashlib.sha256()
    with engine.connect() as conn:
        for name in tables:
            rows = conn.exec_driver_sql(f'SELECT * FROM "{name}"').fetchall()  # noqa: S608
            h.update(name.encode())
            for line in sorted(repr(tuple(r)) for r in rows):
                h.update(line.encode())
    return h.hexdigest()


class Target:
    """The app on its own job store, Redis and folders, and the observer in front of it."""

    REQUEST_HEADERS = (
        "Authorization",
        "Cookie",
        "Origin",
        "Content-Type",
        "X-CSRF-Token",
        "Upgrade",
        "Referer",
        "X-API-Key",
    )

    def __init__(self, workdir: Path, secret: str, tally: Tally) -> None:
        self.workdir = workdir
        self.secret = secret
        self.tally = tally
        self.suite = "setup"
        self.models_dir = workdir / "models"
        self.models_dir.mkdir(parents=True)
        self.redis = RedisServer(workdir / "redis")
        self.redis.start()
        db_url = f"sqlite:///{workdir / 'jobs.db'}"
        migrate.upgrade(db_url)
        # A Hub on loopback for the repo picker and the sizes of ad-hoc jobs: the sample
        # repos, so a fuzzed repo id is either one of them or unknown (404), never a 5xx.
        self.hub = ImitationHub(data_dir=workdir / "hub", cache_dir=workdir / "hub-cache")
        self.hub.start()
        add_sample_repos(self.hub)
        # The tests' small catalog; the random canary is the API token.
        self.settings = dataclasses.replace(
            web_settings(workdir, database_url=db_url, redis_url=self.redis.url, api_token=secret),
            hf_endpoint=self.hub.url,
        )
        self.dispatcher = CountingDispatcher(self.settings)
        self.app: Flask = create_app(self.settings, dispatcher=self.dispatcher)
        self.app.wsgi_app = Observer(self.app.wsgi_app, self)  # type: ignore[method-assign]
        self.engine: Engine = make_engine(db_url)
        self.sessions = make_session_factory(self.engine)
        self.tables = sorted(inspect(self.engine).get_table_names())
        self.broker = redis.Redis.from_url(self.redis.url)
        self.bearer = {"Authorization": f"Bearer {secret}"}
        self.client = self.app.test_client()
        self.last: Exchange | None = None
        self.entered = False  # the request reached the observer (so the app)
        self.unsendable = 0  # requests the test client itself would not build

    def close(self) -> None:
        """Stop what the target started."""
        self.app.extensions["modelpull"].relay.stop()
        self.engine.dispose()
        self.redis.stop()
        self.hub.stop()

    def job_with_prefix(self, text: str) -> bool:
        """Whether `text` is a unique prefix of a job's id (4 hex digits or more): a name of
        that job, as much as its whole id."""
        if not re.fullmatch(r"[0-9a-f]{4,32}", text, re.ASCII):
            return False
        with self.sessions() as session:
            found = session.scalars(
                select(DownloadJob.id).where(DownloadJob.id.startswith(text)).limit(2)
            ).all()
        return len(found) == 1

    def digest(self) -> str:
        """A digest of every row of every table."""
        return store_digest(self.engine, self.tables)

    def sent(self) -> int:
        """What has reached the broker and Redis so far."""
        return self.dispatcher.total() + int(self.broker.llen(QUEUE))

    def operation(self, method: str, path: str) -> str:
        """The OpenAPI label of a request ("POST /api/downloads"), or what routing says."""
        adapter = self.app.url_map.bind("localhost")
        try:
            rule, _ = adapter.match(path, method, return_rule=True)
        except Exception as exc:
            return f"{method} ({type(exc).__name__})"
        return f"{method} {openapi_path(rule.rule)}"

    def record(self, exchange: Exchange) -> None:
        """Count the request and run the checks every answer must pass."""
        self.last = exchange
        t, suite, op, status = self.tally, exchange.suite, exchange.operation, exchange.status
        t.request(suite, op, status)
        where: dict[str, Any] = {"operation": op, "request": exchange.describe(), "status": status}
        body = exchange.response_body
        shown = body[:300].decode(errors="replace")
        t.check(suite, "no_server_error", status < 500, detail="5xx answer", **where)
        traceback = b"Traceback" in body or b'File "' in body
        t.check(suite, "no_traceback", not traceback, detail=shown, **where)
        login_form = exchange.path == "/login" and exchange.method == "POST" and status == 401
        if status >= 400 and exchange.method != "HEAD" and not login_form:
            data = exchange.json()
            ok = (
                (exchange.header("Content-Type") or "").startswith("application/json")
                and isinstance(data, dict)
                and isinstance(data.get("error"), str)
                and isinstance(data.get("message"), str)
            )
            t.check(suite, "error_body_json", ok, detail=shown, **where)
        if 400 <= status < 500:
            t.check(
                suite, "refusal_keeps_db", not exchange.db_changed, detail="rows changed", **where
            )
            t.check(
                suite,
                "refusal_sends_nothing",
                exchange.sent == 0,
                detail=f"{exchange.sent} messages/flags/events sent",
                **where,
            )
        leaked = self.secret.encode() in body or any(
            self.secret in v for _, v in exchange.response_headers
        )
        t.check(
            suite, "no_secret_in_answer", not leaked, detail="the token is in the answer", **where
        )

    # --- sending ---------------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        *,
        client: FlaskClient | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        data: bytes | str | dict[str, str] | None = None,
        query: str | None = None,
        content_type: str | None = None,
    ) -> Exchange | None:
        """One request through the observer; None when the test client cannot even send it."""
        kwargs: dict[str, Any] = {"method": method, "headers": headers or {}}
        if json_body is not None:
            kwargs["json"] = json_body
        if data is not None:
            kwargs["data"] = data
        if content_type is not None:
            kwargs["content_type"] = content_type
        if query:
            kwargs["query_string"] = query
        self.last, self.entered = None, False
        try:
            (client or self.client).open(path, **kwargs)
        except Exception as exc:
            if self.entered:  # out of the app: a server would answer 500 or drop the line
                self.tally.check(self.suite, "no_server_error", False,
                                 operation=self.operation(method, path),
                                 request=f"{method} {path!r} query={query!r} headers={headers}",
                                 detail=f"exception escaped the app: {exc!r}")  # fmt: skip
                return None
            # Werkzeug's test client refuses some requests no server would get either (a NUL
            # or newline in a header); that is not the app's doing.
            log.debug("test client refused %s %r: %s", method, path, exc)
            self.unsendable += 1
            return None
        return self.last

    def expect(self, exchange: Exchange | None, name: str, ok: bool, detail: str = "") -> None:
        """A suite's own check on the last exchange."""
        if exchange is None:
            return
        self.tally.check(
            exchange.suite,
            name,
            ok,
            operation=exchange.operation,
            request=exchange.describe(),
            status=exchange.status,
            detail=detail or f"got {exchange.status}: {exchange.response_body[:200]!r}",
        )

    def expect_status(self, exchange: Exchange | None, allowed: Iterable[int]) -> None:
        """The answer's status is one of `allowed`."""
        allowed = set(allowed)
        if exchange is not None:
            self.expect(
                exchange,
                "expected_status",
                exchange.status in allowed,
                f"expected {sorted(allowed)}, got {exchange.status}: "
                f"{exchange.response_body[:200]!r}",
            )

    # --- fixtures --------------------------------------------------------------------------

    def cookie_client(self) -> tuple[FlaskClient, str]:
        """A client signed in with a session cookie, and its CSRF token."""
        client = self.app.test_client()
        client.post("/login", data={"token": self.secret})
        csrf = client.get("/api/session").get_json()["csrfToken"]
        return client, str(csrf)

    def new_job(self, state: str = "queued") -> str:
        """A job made through the API, then moved to `state` in the job store."""
        suite, self.suite = self.suite, "setup"
        try:
            resp = self.client.post(
                "/api/downloads",
                headers=self.bearer,
                json={"repo": "org/fixture", "files": [f"f-{secrets.token_hex(6)}.bin"]},
            )
        finally:
            self.suite = suite
        job_id = str(resp.get_json()["jobId"])
        status = JOB_STATES[state]
        if status is not None:
            with self.sessions.begin() as session:
                session.execute(
                    update(DownloadFile).where(DownloadFile.job_id == job_id).values(status=status)
                )
                jobs.settle_job(session, job_id)
        return job_id


class Observer:
    """WSGI middleware in front of the app: every request any suite sends passes here."""

    def __init__(self, app: WSGIApplication, target: Target) -> None:
        self.app = app
        self.target = target

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        target = self.target
        target.entered = True
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        method = environ["REQUEST_METHOD"]
        # WSGI strings are latin-1 stand-ins for bytes: show them as the UTF-8 they were.
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        query, headers = environ.get("QUERY_STRING", ""), self.request_headers(environ)
        digest_before, sent_before = target.digest(), target.sent()
        answer: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer["status"], answer["headers"] = status, headers
            return start_response(status, headers, exc_info)

        chunks = self.app(environ, capture)
        try:
            content = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        target.record(
            Exchange(
                suite=target.suite,
                operation=target.operation(method, path),
                method=method,
                path=path,
                query=query,
                headers=headers,
                body=body,
                status=int(str(answer.get("status", "500")).split()[0]),
                response_headers=list(answer.get("headers", [])),
                response_body=content,
                db_changed=target.digest() != digest_before,
                sent=target.sent() - sent_before,
            )
        )
        return [content]

    @staticmethod
    def request_headers(environ: WSGIEnvironment) -> dict[str, str]:
        """The request headers the reports show."""
        headers = {}
        for name in Target.REQUEST_HEADERS:
            key = name.upper().replace("-", "_")
            key = key if key == "CONTENT_TYPE" else f"HTTP_{key}"
            if key in environ:
                headers[name] = environ[key]
        return headers


@contextlib.contextmanager
def suite(target: Target, name: str) -> Iterator[None]:
    """Attribute requests and time to a suite."""
    target.suite = name
    started = time.monotonic()
    try:
        yield
    finally:
        target.tally.seconds[name] = target.tally.seconds.get(name, 0) + time.monotonic() - started
        target.suite = "setup"
