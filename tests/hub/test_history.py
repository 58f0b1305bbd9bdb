"""Commit history: every past commit stays readable, and branches can be moved over it."""

from __future__ import annotations

import pytest
import requests

from tests.hub import GeneratedFile, HubAdmin, HubAdminError, ImitationHub

pytestmark = pytest.mark.timeout(20)
TIMEOUT = (5, 10)
REPO = "org/x"


@pytest.fixture
def two_files(empty_hub: ImitationHub) -> ImitationHub:
    """org/x with a.bin and b.bin (LFS, behind the CDN) and a small config.json."""
    empty_hub.add_repo(
        REPO,
        {
            "a.bin": GeneratedFile(size=6000, seed=31),
            "b.bin": GeneratedFile(size=7000, seed=32),
            "config.json": b'{"v": 1}\n',
        },
    )
    return empty_hub


def test_pinned_commit_still_gets_its_file_after_main_moves(two_files: ImitationHub):
    hub = two_files
    first = hub.commit(REPO)
    old_b = hub.file_info(REPO, "b.bin")

    hub.put_file(REPO, "b.bin", GeneratedFile(size=9000, seed=33))
    new_b = hub.file_info(REPO, "b.bin")
    pinned_head = requests.head(
        hub.resolve_url(REPO, "b.bin", revision=first), allow_redirects=False, timeout=TIMEOUT
    )
    pinned = requests.get(hub.resolve_url(REPO, "b.bin", revision=first), timeout=TIMEOUT)
    latest = requests.get(hub.resolve_url(REPO, "b.bin"), timeout=TIMEOUT)

    assert hub.commits(REPO) == [first, hub.commit(REPO)] and hub.commit(REPO) != first
    assert pinned_head.status_code == 302
    assert pinned_head.headers["X-Repo-Commit"] == first
    assert pinned_head.headers["X-Linked-Etag"] == f'"{old_b.sha256}"'
    assert pinned_head.headers["X-Linked-Size"] == "7000"
    # The CDN still serves the blob that only the old commit has.
    assert (pinned.status_code, pinned.content) == (200, old_b.read_bytes())
    assert (latest.status_code, latest.content) == (200, new_b.read_bytes())
    assert latest.history[0].headers["X-Repo-Commit"] == hub.commit(REPO)
    assert hub.file_info(REPO, "b.bin", revision=first) == old_b


def test_regular_file_and_deleted_file_are_served_at_their_old_commit(two_files: ImitationHub):
    hub = two_files
    first = hub.commit(REPO)
    hub.put_file(REPO, "config.json", b'{"v": 2}\n')
    hub.delete_file(REPO, "a.bin")

    config = requests.get(hub.resolve_url(REPO, "config.json", revision=first), timeout=TIMEOUT)
    gone_now = requests.head(hub.resolve_url(REPO, "a.bin"), timeout=TIMEOUT)
    there_then = requests.get(hub.resolve_url(REPO, "a.bin", revision=first), timeout=TIMEOUT)

    assert (config.status_code, config.content) == (200, b'{"v": 1}\n')
    assert config.headers["X-Repo-Commit"] == first
    assert config.headers["ETag"] == f'"{hub.file_info(REPO, "config.json", revision=first).etag}"'
    assert (gone_now.status_code, gone_now.headers["X-Error-Code"]) == (404, "EntryNotFound")
    assert gone_now.headers["X-Repo-Commit"] == hub.commit(REPO)
    assert there_then.content == hub.file_info(REPO, "a.bin", revision=first).read_bytes()


def test_info_tree_and_paths_info_describe_the_old_commit(two_files: ImitationHub):
    hub = two_files
    first = hub.commit(REPO)
    old_b = hub.file_info(REPO, "b.bin")
    hub.put_file(REPO, "b.bin", GeneratedFile(size=9000, seed=33))
    hub.delete_file(REPO, "a.bin")
    api = f"{hub.url}/api/models/{REPO}"

    info = requests.get(f"{api}/revision/{first}", params={"blobs": "true"}, timeout=TIMEOUT)
    tree = requests.get(f"{api}/tree/{first}", params={"expand": "true"}, timeout=TIMEOUT)
    paths = requests.post(
        f"{api}/paths-info/{first}", data={"paths": ["a.bin", "b.bin"]}, timeout=TIMEOUT
    )
    current = requests.get(api, params={"blobs": "true"}, timeout=TIMEOUT).json()

    assert info.json()["sha"] == first
    siblings = {s["rfilename"]: s for s in info.json()["siblings"]}
    assert sorted(siblings) == ["a.bin", "b.bin", "config.json"]
    assert siblings["b.bin"]["size"] == 7000
    assert siblings["b.bin"]["lfs"]["sha256"] == old_b.sha256
    entries = {e["path"]: e for e in tree.json()}
    assert entries["b.bin"]["lfs"]["oid"] == old_b.sha256
    assert {e["lastCommit"]["id"] for e in entries.values()} == {first}
    assert [(e["path"], e["size"]) for e in paths.json()] == [("a.bin", 6000), ("b.bin", 7000)]
    assert current["sha"] == hub.commit(REPO)
    assert {s["rfilename"]: s["size"] for s in current["siblings"]} == {
        "b.bin": 9000,
        "config.json": 9,
    }


