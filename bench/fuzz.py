"""Fuzzing the HTTP API: schemathesis from its OpenAPI document, hypothesis, hostile requests.

    .venv/bin/python bench/fuzz.py [--quick] [--out bench/results/fuzz.json] [--seed N]

The app runs in-process (`create_app` on a fresh SQLite job store, a private Redis as the
broker, a dispatcher that counts what it sends) behind an observer that sees every request
any suite makes and checks each answer:

- no_server_error: no 5xx;
- no_traceback: no "Traceback" or 'File "' in the body;
- error_body_json: a 4xx/5xx body is JSON `{"error": str, "message": str}` (the HTML
  sign-in form's own 401 aside);
- refusal_keeps_db: a 4xx leaves every row of every table as it was (digest before/after);
- refusal_sends_nothing: a 4xx enqueues nothing, raises no control flag, publishes no event,
  and the broker's queue does not grow;
- no_secret_in_answer: the API token (a random canary) never appears in an answer.

Suites: schemathesis (its engine: coverage, fuzzing and stateful phases, every operation
of GET /api/openapi.json), hypothesis properties (repo ids, file names, revisions, JSON and
raw bodies, job ids, queries, headers, static paths), hand-written hostile requests (path
traversal, NUL, backslashes, long names, oversized and malformed bodies, content types),
auth (every route without or with a wrong token, the token in the URL), CSRF (a cookie
session changing state without the header, or from another origin), the WebSocket from a
foreign origin, the captured logs (the token never appears), containment (every accepted
destination stays inside MODELS_DIR, no file was written outside it), and one pass against
a real gunicorn with its access log on (tokens in URLs are not logged, a cross-origin
WebSocket upgrade gets 403 on the raw socket, oversized chunked bodies get 413).

Prints a markdown table and writes JSON to --out (and a markdown report beside it); exits
1 when any check failed, listing each failure with its request.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `app`, `bench` and `tests` importable
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402
from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import HypothesisDeprecationWarning  # noqa: E402
from sqlalchemy import Engine, inspect, select, update  # noqa: E402

from app import create_app, jobs, migrate, storage  # noqa: E402
from app.cli.localstack import free_port  # noqa: E402
from app.db import make_engine, make_session_factory  # noqa: E402
from app.dispatch import QUEUE, Dispatcher  # noqa: E402
from app.events import CHANNEL  # noqa: E402
from app.models import DownloadFile, FileStatus  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.common import table, write_results  # noqa: E402
from tests.support import RedisServer  # noqa: E402

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger("bench.fuzz")

CATALOG = """\
models:
  pair:
    name: A pair
    files:
      - {repo: org/one, file: a.gguf, size: 4}
      - {repo: org/two, file: sub/b.safetensors, dest: b.safetensors}
  single:
    files:
      - {repo: org/three, file: c.gguf}
