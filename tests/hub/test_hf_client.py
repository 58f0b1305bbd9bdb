"""The real huggingface_hub client (2.4.0) against the imitation Hub.

The client reads HF_* variables at import time, so each test runs it in a child process
with its own environment and cache, and reads back one JSON line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.hub import (
    DATASET,
    GATED,
    OTHER_TOKEN,
    PRIVATE,
    TINY,
    VALID_TOKEN,
    GeneratedFile,
    ImitationHub,
    hf_environ,
)

_PRELUDE = """
import hashlib, json, os, sys
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub import errors
A = json.loads(sys.argv[1])
ENDPOINT = os.environ["HF_ENDPOINT"]
CACHE = str(Path(os.environ["HF_HOME"]) / "hub")

from app.digest import sha256_file as sha256_of

def error_name(call):
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return None

def out(**result):
    print(json.dumps(result))
"""


def run_hf(env: dict[str, str], code: str, cwd: Path, **args: Any) -> dict[str, Any]:
    """Run `code` with huggingface_hub in a child process; returns what it passed to out()."""
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(code), json.dumps(args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(30)
def test_regular_file_downloads_with_git_sha1_blob(hub: ImitationHub, hf_env, tmp_path):
    info = hub.file_info(TINY, "config.json")

    result = run_hf(
        hf_env,
        """
        path = hf_hub_download(A["repo"], "config.json", endpoint=ENDPOINT, cache_dir=CACHE)
        out(data=Path(path).read_text(), blob=os.path.basename(os.path.realpath(path)),
            snapshot=Path(path).parent.name)
        """,
        tmp_path,
        repo=TINY,
    )

    assert result["data"].encode() == info.read_bytes()
    assert result["blob"] == info.git_sha1
    assert result["snapshot"] == info.commit
    resolves = [(r.method, r.status) for r in hub.requests if "/resolve/" in r.path]
    assert resolves == [("HEAD", 200), ("GET", 200)]


@pytest.mark.timeout(30)
def test_lfs_file_comes_from_cdn_and_token_stays_on_hub(hub: ImitationHub, hf_env, tmp_path):
    info = hub.file_info(TINY, "model.bin")

    result = run_hf(
        hf_env,
        """
        path = hf_hub_download(A["repo"], "model.bin", endpoint=ENDPOINT, cache_dir=CACHE,
                               token=A["token"])
        out(sha256=sha256_of(path), size=os.path.getsize(path),
            blob=os.path.basename(os.path.realpath(path)))
        """,
        tmp_path,
        repo=TINY,
        token=VALID_TOKEN,
    )

    assert result == {"sha256": info.sha256, "size": info.size, "blob": info.sha256}
    head = next(r for r in hub.requests if r.host == "hub" and r.method == "HEAD")
    assert head.status == 302
    assert head.header("authorization") == f"Bearer {VALID_TOKEN}"
    cdn = [r for r in hub.requests if r.host == "cdn"]
    assert [(r.method, r.status) for r in cdn] == [("GET", 200)]
    assert all(r.header("authorization") is None for r in cdn)


@pytest.mark.timeout(30)
def test_model_info_lists_sizes_and_lfs_sha256(hub: ImitationHub, hf_env, tmp_path):
    result = run_hf(
        hf_env,
        """
        info = HfApi(endpoint=ENDPOINT).model_info(A["repo"], files_metadata=True)
        out(sha=info.sha, siblings={
            s.rfilename: [s.size, s.blob_id, s.lfs.sha256 if s.lfs else None] for s in info.siblings
        })
        """,
        tmp_path,
        repo=TINY,
    )

    repo = hub.repo(TINY)
    assert result["sha"] == repo.commit
    assert result["siblings"] == {
        path: [f.size, f.blob_id, f.sha256 if f.lfs else None] for path, f in repo.files.items()
    }
    assert result["siblings"]["model.bin"][2] == hub.file_info(TINY, "model.bin").sha256


@pytest.mark.timeout(30)
def test_snapshot_download_includes_sub_directories(hub: ImitationHub, hf_env, tmp_path):
    result = run_hf(
        hf_env,
        """
        root = Path(snapshot_download(A["repo"], endpoint=ENDPOINT, cache_dir=CACHE))
        files = {p.relative_to(root).as_posix(): sha256_of(p) for p in root.rglob("*")
                 if p.is_file()}
        out(commit=root.name, files=files)
        """,
        tmp_path,
        repo=TINY,
    )

    repo = hub.repo(TINY)
    assert result["commit"] == repo.commit
    assert result["files"] == {path: f.sha256 for path, f in repo.files.items()}
    assert "sub/dir/notes.txt" in result["files"]


@pytest.mark.timeout(30)
def test_gated_repo_needs_an_approved_token(hub: ImitationHub, hf_env, tmp_path):
    result = run_hf(
        hf_env,
        """
        def get(token):
            return hf_hub_download(A["repo"], "model.safetensors", endpoint=ENDPOINT,
                                   cache_dir=CACHE, token=token)
        out(anonymous=error_name(lambda: get(False)),
            unapproved=error_name(lambda: get(A["other"])),
            approved_sha256=sha256_of(get(A["valid"])))
        """,
        tmp_path,
        repo=GATED,
        valid=VALID_TOKEN,
        other=OTHER_TOKEN,
    )

    assert result == {
        "anonymous": "GatedRepoError",
        "unapproved": "GatedRepoError",
        "approved_sha256": hub.file_info(GATED, "model.safetensors").sha256,
    }
    statuses = [r.status for r in hub.requests if r.method == "HEAD"]
    assert statuses[:2] == [401, 403]


@pytest.mark.timeout(30)
def test_missing_repo_revision_and_file_raise_their_errors(hub: ImitationHub, hf_env, tmp_path):
    result = run_hf(
        hf_env,
        """
        def get(repo, filename="config.json", revision=None, token=False):
            return lambda: hf_hub_download(repo, filename, revision=revision, endpoint=ENDPOINT,
                                           cache_dir=CACHE, token=token)
        out(missing_repo=error_name(get("org/nope")),
            missing_repo_with_token=error_name(get("org/nope", token=A["valid"])),
            private_anonymous=error_name(get(A["private"])),
            private_unapproved=error_name(get(A["private"], token=A["other"])),
            private_approved=error_name(get(A["private"], token=A["valid"])),
            bad_revision=error_name(get(A["tiny"], revision="v9.9")),
            missing_file=error_name(get(A["tiny"], filename="nope.txt")),
            is_entry_not_found=issubclass(errors.RemoteEntryNotFoundError,
                                          errors.EntryNotFoundError))
        """,
        tmp_path,
        tiny=TINY,
        private=PRIVATE,
        valid=VALID_TOKEN,
        other=OTHER_TOKEN,
    )

    assert result == {
        "missing_repo": "RepositoryNotFoundError",
        "missing_repo_with_token": "RepositoryNotFoundError",
        "private_anonymous": "RepositoryNotFoundError",
        "private_unapproved": "RepositoryNotFoundError",
        "private_approved": None,
        "bad_revision": "RevisionNotFoundError",
        "missing_file": "RemoteEntryNotFoundError",
        "is_entry_not_found": True,
    }


@pytest.mark.timeout(30)
def test_dataset_and_branch_with_slash_resolve(hub: ImitationHub, hf_env, tmp_path):
    hub.update_repo(TINY, branches=("main", "refs/pr/1"))

    result = run_hf(
        hf_env,
        """
        ds = hf_hub_download(A["ds"], "data.csv", repo_type="dataset", endpoint=ENDPOINT,
                             cache_dir=CACHE)
        pr = hf_hub_download(A["tiny"], "sub/dir/notes.txt", revision="refs/pr/1",
                             endpoint=ENDPOINT, cache_dir=CACHE)
        tree = HfApi(endpoint=ENDPOINT).list_repo_tree(A["tiny"], "sub", recursive=True,
                                                       expand=True)
        out(ds=Path(ds).read_text(), pr=Path(pr).read_text(),
            tree=sorted((type(e).__name__, e.path) for e in tree))
        """,
        tmp_path,
        ds=DATASET,
        tiny=TINY,
    )

    assert (
        result["ds"].encode()
        == hub.file_info(DATASET, "data.csv", repo_type="dataset").read_bytes()
    )
    assert result["pr"].encode() == hub.file_info(TINY, "sub/dir/notes.txt").read_bytes()
    assert result["tree"] == [["RepoFile", "sub/dir/notes.txt"], ["RepoFolder", "sub/dir"]]
    assert any("/resolve/refs%2Fpr%2F1/" in r.path for r in hub.requests)


@pytest.mark.timeout(30)
def test_changed_file_gets_new_commit_and_is_fetched_again(hub: ImitationHub, hf_env, tmp_path):
    code = """
    path = hf_hub_download(A["repo"], "config.json", endpoint=ENDPOINT, cache_dir=CACHE)
    out(data=Path(path).read_text(), commit=Path(path).parent.name)
    """
    first = run_hf(hf_env, code, tmp_path, repo=TINY)
    hub.put_file(TINY, "config.json", b'{"model_type": "tiny", "hidden_size": 16}\n')

    second = run_hf(hf_env, code, tmp_path, repo=TINY)

    assert first["commit"] != second["commit"] == hub.commit(TINY)
    assert second["data"] == '{"model_type": "tiny", "hidden_size": 16}\n'


@pytest.mark.timeout(30)
def test_lfs_served_directly_when_cdn_is_off(hub: ImitationHub, hf_env, tmp_path):
    hub.cdn_redirect = False

    result = run_hf(
        hf_env,
        """
        path = hf_hub_download(A["repo"], "model.bin", endpoint=ENDPOINT, cache_dir=CACHE)
        out(sha256=sha256_of(path), blob=os.path.basename(os.path.realpath(path)))
        """,
        tmp_path,
        repo=TINY,
    )

    sha256 = hub.file_info(TINY, "model.bin").sha256
    assert result == {"sha256": sha256, "blob": sha256}
    assert not [r for r in hub.requests if r.host == "cdn"]


@pytest.mark.timeout(40)
def test_client_resumes_with_range_after_the_cdn_drops(empty_hub: ImitationHub, tmp_path):
    # huggingface_hub writes 10 MiB chunks, so only a cut past the first chunk of a file
    # over 10 MiB makes it ask for a Range on its retry.
    empty_hub.add_repo("org/big", {"big.bin": GeneratedFile(size=24 * 1024 * 1024, seed=24)})
    empty_hub.faults.add(path="big.bin", host="cdn", drop_after=15 * 1024 * 1024)
    env = hf_environ(empty_hub.url, tmp_path / "hf-home")

    result = run_hf(
        env,
        """
        path = hf_hub_download("org/big", "big.bin", endpoint=ENDPOINT, cache_dir=CACHE)
        out(sha256=sha256_of(path))
        """,
        tmp_path,
    )

    assert result["sha256"] == empty_hub.file_info("org/big", "big.bin").sha256
    cdn = [(r.status, r.header("range")) for r in empty_hub.requests if r.host == "cdn"]
    assert cdn == [(200, None), (206, "bytes=10485760-")]


@pytest.mark.timeout(60)
def test_client_pinned_to_a_commit_gets_its_file_after_main_moves(
    empty_hub: ImitationHub, tmp_path
):
    # A two-file job: the first file fixes the commit, then b.bin changes on main before the
    # second file is fetched at that commit.
    empty_hub.add_repo(
        "org/x",
        {"a.bin": GeneratedFile(size=5000, seed=41), "b.bin": GeneratedFile(size=6000, seed=42)},
    )
    old_b = empty_hub.file_info("org/x", "b.bin")
    env = hf_environ(empty_hub.url, tmp_path / "hf-home")
    first = run_hf(
        env,
        """
        path = hf_hub_download("org/x", "a.bin", endpoint=ENDPOINT, cache_dir=CACHE)
        out(commit=Path(path).parent.name)
        """,
        tmp_path,
    )
    empty_hub.put_file("org/x", "b.bin", GeneratedFile(size=6000, seed=43))

    second = run_hf(
        env,
        """
        pinned = hf_hub_download("org/x", "b.bin", revision=A["commit"], endpoint=ENDPOINT,
                                 cache_dir=CACHE)
        latest = hf_hub_download("org/x", "b.bin", endpoint=ENDPOINT, cache_dir=CACHE)
        out(pinned=sha256_of(pinned), latest=sha256_of(latest))
        """,
        tmp_path,
        commit=first["commit"],
    )

    assert first["commit"] == empty_hub.commits("org/x")[0]
    assert second == {
        "pinned": old_b.sha256,
        "latest": empty_hub.file_info("org/x", "b.bin").sha256,
    }
    pinned_head = next(
        r for r in empty_hub.requests if r.path == f"/org/x/resolve/{first['commit']}/b.bin"
    )
    assert pinned_head.status == 302


@pytest.mark.timeout(30)
def test_expired_cdn_url_puts_the_signature_in_the_client_error(
    hub: ImitationHub, hf_env, tmp_path
):
    hub.cdn_expired = True

    result = run_hf(
        hf_env,
        """
        try:
            hf_hub_download(A["repo"], "model.bin", endpoint=ENDPOINT, cache_dir=CACHE)
            out(error=None)
        except Exception as exc:
            out(error=type(exc).__name__, message=str(exc))
        """,
        tmp_path,
        repo=TINY,
    )

    cdn = next(r for r in hub.requests if r.host == "cdn")
    signature = cdn.query["X-Amz-Signature"]
    assert cdn.status == 403
    assert result["error"] == "HfHubHTTPError"
    assert "Request has expired" in result["message"]
    # Beyond the URL's query string, the S3 body repeats the signature on its own: the
    # leak a log scrubber that only knows `X-Amz-Signature=` misses.
    assert f"<SignatureProvided>{signature}</SignatureProvided>" in result["message"]
