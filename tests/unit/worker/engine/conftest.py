"""The engine tests' models directory."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path
