"""Paths under MODELS_DIR: nothing escapes it, partials stay out of sight."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app import storage


@pytest.mark.parametrize(
    "name",
    [
        "../secret",
        "a/../../b",
        "/etc/passwd",
        "a\\..\\b",
        "",
        "   ",
        "dir/",
        "./a",
        "a\x00b",
        "C:evil",
        ".modelpull/partial/x.part",
        "x" * 1001,
        "x" * 242,  # its sidecar's temporary name would pass the filesystem's 255 bytes
        "d/" + "\u00e9" * 123,
        "a\x85b",
        "a\x9b[2Jb",
        "a\x7fb",
        "model\u202efdp.gguf",
    ],
)
def test_unsafe_relative_paths_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        storage.check_relative_path(name)


@pytest.mark.parametrize(
    "name",
    ["model.gguf", "sub/dir/model.safetensors", ".hidden", "a..b", "x" * 241, "\u00e9t\u00e9"],
)
def test_plain_relative_paths_are_kept(name: str) -> None:
    assert storage.check_relative_path(name) == name


@pytest.mark.parametrize("repo", ["org/name", "Org-1/Name_2.v3", "a/b"])
def test_repo_ids(repo: str) -> None:
    assert storage.check_repo_id(repo) == repo


@pytest.mark.parametrize(
    "repo",
    [
        "name",
        "org/name/x",
        "../x",
        "org/..",
        "org/a--b",
        "-a/b",
        3,
        "org/name\n",
        "\uff46\uff4f\uff4f/bar",
    ],
)
def test_bad_repo_ids(repo: object) -> None:
    with pytest.raises(ValueError):
        storage.check_repo_id(repo)


def test_a_symlink_cannot_lead_out_of_the_models_dir(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", models / "link")
    with pytest.raises(ValueError, match="escapes"):
        storage.dest_path(models, "link/model.gguf")
    assert storage.dest_path(models, "ok/model.gguf") == models.resolve() / "ok" / "model.gguf"


def test_partials_live_in_the_hidden_folder_and_count_done_ranges(tmp_path: Path) -> None:
    part = storage.partial_path(tmp_path, "sub/m.gguf")
    assert part == tmp_path / ".modelpull" / "partial" / "sub" / "m.gguf.part"
    assert storage.partial_bytes(tmp_path, "sub/m.gguf") is None
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # preallocated: its size says nothing
    assert storage.partial_bytes(tmp_path, "sub/m.gguf") == 1000
    storage.sidecar_path(tmp_path, "sub/m.gguf").write_text(
        json.dumps({"done": [[0, 100], [500, 750]]})
    )
    assert storage.partial_bytes(tmp_path, "sub/m.gguf") == 350


def test_partial_bytes_falls_back_to_the_partials_size_when_the_sidecar_is_unreadable(
    tmp_path: Path,
) -> None:
    part = storage.partial_path(tmp_path, "m.gguf")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 64)
    storage.sidecar_path(tmp_path, "m.gguf").write_text("{not json")
    assert storage.partial_bytes(tmp_path, "m.gguf") == 64
