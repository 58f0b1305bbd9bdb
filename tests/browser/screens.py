"""Screenshots of the dashboard under tests/browser/screenshots/ (not committed), and the
README's under docs/screenshots/ when asked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SCREENSHOTS = Path(__file__).parent / "screenshots"
README_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def shot(page: Any, name: str) -> Path:
    """Save a screenshot under tests/browser/screenshots/ (not committed)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def readme_shot(page: Any, name: str, *, full_page: bool = False) -> Path:
    """A screenshot for the README: into docs/screenshots/ when MODELPULL_README_SHOTS=1 (to
    refresh the committed ones), else beside the other test screenshots, so a test run never
    changes the tree."""
    if os.environ.get("MODELPULL_README_SHOTS") == "1":
        path = README_SHOTS / name
    else:
        path = SCREENSHOTS / f"readme-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    return path