def test_tree_last_commit_names_the_commit_that_changed_each_file(two_files: ImitationHub):
    hub = two_files
    first = hub.commit(REPO)
    second = hub.put_file(REPO, "b.bin", GeneratedFile(size=9000, seed=33)).commit

    entries = requests.get(
        f"{hub.url}/api/models/{REPO}/tree/main", params={"expand": "true"}, timeout=TIMEOUT
    ).json()

    last = {e["path"]: (e["lastCommit"]["id"], e["lastCommit"]["title"]) for e in entries}
    assert last == {
        "a.bin": (first, "Initial commit"),
        "b.bin": (second, "Upload b.bin"),
        "config.json": (first, "Initial commit"),
    }


def test_if_range_by_date_survives_a_commit_that_left_the_file_alone(two_files: ImitationHub):
    hub = two_files
    url = hub.resolve_url(REPO, "a.bin")
    last_modified = requests.head(url, allow_redirects=True, timeout=TIMEOUT).headers[
        "Last-Modified"
    ]
    hub.put_file(REPO, "b.bin", GeneratedFile(size=9000, seed=33))

    resumed = requests.get(
        url, headers={"Range": "bytes=5000-", "If-Range": last_modified}, timeout=TIMEOUT
    )

    assert resumed.status_code == 206
    assert resumed.content == hub.file_info(REPO, "a.bin").read_bytes()[5000:]


def test_unknown_commit_sha_is_revision_not_found(two_files: ImitationHub):
    r = requests.head(two_files.resolve_url(REPO, "a.bin", revision="0" * 40), timeout=TIMEOUT)

    assert (r.status_code, r.headers["X-Error-Code"]) == (404, "RevisionNotFound")


def test_set_branch_moves_main_back_and_forth(two_files: ImitationHub):
    hub = two_files
    first = hub.commit(REPO)
    second = hub.put_file(REPO, "b.bin", GeneratedFile(size=9000, seed=33)).commit

    hub.set_branch(REPO, "main", first)
    back = requests.get(hub.resolve_url(REPO, "b.bin"), timeout=TIMEOUT)
    info_back = requests.get(f"{hub.url}/api/models/{REPO}", timeout=TIMEOUT).json()
    hub.set_branch(REPO, "main", second)
    forth = requests.get(hub.resolve_url(REPO, "b.bin"), timeout=TIMEOUT)

    assert back.history[0].headers["X-Repo-Commit"] == first == info_back["sha"]
    assert back.content == hub.file_info(REPO, "b.bin", revision=first).read_bytes()
    assert forth.history[0].headers["X-Repo-Commit"] == second == hub.commit(REPO)
    assert len(forth.content) == 9000
    assert hub.commits(REPO) == [first, second]


def test_put_file_builds_on_main_and_moves_only_the_branches_that_follow_it(
    two_files: ImitationHub,
):
    hub = two_files
    first = hub.commit(REPO)
    hub.update_repo(REPO, branches=("main", "refs/pr/1"))
    hub.set_branch(REPO, "v1", first)
    second = hub.put_file(REPO, "b.bin", GeneratedFile(size=9000, seed=33)).commit
    hub.set_branch(REPO, "main", first)

    third = hub.put_file(REPO, "c.txt", b"c\n")
    pinned = requests.head(hub.resolve_url(REPO, "b.bin", revision="v1"), timeout=TIMEOUT)

    # Branches named in branches= follow main; one placed with set_branch stays put.
    assert dict(hub.repo(REPO).refs) == {
        "main": third.commit,
        "refs/pr/1": third.commit,
        "v1": first,
    }
    assert third.commit not in (first, second)
    # Built on main's commit (the first one): b.bin is the original 7000 bytes again.
    assert sorted(third.files) == ["a.bin", "b.bin", "c.txt", "config.json"]
    assert third.files["b.bin"].size == 7000
    assert pinned.headers["X-Repo-Commit"] == first


def test_set_branch_to_an_unknown_commit_is_refused(two_files: ImitationHub):
    with pytest.raises(KeyError, match="no commit or branch"):
        two_files.set_branch(REPO, "main", "f" * 40)


def test_admin_api_puts_files_lists_commits_and_moves_branches(two_files: ImitationHub):
    hub = two_files
    admin = HubAdmin(hub.url)
    first = hub.commit(REPO)

    generated = admin.put_file(REPO, "b.bin", size=9000, seed=33)
    texted = admin.put_file(REPO, "notes.txt", text="hello\n")
    deleted = admin.delete_file(REPO, "a.bin")
    commits = admin.commits(REPO)
    moved = admin.set_branch(REPO, "main", first)
    at_first = requests.get(hub.resolve_url(REPO, "b.bin"), timeout=TIMEOUT)

    assert generated["commit"] == hub.commits(REPO)[1]
    assert hub.file_info(REPO, "b.bin", revision=generated["commit"]).size == 9000
    assert hub.file_info(REPO, "notes.txt", revision=texted["commit"]).read_bytes() == b"hello\n"
    assert "a.bin" not in {f["path"] for f in deleted["files"]}
    assert [c["sha"] for c in commits] == hub.commits(REPO) == deleted["commits"]
    assert [c["title"] for c in commits] == [
        "Initial commit",
        "Upload b.bin",
        "Upload notes.txt",
        "Delete a.bin",
    ]
    assert commits[1]["parent"] == first
    assert moved["commit"] == first and moved["refs"] == {"main": first}
    assert at_first.content == hub.file_info(REPO, "b.bin", revision=first).read_bytes()
    assert admin.repo(REPO)["commit"] == first
    with pytest.raises(HubAdminError) as unknown:
        admin.set_branch(REPO, "main", "f" * 40)
    assert unknown.value.status == 400
    with pytest.raises(HubAdminError) as missing:
        admin.put_file("org/nope", "x.txt", text="x")
    assert missing.value.status == 404
