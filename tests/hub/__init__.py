"""An imitation Hugging Face Hub for tests and benchmarks (see README.md here)."""

from tests.hub.clients import HubAdmin, HubAdminError, hf_environ
from tests.hub.content import BytesFile, DiskFile, GeneratedFile, generate_chunks
from tests.hub.faults import Fault, FaultSet
from tests.hub.repos import Commit, FileInfo, Repo
from tests.hub.samples import DATASET, GATED, PRIVATE, TINY, add_sample_repos
from tests.hub.server import (
    BAD_TOKEN,
    DEFAULT_TOKENS,
    OTHER_TOKEN,
    VALID_TOKEN,
    ImitationHub,
    RecordedRequest,
)

__all__ = [
    "BAD_TOKEN",
    "DATASET",
    "DEFAULT_TOKENS",
    "GATED",
    "OTHER_TOKEN",
    "PRIVATE",
    "TINY",
    "VALID_TOKEN",
    "BytesFile",
    "Commit",
    "DiskFile",
    "Fault",
    "FaultSet",
    "FileInfo",
    "GeneratedFile",
    "HubAdmin",
    "HubAdminError",
    "ImitationHub",
    "RecordedRequest",
    "Repo",
    "add_sample_repos",
    "generate_chunks",
    "hf_environ",
]
