"""The chaos suite over many seeds, on SQLite and PostgreSQL: the figures that must hold for
every seed (nothing corrupt, nothing incomplete visible, rows and disks agreeing, everything
completed, resumes costing at most 5 % of the bytes) in one table.

    .venv/bin/python -m bench.chaos_seeds [--seeds 1-12] [--pg-url URL] [--max-mib M]

Each run is `python -m bench.chaos --seed S [--db-url URL]`, its own results written to
bench/results/chaos-seeds/; this writes bench/results/chaos-seeds.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, table, write_results

OVERHEAD_LIMIT = 1.05  # CDN bytes / file bytes


def seeds_of(text: str) -> list[int]:
    """`1-12` or `1,4,7`."""
    if "-" in text:
        low, high = text.split("-", 1)
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def run_one(seed: int, db: str, args: argparse.Namespace) -> dict[str, Any]:
    out = RESULTS / "chaos-seeds" / f"{db}-seed{seed}.json"
    cmd = [sys.executable, "-m", "bench.chaos", "--seed", str(seed), "--out", str(out)]
    if args.max_mib:
        cmd += ["--max-mib", str(args.max_mib)]
    if db == "postgresql":
        cmd += ["--db-url", args.pg_url]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if not out.is_file():
        return {"seed": seed, "db": db, "error": (proc.stdout + proc.stderr)[-2000:]}
    data: dict[str, Any] = json.loads(out.read_text())
    return {"seed": seed, "db": db, **data}


def row(d: dict[str, Any]) -> list[Any]:
    if "error" in d:
        return [d["seed"], d["db"], "run failed", *["-"] * 10]
    ev = d["events"]
    return [
        d["seed"], d["db"], f"{d['completed']}/{d['downloads']}", d["corrupt"],
        d["visible_incomplete"], d["row_disk_disagree"], d["bytes_ratio"],
        d["control_effect_s_max"], d["recover_s_max"], ev["kill"], ev["redis"],
        ev["hub"] + ev["trickle"] + ev["branch"] + ev["control"], d["elapsed_s"],
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run every seed on each database; write the summary."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", default="1-12", help="1-12 or 1,4,7 (1-12)")
    parser.add_argument("--pg-url", help="a PostgreSQL database URL (emptied before each run)")
    parser.add_argument("--max-mib", type=int, help="largest file, passed to bench.chaos")
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos-seeds.json")
    args = parser.parse_args(argv)
    dbs = ["sqlite"] + (["postgresql"] if args.pg_url else [])
    runs = []
    for db in dbs:
        for seed in seeds_of(args.seeds):
            runs.append(run_one(seed, db, args))
            print(table(HEADER, [row(runs[-1])]).splitlines()[-1], flush=True)
    ok = [r for r in runs if "error" not in r]
    worst = max((r["bytes_ratio"] for r in ok), default=None)
    data = {
        "runs": len(runs),
        "failed_runs": len(runs) - len(ok),
        "all_completed": all(r["completed"] == r["downloads"] for r in ok),
        "corrupt": sum(r["corrupt"] for r in ok),
        "visible_incomplete": sum(r["visible_incomplete"] for r in ok),
        "row_disk_disagree": sum(r["row_disk_disagree"] for r in ok),
        "bytes_ratio_max": worst,
        "control_effect_s_max": max((r["control_effect_s_max"] or 0 for r in ok), default=None),
        "results": [{k: v for k, v in r.items() if k not in ("files", "timeline")} for r in runs],
    }
    command = f"python -m bench.chaos_seeds --seeds {args.seeds}"
    if args.pg_url:
        command += " --pg-url postgresql+psycopg://…/modelpull_bench"
    if args.max_mib:
        command += f" --max-mib {args.max_mib}"
    body = "\n\n".join(
        [
            table(HEADER, [row(r) for r in runs]),
            f"Worst bytes ratio {worst} (limit {OVERHEAD_LIMIT}); each run's timeline is in "
            "bench/results/chaos-seeds/.",
        ]
    )
    write_results(args.out, data, title="Chaos suite, many seeds", command=command, body=body)
    bad = (
        data["failed_runs"]
        or not data["all_completed"]
        or data["corrupt"]
        or data["visible_incomplete"]
        or data["row_disk_disagree"]
        or (worst is not None and worst > OVERHEAD_LIMIT)
    )
    return 1 if bad else 0


HEADER = [
    "seed", "database", "completed", "corrupt", "visible incomplete", "row/disk disagree",
    "bytes ratio", "control effect s (max)", "recover s (max)", "kills", "redis restarts",
    "other faults", "elapsed s",
]  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    raise SystemExit(main())
