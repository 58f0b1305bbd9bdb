"""Screenshots of the dashboard under tests/browser/screenshots/ (not committed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCREENSHOTS = Path(__file__).parent / "screenshots"


def shot(page: Any, name: str) -> Path:
    """Save a screenshot under tests/browser/screenshots/ (not committed)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
