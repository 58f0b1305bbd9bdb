"""Hostile input, property-based: whatever arrives, the answer is a 4xx that changes nothing and
sends nothing, or an accepted job whose files stay inside MODELS_DIR; never a 5xx, and a
token sent where it does not belong is neither accepted nor logged."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text
from werkzeug.test import EnvironBuilder, TestResponse

from app import create_app
from app.dispatch import Dispatcher
from app.settings import Settings
from app.storage import MAX_SEGMENT_BYTES
from app.web.auth import redact_query
from tests.oracles import REPO_ORACLE, REVISION_ORACLE, contained, repo_ok, revision_ok
from tests.webapp import AUTH, ENV_TOKEN, UPGRADE

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    # The app and its job store live for the whole test: examples add jobs, and that is fine.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MiB = 1 << 20
TRAVERSAL = [
    "..",
    ".",
    "",
    "%2e%2e",
    "..%2f",
    "\\",
    "..\\",
    "/",
    "//",
    "\x00",
    "C:",
    "~",
    ".modelpull",
    "\u202e",
    "\x85",
    "\x9b",
    " ",
    "y" * 250,
]
HOMOGLYPHS = ["\uff46\uff4f\uff4f/bar", "f\u043e\u043e/bar", "foo\u2215bar"]


class FakeDispatcher(Dispatcher):
    """Records what the app asks to send to the broker and Redis; sends nothing."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sent: list[tuple[str, Any]] = []

    def enqueue(self, factory: Any, file_ids: Any, *, countdown: float = 0) -> list[str]:
        ids = list(file_ids)
        self.sent.append(("enqueue", ids))
        return ids

    def set_control(self, file_ids: Any, action: str) -> None:
        self.sent.append(("control", (list(file_ids), action)))

    def clear_control(self, file_ids: Any) -> None:
        self.sent.append(("clear", list(file_ids)))

    def publish(self, events: Any) -> None:
        self.sent.append(("publish", list(events)))


@pytest.fixture
def dispatcher(web_settings: Settings) -> FakeDispatcher:
    return FakeDispatcher(web_settings)


@pytest.fixture
def app(web_settings: Settings, dispatcher: FakeDispatcher) -> Iterator[Flask]:
    application = create_app(web_settings, dispatcher=dispatcher)
    yield application
    application.extensions["modelpull"].relay.stop()


def rows(app: Flask) -> list[str]:
    """Every row of every table."""
    with app.extensions["modelpull"].sessions() as session:
        conn = session.connection()
        out: list[str] = []
        for table in sorted(inspect(conn).get_table_names()):
            query = text(f'SELECT * FROM "{table}"')  # noqa: S608 (names from the schema)
            out += sorted(f"{table}:{r!r}" for r in conn.execute(query))
        return out


def refused_or_accepted(
    app: Flask, dispatcher: FakeDispatcher, send: Callable[[], TestResponse]
) -> TestResponse:
    """Send; a 4xx must leave the job store as it was and send nothing, and say why in JSON."""
    before, sent = rows(app), len(dispatcher.sent)
    resp = send()
    assert resp.status_code < 500, resp.get_data()
    if 400 <= resp.status_code < 500:
        assert rows(app) == before, "a refused request changed the job store"
        assert len(dispatcher.sent) == sent, "a refused request sent something"
        body = resp.get_json()
        assert isinstance(body, dict) and set(body) == {"error", "message"}, resp.get_data()
    return resp


names = st.builds(
    lambda lead, parts, sep: lead + sep.join(parts),
    st.sampled_from(["", "/", "../", "\\", "C:\\", "~/"]),
    st.lists(st.sampled_from(TRAVERSAL) | st.text(min_size=1, max_size=10), min_size=1, max_size=4),
    st.sampled_from(["/", "\\", "/../", "//"]),
)


