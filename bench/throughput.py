"""Throughput of one large file served by nginx: our native engine against its peers.

    .venv/bin/python -m bench.throughput [--size-mb 2048] [--runs 3] [--cap-mb 50]
        [--tools native-8,curl,...] [--modes uncapped,capped] [--hub nginx|python]
        [--quick] [--out bench/results/throughput.json]

nginx (bench.nginx, installed from Debian's nginx-light if missing) plays the Hub and its CDN
on loopback: the Hub's 302 with its metadata headers, then the file itself with sendfile,
ranges and a strong ETag. Two modes: uncapped, and every connection capped at --cap-mb MB/s
as a CDN would. `--hub python` uses the imitation Hub (tests.hub) instead.

The tools (bench.peers): the native engine with 8 and 16 connections and adaptive,
hf_transfer with 16 and 100, aria2c with 16 with and without its sha256 check, curl, and
huggingface_hub's hf_hub_download (those two uncapped only), and a plain threaded Python
reference. They run round-robin, run 1 of every tool then run 2 of every tool, so drift
hits all alike. Each download is its own process, started by a small launcher process (so
the bench's own memory does not inflate the peaks): wall time, CPU seconds (user + system)
and peak RSS are that process's, from os.wait4, interpreter start-up included; the Python
children also time their own transfer. Every output's size and sha256 is checked
after the run (outside the timing), then deleted and the disk synced. nginx's own CPU
seconds are read from /proc around every run, to show the server is not the bottleneck.

Writes JSON rows to --out and a markdown report beside it (machine, command, table,
ratios); prints the table. Exits 1 if any tool failed (the others are still reported).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bench.common import RESULTS, ROOT, machine, markdown_report, table
from bench.nginx import (
    FILE,
    MODES,
    REPO,
    Nginx,
    check_cap,
    ensure_nginx,
    localhost_addresses,
    preflight,
    process_cpu_seconds,
    write_weights,
)
from bench.peers import (
    ADAPTIVE_MAX,
    QUICK,
    Launcher,
    Sample,
    Tool,
    ToolFailed,
    available,
    run_once,
    tool_names,
)
from tests.hub.clients import HubAdmin, hf_environ

MB = 1_000_000
GiB = 2**30


class Server(Protocol):
    """What the bench needs of the server: a hub URL per mode and its CPU use."""

    def hub_url(self, mode: str) -> str:
        """The endpoint the tools resolve the file at in `mode`."""
        ...

    def enter(self, mode: str) -> None:
        """Get ready to serve `mode`."""
        ...

    def cpu_seconds(self) -> float:
        """CPU seconds the server has used so far."""
        ...

    def stop(self) -> None:
        """Stop serving."""
        ...


class PythonHub:
    """The imitation Hub (tests.hub) in its own process; its cap is set per mode."""

    def __init__(self, work: Path, size: int, cap: int) -> None:
        repos = work / "repos"
        repos.mkdir()
        spec = {"repos": {REPO: {"files": {FILE: {"generate": {"size": size, "seed": 7}}}}}}
        (repos / "hub.json").write_text(json.dumps(spec))
        self.cap = cap
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hub", "--repos", str(repos)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.url: str = json.loads(line)["url"]
                return
        raise RuntimeError("the imitation hub did not start")

    def hub_url(self, mode: str) -> str:
        """The one hub serves both modes."""
        return self.url

    def enter(self, mode: str) -> None:
        """Set the hub-wide per-connection cap for `mode`."""
        HubAdmin(self.url).configure(bandwidth=self.cap if mode == "capped" else None)

    def cpu_seconds(self) -> float:
        """The hub process's CPU seconds so far."""
        return process_cpu_seconds([self.proc.pid])

    def stop(self) -> None:
        """Stop the hub."""
        self.proc.terminate()
        self.proc.wait(10)


def measure(server: Server, tools: list[Tool], modes: list[str], runs: int, size: int,
            once: Callable[[Tool, str], Sample],
            ) -> tuple[dict[tuple[str, str], list[Sample]], list[str]]:  # fmt: skip
    """Every tool `runs` times per mode, round-robin, each run by `once(tool, mode)`; the
    samples and the failures."""
    samples: dict[tuple[str, str], list[Sample]] = {}
    failed: list[str] = []
    for mode in modes:
        server.enter(mode)
        plan = [t for t in tools if mode in t.modes]
        for run in range(runs if plan else 0):
            # Rotating the start too means no tool always follows the same neighbour.
            for tool in plan[run % len(plan) :] + plan[: run % len(plan)]:
                key = (tool.name, mode)
                if key in samples and not samples[key]:
                    continue  # failed earlier in this mode
                try:
                    s = once(tool, mode)
                except ToolFailed as exc:
                    failed.append(f"{tool.name} ({mode}, run {run + 1}): {exc}")
                    print(f"FAILED {failed[-1]}", file=sys.stderr, flush=True)
                    samples[key] = []
                    continue
                samples.setdefault(key, []).append(s)
                print(
                    f"{mode:9} run {run + 1} {tool.name:16} {size / MB / s.wall_s:8.1f} MB/s  "
                    f"cpu {s.cpu_s:6.2f} s  rss {s.rss_mb:6.1f} MB  "
                    f"server cpu {s.server_cpu_s:5.2f} s",
                    flush=True,
                )
    return {k: v for k, v in samples.items() if v}, failed


