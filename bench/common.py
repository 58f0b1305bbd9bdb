"""What every bench script shares: the machine description, tables, percentiles and how
results are written.

Every bench script runs as a module from the project root: `.venv/bin/python -m bench.chaos`,
`-m bench.scale`, `-m bench.throughput`, `-m bench.fuzz`. This module stays light on purpose:
bench.throughput measures its downloaders' peak RSS, which counts the memory of the process
that started them (Linux keeps the high-water mark across fork and exec)."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gib": f"{mem:.0f}",
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of `values` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def markdown_report(
    title: str, command: str, body: str, info: dict[str, str], *, about: str = ""
) -> str:
    """A markdown report: the title, the command line (and what it measured), the machine,
    then `body`."""
    line = f"`{command}`" + (f" — {about}" if about else "")
    machine_line = "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items())
    return "\n".join([f"# {title}", "", line, "", machine_line, "", body, ""])


def write_results(out: Path, data: dict[str, Any], *, title: str, command: str, body: str) -> None:
    """Write `data` (plus the machine) as JSON to `out` and a markdown report beside it;
    print the report."""
    info = machine()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**data, "machine": info}, indent=2) + "\n")
    md = markdown_report(title, command, body, info)
    out.with_suffix(".md").write_text(md)
    print(md)