"""
UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}
UNAUTHORIZED = {"error": "unauthorized", "message": "authentication required"}
MiB = 1 << 20
# Independent oracles: what the API may accept, written apart from app.storage on purpose.
REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ORACLE = re.compile(rf"{REPO_PART}/{REPO_PART}", re.ASCII)
REVISION_ORACLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}", re.ASCII)


@dataclass(frozen=True)
class Budget:
    """How hard each suite tries."""

    schemathesis_examples: int
    stateful_steps: int
    property_examples: int


QUICK = Budget(schemathesis_examples=8, stateful_steps=6, property_examples=25)
FULL = Budget(schemathesis_examples=150, stateful_steps=30, property_examples=600)


# --- results ------------------------------------------------------------------------------


@dataclass
class Failure:
    """One failed check, with what it takes to reproduce it."""

    suite: str
    check: str
    operation: str
    request: str
    status: int | None
    detail: str


@dataclass
class Tally:
    """Check evaluations and failures, per suite, check and operation."""

    secret: str
    requests: Counter[str] = field(default_factory=Counter)  # per suite
    by_operation: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    checks: Counter[str] = field(default_factory=Counter)
    suite_checks: Counter[str] = field(default_factory=Counter)
    failed_checks: Counter[str] = field(default_factory=Counter)
    failed_operations: Counter[str] = field(default_factory=Counter)
    failed_suites: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def request(self, suite: str, operation: str, status: int) -> None:
        """Count one request answered."""
        self.requests[suite] += 1
        self.by_operation[operation] += 1
        self.statuses[operation][status] += 1

    def check(
        self,
        suite: str,
        name: str,
        ok: bool,
        *,
        operation: str = "-",
        request: str = "-",
        status: int | None = None,
        detail: str = "",
    ) -> bool:
        """Count one evaluation of a check; record a failure."""
        self.checks[name] += 1
        self.suite_checks[suite] += 1
        if not ok:
            self.failed_checks[name] += 1
            self.failed_operations[operation] += 1
            self.failed_suites[suite] += 1
            self.failures.append(
                Failure(suite, name, operation, self.scrub(request), status, self.scrub(detail))
            )
        return ok

    def scrub(self, text: str) -> str:
        """Reports name the token, never show it."""
        return text.replace(self.secret, "$API_TOKEN").replace(self.secret[:-1], "$API_TOKEN[:-1]")

    @property
    def cases(self) -> int:
        """Requests answered, over all suites."""
        return sum(self.requests.values())


# --- the app under test -------------------------------------------------------------------


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


class LogCapture(logging.Handler):
    """Every log record of the process (the fuzzers' own aside), formatted with tracebacks."""

    IGNORED = ("schemathesis", "hypothesis", "bench.fuzz")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(self.IGNORED):
            with contextlib.suppress(Exception):
                self.lines.append(self.format(record))


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
        catalog = workdir / "models.yaml"
        catalog.write_text(CATALOG)
        self.settings = Settings(
            models_dir=self.models_dir,
            data_dir=workdir / "data",
            database_url=db_url,
            redis_url=self.redis.url,
            models_catalog=catalog,
            hf_endpoint="http://127.0.0.1:9",
            api_token=secret,
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

    def digest(self) -> str:
        """A digest of every row of every table."""
        h = hashlib.sha256()
        with self.engine.connect() as conn:
            for name in self.tables:
                rows = conn.exec_driver_sql(f'SELECT * FROM "{name}"').fetchall()  # noqa: S608
                h.update(name.encode())
                for line in sorted(repr(tuple(r)) for r in rows):
                    h.update(line.encode())
        return h.hexdigest()

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
        t, suite, op = self.tally, exchange.suite, exchange.operation
        t.request(suite, op, exchange.status)
        where: dict[str, Any] = {
            "operation": op,
            "request": exchange.describe(),
            "status": exchange.status,
        }
        body = exchange.response_body
        t.check(suite, "no_server_error", exchange.status < 500, detail="5xx answer", **where)
        traceback = b"Traceback" in body or b'File "' in body
        t.check(
            suite,
            "no_traceback",
            not traceback,
            detail=body[:300].decode(errors="replace"),
            **where,
        )
        login_form = (
            exchange.path == "/login" and exchange.method == "POST" and exchange.status == 401
        )
        if exchange.status >= 400 and exchange.method != "HEAD" and not login_form:
            data = exchange.json()
            ok = (
                (exchange.header("Content-Type") or "").startswith("application/json")
                and isinstance(data, dict)
                and isinstance(data.get("error"), str)
                and isinstance(data.get("message"), str)
            )
            t.check(
                suite, "error_body_json", ok, detail=body[:300].decode(errors="replace"), **where
            )
        if 400 <= exchange.status < 500:
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
        target = {
            "queued": None,
            "paused": FileStatus.PAUSED,
            "failed": FileStatus.FAILED,
            "completed": FileStatus.COMPLETED,
            "cancelled": FileStatus.CANCELLED,
        }[state]
        if target is not None:
            with self.sessions.begin() as session:
                session.execute(
                    update(DownloadFile).where(DownloadFile.job_id == job_id).values(status=target)
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
        query = environ.get("QUERY_STRING", "")
        headers = {}
        for name in Target.REQUEST_HEADERS:
            key = name.upper().replace("-", "_")
            key = key if key == "CONTENT_TYPE" else f"HTTP_{key}"
            if key in environ:
                headers[name] = environ[key]
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
        status = int(str(answer.get("status", "500")).split()[0])
        target.record(
            Exchange(
                suite=target.suite,
                operation=target.operation(method, path),
                method=method,
                path=path,
                query=query,
                headers=headers,
                body=body,
                status=status,
                response_headers=list(answer.get("headers", [])),
                response_body=content,
                db_changed=target.digest() != digest_before,
                sent=target.sent() - sent_before,
            )
        )
        return [content]


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


def explore(
    target: Target, strategy: st.SearchStrategy[Any], examples: int, seed: int
) -> Callable[..., Any]:
    """Run a function on `examples` values drawn from `strategy` (no shrinking: the checks
    record failures rather than raise, so every example is counted)."""

    def decorate(fn: Callable[[Any], None]) -> Callable[[], None]:
        @hypothesis_seed(seed)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        @given(strategy)
        def run(value: Any) -> None:
            try:
                fn(value)
            except Exception as exc:  # a bug of this script: counted, and the run goes on
                target.tally.check(
                    target.suite,
                    "harness_error",
                    False,
                    operation=fn.__name__,
                    request=repr(value)[:300],
                    detail=repr(exc),
                )

        return run

    return decorate


# --- oracles ------------------------------------------------------------------------------


def repo_ok(repo: Any) -> bool:
    """What a Hub repo id may be: org/name, ASCII, no "--" or ".."."""
    return (
        isinstance(repo, str)
        and REPO_ORACLE.fullmatch(repo) is not None
        and "--" not in repo
        and ".." not in repo
    )


def revision_ok(rev: Any) -> bool:
    """A branch, tag or commit: ASCII, no "..", no trailing "/"."""
    return (
        isinstance(rev, str)
        and REVISION_ORACLE.fullmatch(rev) is not None
        and ".." not in rev
        and not rev.endswith("/")
    )


def contained(models_dir: Path, dest: str) -> bool:
    """A destination the workers may write: relative, plain, and inside MODELS_DIR once
    joined and normalised (checked apart from app.storage, which the app uses)."""
    if not dest or dest.startswith(("/", "~")) or any(c in dest for c in "\\\x00:"):
        return False
    if any(seg in ("", ".", "..") for seg in dest.split("/")):
        return False
    if any(unicodedata.category(c) == "Cc" for c in dest):
        return False
    root = os.path.realpath(models_dir)
    joined = os.path.realpath(os.path.join(root, dest))
    return joined.startswith(root + os.sep)


# --- hostile values -----------------------------------------------------------------------

# The hostile values, as tables (kept compact on purpose).
# fmt: off
TRAVERSAL = [
    "..", ".", "", "...", "%2e%2e", "%2E%2E", "%252e%252e", "..%2f", "..%5c", "%2f", "%00",
    "..\\", "\\", "/", "//", "\x00", "C:", "C:\\", "\\\\host\\share", "~", "~root", "$HOME",
    ".modelpull", ".modelpull/partial", "\u2025", "\uff0e\uff0e", "\u002e\u002e\u2215",
    "..;", " ", "\t", "\n", "\r\n", "\u202e", "\ud800", "\ufeff..", "x" * 300,
]
SEPARATORS = ["/", "\\", "//", "/./", "/../", "\x00", "%2f"]
HOMOGLYPHS = [
    "\uff46\uff4f\uff4f/bar", "f\u043e\u043e/bar", "foo/b\u0430r", "foo\u2215bar", "foo\uff0fbar",
    "\u0066oo/bar\u200b",
]
BAD_REPOS = [
    "foo/bar\n", "foo/bar\r", "foo/bar\t", "foo/bar ", " foo/bar", "foo/bar\x00", "a" * 97 + "/b",
    "a/" + "b" * 97, "a" * 200 + "/" + "b" * 200, "a--b/c", "a/b--c", "--/x", "../x", "a/..", "..",
    "../../etc/passwd", "a/b/c", "", " ", "/", "a/", "/b", "a//b", "a/b/", "foo%2fbar",
    "foo/bar%0a", "a\\b/c", "-a/b", "a-/b", ".a/b", "a/.b", "a/b.", "a.", "a/b?x=1", "a/b#x",
    "https://evil.example/a/b", "a/b;c", "a b/c", "a/b/../../c", "~/x", "C:/x", *HOMOGLYPHS,
]
BAD_REVISIONS = [
    "", "main\n", " main", "../../x", "refs/../x", "a/", "a b", "main\x00", "-", "--help",
    "/main", "x" * 201, "\u0440\u0435\u0432", "main%0a", "main;rm -rf", "$(id)",
]
# File names that must be refused before anything is stored ({escape}: a canary path).
BAD_NAMES = [
    "../x", "../../etc/passwd", "a/../../b", "..", ".", "/etc/passwd", "//etc/passwd", "..\\x",
    "a\\..\\..\\b", "C:\\x", "C:x", "\\\\host\\share\\x", "x\x00y", "\x00", "a/./b", "a//b", "a/",
    ".modelpull/partial/x.part", ".modelpull", "{escape}", "x" * 246, "x" * 801, "d/" + "x" * 246,
    "a/" * 600 + "b", "\u202e", "a\x85b", "a\x9b[2J", "a\nb", "a\rb", " ", "a/ /b", "\ud800",
    "a:b", 'a"b', "a|b", "a*b", "a?b", "a<b>",
]
# Odd but plain: percent signs are part of a name, not an escape. Accepted as written.
LITERAL_NAMES = ["%2e%2e/x", "%2e%2e%2fx", "..%2fx", "a..b", ".hidden", "x" * 245]
# Ids and paths in URLs: unknown model or job, never a file.
URL_IDS = [
    "..", "%2e%2e", "..%2f..%2fetc%2fpasswd", "%2e%2e%2f%2e%2e", "a%00b", "a%5c..%5cb",
    "..%5c..%5c", "%252e%252e", "pair%00", "pair%0a", "pair/..", "x" * 20000,
]
STATIC_TRAVERSAL = [
    "../pyproject.toml", "..%2fpyproject.toml", "%2e%2e/%2e%2e/pyproject.toml",
    "..%5c..%5cpyproject.toml", "/etc/passwd", "%2fetc%2fpasswd", "....//....//etc/passwd",
    "css/../../../../app/settings.py", "x%00.css", "..%c0%af..%c0%afetc/passwd",
]
ODD_PATHS = [
    "/api/../healthz", "/API/models", "/api//models", "/api/models/", "/%2e%2e/etc/passwd",
    "/api/models/pair/files/..", "/api/openapi.json/..", "/" + "a" * 50000,
]
MALFORMED_JSON = [
    b'{"repo": "org/name", "files": [', b'{"repo": "org/name"} trailing', b"{'repo': 'a/b'}",
    b"NaN", b"null", b"[]", b'"text"', b"1e999999", b"9" * 5000, b"[" * 60000, b'{"a":' * 12000,
    b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00", b"\x80\x81", b"", b"{}", b'{"files": "x"}',
    b'{"repo": "org/name", "files": []}', b'{"repo": "org/name", "files": [1]}',
    b'{"repo": "org/name", "files": [null]}', b'{"repo": ["org/name"], "files": ["x"]}',
    b'{"repo": "org/name", "files": ["x"], "dest": "/etc"}',
    b'{"repo": "org/name", "files": ["a", "a"]}',
    b'{"repo": "org/name", "files": ["x"], "revision": null}',
    b'{"repo": "org/name", "files": ["x"], "revision": 7}',
    b'{"repo": "org/name", "files": ["x"], "__proto__": {}}',
    b'{"repo": "org/name", "files": ["\\ud800"]}', b'{"repo": "\\u0000/x", "files": ["x"]}',
]
NOT_JSON_TYPES = [
    "text/plain", "application/x-www-form-urlencoded", "application/xml", "", "application/jsonx",
    "multipart/form-data; boundary=zz", "text/json",
]
BAD_QUERIES = [
    "limit=0", "limit=-1", "limit=201", "limit=1.5", "limit=1e2", "limit=%D9%A3", "limit=+5",
    "limit=0x10", "limit=99999", "limit=", "status=QUEUED", "status=queued%0a", "status=%00",
    "cursor=%00", "cursor=" + "A" * 60000, "cursor=%C3%A9", "limit=5&limit=x",
]
CRAFTED_CURSORS = [
    "0001-01-01T00:00:00+14:00|" + "a" * 32, "9999-12-31T23:59:59-14:00|" + "a" * 32,
    "2020-01-01T00:00:00|" + "a" * 32, "2020-01-01T00:00:00+00:00|short", "|", "nan|nan",
]
ODD_AUTHORIZATION = ["Bearer " + "a" * 20000, "Bearer \xe9\xe9", "Bearer {secret}\xe9",
                     "Bearer\t{secret}", "{secret}"]
ODD_COOKIES = ["modelpull_session=" + "A" * 4000, ";;;==", "modelpull_session=.eJ.x.y",
               "token={secret}"]
# fmt: on


def segments() -> st.SearchStrategy[str]:
    """Path segments, hostile ones first."""
    return st.one_of(
        st.sampled_from(TRAVERSAL),
        st.text(min_size=1, max_size=12),
        st.text(alphabet="abc.-_ %\\/:\x00", min_size=1, max_size=8),
        st.integers(min_value=240, max_value=260).map(lambda n: "y" * n),
    )


def path_like() -> st.SearchStrategy[str]:
    """Relative-looking paths built from hostile segments and separators."""
    return st.builds(
        lambda lead, parts, sep: lead + sep.join(parts),
        st.sampled_from(["", "", "/", "\\", "./", "../", "C:\\", "~/"]),
        st.lists(segments(), min_size=1, max_size=5),
        st.sampled_from(SEPARATORS),
    )


def repo_ids() -> st.SearchStrategy[str]:
    """Repo ids: the known-bad ones, random text, and well-formed ones."""
    return st.one_of(
        st.sampled_from(BAD_REPOS),
        st.text(max_size=40),
        st.builds(lambda a, b: f"{a}/{b}", st.text(max_size=100), st.text(max_size=100)),
        st.from_regex(REPO_ORACLE, fullmatch=True),
        path_like(),
    )


def json_values() -> st.SearchStrategy[Any]:
    """Any JSON value, objects leaning towards the download body's keys."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=5),
            st.dictionaries(
                st.sampled_from(["repo", "files", "revision", "dest", "extra", ""])
                | st.text(max_size=5),
                children,
                max_size=4,
            ),
        ),
        max_leaves=12,
    )


# --- suites -------------------------------------------------------------------------------


def redirect_stays_local(target: Target, ex: Exchange | None) -> None:
    """A redirect (Werkzeug merging slashes) points back at this server."""
    if ex is not None and 300 <= ex.status < 400:
        location = ex.header("Location") or ""
        target.expect(
            ex, "redirect_stays_local", location.startswith(("/", "http://localhost/")), location
        )


def run_schemathesis(target: Target, budget: Budget, seed: int) -> dict[str, Any]:
    """schemathesis' engine over every operation of the app's OpenAPI document."""
    import schemathesis
    from schemathesis.core.result import Ok
    from schemathesis.engine import events, from_schema

    config = schemathesis.Config.from_dict(
        {
            "seed": seed,
            "workers": 1,
            "continue-on-failure": True,
            "suppress-health-check": ["all"],
            "generation": {"max-examples": budget.schemathesis_examples, "database": "none"},
            "auth": {"openapi": {"bearer": {"bearer": target.secret}}},
            "phases": {"stateful": {"max-steps": budget.stateful_steps}},
            # ignored_auth is replaced by the auth suite: in schemathesis 4.32 its probe
            # passes `max_redirects` to werkzeug's test client and errors out on WSGI apps.
            "checks": {"ignored_auth": {"enabled": False}},
            # A valid handshake cannot be expressed in the document (and the test client has
            # no socket to upgrade): the WebSocket is tested by hand below and on gunicorn.
            # Nor can an opaque cursor: any string but those the server gave out gets 400 (the
            # hypothesis suite checks the other parameters exactly).
            "operations": [
                {
                    "include-operation-id": ["websocket", "listJobs"],
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                }
            ],
        }
    )
    schema = schemathesis.openapi.from_wsgi(
        "/api/openapi.json", target.app, headers=target.bearer, config=config
    )
    generated: Counter[str] = Counter()
    operations = {r.ok().label for r in schema.get_all_operations() if isinstance(r, Ok)}
    seen: set[tuple[str, str, str]] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for case_node in recorder.cases.values():
                generated[case_node.value.operation.label] += 1
            for case_id, nodes in recorder.checks.items():
                for node in nodes:
                    if node.failure_info is None:
                        target.tally.check("schemathesis", f"schemathesis:{node.name}", True)
                        continue
                    failure = node.failure_info.failure
                    response = recorder.find_response(case_id=case_id)
                    label = (
                        recorder.cases[case_id].value.operation.label
                        if case_id in recorder.cases
                        else recorder.label
                    )
                    key = (node.name, label, failure.title)
                    detail = f"{failure.title}: {failure.message[:400]}"
                    if key in seen:
                        detail = f"(again) {detail}"
                    seen.add(key)
                    target.tally.check(
                        "schemathesis",
                        f"schemathesis:{node.name}",
                        False,
                        operation=label,
                        request=node.failure_info.code_sample,
                        status=response.status_code if response is not None else None,
                        detail=detail,
                    )
        elif isinstance(event, events.NonFatalError):
            target.tally.check(
                "schemathesis",
                "schemathesis:error",
                False,
                operation=event.label,
                detail=f"{type(event.value).__name__}: {event.value}",
            )
        elif isinstance(event, events.FatalError):
            target.tally.check(
                "schemathesis",
                "schemathesis:fatal",
                False,
                detail=f"{type(event.exception).__name__}: {event.exception}",
            )
    return {
        "operations": len(operations),
        "generated_cases": sum(generated.values()),
        "generated_per_operation": dict(sorted(generated.items())),
    }


def run_properties(target: Target, budget: Budget, seed: int) -> None:
    """hypothesis: hostile values against the routes that take them, each with an oracle."""
    n, bearer, models = budget.property_examples, target.bearer, target.models_dir

    @explore(target, repo_ids(), n, seed)
    def repo_property(repo: str) -> None:
        ex = target.send(
            "POST",
            "/api/downloads",
            headers=bearer,
            json_body={"repo": repo, "files": ["model.bin"]},
        )
        target.expect_status(ex, {202} if repo_ok(repo) else {400})
        if ex is not None and ex.status == 202:
            dest = ex.json()["files"][0]["dest"]
            target.expect(ex, "accepted_dest_contained", contained(models, dest), dest)

    @explore(target, st.one_of(path_like(), st.text(max_size=60)), n, seed)
    def name_property(name: str) -> None:
        ex = target.send(
            "POST",
            "/api/downloads",
            headers=bearer,
            json_body={"repo": "org/name", "files": [name]},
        )
        target.expect_status(ex, {202, 400})
        if ex is not None and ex.status == 202:
            dest = ex.json()["files"][0]["dest"]
            target.expect(
                ex,
                "accepted_dest_contained",
                contained(models, dest) and dest == f"org/name/{name}",
                dest,
            )
            target.expect(
                ex, "accepted_name_fits", all(len(s.encode()) <= 245 for s in name.split("/"))
            )

    @explore(
        target,
        st.one_of(st.sampled_from(BAD_REVISIONS), st.text(max_size=30), path_like()),
        n,
        seed,
    )
    def revision_property(rev: str) -> None:
        ex = target.send(
            "POST",
            "/api/downloads",
            headers=bearer,
            json_body={"repo": "org/name", "files": ["m.bin"], "revision": rev},
        )
        target.expect_status(ex, {202} if revision_ok(rev) else {400})

    @explore(target, json_values(), n, seed)
    def json_property(body: Any) -> None:
        ex = target.send("POST", "/api/downloads", headers=bearer, json_body=body)
        target.expect_status(ex, {202, 400})
        if body is None:
            return
        shaped = (
            isinstance(body, dict)
            and set(body) <= {"repo", "files", "revision"}
            and repo_ok(body.get("repo"))
            and isinstance(body.get("files"), list)
        )
        target.expect(ex, "accepted_only_what_is_valid", shaped or ex is None or ex.status != 202)

    content_types = st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=utf-16",
            "",
            "*/*",
            "application/vnd.api+json",
            "application/xml",
        ]
    )

    @explore(target, st.tuples(st.binary(max_size=300), content_types), n, seed)
    def raw_body_property(value: tuple[bytes, str]) -> None:
        data, ctype = value
        ex = target.send("POST", "/api/downloads", headers=bearer, data=data, content_type=ctype)
        target.expect_status(ex, {400})

    real = [target.new_job(), target.new_job("completed")]
    job_ids = st.one_of(
        st.text(max_size=40),
        st.sampled_from(real).flatmap(
            lambda j: st.sampled_from(
                [j + "\n", j.upper(), " " + j, j + "/", j[:-1], j + "%00", j + "x"]
            )
        ),
        path_like(),
    )
    routes = st.sampled_from(
        [
            ("GET", "/api/models/download/status/{}"),
            ("POST", "/api/models/download/{}/cancel"),
            ("POST", "/api/models/download/{}/pause"),
            ("POST", "/api/models/download/{}/resume"),
            ("POST", "/api/models/download/{}/retry"),
            ("DELETE", "/api/models/download/{}"),
        ]
    )

    @explore(target, st.tuples(routes, job_ids), n, seed)
    def job_id_property(value: tuple[tuple[str, str], str]) -> None:
        (method, template), job_id = value
        path = template.format(quote(job_id, safe="", errors="surrogatepass"))
        ex = target.send(method, path, headers=bearer)
        # Never the real job: a mangled id is unknown (or unroutable, or merged slashes).
        target.expect_status(ex, {404, 405, 308})
        redirect_stays_local(target, ex)

    statuses = ["", "queued", "downloading", "paused", "completed", "failed", "cancelled"]
    limits = st.one_of(
        st.integers(-5, 300).map(str), st.text(max_size=6), st.sampled_from(["50", "0050", "٣"])
    )
    cursors = st.one_of(st.just(""), st.text(max_size=60))

    @explore(
        target,
        st.tuples(st.sampled_from(statuses) | st.text(max_size=12), limits, cursors),
        n,
        seed,
    )
    def list_property(value: tuple[str, str, str]) -> None:
        status, limit, cursor = value
        query = "&".join(
            f"{k}={quote(v, errors='surrogatepass')}"
            for k, v in (("status", status), ("limit", limit), ("cursor", cursor))
        )
        ex = target.send("GET", "/api/models/download/jobs", headers=bearer, query=query)
        limit_ok = (
            re.fullmatch(r"[0-9]{1,4}", limit, re.ASCII) is not None and 1 <= int(limit) <= 200
        )
        valid = status in statuses and limit_ok and not cursor  # a cursor we did not give out: 400
        target.expect_status(ex, {200} if valid else {400})

    @explore(
        target,
        st.one_of(st.text(max_size=60), st.sampled_from(["Bearer", "Bearer ", "bearer  x"])),
        n,
        seed,
    )
    def authorization_property(value: str) -> None:
        ex = target.send("GET", "/api/models", headers={"Authorization": value})
        scheme, _, token = value.partition(" ")
        ok = scheme.lower() == "bearer" and token.strip() == target.secret
        target.expect_status(ex, {200} if ok else {401})

    @explore(target, path_like(), n, seed)
    def static_property(path: str) -> None:
        ex = target.send("GET", "/static/" + quote(path, safe="/%", errors="surrogatepass"))
        if ex is None:
            return
        target.expect_status(ex, {200, 308, 401, 404})
        if ex.status == 200:
            served = (ROOT / "app/web/static").resolve()
            inside = any(
                p.is_file() and p.read_bytes() == ex.response_body for p in served.rglob("*")
            )
            target.expect(ex, "static_stays_in_its_folder", inside)

    @explore(
        target,
        st.one_of(st.sampled_from(["pair", "single"]), st.text(max_size=40), path_like()),
        n,
        seed,
    )
    def model_id_property(model_id: str) -> None:
        path = f"/api/models/{quote(model_id, safe='', errors='surrogatepass')}/files"
        ex = target.send("GET", path, headers=bearer)
        target.expect_status(ex, {200} if model_id in ("pair", "single") else {404, 308})
        redirect_stays_local(target, ex)

    client, _ = target.cookie_client()

    @explore(target, st.text(max_size=60), n, seed)
    def csrf_property(value: str) -> None:
        ex = target.send(
            "POST",
            "/api/downloads",
            client=client,
            headers={"X-CSRF-Token": value},
            json_body={"repo": "org/csrf", "files": ["x.bin"]},
        )
        target.expect_status(ex, {403})

    for prop in (
        repo_property,
        name_property,
        revision_property,
        json_property,
        raw_body_property,
        job_id_property,
        list_property,
        authorization_property,
        static_property,
        model_id_property,
        csrf_property,
    ):
        prop()


def hostile_cases(target: Target) -> None:
    """Hand-written hostile requests, each with the answer it must get."""
    bearer, send, want, secret = target.bearer, target.send, target.expect_status, target.secret
    escape = f"../../../../../tmp/modelpull-fuzz-escape-{secret[-8:]}"

    def download(body: Any) -> Exchange | None:
        return send("POST", "/api/downloads", headers=bearer, json_body=body)

    # Path traversal and other unsafe names in the file list: refused, nothing stored.
    for name in BAD_NAMES:
        want(download({"repo": "org/name", "files": [name.replace("{escape}", escape)]}), {400})
    for name in LITERAL_NAMES:
        ex = download({"repo": "org/name", "files": [name]})
        want(ex, {202})
        if ex is not None and ex.status == 202:
            dest = ex.json()["files"][0]["dest"]
            ok = dest == f"org/name/{name}" and contained(target.models_dir, dest)
            target.expect(ex, "accepted_dest_contained", ok, dest)
    for repo in BAD_REPOS:
        want(download({"repo": repo, "files": ["m.bin"]}), {400})
    for rev in BAD_REVISIONS:
        want(download({"repo": "org/name", "files": ["m.bin"], "revision": rev}), {400})
    # Traversal in URL paths: model ids, job ids, the static folder (public), unknown routes.
    for raw in URL_IDS:
        want(send("GET", f"/api/models/{raw}/files", headers=bearer), {404})
        want(send("POST", f"/api/models/{raw}/download", headers=bearer), {404})
        want(send("GET", f"/api/models/download/status/{raw}", headers=bearer), {404})
    job = target.new_job()
    for suffix in ["%0a", "%00", "%20", "/..", "%2f..", "\\"]:
        want(send("GET", f"/api/models/download/status/{job}{suffix}", headers=bearer), {404})
    for raw in STATIC_TRAVERSAL:
        ex = send("GET", f"/static/{raw}")
        want(ex, {404, 401, 308})  # 401: a path that needs redirecting is no public file
        if ex is not None:
            body = ex.response_body
            target.expect(ex, "static_stays_in_its_folder", b"[project]" not in body)
    for path in ODD_PATHS:
        want(send("GET", path, headers=bearer), {404, 308})
    # Oversized bodies: refused up front on every route, whether it reads its body or not.
    big = json.dumps({"repo": "org/name", "files": ["x" * (5 * MiB)]})
    for method, path in [
        ("POST", "/api/downloads"),
        ("POST", "/api/models/pair/download"),
        ("POST", "/api/session"),
        ("DELETE", f"/api/models/download/{job}"),
        ("POST", f"/api/models/download/{job}/cancel"),
    ]:
        ex = send(method, path, headers=bearer, data=big, content_type="application/json")
        want(ex, {413})
    plain = b"x" * (8 * MiB)
    want(
        send("POST", "/api/downloads", headers=bearer, data=plain, content_type="text/plain"), {413}
    )
    want(send("POST", "/login", data={"token": "x" * MiB}), {413})
    client, csrf = target.cookie_client()
    form = {"csrf_token": csrf, "pad": "x" * MiB}
    want(send("POST", "/api/downloads", client=client, data=form), {413})
    # Just over the limit in many files; over the count by one file.
    want(
        download({"repo": "org/name", "files": [f"{i:04d}" + "y" * 700 for i in range(100)]}), {413}
    )
    want(download({"repo": "org/name", "files": [f"{i}.bin" for i in range(101)]}), {400})
    # Malformed JSON, bodies of the wrong shape or type.
    for payload in MALFORMED_JSON:
        ex = send(
            "POST", "/api/downloads", headers=bearer, data=payload, content_type="application/json"
        )
        want(ex, {400})
    ok_body = json.dumps({"repo": "org/name", "files": ["ctype.bin"]})
    for ctype in NOT_JSON_TYPES:
        want(
            send("POST", "/api/downloads", headers=bearer, data=ok_body, content_type=ctype), {400}
        )
    want(
        send("POST", "/api/downloads", headers=bearer, data={"repo": "org/name", "files": "x"}),
        {400},
    )
    utf16 = ok_body.encode("utf-16")
    ctype16 = "application/json; charset=utf-16"
    want(
        send("POST", "/api/downloads", headers=bearer, data=utf16, content_type=ctype16), {202, 400}
    )
    # Queries: bad limits, statuses and cursors (some crafted to decode).
    crafted = [base64.urlsafe_b64encode(c.encode()).decode().rstrip("=") for c in CRAFTED_CURSORS]
    for query in [*BAD_QUERIES, *(f"cursor={c}" for c in crafted)]:
        ex = send("GET", "/api/models/download/jobs", headers=bearer, query=query)
        want(ex, {200, 400})
    # Methods a route does not serve: 405 naming the allowed ones.
    for method, path in [
        ("PUT", "/api/downloads"),
        ("PATCH", "/api/models"),
        ("TRACE", "/api/models"),
        ("DELETE", "/api/models"),
        ("DELETE", "/api/models/download/jobs"),
        ("PUT", f"/api/models/download/{job}"),
    ]:
        ex = send(method, path, headers=bearer)
        want(ex, {405})
        target.expect(ex, "allow_header_on_405", ex is not None and bool(ex.header("Allow")))
    # Odd credentials: a huge or non-ASCII token, junk cookies, a method override.
    for value in ODD_AUTHORIZATION:
        headers = {"Authorization": value.replace("{secret}", secret)}
        want(send("GET", "/api/models", headers=headers), {401})
    for cookie in ODD_COOKIES:
        headers = {"Cookie": cookie.replace("{secret}", secret)}
        want(send("GET", "/api/models", headers=headers), {401})
    override = {**bearer, "X-HTTP-Method-Override": "DELETE"}
    want(send("POST", "/api/models", headers=override), {405})
    # Controls: the same routes answer plain, valid requests.
    want(send("GET", "/static/app.css"), {200})
    want(send("GET", "/api/models/pair/files", headers=bearer), {200})
    # Catalog downloads (valid), then again while queued: answered, never a crash.
    for model in ("pair", "single", "pair"):
        want(send("POST", f"/api/models/{model}/download", headers=bearer), {200, 202})


def run_auth(target: Target, doc: dict[str, Any]) -> None:
    """Every documented operation, and methods a path does not serve: no token, a wrong one,
    or the right one where it must not be (URL query, cookie, other headers) gets 401 (pages
    send strangers to the sign-in page) with nothing more said."""
    job = target.new_job()
    secret = target.secret
    variants: list[tuple[str, dict[str, str], str]] = [
        ("none", {}, ""),
        ("wrong bearer", {"Authorization": "Bearer wrong-token"}, ""),
        ("token + 1 char", {"Authorization": f"Bearer {secret}x"}, ""),
        ("token - 1 char", {"Authorization": f"Bearer {secret[:-1]}"}, ""),
        (
            "basic",
            {"Authorization": "Basic " + base64.b64encode(f"x:{secret}".encode()).decode()},
            "",
        ),
        ("token scheme", {"Authorization": f"Token {secret}"}, ""),
        ("empty bearer", {"Authorization": "Bearer "}, ""),
        ("x-api-key", {"X-API-Key": secret}, ""),
        ("query token", {}, f"token={secret}"),
        ("query access_token", {}, f"access_token={secret}"),
        ("query api_key", {}, f"api_key={secret}"),
        ("forged cookie", {"Cookie": "modelpull_session=eyJ0b2tlbl9pZCI6ImVudiJ9.x.y"}, ""),
    ]
    public = {
        (m.upper(), p)
        for p, ops in doc["paths"].items()
        for m, op in ops.items()
        if op.get("security") == []
    }
    pages = {"/", "/models", "/jobs"}
    routes: list[tuple[str, str, bool]] = []
    for path, ops in doc["paths"].items():
        for method in [*ops, "put", "patch"]:
            if (method.upper(), path) in public:
                continue
            concrete = path.replace("{model_id}", "pair").replace("{job_id}", job)
            routes.append((method.upper(), concrete, any(p == path for _, p in public)))
    for method, path, public_path in routes:
        for _, headers, query in variants:
            ex = target.send(method, path, headers=headers, query=query)
            if ex is None:
                continue
            if public_path:  # a method a public path does not serve: 405, no credentials needed
                target.expect_status(ex, {405})
                continue
            scheme, _, value = headers.get("Authorization", "").partition(" ")
            bearer_sent = scheme.lower() == "bearer" and bool(value.strip())
            if path in pages and method == "GET" and not bearer_sent:
                target.expect(
                    ex,
                    "stranger_sent_to_login",
                    ex.status == 302 and (ex.header("Location") or "").startswith("/login"),
                )
                continue
            target.expect_status(ex, {401})
            target.expect(
                ex,
                "no_detail_on_401",
                ex.status != 401
                or (
                    ex.json() == UNAUTHORIZED
                    and (ex.header("WWW-Authenticate") or "").startswith("Bearer")
                ),
            )


def run_csrf(target: Target) -> None:
    """A cookie session changes nothing without its CSRF header, or from another origin."""
    client, csrf = target.cookie_client()
    jobs_by_state = {
        s: target.new_job(s.split("-")[0])
        for s in ("queued-1", "queued-2", "paused", "failed", "completed")
    }
    unsafe = [
        ("POST", "/api/downloads", {"repo": "org/csrf", "files": ["c.bin"]}),
        ("POST", "/api/models/pair/download", None),
        ("POST", f"/api/models/download/{jobs_by_state['queued-1']}/cancel", None),
        ("POST", f"/api/models/download/{jobs_by_state['queued-2']}/pause", None),
        ("POST", f"/api/models/download/{jobs_by_state['paused']}/resume", None),
        ("POST", f"/api/models/download/{jobs_by_state['failed']}/retry", None),
        ("DELETE", f"/api/models/download/{jobs_by_state['completed']}", None),
        ("POST", "/api/session", None),
        ("POST", "/logout", None),
    ]
    variants = [
        {},
        {"X-CSRF-Token": ""},
        {"X-CSRF-Token": "guess"},
        {"X-CSRF-Token": csrf + "x"},
        {"X-CSRF-Token": csrf[:-1]},
        {"X-CSRF-Token": "\xe9" + csrf},
        {"X-CSRF-Token": csrf, "Origin": "https://evil.example"},
        {"X-CSRF-Token": csrf, "Origin": "null"},
        {"X-CSRF-Token": csrf, "Origin": "http://localhost.evil.example"},
        {"X-Csrftoken": csrf},
    ]
    for method, path, body in unsafe:
        for headers in variants:
            ex = target.send(method, path, client=client, headers=headers, json_body=body)
            target.expect_status(ex, {403})
        # The control: with the header, the same request does what it says (so the refusals
        # above refused something).
        ex = target.send(
            method, path, client=client, headers={"X-CSRF-Token": csrf}, json_body=body
        )
        target.expect_status(ex, {200, 201, 202, 204, 302, 400})
        if path == "/logout":
            client, csrf = target.cookie_client()
    # A cross-site form post of the sign-in form is refused too.
    target.expect_status(
        target.send(
            "POST",
            "/login",
            data={"token": target.secret},
            headers={"Origin": "https://evil.example"},
        ),
        {403},
    )


def run_websocket(target: Target) -> None:
    """The WebSocket refuses, before any handshake, a cookie from a foreign origin and
    anyone without credentials (the allowed case is checked on gunicorn's raw socket)."""
    client, _ = target.cookie_client()
    for origin in [
        "https://evil.example",
        "null",
        "http://localhost.evil.example",
        "http://localhost:1",
        "https://localhost",
        "http://evil.example/http://localhost",
        "HTTP://LOCALHOST",
        None,
    ]:
        headers = {**UPGRADE, **({"Origin": origin} if origin is not None else {})}
        ex = target.send("GET", "/ws", client=client, headers=headers)
        target.expect_status(ex, {403})
    for headers, query in [
        ({}, ""),
        ({"Authorization": "Bearer nope"}, ""),
        ({}, f"access_token={target.secret}"),
        ({}, f"token={target.secret}"),
        ({"Origin": "http://localhost"}, ""),
    ]:
        target.expect_status(
            target.send("GET", "/ws", headers={**UPGRADE, **headers}, query=query), {401}
        )


def run_logs(target: Target, capture: LogCapture) -> None:
    """No log line of the process carries the token (it went into URLs, bodies and headers)."""
    leaked = [line for line in capture.lines if target.secret in line]
    target.tally.check(
        "logs",
        "secret_not_logged",
        not leaked,
        operation="(in-process logging)",
        request=f"{len(capture.lines)} log records",
        detail="; ".join(leaked[:3])[:600],
    )


def run_containment(target: Target, escape: Path, before: set[str]) -> None:
    """Every destination the job store holds stays inside MODELS_DIR, and the web tier wrote
    no file anywhere (the canary a traversal named does not exist)."""
    with target.sessions() as session:
        rows = session.execute(
            select(DownloadFile.repo, DownloadFile.dest, DownloadFile.revision)
        ).all()
    for repo, dest, revision in rows:
        ok = contained(target.models_dir, dest) and repo_ok(repo) and revision_ok(revision)
        with contextlib.suppress(ValueError):
            ok = ok and storage.dest_path(target.models_dir, dest).is_relative_to(
                target.models_dir.resolve()
            )
        target.tally.check(
            "containment",
            "stored_dest_contained",
            ok,
            operation="(job store)",
            request=f"repo={repo!r} dest={dest!r} revision={revision!r}",
        )
    after = files_under(target.workdir)
    target.tally.check(
        "containment",
        "no_file_written",
        after == before and not escape.exists(),
        operation="(filesystem)",
        detail=f"new: {sorted(after - before)[:5]}",
    )


def files_under(root: Path) -> set[str]:
    """Every file under `root` but the job store and Redis's own."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith("jobs.db") and "redis" not in p.parts
    }


# --- a real server ------------------------------------------------------------------------


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
        }
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--worker-class",
            "gthread",
            "--workers",
            "1",
            "--threads",
            "8",
            "--no-control-socket",
            "--graceful-timeout",
            "3",
            "--access-logfile",
            str(self.logs / "access.log"),
            "--error-logfile",
            str(self.logs / "error.log"),
            "--log-level",
            "debug",
            "app:create_app()",
        ]
        self.out = open(self.logs / "stdout.log", "wb")  # noqa: SIM115 (lives with the process)
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self.out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited: {(self.logs / 'stdout.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start within 30 s")
            time.sleep(0.1)

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


def run_gunicorn(target: Target, workdir: Path) -> None:
    """One pass against a real gunicorn: tokens in URLs are refused and not logged (access
    log on), the WebSocket refuses a foreign origin on the raw socket before any 101,
    oversized chunked bodies get 413, and nothing refused changes the job store."""
    tally, secret, name = target.tally, target.secret, "gunicorn"
    redis_url = target.redis.url.rsplit("/", 1)[0] + "/1"  # a broker database of its own
    broker = redis.Redis.from_url(redis_url)
    server = Gunicorn(workdir, secret, redis_url, target.settings.models_catalog)
    engine = make_engine(server.db_url)
    pubsub = broker.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(CHANNEL)
    try:

        def state() -> tuple[str, int]:
            h = hashlib.sha256()
            with engine.connect() as conn:
                for table_name in sorted(inspect(engine).get_table_names()):
                    rows = conn.exec_driver_sql(f'SELECT * FROM "{table_name}"').fetchall()  # noqa: S608
                    h.update(repr(sorted(repr(tuple(r)) for r in rows)).encode())
            events = 0
            while pubsub.get_message(timeout=0.01):
                events += 1
            return h.hexdigest(), int(broker.llen(QUEUE)) + events + len(
                broker.keys("modelpull:control:*")
            )

        def judge(
            label: str, status: int, body: bytes, allowed: set[int], before: tuple[str, int]
        ) -> None:
            after = state()
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
            tally.check(
                name, "no_traceback", b"Traceback" not in body and b'File "' not in body, **where
            )
            tally.check(name, "no_secret_in_answer", secret.encode() not in body, **where)
            if 400 <= status < 500:
                tally.check(name, "refusal_keeps_db", after[0] == before[0], **where)
                tally.check(name, "refusal_sends_nothing", after[1] == before[1], **where)

        def http(method: str, path: str, allowed: set[int], **kwargs: Any) -> requests.Response:
            before = state()
            resp = requests.request(
                method, server.url + path, timeout=30, allow_redirects=False, **kwargs
            )
            judge(f"{method} {path.split('?')[0]}", resp.status_code, resp.content, allowed, before)
            return resp

        # Tokens in the URL (and in a Referer) are refused on API, page and WebSocket routes.
        for path in [
            "/api/models",
            "/api/models/download/jobs",
            "/api/openapi.json",
            "/metrics",
            "/ws",
        ]:
            for param in ["token", "access_token", "api_key", "apiKey", "auth", "X-Amz-Signature"]:
                http("GET", f"{path}?{param}={secret}&limit=5", {401})
        http(
            "POST", f"/api/downloads?token={secret}", {401}, json={"repo": "org/x", "files": ["a"]}
        )
        http("GET", "/api/models", {401}, headers={"Referer": f"http://127.0.0.1/?token={secret}"})
        http("GET", f"/models?token={secret}", {302})
        http("GET", f"/login?next=/api/models&token={secret}", {200})
        # Oversized bodies, declared or chunked, and a huge request line.
        bearer = {"Authorization": f"Bearer {secret}"}
        big = json.dumps({"repo": "org/name", "files": ["x" * (5 * MiB)]}).encode()
        http(
            "POST",
            "/api/downloads",
            {413},
            data=big,
            headers={**bearer, "Content-Type": "application/json"},
        )
        chunks = (big[i : i + 65536] for i in range(0, len(big), 65536))
        http(
            "POST",
            "/api/downloads",
            {400, 413},
            data=chunks,
            headers={**bearer, "Content-Type": "application/json"},
        )
        http("POST", "/api/models/pair/download", {413}, data=big, headers=bearer)
        before = state()
        reply = server.raw(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        judge(
            "GET (9000-byte request line)",
            int(reply.split()[1]) if reply else 0,
            reply,
            {400, 414},
            before,
        )
        before = state()
        reply = server.raw(
            b"POST /api/downloads HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        judge(
            "POST /api/downloads (CL and TE)",
            int(reply.split()[1]) if reply else 0,
            reply,
            {400, 401},
            before,
        )
        # The WebSocket on the raw socket: a cookie from a foreign origin gets 403, not 101.
        login = requests.post(
            f"{server.url}/login", data={"token": secret}, allow_redirects=False, timeout=10
        )
        cookie = login.cookies.get("modelpull_session")
        tally.check(
            name,
            "signed_in",
            bool(cookie),
            operation="POST /login",
            request="POST /login",
            status=login.status_code,
        )
        own = f"http://127.0.0.1:{server.port}"
        for origin, allowed in [
            ("https://evil.example", {403}),
            ("null", {403}),
            (f"http://127.0.0.1:{server.port}.evil.example", {403}),
            (None, {403}),
            (own, {101}),
        ]:
            lines = [b"GET /ws HTTP/1.1", f"Host: 127.0.0.1:{server.port}".encode()]
            lines += [f"{k}: {v}".encode() for k, v in UPGRADE.items()]
            lines.append(f"Cookie: modelpull_session={cookie}".encode())
            if origin is not None:
                lines.append(f"Origin: {origin}".encode())
            before = state()
            reply = server.raw(b"\r\n".join(lines) + b"\r\n\r\n")
            status = int(reply.split()[1]) if reply.startswith(b"HTTP/") else 0
            judge(f"GET /ws (cookie, Origin {origin})", status, reply, allowed, before)
        for query in [f"access_token={secret}", f"token={secret}"]:
            lines = [
                f"GET /ws?{query} HTTP/1.1".encode(),
                f"Host: 127.0.0.1:{server.port}".encode(),
            ]
            lines += [f"{k}: {v}".encode() for k, v in UPGRADE.items()]
            before = state()
            reply = server.raw(b"\r\n".join(lines) + b"\r\n\r\n")
            judge(
                "GET /ws (token in the URL)",
                int(reply.split()[1]) if reply else 0,
                reply,
                {401},
                before,
            )
    finally:
        pubsub.close()
        engine.dispose()
        server.stop()
    # Every request above was logged (so the access log was on) and none of it shows the token.
    access = (server.logs / "access.log").read_text(errors="replace")
    tally.check(
        name,
        "access_log_written",
        access.count("\n") >= 40,
        operation="(gunicorn access log)",
        detail=f"{access.count(chr(10))} lines",
    )
    for log_file in sorted(server.logs.iterdir()):
        text = log_file.read_text(errors="replace")
        leaked = [line for line in text.splitlines() if secret in line]
        tally.check(
            name,
            "secret_not_logged",
            not leaked,
            operation=f"(gunicorn {log_file.name})",
            request=f"{len(text.splitlines())} lines",
            detail="; ".join(leaked[:3])[:600],
        )


# --- the run ------------------------------------------------------------------------------


def run(*, quick: bool, seed: int, gunicorn: bool = True) -> tuple[dict[str, Any], str]:
    """Every suite; returns the results and a markdown report."""
    import schemathesis

    budget = QUICK if quick else FULL
    # schemathesis 4.32 builds a recursive strategy hypothesis calls deprecated: noise here.
    warnings.filterwarnings("ignore", category=HypothesisDeprecationWarning)
    secret = "mp_fuzzcanary" + secrets.token_hex(12)
    tally = Tally(secret=secret)
    capture = LogCapture()
    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(capture)
    root_logger.setLevel(logging.DEBUG)
    started = time.monotonic()
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="modelpull-fuzz-") as tmp:
        workdir = Path(tmp)
        target = Target(workdir / "app", secret, tally)
        escape = Path(f"/tmp/modelpull-fuzz-escape-{secret[-8:]}")  # noqa: S108 (a canary path)
        try:
            before = files_under(target.workdir)
            doc = target.client.get("/api/openapi.json", headers=target.bearer).get_json()
            with suite(target, "schemathesis"):
                extra["schemathesis"] = run_schemathesis(target, budget, seed)
            with suite(target, "hypothesis"):
                run_properties(target, budget, seed)
            with suite(target, "hostile"):
                hostile_cases(target)
            with suite(target, "auth"):
                run_auth(target, doc)
            with suite(target, "csrf"):
                run_csrf(target)
            with suite(target, "websocket"):
                run_websocket(target)
            with suite(target, "logs"):
                run_logs(target, capture)
            with suite(target, "containment"):
                run_containment(target, escape, before)
            # Requests werkzeug's test client would not build (a NUL or newline in a header).
            extra["unsendable_requests"] = target.unsendable
            if gunicorn:
                with suite(target, "gunicorn"):
                    run_gunicorn(target, workdir / "gunicorn")
        finally:
            target.close()
            root_logger.removeHandler(capture)
            root_logger.setLevel(old_level)
    elapsed = time.monotonic() - started
    return report(
        tally, elapsed, quick=quick, seed=seed, extra=extra, version=schemathesis.__version__
    )


def report(
    tally: Tally, elapsed: float, *, quick: bool, seed: int, extra: dict[str, Any], version: str
) -> tuple[dict[str, Any], str]:
    """The JSON results and the markdown body."""
    import hypothesis

    suites = list(dict.fromkeys([*tally.seconds, *tally.requests]))
    suite_rows = [
        [
            s,
            tally.requests.get(s, 0),
            tally.suite_checks.get(s, 0),
            tally.failed_suites.get(s, 0),
            f"{tally.seconds.get(s, 0):.1f}",
        ]
        for s in suites
    ]
    check_rows = [[c, n, tally.failed_checks.get(c, 0)] for c, n in sorted(tally.checks.items())]
    op_rows = [
        [
            f"`{op}`",
            n,
            tally.failed_operations.get(op, 0),
            " ".join(f"{code}x{k}" for code, k in sorted(tally.statuses[op].items())),
        ]
        for op, n in sorted(tally.by_operation.items())
    ]
    op_rows += [
        [f"`{op}`", 0, n, ""]
        for op, n in sorted(tally.failed_operations.items())
        if op not in tally.by_operation
    ]
    unique: dict[tuple[str, str, str], tuple[Failure, int]] = {}
    for f in tally.failures:
        key = (
            f.check,
            f.operation,
            f.request[:120]
            if f.suite != "schemathesis"
            else f.detail.removeprefix("(again) ")[:80],
        )
        first, count = unique.get(key, (f, 0))
        unique[key] = (first, count + 1)
    failure_rows = [
        [
            f.suite,
            f.check,
            f"`{f.operation}`",
            f.status,
            n,
            f"`{f.request[:160]}`",
            f.detail[:160].replace("|", "/"),
        ]
        for f, n in unique.values()
    ]
    body = "\n\n".join(
        part
        for part in [
            f"**{tally.cases} cases** (requests answered), {sum(tally.checks.values())} checks, "
            f"**{len(tally.failures)} failures**, {elapsed:.0f} s "
            f"({'quick' if quick else 'full'} run, seed {seed}, schemathesis {version}, "
            f"hypothesis {hypothesis.__version__}).",
            "### Per suite\n\n"
            + table(["suite", "cases", "checks", "failures", "seconds"], suite_rows),
            "### Per check\n\n" + table(["check", "evaluated", "failures"], check_rows),
            "### Per operation\n\n"
            + table(["operation", "cases", "failures", "statuses"], op_rows),
            (
                "### Failures\n\n"
                + table(
                    ["suite", "check", "operation", "status", "times", "request", "detail"],
                    failure_rows,
                )
            )
            if failure_rows
            else "",
        ]
        if part
    )
    data = {
        "cases": tally.cases,
        "failures": len(tally.failures),
        "checks": sum(tally.checks.values()),
        "seconds": round(elapsed, 1),
        "quick": quick,
        "seed": seed,
        "versions": {"schemathesis": version, "hypothesis": hypothesis.__version__},
        "suites": {
            s: {
                "cases": tally.requests.get(s, 0),
                "checks": tally.suite_checks.get(s, 0),
                "failures": tally.failed_suites.get(s, 0),
                "seconds": round(tally.seconds.get(s, 0), 1),
            }
            for s in suites
        },
        "per_check": {
            c: {"evaluated": n, "failures": tally.failed_checks.get(c, 0)}
            for c, n in sorted(tally.checks.items())
        },
        "per_operation": {
            op: {
                "cases": n,
                "failures": tally.failed_operations.get(op, 0),
                "statuses": {str(k): v for k, v in sorted(tally.statuses[op].items())},
            }
            for op, n in sorted(tally.by_operation.items())
        },
        "failure_list": [vars(f) | {"times": n} for f, n in list(unique.values())[:200]],
        **extra,
    }
    return data, body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run for CI (well under 60 s)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz.json")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--no-gunicorn", action="store_true", help="skip the real-server pass")
    args = parser.parse_args(argv)
    data, body = run(quick=args.quick, seed=args.seed, gunicorn=not args.no_gunicorn)
    command = ".venv/bin/python bench/fuzz.py" + (" --quick" if args.quick else "")
    command += f" --seed {args.seed}"
    write_results(args.out, data, title="API fuzzing", command=command, body=body)
    return 1 if data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
