"""Throughput of one file from the imitation Hub: our native engine against its peers.

    .venv/bin/python -m bench.throughput [--size-mb N] [--runs R] [--out PATH] [--tools a,b,...]

The hub runs in its own process; each download runs in its own process too, so wall time,
CPU seconds (user + system) and peak RSS are those of the downloader alone. Two modes: the
hub uncapped, and every connection capped at --cap-mb MB/s as a CDN would. Prints a
markdown table and writes JSON rows to --out and a markdown report beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.common import RESULTS, ROOT, machine, markdown_report, table
from tests.hub import HubAdmin

REPO = "bench/weights"
FILE = "model.gguf"
MB = 1_000_000

NATIVE = f"""
import sys
from pathlib import Path
from worker.engine.base import DownloadRequest
from worker.engine.native import NativeEngine
url, out, conns = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
req = DownloadRequest(repo="{REPO}", file_name="{FILE}", dest="{FILE}", models_dir=out,
                      endpoint=url)
NativeEngine(conns).download(req)
"""

HF_HUB = f"""
import sys
from huggingface_hub import hf_hub_download
hf_hub_download("{REPO}", "{FILE}", local_dir=sys.argv[2], endpoint=sys.argv[1])
"""


@dataclass
class Row:
    """One tool in one mode: medians over the runs."""

    tool: str
    connections: int
    mode: str
    mb_per_s: float
    cpu_s: float
    peak_rss_mb: float
    runs: int


def start_hub(workdir: Path, size: int) -> tuple[subprocess.Popen[str], str]:
    """The imitation Hub in its own process, serving one generated file."""
    repos = workdir / "repos"
    repos.mkdir()
    spec = {"repos": {REPO: {"files": {FILE: {"generate": {"size": size, "seed": 7}}}}}}
    (repos / "hub.json").write_text(json.dumps(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hub", "--repos", str(repos)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return proc, json.loads(line)["url"]
    raise RuntimeError("the imitation hub did not start")


def configure(url: str, bandwidth: int | None) -> None:
    """Set the hub-wide per-connection cap over the admin API."""
    HubAdmin(url).configure(bandwidth=bandwidth)


def command(tool: str, conns: int, url: str, out: Path) -> list[str]:
    """The argv that downloads the file with `tool` into `out`."""
    resolve = f"{url}/{REPO}/resolve/main/{FILE}"
    if tool == "native":
        return [sys.executable, "-c", NATIVE, url, str(out), str(conns)]
    if tool == "hf_hub":
        return [sys.executable, "-c", HF_HUB, url, str(out)]
    if tool == "curl":
        return ["curl", "-sfL", "-o", str(out / FILE), resolve]
    if tool == "aria2c":
        return [
            "aria2c", "-q", f"-x{conns}", f"-s{conns}", "-k1M", "--file-allocation=none",
            "--allow-overwrite=true", "-d", str(out), "-o", FILE, resolve,
        ]  # fmt: skip
    raise ValueError(tool)


def run_once(
    argv: list[str], out: Path, size: int, env: dict[str, str]
) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one download."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {proc.returncode}")
    got = (out / FILE).stat().st_size
    if got != size:
        raise RuntimeError(f"{argv[0]} wrote {got} bytes, expected {size}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def ensure_aria2c() -> bool:
    """aria2c from Debian's packages, installed if missing and we may."""
    if shutil.which("aria2c"):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "aria2"], check=False)
    return shutil.which("aria2c") is not None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="file size in MiB (1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and mode (3)")
    parser.add_argument("--cap-mb", type=float, default=40.0, help="per-connection cap, MB/s")
    parser.add_argument("--tools", default="native,hf_hub,curl,aria2c")
    parser.add_argument("--connections", default="1,4,8,16", help="native engine connections")
    parser.add_argument("--modes", default="uncapped,capped")
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = parser.parse_args(argv)

    size = args.size_mb * 2**20
    tools = args.tools.split(",")
    if "aria2c" in tools and not ensure_aria2c():
        print("aria2c is not available; leaving it out", file=sys.stderr)
        tools.remove("aria2c")
    plan = [
        (tool, conns)
        for tool in tools
        for conns in (
            [int(c) for c in args.connections.split(",")]
            if tool == "native"
            else [8]
            if tool == "aria2c"
            else [1]
        )
    ]
    env = dict(os.environ, HF_HUB_DISABLE_XET="1")
    env.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.update(NO_PROXY="127.0.0.1,localhost", HF_HOME=tempfile.mkdtemp(prefix="bench-hf-"))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        work = Path(tmp)
        hub, url = start_hub(work, size)
        try:
            for mode in args.modes.split(","):
                configure(url, int(args.cap_mb * MB) if mode == "capped" else None)
                for tool, conns in plan:
                    walls, cpus, rss = [], [], []
                    for _ in range(args.runs):
                        wall, cpu, peak = run_once(
                            command(tool, conns, url, work / "out"), work / "out", size, env
                        )
                        walls.append(wall)
                        cpus.append(cpu)
                        rss.append(peak)
                    row = Row(
                        tool=tool,
                        connections=conns,
                        mode=mode,
                        mb_per_s=round(size / MB / statistics.median(walls), 1),
                        cpu_s=round(statistics.median(cpus), 2),
                        peak_rss_mb=round(max(rss), 1),
                        runs=args.runs,
                    )
                    rows.append(row)
                    print(
                        f"{mode:9} {tool:7} x{conns:<2} {row.mb_per_s:8.1f} MB/s "
                        f"cpu {row.cpu_s:6.2f} s  rss {row.peak_rss_mb:6.1f} MB",
                        flush=True,
                    )
        finally:
            hub.terminate()
            hub.wait(10)
    report(rows, args, size)
    return 0


def report(rows: list[Row], args: argparse.Namespace, size: int) -> None:
    """Write the JSON rows and the markdown report; print the table."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    gib = size / 2**30
    header = ["mode", "tool", "connections", "MB/s", "CPU s", "CPU s per GiB", "peak RSS MB"]
    body = table(
        header,
        [
            [
                r.mode,
                r.tool,
                r.connections,
                r.mb_per_s,
                r.cpu_s,
                f"{r.cpu_s / gib:.2f}",
                r.peak_rss_mb,
            ]
            for r in rows
        ],
    )
    print(body)
    command = f"python -m bench.throughput --size-mb {args.size_mb} --runs {args.runs}"
    about = (
        f"one {args.size_mb} MiB file from the imitation Hub (its own process, loopback), "
        f"median of {args.runs} runs; capped = {args.cap_mb:g} MB/s per connection."
    )
    md = markdown_report("Throughput benchmark", command, body, machine(), about=about)
    args.out.with_suffix(".md").write_text(md)


if __name__ == "__main__":
    raise SystemExit(main())
