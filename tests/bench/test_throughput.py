"""The throughput bench's quick version against nginx, so it keeps working (its figures are
recorded from full runs in bench/results/; nothing here is timed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.nginx import ensure_nginx
from bench.throughput import main

pytestmark = pytest.mark.timeout(120)


def test_quick_run_measures_every_tool_against_nginx(tmp_path: Path) -> None:
    if ensure_nginx() is None:
        pytest.skip("nginx is not installed and cannot be installed here")
    out = tmp_path / "t.json"

    assert main(["--quick", "--out", str(out)]) == 0

    rows = {(r["name"], r["mode"]): r for r in json.loads(out.read_text())}
    # curl runs uncapped only: a capped single stream would only measure the cap.
    wanted = [("native-8", "uncapped"), ("native-8", "capped"), ("curl", "uncapped")]
    wanted += [("threads", "uncapped"), ("threads", "capped")]
    assert sorted(rows) == sorted(wanted)
    assert all(rows[key]["mb_per_s"] > 0 and rows[key]["runs"] == 1 for key in wanted)
    assert rows[("native-8", "uncapped")]["tail_s"] is not None
    report = out.with_suffix(".md").read_text()
    assert "nginx/" in report and "| native-8 |" in report