@FUZZ
@given(name=names | st.text(max_size=30))
@example(name="../../etc/passwd")
@example(name="/etc/passwd")
@example(name="a/../../b")
@example(name="..\\..\\x")
@example(name="x\x00y")
@example(name=".modelpull/partial/x.part")
@example(name="%2e%2e/x")  # a literal name: accepted as written, inside
@example(name="y" * 246)  # its partial's name would not fit the filesystem
@example(name="a/" * 401)
@example(name="model\u202efdp.gguf")
def test_file_names_stay_inside_models_dir_or_change_nothing(
    client: FlaskClient, app: Flask, dispatcher: FakeDispatcher, name: str
) -> None:
    models_dir = app.extensions["modelpull"].settings.models_dir
    resp = refused_or_accepted(
        app,
        dispatcher,
        lambda: client.post(
            "/api/downloads", headers=AUTH, json={"repo": "org/name", "files": [name]}
        ),
    )
    assert resp.status_code in (202, 400)
    if resp.status_code == 202:
        dest = resp.get_json()["files"][0]["dest"]
        assert dest == f"org/name/{name}" and contained(models_dir, dest)
        assert all(len(part.encode()) <= MAX_SEGMENT_BYTES for part in name.split("/"))
    assert not any(models_dir.iterdir()), "the web tier wrote into MODELS_DIR"


@FUZZ
@given(
    repo=st.sampled_from(HOMOGLYPHS)
    | st.text(max_size=30)
    | st.builds(lambda a, b: f"{a}/{b}", st.text(max_size=100), st.text(max_size=100))
    | st.from_regex(REPO_ORACLE, fullmatch=True)
)
@example(repo="foo/bar\n")
@example(repo="a" * 97 + "/b")
@example(repo="a" * 96 + "/b")
@example(repo="a--b/c")
@example(repo="a/..")
@example(repo="../x")
@example(repo="a/b/c")
@example(repo="")
@example(repo="foo/bar ")
@example(repo="org/name")
def test_repo_ids_outside_the_hub_grammar_are_refused(
    client: FlaskClient, app: Flask, dispatcher: FakeDispatcher, repo: str
) -> None:
    resp = refused_or_accepted(
        app,
        dispatcher,
        lambda: client.post(
            "/api/downloads", headers=AUTH, json={"repo": repo, "files": ["m.bin"]}
        ),
    )
    assert resp.status_code == (202 if repo_ok(repo) else 400), (repo, resp.get_json())


@FUZZ
@given(rev=st.text(max_size=30) | st.from_regex(REVISION_ORACLE, fullmatch=True))
@example(rev="main\n")
@example(rev="../../x")
@example(rev="refs/../x")
@example(rev="a/")
@example(rev="x" * 201)
@example(rev="refs/pr/1")
def test_revisions_outside_branch_tag_or_commit_are_refused(
    client: FlaskClient, app: Flask, dispatcher: FakeDispatcher, rev: str
) -> None:
    body = {"repo": "org/name", "files": ["m.bin"], "revision": rev}
    resp = refused_or_accepted(
        app, dispatcher, lambda: client.post("/api/downloads", headers=AUTH, json=body)
    )
    valid = revision_ok(rev)
    # A revision asked for twice finds its first job under way (200, existing) instead.
    accepted = resp.status_code == 202 or (
        resp.status_code == 200 and resp.get_json()["existing"] is True
    )
    assert accepted if valid else resp.status_code == 400, (rev, resp.get_json())


BODY_ROUTES = ["/api/downloads", "/api/models/pair/download", "/api/session", "/logout"]


@FUZZ
@given(size=st.integers(64 * 1024 + 1, 6 * MiB), path=st.sampled_from(BODY_ROUTES))
@example(size=5 * MiB, path="/api/downloads")
def test_oversized_bodies_get_413_on_every_route(
    client: FlaskClient, app: Flask, dispatcher: FakeDispatcher, size: int, path: str
) -> None:
    body = b'{"repo": "org/name", "files": ["' + b"x" * size + b'"]}'
    resp = refused_or_accepted(
        app,
        dispatcher,
        lambda: client.post(path, headers=AUTH, data=body, content_type="application/json"),
    )
    assert resp.status_code == 413


