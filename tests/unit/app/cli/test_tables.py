"""The tables fit the terminal: narrower, the least useful columns go first, what is left
wraps between words, and a word (an id above all) is never cut or shortened."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from app.cli.tables import Column, fitted

COLUMNS = (
    Column("job", no_wrap=True),
    Column("what", drop=2),
    Column("state"),
    Column("done"),
    Column("created", drop=3),
)
ROWS = [
    ("0123456789ab", "unsloth/Qwen3-4B-Instruct-2507-GGUF", "downloading", "1.5 GiB / 4.0 GiB",
     "2026-12-03 16:55"),
    ("ba9876543210", "z-image-turbo", "queued", "0 B / ?", "2026-12-03 16:56"),
]  # fmt: skip


def _render(width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(fitted(console, "Jobs", COLUMNS, ROWS))
    return console.file.getvalue()  # type: ignore[attr-defined]


def _header(out: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.startswith("┃ job"))
    return [cell.strip() for cell in line.split("┃")[1:-1]]


@pytest.mark.parametrize(
    ("width", "header"),
    [
        (120, ["job", "what", "state", "done", "created"]),
        (80, ["job", "what", "state", "done"]),
        (60, ["job", "state", "done"]),
    ],
)
def test_a_narrower_terminal_drops_columns_and_cuts_no_word(width: int, header: list[str]) -> None:
    out = _render(width)
    assert max(len(line) for line in out.splitlines()) <= width
    assert _header(out) == header
    assert "…" not in out
    shown = set(re.findall(r"[^\s│┃━┏┓┗┛┡┩└┘┳┻╇┴─]+", out))
    # Every word of every column shown is whole on one line.
    for row in ROWS:
        for col, cell in zip(COLUMNS, row, strict=True):
            if col.header in header:
                assert set(cell.split()) <= shown, (col.header, cell, out)


def test_too_narrow_for_the_columns_that_stay_still_shows_every_character() -> None:
    out = _render(30)
    assert "…" not in out
    assert "0123456789ab" in out  # the id column is never wrapped