def median_of(values: list[float | None]) -> float | None:
    """The median of the values, or None if any is missing."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


def summarise(tool: Tool, mode: str, samples: list[Sample], size: int) -> dict[str, Any]:
    """The JSON row of one tool in one mode: medians over its runs (peak RSS: the highest)."""
    wall = statistics.median(s.wall_s for s in samples)
    cpu = statistics.median(s.cpu_s for s in samples)
    inproc = median_of([s.elapsed_s for s in samples])
    tail = median_of([s.tail_s for s in samples])
    used = [s.connections for s in samples]
    settled = median_of([float(c) if c is not None else None for c in used])
    row: dict[str, Any] = {
        "tool": tool.family,
        "name": tool.name,
        "connections": tool.connections or (None if settled is None else round(settled)),
        "mode": mode,
        "mb_per_s": round(size / MB / wall, 1),
        "cpu_s": round(cpu, 2),
        "cpu_s_per_gib": round(cpu / (size / GiB), 2),
        "peak_rss_mb": round(max(s.rss_mb for s in samples), 1),
        "tail_s": None if tail is None else round(tail, 3),
        "runs": len(samples),
        "wall_s": round(wall, 3),
        "mb_per_s_runs": [round(size / MB / s.wall_s, 1) for s in samples],
        "mb_per_s_in_process": None if inproc is None else round(size / MB / inproc, 1),
        "server_cpu_s": round(statistics.median(s.server_cpu_s for s in samples), 2),
        "server_busy_max": round(max(s.server_cpu_s / s.wall_s for s in samples), 2),
    }
    if tool.family == "native":
        row["connections_used"] = used
    if tool.connections is None:
        row["max_connections"] = ADAPTIVE_MAX
    return row


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    """The comparisons the bench exists for, each computed from the rows (n/a if missing)."""
    by = {(r["name"], r["mode"]): r for r in rows}
    native_up = [r for r in rows if r["tool"] == "native" and r["mode"] == "uncapped"]
    best = max(native_up, key=lambda r: r["mb_per_s"]) if native_up else None

    def ratio(label: str, a: dict[str, Any] | None, b: dict[str, Any] | None,
              key: str = "mb_per_s") -> str:  # fmt: skip
        """One line: a[key] / b[key] with both figures."""
        if a is None or b is None or not b[key]:
            return f"- {label}: n/a (a row is missing)"
        return (
            f"- {label}: **{a[key] / b[key]:.2f}x** ({a['name']} {a[key]} / {b['name']} {b[key]})"
        )

    auto = by.get(("native-auto", "capped"))
    hft16, curl = by.get(("hf_transfer-16", "uncapped")), by.get(("curl", "uncapped"))
    hft100, aria = by.get(("hf_transfer-100", "capped")), by.get(("aria2c", "capped"))
    lines = [
        ratio("native best / hf_transfer-16, uncapped", best, hft16),
        ratio("native best / curl, uncapped", best, curl),
        ratio("native adaptive / hf_transfer-100, capped", auto, hft100),
        ratio("peak RSS, native adaptive / hf_transfer-100, capped", auto, hft100, "peak_rss_mb"),
        ratio("native adaptive / aria2c-16, capped", auto, aria),
    ]
    for r in rows:
        if r["tool"] == "native" and r["tail_s"] is not None:
            share = r["tail_s"] / r["wall_s"]
            lines.append(
                f"- tail / wall, {r['name']} {r['mode']}: {share:.1%} "
                f"({r['tail_s']} s of {r['wall_s']} s)"
            )
    return lines


def report(rows: list[dict[str, Any]], about: dict[str, Any], out: Path) -> None:
    """Write the JSON rows and the markdown report; print the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    header = ["mode", "tool", "conns", "MB/s", "runs' MB/s", "MB/s in-process", "CPU s",
              "CPU s/GiB", "peak RSS MB", "tail s", "server CPU s"]  # fmt: skip
    body = table(
        header,
        [
            [r["mode"], r["name"], r["connections"], r["mb_per_s"],
             " ".join(str(v) for v in r["mb_per_s_runs"]), r["mb_per_s_in_process"] or "-",
             r["cpu_s"], r["cpu_s_per_gib"], r["peak_rss_mb"],
             "-" if r["tail_s"] is None else r["tail_s"], r["server_cpu_s"]]
            for r in rows
        ],
    )  # fmt: skip
    print(body)
    busiest = max((r["server_busy_max"] for r in rows), default=0.0)
    per_mode = "; ".join(
        f"{mode} {cpu:.2f} CPU s for {gib:g} GiB served ({cpu / gib:.3f} s/GiB)"
        for mode, (cpu, gib) in about["server_cpu"].items()
        if gib
    )
    notes = [
        f"Server: {about['server']}; `localhost` (the CDN's host name) resolves to "
        f"{', '.join(about['localhost'])}. Its CPU, from /proc, all runs: {per_mode}. Its "
        f"busiest run kept it at {busiest:.0%} of one core (CPU seconds over the run's wall "
        "time), so it was not the limit.",
        f"Peak RSS includes about {about['rss_floor']:.1f} MB every child inherits from the "
        "small process that starts it (what `true` reports there).",
        "MB/s is 10^6 bytes/s over the child's whole life (interpreter start-up included); "
        "*in-process* is the child's own timing of resolve + transfer. Every output's size "
        "and sha256 were checked after its run, outside the timing; then it was deleted and "
        "the disk synced. Only the native engine fsyncs; it and aria2c+sha256 hash.",
        "Tools: " + "; ".join(f"{t.name}: {t.note}" for t in about["tools"]) + ".",
    ]
    if about["left_out"]:
        notes.append("Left out: " + "; ".join(about["left_out"]) + ".")
    if about["failed"]:
        notes.append("**Failed**: " + "; ".join(about["failed"]))
    text = "\n".join([body, "", "## Ratios", "", *ratios(rows), "", "## Notes", "", ""])
    text += "\n\n".join(notes)
    line = (
        f"one {about['size_mb']} MiB file, median of {about['runs']} runs, round-robin; "
        f"capped = {about['cap_mb']:g} MB/s per connection."
    )
    md = markdown_report("Throughput benchmark", about["command"], text, machine(), about=line)
    out.with_suffix(".md").write_text(md)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with --quick's smaller defaults filled in."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mb", type=int, help="file size in MiB (2048; --quick 64)")
    parser.add_argument("--runs", type=int, help="runs per tool and mode (3; --quick 1)")
    parser.add_argument("--cap-mb", type=float, default=50.0, help="per-connection cap, MB/s")
    parser.add_argument("--tools", help=f"comma-separated subset of {tool_names()}")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--hub", choices=("nginx", "python"), default="nginx")
    parser.add_argument("--quick", action="store_true", help=f"64 MiB, 1 run, {','.join(QUICK)}")
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = parser.parse_args(argv)
    args.size_mb = args.size_mb or (64 if args.quick else 2048)
    args.runs = args.runs or (1 if args.quick else 3)
    args.tools = args.tools or (",".join(QUICK) if args.quick else tool_names())
    args.modes = [m for m in args.modes.split(",") if m]
    if set(args.modes) - set(MODES):
        parser.error(f"--modes: choose from {','.join(MODES)}")
    return args


