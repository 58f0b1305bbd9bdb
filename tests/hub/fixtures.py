"""pytest fixtures for the imitation Hub; register them in a conftest.py with

pytest_plugins = ["tests.hub.fixtures"]
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub.clients import hf_environ
from tests.hub.samples import add_sample_repos
from tests.hub.server import ImitationHub


@pytest.fixture(scope="session")
def hub_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated files shared by every hub of the session (they are costly to make)."""
    return tmp_path_factory.mktemp("hub-generated")


@pytest.fixture
def empty_hub(tmp_path: Path, hub_cache_dir: Path) -> Iterator[ImitationHub]:
    """A started hub with no repos; faults and the request log are fresh for each test."""
    with ImitationHub(data_dir=tmp_path / "hub-data", cache_dir=hub_cache_dir) as hub:
        yield hub


@pytest.fixture
def hub(empty_hub: ImitationHub) -> ImitationHub:
    """A started hub with the sample repos (org/tiny, org/gated, org/private, dataset org/ds)."""
    add_sample_repos(empty_hub)
    return empty_hub


@pytest.fixture
def hf_env(hub: ImitationHub, tmp_path: Path) -> dict[str, str]:
    """Environment for a child process running huggingface_hub against `hub`, cache in tmp."""
    return hf_environ(hub.url, tmp_path / "hf-home")
