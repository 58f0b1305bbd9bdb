"""The catalog: parsing, clear errors with line numbers, per-file status on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app import storage
from app.catalog import human_size, load_catalog, missing_files, model_status, parse_catalog
from app.errors import CatalogError
from app.settings import DEFAULT_CATALOG


def test_the_shipped_catalog_has_z_image_turbo_and_others() -> None:
    catalog = load_catalog(DEFAULT_CATALOG)
    z = catalog.get("z-image-turbo")
    assert z is not None
    assert [(f.repo, f.file_name, f.revision, f.dest) for f in z.files] == [
        ("leejet/Z-Image-Turbo-GGUF", "z_image_turbo-Q8_0.gguf", "main", "z_image_turbo-Q8_0.gguf"),
        ("black-forest-labs/FLUX.1-schnell", "ae.safetensors", "main", "ae.safetensors"),
        (
            "unsloth/Qwen3-4B-Instruct-2507-GGUF",
            "Qwen3-4B-Instruct-2507-Q8_0.gguf",
            "main",
            "Qwen3-4B-Instruct-2507-Q8_0.gguf",
        ),
    ]
    assert len(catalog.models) >= 3
    assert catalog.get("nope") is None


GOOD = """\
models:
  demo:
    name: Demo
    files:
      - repo: org/repo
        file: sub/big.gguf
        dest: big.gguf
        size: 2048
      - repo: org/repo
        file: small.json
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "line 1: the catalog is empty"),
        ("- a\n- b\n", "line 1: the catalog must be a mapping"),
        ("other: {}\n", "line 1: the catalog needs a top-level 'models'"),
        ("models: {}\nextra: 1\n", "line 2: unknown top-level key 'extra'"),
        ("models: {}\n", "line 1: 'models' is empty"),
        ("models:\n  Bad Id:\n    files: []\n", "line 2: model id 'Bad Id'"),
        ("models:\n  m:\n    name: M\n", "line 2: model 'm' needs a 'files' list"),
        ("models:\n  m:\n    files: []\n", "line 3: model 'm': 'files' must be a non-empty list"),
        ("models:\n  m:\n    flies: []\n", "line 3: model 'm' has unknown key 'flies'"),
        (
            "models:\n  m:\n    files:\n      - repo: org/r\n",
            "line 4: a file of model 'm' needs 'file'",
        ),
        (
            "models:\n  m:\n    files:\n      - repo: nope\n        file: a\n",
            "line 4: a file of model 'm': 'nope' is not a repo id",
        ),
        (
            "models:\n  m:\n    files:\n      - repo: o/r\n        file: ../../etc/passwd\n",
            "line 5: a file of model 'm':",
        ),
        (
            "models:\n  m:\n    files:\n      - {repo: o/r, file: a, dest: /abs}\n",
            "line 4: a file of model 'm': dest",
        ),
        (
            "models:\n  m:\n    files:\n      - repo: o/r\n        file: a\n        size: -3\n",
            "line 6: a file of model 'm': size must be a positive integer",
        ),
        (
            "models:\n  m:\n    files:\n      - repo: o/r\n        file: a\n        sha256: abc\n",
            "line 6: a file of model 'm': sha256 must be 64 hex digits",
        ),
        (
            "models:\n  m:\n    files:\n"
            "      - {repo: o/r, file: a}\n      - {repo: o/s, file: a}\n",
            "line 5: model 'm' names destination 'a' twice",
        ),
        ("models:\n  m:\n    files: [1]\n  m:\n    files: [2]\n", "line 4: 'models' has 'm' twice"),
        ("models:\n  m: [unclosed\n", "line 3: invalid YAML"),
    ],
)
def test_malformed_catalogs_fail_with_line_and_problem(text: str, expected: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, source="models.yaml")
    assert f"models.yaml:{expected}" in str(info.value)


def test_missing_catalog_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the models catalog"):
        load_catalog(tmp_path / "none.yaml")


def test_status_reports_present_missing_and_partial_files(tmp_path: Path) -> None:
    model = parse_catalog(GOOD).get("demo")
    assert model is not None
    status = model_status(tmp_path, model)
    assert status["allPresent"] is False
    assert [f["exists"] for f in status["files"]] == [False, False]
    assert status["files"][0]["humanSize"] == "2.0 KiB"  # the catalog's size while missing

    part = storage.partial_path(tmp_path, "big.gguf")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 2048)
    storage.sidecar_path(tmp_path, "big.gguf").write_text(json.dumps({"done": [[0, 1024]]}))
    (tmp_path / "small.json").write_text("{}")
    status = model_status(tmp_path, model)
    big, small = status["files"]
    assert (big["exists"], big["partialBytes"]) == (False, 1024)
    assert big["path"] == str(tmp_path.resolve() / "big.gguf")
    assert (small["exists"], small["size"], small["humanSize"]) == (True, 2, "2 B")
    assert [f.dest for f in missing_files(tmp_path, model)] == ["big.gguf"]

    (tmp_path / "big.gguf").write_bytes(b"\1" * 2000)  # wrong size: not present
    assert model_status(tmp_path, model)["allPresent"] is False
    (tmp_path / "big.gguf").write_bytes(b"\1" * 2048)
    status = model_status(tmp_path, model)
    assert status["allPresent"] is True and status["files"][0]["partialBytes"] is None


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, None),
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (8 * 1024**3 + 200 * 1024**2, "8.2 GiB"),
        (3 * 1024**5, "3.0 PiB"),
    ],
)
def test_human_sizes(n: int | None, text: str | None) -> None:
    assert human_size(n) == text
