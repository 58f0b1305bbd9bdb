"""The sample repos most tests start from (also served by `python -m tests.hub` without --repos)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.hub.content import GeneratedFile
from tests.hub.server import VALID_TOKEN

if TYPE_CHECKING:
    from tests.hub.server import ImitationHub

TINY = "org/tiny"
GATED = "org/gated"
PRIVATE = "org/private"
DATASET = "org/ds"


def add_sample_repos(hub: ImitationHub) -> None:
    """Add org/tiny, org/gated, org/private (both open to VALID_TOKEN) and dataset org/ds."""
    hub.add_repo(
        TINY,
        {
            "config.json": b'{"model_type": "tiny", "hidden_size": 8}\n',
            "README.md": "# tiny\n\nA tiny repo for tests.\n",
            "model.bin": GeneratedFile(size=10 * 1024, seed=1),
            "sub/dir/notes.txt": b"notes in a sub directory\n",
        },
    )
    hub.add_repo(
        GATED,
        {
            "config.json": b'{"model_type": "gated"}\n',
            "model.safetensors": GeneratedFile(size=4096, seed=2),
        },
        gated="manual",
        approved_tokens=(VALID_TOKEN,),
    )
    hub.add_repo(
        PRIVATE,
        {
            "config.json": b'{"model_type": "private"}\n',
            "weights.gguf": GeneratedFile(size=8192, seed=3),
        },
        private=True,
        approved_tokens=(VALID_TOKEN,),
    )
    hub.add_repo(DATASET, {"data.csv": b"a,b\n1,2\n3,4\n"}, repo_type="dataset")
