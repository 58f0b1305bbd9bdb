"""The hypothesis suite: hostile values against the routes that take them, each with an
oracle (repo ids, file names, revisions, JSON and raw bodies, job ids, queries, headers,
static paths, model ids, CSRF tokens)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from bench.common import ROOT
from bench.fuzz.target import Exchange, Target
from bench.fuzz.values import BAD_REVISIONS, json_values, path_like, repo_ids
from tests.oracles import contained, repo_ok, revision_ok

CONTENT_TYPES = [
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
JOB_ROUTES = [
    ("GET", "/api/models/download/status/{}"),
    ("POST", "/api/models/download/{}/cancel"),
    ("POST", "/api/models/download/{}/pause"),
    ("POST", "/api/models/download/{}/resume"),
    ("POST", "/api/models/download/{}/retry"),
    ("DELETE", "/api/models/download/{}"),
]
STATUSES = ["", "queued", "downloading", "paused", "completed", "failed", "cancelled"]
STATIC = (ROOT / "app/web/static").resolve()


def explore(
    target: Target,
    prop: Callable[[Any], None],
    strategy: st.SearchStrategy[Any],
    examples: int,
    seed: int,
) -> None:
    """Run `prop` on `examples` values drawn from `strategy` (no shrinking: the checks record
    failures rather than raise, so every example is counted)."""

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
            prop(value)
        except Exception as exc:  # a bug of this harness: counted, and the run goes on
            target.tally.check(
                target.suite,
                "harness_error",
                False,
                operation=prop.__name__,
                request=repr(value)[:300],
                detail=repr(exc),
            )

    run()


def redirect_stays_local(target: Target, ex: Exchange | None) -> None:
    """A redirect (Werkzeug merging slashes) points back at this server."""
    if ex is not None and 300 <= ex.status < 400:
        location = ex.header("Location") or ""
        target.expect(
            ex, "redirect_stays_local", location.startswith(("/", "http://localhost/")), location
        )


def job_ids(real: list[str]) -> st.SearchStrategy[str]:
    """Job ids: random text, paths, and real ids mangled (never a real one)."""
    return st.one_of(
        st.text(max_size=40),
        st.sampled_from(real).flatmap(
            lambda j: st.sampled_from(
                [j + "\n", j.upper(), " " + j, j + "/", j[:-1], j + "%00", j + "x"]
            )
        ),
        path_like(),
    )


def list_queries() -> st.SearchStrategy[tuple[str, str, str]]:
    """(status, limit, cursor) for the job list."""
    limits = st.one_of(
        st.integers(-5, 300).map(str), st.text(max_size=6), st.sampled_from(["50", "0050", "٣"])
    )
    cursors = st.one_of(st.just(""), st.text(max_size=60))
    return st.tuples(st.sampled_from(STATUSES) | st.text(max_size=12), limits, cursors)


class Properties:
    """The properties, each one route and its oracle; `client` is signed in with a cookie."""

    def __init__(self, target: Target, client: FlaskClient) -> None:
        self.target = target
        self.client = client

    def download(self, body: Any) -> Exchange | None:
        """POST /api/downloads with the token and a JSON body."""
        return self.target.send(
            "POST", "/api/downloads", headers=self.target.bearer, json_body=body
        )

    def accepted_dest(self, ex: Exchange | None) -> str | None:
        """The destination of an accepted download's first file."""
        return str(ex.json()["files"][0]["dest"]) if ex is not None and ex.status == 202 else None

    def repo_property(self, repo: str) -> None:
        """A valid repo id is accepted, any other refused; what is accepted stays inside."""
        ex = self.download({"repo": repo, "files": ["model.bin"]})
        self.target.expect_status(ex, {202} if repo_ok(repo) else {400})
        if (dest := self.accepted_dest(ex)) is not None:
            ok = contained(self.target.models_dir, dest)
            self.target.expect(ex, "accepted_dest_contained", ok, dest)

    def name_property(self, name: str) -> None:
        """A file name is accepted as written, inside MODELS_DIR and short enough, or refused."""
        ex = self.download({"repo": "org/name", "files": [name]})
        self.target.expect_status(ex, {202, 400})
        if (dest := self.accepted_dest(ex)) is not None:
            ok = contained(self.target.models_dir, dest) and dest == f"org/name/{name}"
            self.target.expect(ex, "accepted_dest_contained", ok, dest)
            # 255 bytes a name, less the longest work file's suffix, ".part.json.tmp".
            fits = all(len(s.encode()) <= 241 for s in name.split("/"))
            self.target.expect(ex, "accepted_name_fits", fits)

    def revision_property(self, rev: str) -> None:
        """A valid revision is accepted, any other refused."""
        ex = self.download({"repo": "org/name", "files": ["m.bin"], "revision": rev})
        self.target.expect_status(ex, {202} if revision_ok(rev) else {400})

    def json_property(self, body: Any) -> None:
        """Any JSON body: only a well-shaped one is accepted."""
        ex = self.download(body)
        self.target.expect_status(ex, {202, 400})
        if body is None:
            return
        shaped = (
            isinstance(body, dict)
            and set(body) <= {"repo", "files", "revision"}
            and repo_ok(body.get("repo"))
            and isinstance(body.get("files"), list)
        )
        ok = shaped or ex is None or ex.status != 202
        self.target.expect(ex, "accepted_only_what_is_valid", ok)

    def raw_body_property(self, value: tuple[bytes, str]) -> None:
        """Bytes that are no JSON download body, of any content type, are refused."""
        data, ctype = value
        headers = self.target.bearer
        ex = self.target.send(
            "POST", "/api/downloads", headers=headers, data=data, content_type=ctype
        )
        self.target.expect_status(ex, {400})

    def job_id_property(self, value: tuple[tuple[str, str], str]) -> None:
        """A mangled job id on every job route is unknown."""
        (method, template), job_id = value
        path = template.format(quote(job_id, safe="", errors="surrogatepass"))
        ex = self.target.send(method, path, headers=self.target.bearer)
        if self.target.job_with_prefix(job_id):
            # A cut-short id that is still a unique prefix names the real job (as git's do):
            # its answer, or 409 for an action its state does not allow.
            self.target.expect_status(ex, {200, 204, 409})
            return
        # Never the real job: a mangled id is unknown (or unroutable, or merged slashes).
        self.target.expect_status(ex, {404, 405, 308})
        redirect_stays_local(self.target, ex)

    def list_property(self, value: tuple[str, str, str]) -> None:
        """The job list answers exactly the valid status, limit and cursor."""
        status, limit, cursor = value
        query = "&".join(
            f"{k}={quote(v, errors='surrogatepass')}"
            for k, v in (("status", status), ("limit", limit), ("cursor", cursor))
        )
        headers = self.target.bearer
        ex = self.target.send("GET", "/api/models/download/jobs", headers=headers, query=query)
        limit_ok = (
            re.fullmatch(r"[0-9]{1,4}", limit, re.ASCII) is not None and 1 <= int(limit) <= 200
        )
        valid = status in STATUSES and limit_ok and not cursor  # a cursor we did not give out: 400
        self.target.expect_status(ex, {200} if valid else {400})

    def authorization_property(self, value: str) -> None:
        """Only `Bearer <the token>` opens the API."""
        ex = self.target.send("GET", "/api/models", headers={"Authorization": value})
        scheme, _, token = value.partition(" ")
        ok = scheme.lower() == "bearer" and token.strip() == self.target.secret
        self.target.expect_status(ex, {200} if ok else {401})

    def static_property(self, path: str) -> None:
        """The static route serves files of its folder and nothing else."""
        ex = self.target.send("GET", "/static/" + quote(path, safe="/%", errors="surrogatepass"))
        if ex is None:
            return
        self.target.expect_status(ex, {200, 308, 401, 404})
        if ex.status == 200:
            inside = any(
                p.is_file() and p.read_bytes() == ex.response_body for p in STATIC.rglob("*")
            )
            self.target.expect(ex, "static_stays_in_its_folder", inside)

    def model_id_property(self, model_id: str) -> None:
        """Only the catalog's models have files."""
        path = f"/api/models/{quote(model_id, safe='', errors='surrogatepass')}/files"
        ex = self.target.send("GET", path, headers=self.target.bearer)
        self.target.expect_status(ex, {200} if model_id in ("pair", "single") else {404, 308})
        redirect_stays_local(self.target, ex)

    def csrf_property(self, value: str) -> None:
        """A cookie session with a wrong CSRF token changes nothing."""
        ex = self.target.send(
            "POST",
            "/api/downloads",
            client=self.client,
            headers={"X-CSRF-Token": value},
            json_body={"repo": "org/csrf", "files": ["x.bin"]},
        )
        self.target.expect_status(ex, {403})


