"""The sidecar: what a partial file's done ranges are, and that only the right file resumes."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from app import sidecar
from app.errors import DiskFullError
from app.sidecar import SIDECAR_VERSION, Sidecar

ETAG = "a" * 64
SIZE = 1000
RECORD = Sidecar(repo="org/m", file="sub/m.gguf", commit="c" * 40, etag=ETAG, size=SIZE)
# Exactly what the engine wrote before the sidecar had a module of its own.
OLD_FORMAT = (
    '{"version": 1, "repo": "org/m", "file": "sub/m.gguf", "commit": "' + "c" * 40 + '", '
    '"etag": "' + ETAG + '", "size": 1000, "done": [[0, 100], [500, 750]]}'
)


@pytest.fixture
def partial(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf.part"
    path.write_bytes(b"\0" * SIZE)
    return path


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "m.gguf.part.json"


def load(path: Path, part: Path, **kw: object) -> list[tuple[int, int]] | None:
    args: dict[str, object] = {"etag": ETAG, "size": SIZE, "partial": part, **kw}
    return sidecar.load(path, **args)  # type: ignore[arg-type]


def test_saved_ranges_load_back(path: Path, partial: Path) -> None:
    RECORD.with_done([(0, 100), (500, 750)]).save(path)
    assert load(path, partial) == [(0, 100), (500, 750)]
    assert sidecar.done_bytes(path) == 350
    assert not path.with_name(path.name + ".tmp").exists()


def test_a_sidecar_from_todays_engine_still_loads_and_is_written_the_same(
    path: Path, partial: Path
) -> None:
    path.write_text(OLD_FORMAT)
    assert load(path, partial) == [(0, 100), (500, 750)]
    assert RECORD.with_done([(0, 100), (500, 750)]).to_json() == OLD_FORMAT
    assert SIDECAR_VERSION == 1


@pytest.mark.parametrize(
    "other",
    [{"etag": "b" * 64}, {"size": SIZE + 1}, {"partial": Path("/nonexistent/m.part")}],
    ids=["other etag", "other size", "no partial"],
)
def test_a_sidecar_for_other_bytes_is_refused(
    path: Path, partial: Path, other: dict[str, object]
) -> None:
    RECORD.with_done([(0, 100)]).save(path)
    assert load(path, partial, **other) is None


def test_a_partial_of_another_size_or_another_version_is_refused(path: Path, partial: Path) -> None:
    RECORD.with_done([(0, 100)]).save(path)
    partial.write_bytes(b"\0" * (SIZE - 1))
    assert load(path, partial) is None
    partial.write_bytes(b"\0" * SIZE)
    path.write_text(OLD_FORMAT.replace('"version": 1', '"version": 2'))
    assert load(path, partial) is None


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", '"done"', "null", OLD_FORMAT.replace("[0, 100]", "[0]"), '{"version": 1}'],
)
def test_a_corrupt_sidecar_is_refused(path: Path, partial: Path, text: str) -> None:
    path.write_text(text)
    assert load(path, partial) is None
    if text != OLD_FORMAT.replace("[0, 100]", "[0]"):
        assert sidecar.done_bytes(path) is None


def test_a_missing_sidecar_is_refused(path: Path, partial: Path) -> None:
    assert load(path, partial) is None and sidecar.done_bytes(path) is None


def test_it_holds_only_what_identifies_the_file(path: Path) -> None:
    # No field for the signed download URL or the token: nothing else can end up on disk.
    RECORD.with_done([(0, 1)]).save(path)
    data = json.loads(path.read_text())
    assert set(data) == {"version", "repo", "file", "commit", "etag", "size", "done"}
    assert "http" not in path.read_text()


def test_a_full_disk_while_saving_is_disk_full_and_keeps_the_old_sidecar(
    path: Path, partial: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    RECORD.with_done([(0, 100)]).save(path)

    def replace(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sidecar.os, "replace", replace)
    with pytest.raises(DiskFullError, match="disk is full") as info:
        RECORD.with_done([(0, 900)]).save(path)
    assert (info.value.repo, info.value.file) == ("org/m", "sub/m.gguf")
    assert load(path, partial) == [(0, 100)]  # the last good record is what a resume sees


def test_other_os_errors_while_saving_are_not_disguised(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def replace(src: object, dst: object) -> None:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(sidecar.os, "replace", replace)
    with pytest.raises(PermissionError):
        RECORD.save(path)
