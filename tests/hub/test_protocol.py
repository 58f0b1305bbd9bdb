"""The imitation Hub's download protocol, as a requests-based downloader sees it."""

from __future__ import annotations

import json
from urllib.parse import quote, urlsplit

import pytest
import requests

from tests.hub import (
    BAD_TOKEN,
    GATED,
    OTHER_TOKEN,
    PRIVATE,
    TINY,
    VALID_TOKEN,
    BytesFile,
    GeneratedFile,
    ImitationHub,
    generate_chunks,
)
from tests.hub.repos_dir import load_repos_dir

pytestmark = pytest.mark.timeout(20)
TIMEOUT = (5, 10)


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def test_lfs_head_redirects_to_signed_cdn_url_with_linked_headers(hub: ImitationHub):
    info = hub.file_info(TINY, "model.bin")

    r = requests.head(hub.resolve_url(TINY, "model.bin"), allow_redirects=False, timeout=TIMEOUT)

    assert r.status_code == 302
    assert r.headers["X-Repo-Commit"] == info.commit == hub.commit(TINY)
    assert r.headers["X-Linked-Etag"] == f'"{info.sha256}"'
    assert r.headers["X-Linked-Size"] == str(info.size)
    # The redirect's own ETag and length describe the redirect, as on the real Hub.
    assert r.headers["ETag"] == f'"{info.blob_id}"' != f'"{info.sha256}"'
    assert int(r.headers["Content-Length"]) != info.size
    location = urlsplit(r.headers["Location"])
    assert (location.hostname, location.port) == ("localhost", hub.cdn_port)
    assert location.path == f"/lfs/{info.sha256}"
    assert "sig=" in location.query and "X-Amz-Expires=3600" in location.query
    assert "X-Xet-Hash" not in r.headers


def test_regular_head_has_true_length_git_etag_and_commit(hub: ImitationHub):
    info = hub.file_info(TINY, "config.json")

    r = requests.head(hub.resolve_url(TINY, "config.json"), timeout=TIMEOUT)

    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == info.size > 0
    assert r.headers["ETag"] == f'"{info.git_sha1}"'
    assert r.headers["X-Repo-Commit"] == info.commit
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.content == b""


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [("bytes=4000-", 4000, 10239), ("bytes=100-199", 100, 199), ("bytes=-40", 10200, 10239)],
)
def test_ranged_get_through_cdn_returns_206_and_the_slice(
    hub: ImitationHub, range_header: str, start: int, end: int
):
    data = hub.file_info(TINY, "model.bin").read_bytes()

    r = requests.get(
        hub.resolve_url(TINY, "model.bin"), headers={"Range": range_header}, timeout=TIMEOUT
    )

    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/10240"
    assert r.content == data[start : end + 1]
    assert r.history[0].status_code == 302


def test_range_past_the_end_is_416_with_total(hub: ImitationHub):
    r = requests.get(
        hub.resolve_url(TINY, "config.json"), headers={"Range": "bytes=9999-"}, timeout=TIMEOUT
    )

    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{hub.file_info(TINY, 'config.json').size}"


@pytest.mark.parametrize("quoted", [True, False])
def test_if_range_with_current_etag_resumes(hub: ImitationHub, quoted: bool):
    info = hub.file_info(TINY, "model.bin")
    etag = f'"{info.sha256}"' if quoted else info.sha256

    r = requests.get(
        hub.resolve_url(TINY, "model.bin"),
        headers={"Range": "bytes=10000-", "If-Range": etag},
        timeout=TIMEOUT,
    )

    assert r.status_code == 206
    assert r.content == info.read_bytes()[10000:]


def test_if_range_with_stale_etag_sends_the_whole_new_file(hub: ImitationHub):
    old = hub.file_info(TINY, "model.bin")
    hub.put_file(TINY, "model.bin", GeneratedFile(size=10240, seed=99))
    new = hub.file_info(TINY, "model.bin")

    r = requests.get(
        hub.resolve_url(TINY, "model.bin"),
        headers={"Range": "bytes=5000-", "If-Range": f'"{old.sha256}"'},
        timeout=TIMEOUT,
    )

    assert r.status_code == 200
    assert r.content == new.read_bytes()
    assert r.headers["ETag"] == f'"{new.sha256}"'