def run_properties(target: Target, examples: int, seed: int) -> None:
    """Every property, `examples` values each."""
    real = [target.new_job(), target.new_job("completed")]
    client, _ = target.cookie_client()
    p = Properties(target, client)
    plan: list[tuple[Callable[[Any], None], st.SearchStrategy[Any]]] = [
        (p.repo_property, repo_ids()),
        (p.name_property, st.one_of(path_like(), st.text(max_size=60))),
        (
            p.revision_property,
            st.one_of(st.sampled_from(BAD_REVISIONS), st.text(max_size=30), path_like()),
        ),
        (p.json_property, json_values()),
        (
            p.raw_body_property,
            st.tuples(st.binary(max_size=300), st.sampled_from(CONTENT_TYPES)),
        ),
        (p.job_id_property, st.tuples(st.sampled_from(JOB_ROUTES), job_ids(real))),
        (p.list_property, list_queries()),
        (
            p.authorization_property,
            st.one_of(st.text(max_size=60), st.sampled_from(["Bearer", "Bearer ", "bearer  x"])),
        ),
        (p.static_property, path_like()),
        (
            p.model_id_property,
            st.one_of(st.sampled_from(["pair", "single"]), st.text(max_size=40), path_like()),
        ),
        (p.csrf_property, st.text(max_size=60)),
    ]
    for prop, strategy in plan:
        explore(target, prop, strategy, examples, seed)