@FUZZ
@given(
    depth=st.integers(500, 13_000),
    opener=st.sampled_from(["[", '{"a":', '{"repo": "a/b", "files": [']),
)
@example(depth=60_000, opener="[")
def test_malformed_or_deeply_nested_json_is_a_400(
    client: FlaskClient, app: Flask, dispatcher: FakeDispatcher, depth: int, opener: str
) -> None:
    body = (opener * depth)[: 64 * 1024]  # under the body limit: parsed, not refused for size
    resp = refused_or_accepted(
        app,
        dispatcher,
        lambda: client.post(
            "/api/downloads", headers=AUTH, data=body, content_type="application/json"
        ),
    )
    assert resp.status_code == 400


@FUZZ
@given(data=st.binary(max_size=200), ctype=st.sampled_from(["application/json", "text/plain", ""]))
def test_arbitrary_bytes_are_refused(
    client: FlaskClient, app: Flask, dispatcher: FakeDispatcher, data: bytes, ctype: str
) -> None:
    resp = refused_or_accepted(
        app,
        dispatcher,
        lambda: client.post("/api/downloads", headers=AUTH, data=data, content_type=ctype),
    )
    assert resp.status_code == 400


def access_log_line(app: Flask, log_file: Path, path: str, query: str) -> str:
    """Serve one request and write gunicorn's access-log line for it, from the environ the
    app saw (gunicorn logs RAW_URI, QUERY_STRING and the Referer from there)."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    referer = [("Referer", f"http://elsewhere/?{query}")]
    environ = EnvironBuilder(path=path, query_string=query, headers=referer).get_environ()
    environ["RAW_URI"] = f"{path}?{query}"
    status: dict[str, str] = {}

    def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
        status["line"] = line

    body = b"".join(app(environ, start_response))
    config = Config()
    config.set("accesslog", str(log_file))
    logger = Logger(config)
    response = SimpleNamespace(status=status["line"], headers=[], sent=len(body))
    logger.access(response, SimpleNamespace(headers=[]), environ, timedelta(0))
    for handler in logger.access_log.handlers:
        handler.close()
    return log_file.read_text()


@FUZZ
@given(
    param=st.sampled_from(["token", "access_token", "api_key", "apiKey", "auth", "ACCESS_TOKEN"])
    | st.from_regex(r"[a-z_]{0,5}token[a-z_]{0,5}", fullmatch=True),
    path=st.sampled_from(
        ["/api/models", "/api/models/download/jobs", "/metrics", "/ws", "/models"]
    ),
)
def test_a_token_in_the_url_is_refused_and_never_logged(
    client: FlaskClient,
    app: Flask,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    param: str,
    path: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    query = f"{quote(param)}={ENV_TOKEN}&limit=5"
    resp = client.get(f"{path}?{query}")
    if path == "/models":
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/login")
    else:
        assert resp.status_code == 401 and resp.get_json()["error"] == "unauthorized"
    line = access_log_line(app, tmp_path / "access.log", path, query)
    assert ENV_TOKEN not in line and "REDACTED" in line and "limit=5" in line
    assert ENV_TOKEN not in caplog.text


@FUZZ
@given(
    params=st.lists(
        st.tuples(
            st.sampled_from(["token", "Access_Token", "api-key", "limit", "cursor", "x"])
            | st.text(alphabet="abcdefgh_", max_size=6),
            st.text(alphabet="abcXYZ0123-._~", min_size=1, max_size=8),
        ),
        max_size=5,
    )
)
def test_only_credential_like_query_parameters_are_redacted(params: list[tuple[str, str]]) -> None:
    query = "&".join(f"{k}={v}" for k, v in params)
    redacted = redact_query(query).split("&") if query else []
    for (name, value), out in zip(params, redacted, strict=True):
        secret = re.search(r"token|api.?key", name, re.IGNORECASE) is not None
        assert out == (f"{name}=REDACTED" if secret else f"{name}={value}")


@pytest.fixture
def signed_in(client: FlaskClient) -> str:
    """Sign the client in with a session cookie; its CSRF token."""
    assert client.post("/login", data={"token": ENV_TOKEN}).status_code == 302
    return str(client.get("/api/session").get_json()["csrfToken"])


# Header values as browsers send them: latin-1 text without control characters.
header_text = st.text(st.characters(max_codepoint=0xFF, exclude_categories=["Cc"]), max_size=60)


@FUZZ
@given(
    origin=header_text
    | st.from_regex(r"https?://[a-z.]{1,20}(:[0-9]{1,5})?", fullmatch=True)
    | st.none()
)
@example(origin="https://evil.example")
@example(origin="null")
@example(origin="http://localhost.evil.example")
@example(origin="http://localhost:8000")
@example(origin="https://localhost")
def test_a_cookie_from_another_origin_never_gets_a_websocket(
    client: FlaskClient, signed_in: str, origin: str | None
) -> None:
    if origin is not None and origin.rstrip("/") == "http://localhost":
        return  # the one allowed origin: its handshake is checked on a real server
    headers = {**UPGRADE, **({"Origin": origin} if origin is not None else {})}
    resp = client.get("/ws", headers=headers)
    # Refused in before_request: an HTTP answer, never 101 Switching Protocols.
    assert resp.status_code == 403 and resp.get_json()["message"] == "origin not allowed"
    assert "Upgrade" not in resp.headers


@pytest.fixture
def queued_job(client: FlaskClient) -> str:
    resp = client.post("/api/downloads", headers=AUTH, json={"repo": "org/q", "files": ["q.bin"]})
    return str(resp.get_json()["jobId"])


@FUZZ
@given(value=header_text | st.none(), route=st.integers(0, 5))
@example(value="\xe9t\xe9", route=0)  # non-ASCII: once a TypeError in compare_digest, a 500
@example(value="", route=1)
def test_cookie_sessions_change_nothing_without_their_csrf_token(
    client: FlaskClient,
    app: Flask,
    dispatcher: FakeDispatcher,
    signed_in: str,
    queued_job: str,
    value: str | None,
    route: int,
) -> None:
    method, path = [
        ("POST", "/api/downloads"),
        ("POST", "/api/models/pair/download"),
        ("POST", f"/api/models/download/{queued_job}/cancel"),
        ("POST", f"/api/models/download/{queued_job}/pause"),
        ("POST", "/logout"),
        ("POST", "/api/session"),
    ][route]
    headers = {"X-CSRF-Token": value} if value is not None else {}
    resp = refused_or_accepted(
        app,
        dispatcher,
        lambda: client.open(
            path, method=method, headers=headers, json={"repo": "org/c", "files": ["c.bin"]}
        ),
    )
    assert resp.status_code == 403 and resp.get_json()["error"] == "csrf_failed"
    assert client.get("/api/session").status_code == 200  # still signed in


@pytest.mark.parametrize("path", ["/api/models", "/healthz", "/login", "/readyz"])
def test_a_method_a_route_does_not_serve_gets_405_naming_the_allowed_ones(
    client: FlaskClient, path: str
) -> None:
    for headers in (AUTH, {}):
        resp = client.open(path, method="TRACE", headers=headers)
        if path == "/api/models" and not headers:
            assert resp.status_code == 401  # a protected path says nothing to strangers
            continue
        assert resp.status_code == 405, (path, headers)
        assert "GET" in resp.headers["Allow"] and resp.get_json()["error"] == "method_not_allowed"


def test_the_job_list_is_not_a_job(client: FlaskClient) -> None:
    # "/download/jobs" once matched "/download/<job_id>": DELETE was routed, and advertised.
    resp = client.delete("/api/models/download/jobs", headers=AUTH)
    assert resp.status_code == 405 and "DELETE" not in resp.headers["Allow"]
    job = client.post("/api/downloads", headers=AUTH, json={"repo": "o/r", "files": ["f"]})
    job_id = job.get_json()["jobId"]
    for suffix in ("%0a", "%00", "0", "/"):  # (a raw "\n" never leaves urlsplit)
        resp = client.get(f"/api/models/download/status/{job_id}{suffix}", headers=AUTH)
        assert resp.status_code in (404, 308) and resp.status_code != 200