def test_opaque_cdn_etag_validates_only_its_own_etag(hub: ImitationHub):
    # A real CDN's ETag need not be the sha256: If-Range must use what the CDN sent.
    hub.cdn_etag = "opaque"
    info = hub.file_info(TINY, "model.bin")
    url = hub.resolve_url(TINY, "model.bin")
    cdn_etag = requests.head(url, allow_redirects=True, timeout=TIMEOUT).headers["ETag"]

    with_sha256 = requests.get(
        url, headers={"Range": "bytes=10000-", "If-Range": f'"{info.sha256}"'}, timeout=TIMEOUT
    )
    with_own = requests.get(
        url, headers={"Range": "bytes=10000-", "If-Range": cdn_etag}, timeout=TIMEOUT
    )

    assert cdn_etag.strip('"') != info.sha256
    assert (with_sha256.status_code, len(with_sha256.content)) == (200, info.size)
    assert (with_own.status_code, with_own.content) == (206, info.read_bytes()[10000:])


def test_following_the_redirect_drops_the_token_before_the_cdn(hub: ImitationHub):
    r = requests.get(
        hub.resolve_url(TINY, "model.bin"), headers=_auth(VALID_TOKEN), timeout=TIMEOUT
    )

    assert r.status_code == 200
    assert r.content == hub.file_info(TINY, "model.bin").read_bytes()
    hub_get, cdn_get = hub.requests
    assert (hub_get.host, hub_get.status) == ("hub", 302)
    assert hub_get.header("Authorization") == f"Bearer {VALID_TOKEN}"
    assert (cdn_get.host, cdn_get.status) == ("cdn", 200)
    assert cdn_get.header("Authorization") is None


@pytest.mark.parametrize(
    ("repo", "path", "token", "status", "code"),
    [
        ("org/nope", "config.json", None, 401, "RepoNotFound"),
        ("org/nope", "config.json", VALID_TOKEN, 404, "RepoNotFound"),
        (PRIVATE, "config.json", None, 401, "RepoNotFound"),
        (PRIVATE, "config.json", OTHER_TOKEN, 404, "RepoNotFound"),
        (GATED, "config.json", None, 401, "GatedRepo"),
        (GATED, "config.json", OTHER_TOKEN, 403, "GatedRepo"),
        (TINY, "nope.txt", None, 404, "EntryNotFound"),
        (TINY, "sub", None, 404, "EntryNotFound"),
    ],
)
def test_errors_carry_the_hub_error_code(
    hub: ImitationHub, repo: str, path: str, token: str | None, status: int, code: str
):
    for method in ("HEAD", "GET"):
        r = requests.request(
            method, hub.resolve_url(repo, path), headers=_auth(token), timeout=TIMEOUT
        )

        assert (r.status_code, r.headers.get("X-Error-Code")) == (status, code)
        assert r.headers["X-Error-Message"]
        if method == "GET":
            assert r.json() == {"error": r.headers["X-Error-Message"]}
        if code == "EntryNotFound":
            assert r.headers["X-Repo-Commit"] == hub.commit(TINY)


def test_approved_token_reads_private_and_gated_files(hub: ImitationHub):
    for repo, path in ((PRIVATE, "weights.gguf"), (GATED, "model.safetensors")):
        r = requests.get(hub.resolve_url(repo, path), headers=_auth(VALID_TOKEN), timeout=TIMEOUT)

        assert r.status_code == 200
        assert r.content == hub.file_info(repo, path).read_bytes()


def test_unknown_revision_is_revision_not_found(hub: ImitationHub):
    r = requests.head(hub.resolve_url(TINY, "config.json", revision="v9"), timeout=TIMEOUT)

    assert (r.status_code, r.headers["X-Error-Code"]) == (404, "RevisionNotFound")


def test_commit_sha_and_quoted_branch_revisions_resolve(hub: ImitationHub):
    hub.update_repo(TINY, branches=("main", "refs/pr/1"))
    commit = hub.commit(TINY)

    for revision in (commit, "refs/pr/1"):
        r = requests.get(hub.resolve_url(TINY, "config.json", revision=revision), timeout=TIMEOUT)
        assert r.status_code == 200
        assert r.headers["X-Repo-Commit"] == commit
    assert "/resolve/refs%2Fpr%2F1/" in hub.requests[-1].path


def test_unknown_token_is_invalid_credentials_everywhere(hub: ImitationHub):
    for url in (hub.resolve_url(TINY, "config.json"), f"{hub.url}/api/models/{TINY}"):
        r = requests.get(url, headers=_auth(BAD_TOKEN), timeout=TIMEOUT)

        assert r.status_code == 401
        assert r.headers["X-Error-Message"] == "Invalid credentials in Authorization header"


def test_agent_harness_registry_is_404(hub: ImitationHub):
    assert requests.get(f"{hub.url}/api/agent-harnesses", timeout=TIMEOUT).status_code == 404


