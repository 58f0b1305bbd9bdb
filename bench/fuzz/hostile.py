"""The hostile suite: hand-written hostile requests, each with the answer it must get (path
traversal, NUL, backslashes, long names, oversized and malformed bodies, content types,
queries, methods, odd credentials)."""

from __future__ import annotations

import base64
import json
from typing import Any

from bench.fuzz.target import Exchange, Target
from bench.fuzz.values import (
    BAD_NAMES,
    BAD_QUERIES,
    BAD_REPOS,
    BAD_REVISIONS,
    CRAFTED_CURSORS,
    LITERAL_NAMES,
    MALFORMED_JSON,
    NOT_JSON_TYPES,
    ODD_AUTHORIZATION,
    ODD_COOKIES,
    ODD_PATHS,
    STATIC_TRAVERSAL,
    URL_IDS,
    escape_canary,
)
from tests.oracles import contained
from tests.support import MiB


def hostile_cases(target: Target) -> None:
    """Hand-written hostile requests, each with the answer it must get."""
    unsafe_names(target)
    job = url_traversal(target)
    oversized_bodies(target, job)
    malformed_bodies(target)
    queries_and_methods(target, job)
    odd_credentials(target)


def download(target: Target, body: Any) -> Exchange | None:
    """POST /api/downloads with the token and a JSON body."""
    return target.send("POST", "/api/downloads", headers=target.bearer, json_body=body)


def unsafe_names(target: Target) -> None:
    """Path traversal and other unsafe names in the file list: refused, nothing stored; odd
    but plain names accepted as written; bad repo ids and revisions refused."""
    want = target.expect_status
    escape = "../../../../.." + str(escape_canary(target.secret))
    for name in BAD_NAMES:
        body = {"repo": "org/name", "files": [name.replace("{escape}", escape)]}
        want(download(target, body), {400})
    for name in LITERAL_NAMES:
        ex = download(target, {"repo": "org/name", "files": [name]})
        want(ex, {202})
        if ex is not None and ex.status == 202:
            dest = ex.json()["files"][0]["dest"]
            ok = dest == f"org/name/{name}" and contained(target.models_dir, dest)
            target.expect(ex, "accepted_dest_contained", ok, dest)
    for repo in BAD_REPOS:
        want(download(target, {"repo": repo, "files": ["m.bin"]}), {400})
    for rev in BAD_REVISIONS:
        want(download(target, {"repo": "org/name", "files": ["m.bin"], "revision": rev}), {400})


def url_traversal(target: Target) -> str:
    """Traversal in URL paths: model ids, job ids, the static folder (public), unknown
    routes. Returns the job it made (a real id to mangle)."""
    bearer, send, want = target.bearer, target.send, target.expect_status
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
    return job


def oversized_bodies(target: Target, job: str) -> None:
    """Oversized bodies: refused up front on every route, whether it reads its body or not;
    just over the size limit in many files; over the count by one file."""
    bearer, send, want = target.bearer, target.send, target.expect_status
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
    many = [f"{i:04d}" + "y" * 700 for i in range(100)]
    want(download(target, {"repo": "org/name", "files": many}), {413})
    one_too_many = [f"{i}.bin" for i in range(101)]
    want(download(target, {"repo": "org/name", "files": one_too_many}), {400})


def malformed_bodies(target: Target) -> None:
    """Malformed JSON, bodies of the wrong shape or content type."""
    bearer, send, want = target.bearer, target.send, target.expect_status
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


def queries_and_methods(target: Target, job: str) -> None:
    """Bad limits, statuses and cursors (some crafted to decode); methods a route does not
    serve get 405 naming the allowed ones."""
    bearer, send, want = target.bearer, target.send, target.expect_status
    crafted = [base64.urlsafe_b64encode(c.encode()).decode().rstrip("=") for c in CRAFTED_CURSORS]
    for query in [*BAD_QUERIES, *(f"cursor={c}" for c in crafted)]:
        ex = send("GET", "/api/models/download/jobs", headers=bearer, query=query)
        want(ex, {200, 400})
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


def odd_credentials(target: Target) -> None:
    """A huge or non-ASCII token, junk cookies, a method override; then controls: the same
    routes answer plain, valid requests, and catalog downloads (again while queued) too."""
    bearer, send, want, secret = target.bearer, target.send, target.expect_status, target.secret
    for value in ODD_AUTHORIZATION:
        headers = {"Authorization": value.replace("{secret}", secret)}
        want(send("GET", "/api/models", headers=headers), {401})
    for cookie in ODD_COOKIES:
        headers = {"Cookie": cookie.replace("{secret}", secret)}
        want(send("GET", "/api/models", headers=headers), {401})
    override = {**bearer, "X-HTTP-Method-Override": "DELETE"}
    want(send("POST", "/api/models", headers=override), {405})
    want(send("GET", "/static/app.css"), {200})
    want(send("GET", "/api/models/pair/files", headers=bearer), {200})
    for model in ("pair", "single", "pair"):
        want(send("POST", f"/api/models/{model}/download", headers=bearer), {200, 202})
