"""Naming a repo the way a person found it: repo ids and Hub URLs as RepoRefs."""

from __future__ import annotations

import pytest

from app.errors import ValidationError
from app.hubmeta import RepoRef, parse_repo_ref

ENDPOINT = "http://127.0.0.1:8123"


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("org/name", RepoRef("org/name")),
        ("  org/name  ", RepoRef("org/name")),
        ("https://huggingface.co/org/name", RepoRef("org/name")),
        ("https://huggingface.co/org/name/", RepoRef("org/name")),
        ("huggingface.co/org/name", RepoRef("org/name")),
        ("https://hf.co/org/name", RepoRef("org/name")),
        ("https://huggingface.co/models/org/name", RepoRef("org/name")),
        (
            "https://huggingface.co/org/name/blob/main/q/model-Q4_K_M.gguf",
            RepoRef("org/name", "main", selected="q/model-Q4_K_M.gguf"),
        ),
        (
            "https://huggingface.co/org/name/resolve/v1.0/a.gguf?download=true",
            RepoRef("org/name", "v1.0", selected="a.gguf"),
        ),
        (
            "https://huggingface.co/org/name/blob/refs%2Fpr%2F3/a.gguf",
            RepoRef("org/name", "refs/pr/3", selected="a.gguf"),
        ),
        (
            "https://huggingface.co/org/name/blob/refs/pr/3/a.gguf",
            RepoRef("org/name", "refs/pr/3", selected="a.gguf"),
        ),
        ("https://huggingface.co/org/name/tree/main/sub", RepoRef("org/name", folder="sub")),
        ("https://huggingface.co/org/name/tree/dev", RepoRef("org/name", "dev")),
        (f"{ENDPOINT}/org/name/blob/main/x.bin", RepoRef("org/name", selected="x.bin")),
        ("https://huggingface.co/org/my%20model", None),
    ],
)
def test_repo_ids_and_hub_urls(text: str, ref: RepoRef | None) -> None:
    if ref is None:
        with pytest.raises(ValidationError):
            parse_repo_ref(text, endpoint=ENDPOINT)
        return
    assert parse_repo_ref(text, endpoint=ENDPOINT) == ref


def test_a_revision_given_apart_applies_unless_the_url_names_one() -> None:
    assert parse_repo_ref("org/name", endpoint=ENDPOINT, revision="v2").revision == "v2"
    url = "https://huggingface.co/org/name/blob/v3/a.gguf"
    assert parse_repo_ref(url, endpoint=ENDPOINT, revision="v2").revision == "v3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "give a repo id like org/name or a Hub URL"),
        ("   ", "give a repo id like org/name or a Hub URL"),
        ("gpt2", "'gpt2' is not a repo id like org/name"),
        ("https://github.com/org/name", "'github.com' is not the Hugging Face Hub"),
        ("https://huggingface.co/datasets/org/ds", "only model repos can be downloaded"),
        ("https://huggingface.co/spaces/org/app", "only model repos can be downloaded"),
        ("hf.co/datasets/org/ds", "only model repos can be downloaded"),
        ("https://huggingface.co/org/name/commits/main", "cannot tell a file or folder"),
        ("https://huggingface.co/org/name/blob/main", "names no file"),
        ("https://huggingface.co/org/name/blob/main/../../etc/passwd", "path "),
        ("org/na--me", "is not a repo id like org/name"),
        ("org/name/tree/..", "is not a branch, tag or commit"),
    ],
)
def test_what_is_not_a_repo_says_why(text: object, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_repo_ref(text, endpoint=ENDPOINT)
    assert caught.value.field == "id" or caught.value.field == "revision"
    assert message in caught.value.message