def test_info_api_with_and_without_blobs(hub: ImitationHub):
    repo = hub.repo(TINY)

    plain = requests.get(f"{hub.url}/api/models/{TINY}", timeout=TIMEOUT).json()
    blobs = requests.get(
        f"{hub.url}/api/models/{TINY}/revision/main", params={"blobs": "true"}, timeout=TIMEOUT
    ).json()

    assert (plain["id"], plain["sha"], plain["private"], plain["gated"]) == (
        TINY,
        repo.commit,
        False,
        False,
    )
    assert sorted(s["rfilename"] for s in plain["siblings"]) == sorted(repo.files)
    assert "size" not in plain["siblings"][0]
    model = next(s for s in blobs["siblings"] if s["rfilename"] == "model.bin")
    info = repo.files["model.bin"]
    assert model == {
        "rfilename": "model.bin",
        "blobId": info.pointer_oid,
        "size": 10240,
        "lfs": {"sha256": info.sha256, "size": 10240, "pointerSize": info.pointer_size},
    }
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{info.sha256}\nsize 10240\n"
    assert info.pointer_size == len(pointer)
    config = next(s for s in blobs["siblings"] if s["rfilename"] == "config.json")
    assert "lfs" not in config and config["blobId"] == repo.files["config.json"].git_sha1
    assert "xetHash" not in json.dumps(blobs)


def test_tree_api_lists_files_lfs_and_directories(hub: ImitationHub):
    base = f"{hub.url}/api/models/{TINY}/tree/main"

    root = requests.get(base, params={"recursive": "false"}, timeout=TIMEOUT).json()
    deep = requests.get(base, params={"recursive": "true"}, timeout=TIMEOUT).json()
    sub = requests.get(
        f"{base}/{quote('sub/dir', safe='')}", params={"expand": "true"}, timeout=TIMEOUT
    ).json()
    missing = requests.get(f"{base}/nope", timeout=TIMEOUT)

    assert sorted((e["type"], e["path"]) for e in root) == [
        ("directory", "sub"),
        ("file", "README.md"),
        ("file", "config.json"),
        ("file", "model.bin"),
    ]
    assert {e["path"] for e in deep} == {*hub.repo(TINY).files, "sub", "sub/dir"}
    model = next(e for e in deep if e["path"] == "model.bin")
    assert model["lfs"]["oid"] == hub.file_info(TINY, "model.bin").sha256
    assert [e["path"] for e in sub] == ["sub/dir/notes.txt"]
    assert sub[0]["lastCommit"]["id"] == hub.commit(TINY)
    assert (missing.status_code, missing.headers["X-Error-Code"]) == (404, "EntryNotFound")
    assert "xetHash" not in json.dumps(deep)


def test_paths_info_answers_form_posts(hub: ImitationHub):
    r = requests.post(
        f"{hub.url}/api/models/{TINY}/paths-info/main",
        data={"paths": ["model.bin", "sub", "nope"], "expand": "false"},
        timeout=TIMEOUT,
    )

    assert [(e["type"], e["path"]) for e in r.json()] == [
        ("file", "model.bin"),
        ("directory", "sub"),
    ]


def test_api_hides_private_repos_and_reads_gated_metadata(hub: ImitationHub):
    private = requests.get(f"{hub.url}/api/models/{PRIVATE}", timeout=TIMEOUT)
    gated = requests.get(f"{hub.url}/api/models/{GATED}", timeout=TIMEOUT)
    hub.gate_metadata = True
    gated_strict = requests.get(f"{hub.url}/api/models/{GATED}/tree/main", timeout=TIMEOUT)

    assert (private.status_code, private.headers["X-Error-Code"]) == (401, "RepoNotFound")
    # Like the real Hub, metadata of a gated repo is public; only files are gated.
    assert (gated.status_code, gated.json()["gated"]) == (200, "manual")
    assert (gated_strict.status_code, gated_strict.headers["X-Error-Code"]) == (401, "GatedRepo")


def test_content_change_gives_a_new_commit(hub: ImitationHub):
    before = hub.commit(TINY)

    hub.put_file(TINY, "extra.txt", b"new\n")
    added = hub.commit(TINY)
    hub.delete_file(TINY, "extra.txt")

    assert len({before, added, hub.commit(TINY)}) == 3
    r = requests.head(hub.resolve_url(TINY, "config.json"), timeout=TIMEOUT)
    assert r.headers["X-Repo-Commit"] == hub.commit(TINY)