def start_server(args: argparse.Namespace, work: Path, size: int) -> tuple[Server, str]:
    """The server the tools download from, started; and what it is, for the report."""
    cap = int(args.cap_mb * MB)
    if args.hub == "python":
        return PythonHub(work, size, cap), "the imitation Hub (tests.hub, Python)"
    binary = ensure_nginx()
    if binary is None:
        raise SystemExit("nginx is not installed and cannot be (apt-get install nginx-light)")
    nginx = Nginx(binary, work, write_weights(work / "cdn", size), cap)
    nginx.start()
    return (
        nginx,
        f"{nginx.version} (1 worker, sendfile; capped mode: every connection paced to "
        f"{cap} B/s by the kernel, SO_MAX_PACING_RATE)",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its results."""
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "bench.throughput", *(sys.argv[1:] if argv is None
                                                                 else argv)])  # fmt: skip
    size = args.size_mb * 2**20
    tools, left_out = available(args.tools.split(","))
    for why in left_out:
        print(f"leaving out {why}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        work = Path(tmp)
        launcher = Launcher()
        server, described = start_server(args, work, size)
        try:
            env = hf_environ(server.hub_url(args.modes[0]), work / "hf-home")
            expect = {mode: preflight(server.hub_url(mode)) for mode in args.modes}
            if args.hub == "nginx" and "capped" in expect:
                # A short request must be held to the cap too, or "capped" means nothing.
                check_cap(expect["capped"]["url"], int(args.cap_mb * MB), size)
            floor = launcher.run(["true"], env, work).rss_mb

            def once(tool: Tool, mode: str) -> Sample:
                """One download with `tool` in `mode`."""
                hub, sha = server.hub_url(mode), expect[mode]["sha256"]
                return run_once(launcher, tool, hub, server.cpu_seconds, work, sha, size, env)

            samples, failed = measure(server, tools, args.modes, args.runs, size, once)
        finally:
            server.stop()
            launcher.close()
    rows = [
        summarise(tool, mode, samples[(tool.name, mode)], size)
        for mode in args.modes
        for tool in tools
        if (tool.name, mode) in samples
    ]
    about = {
        "server": described,
        "localhost": localhost_addresses(),
        "rss_floor": floor,
        "size_mb": args.size_mb,
        "runs": args.runs,
        "cap_mb": args.cap_mb,
        "command": command,
        "tools": tools,
        "left_out": left_out,
        "failed": failed,
        "server_cpu": {
            mode: (
                sum(s.server_cpu_s for (_, m), ss in samples.items() if m == mode for s in ss),
                sum(len(ss) for (_, m), ss in samples.items() if m == mode) * size / GiB,
            )
            for mode in args.modes
        },
    }
    report(rows, about, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