def test_cdn_rejects_an_unsigned_url(hub: ImitationHub):
    info = hub.file_info(TINY, "model.bin")

    r = requests.get(f"{hub.cdn_url}/lfs/{info.sha256}", timeout=TIMEOUT)

    assert r.status_code == 403


def test_cdn_off_serves_lfs_with_sha256_etag(hub: ImitationHub):
    hub.cdn_redirect = False
    info = hub.file_info(TINY, "model.bin")

    r = requests.get(hub.resolve_url(TINY, "model.bin"), timeout=TIMEOUT)

    assert r.status_code == 200 and not r.history
    assert r.headers["ETag"] == r.headers["X-Linked-Etag"] == f'"{info.sha256}"'
    assert r.content == info.read_bytes()


def test_non_ascii_paths_and_revisions_are_served(empty_hub: ImitationHub):
    empty_hub.add_repo("org/names", {"dir with space/naïve ü#1.txt": "café"})

    ok = requests.get(empty_hub.resolve_url("org/names", "dir with space/naïve ü#1.txt"), timeout=5)
    bad_rev = requests.get(
        empty_hub.resolve_url("org/names", "x.txt", revision="brånch"), timeout=TIMEOUT
    )

    assert (ok.status_code, ok.content) == (200, "café".encode())
    assert "filename*=UTF-8''na%C3%AFve%20%C3%BC%231.txt" in ok.headers["Content-Disposition"]
    assert (bad_rev.status_code, bad_rev.headers["X-Error-Code"]) == (404, "RevisionNotFound")


def test_lfs_rule_and_explicit_override(empty_hub: ImitationHub):
    repo = empty_hub.add_repo(
        "org/mixed",
        {
            "small.gguf": b"GGUF",
            "notes.txt": b"text",
            "big.txt": GeneratedFile(size=10 * 1024 * 1024 + 1, seed=5),
            "forced.txt": BytesFile(b"forced", lfs=True),
            "plain.bin": BytesFile(b"plain", lfs=False),
        },
    )

    assert {p: f.lfs for p, f in repo.files.items()} == {
        "small.gguf": True,
        "notes.txt": False,
        "big.txt": True,
        "forced.txt": True,
        "plain.bin": False,
    }


def test_generated_files_are_deterministic_and_streamed_to_disk(empty_hub: ImitationHub):
    a = empty_hub.add_repo("org/a", {"x.bin": GeneratedFile(size=3 << 20, seed=11)})
    b = empty_hub.add_repo("org/b", {"y.bin": GeneratedFile(size=1 << 20, seed=11)})

    expected = b"".join(generate_chunks(11, 3 << 20))
    assert a.files["x.bin"].read_bytes() == expected
    assert b.files["y.bin"].read_bytes() == expected[: 1 << 20]


def test_repos_dir_with_settings_file(empty_hub: ImitationHub, tmp_path):
    root = tmp_path / "repos"
    (root / "org" / "demo" / "sub").mkdir(parents=True)
    (root / "org" / "demo" / "config.json").write_text("{}")
    (root / "org" / "demo" / "sub" / "w.safetensors").write_bytes(b"\0" * 100)
    (root / "datasets" / "org" / "ds").mkdir(parents=True)
    (root / "datasets" / "org" / "ds" / "train.csv").write_text("a\n1\n")
    (root / "hub.json").write_text(
        json.dumps(
            {
                "repos": {
                    "org/demo": {"files": {"big.gguf": {"generate": {"size": 2048, "seed": 3}}}},
                    "org/locked": {
                        "gated": "manual",
                        "approved_tokens": [VALID_TOKEN],
                        "files": {"a.txt": {"text": "hi"}},
                    },
                }
            }
        )
    )

    keys = load_repos_dir(empty_hub, root)

    assert keys == ["datasets/org/ds", "org/demo", "org/locked"]
    demo = empty_hub.repo("org/demo")
    assert sorted(demo.files) == ["big.gguf", "config.json", "sub/w.safetensors"]
    assert demo.files["sub/w.safetensors"].disk_path == (root / "org/demo/sub/w.safetensors")
    assert empty_hub.repo("org/locked").gated == "manual"
    assert empty_hub.file_info("org/ds", "train.csv", repo_type="dataset").size == 4


def test_a_hub_bug_is_a_500_not_a_dropped_connection(hub: ImitationHub, monkeypatch, caplog):
    def broken(self, *, blobs):
        raise RuntimeError("boom")

    monkeypatch.setattr("tests.hub.repos.Repo.info_json", broken)

    r = requests.get(f"{hub.url}/api/models/{TINY}", timeout=TIMEOUT)

    assert r.status_code == 500
    assert "boom" in caplog.text
