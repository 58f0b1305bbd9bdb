"""Scale and latency: files per second as workers are added, how fresh live progress is,
how the API holds up with a big history, and a worker's memory on a huge file.

    .venv/bin/python -m bench.scale [--quick] [--parts files,progress,api,memory] [--out PATH]

Each part runs a real stack (the imitation Hub over loopback, a private Redis, real Celery
worker processes, gunicorn for the web tier):
  files     1,000 small files (64 KiB) through 1, 2 and 4 worker processes (2 threads
            each): files per second from submitting the jobs to the last completion, on
            SQLite (the `make up` store) and on PostgreSQL, with the Hub on loopback and
            with 50 ms before each of its answers (a real Hub is that far or farther).
  progress  20 downloads at once (two workers with 10 threads, each file capped at 2 MB/s)
            while 50 WebSocket clients (another process) watch: the age of each progress
            event when it reaches a client, from the engine's callback (`sentAt`).
  api       100,000 jobs in the store (SQLite, then PostgreSQL): latency of the job list
            (first page, a status filter, a later page by cursor) and of one job's status,
            through gunicorn, one client with keep-alive.
  memory    one worker downloading a 4 GiB file (32 connections, uncapped): its peak RSS.
PostgreSQL parts use the database `modelpull_bench` (created if missing) at
--pg-url's server; without a reachable server they are skipped and reported as null.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, func, insert, select, text

from app import jobs, migrate
from app.db import make_engine
from app.models import DownloadFile, DownloadJob, FileStatus, JobStatus, new_id, utcnow
from bench.common import RESULTS, ROOT, percentile, table, write_results
from bench.stacks import empty_store, imitation_hub, start_stack, stop_stack
from tests.hub import GeneratedFile
from tests.stack import Stack
from tests.support import MiB, wait_for

TOKEN = secrets.token_hex(16)  # the web tier's API_TOKEN for this run
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class Bench:
    """Shared pieces: one Hub for every part, a fresh stack per measurement."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.hub = imitation_hub(tmp)
        self.runs = 0

    def close(self) -> None:
        self.hub.stop()

    def stack(self, db_url: str | None = None, **env: str) -> Stack:
        """A fresh stack in its own directory: new Redis, new models dir, new job store."""
        self.runs += 1
        where = self.tmp / f"run{self.runs}"
        where.mkdir()
        return start_stack(where, self.hub, db_url, env)


# --- (a) files per second ----------------------------------------------------------------


def part_files(bench: Bench, pg: str | None) -> dict[str, Any]:
    """files/s per worker count, for each store and Hub latency."""
    n = bench.args.files
    size = 64 * 1024
    per_job = 50
    repo = "scale/small"
    bench.hub.add_repo(repo, {f"f{i:04d}.bin": GeneratedFile(size=size, seed=i) for i in range(n)})
    names = [f"f{i:04d}.bin" for i in range(n)]
    result: dict[str, Any] = {}
    for label, url in (("sqlite", None), ("postgres", pg)):
        if label == "postgres" and url is None:
            continue
        for latency_ms in bench.args.latencies:
            key = f"{label}, hub {latency_ms} ms"
            result[key] = {}
            bench.hub.latency = latency_ms / 1000
            for workers in (1, 2, 4):
                if url is not None:
                    empty_store(url)
                stack = bench.stack(url)
                try:
                    for w in range(workers):
                        stack.start_worker(f"w{w + 1}")
                    cpu_before = _cpu_times()
                    own_before = _own_cpu()
                    began = time.monotonic()
                    for start in range(0, n, per_job):
                        chunk = names[start : start + per_job]
                        stack.submit(*[jobs.FileSpec(repo, x) for x in chunk])
                    wait_for(
                        lambda s=stack: _count(s, FileStatus.COMPLETED) >= n or _stuck(s),
                        bench.args.timeout,
                        "every small file",
                        every=0.1,
                    )
                    elapsed = time.monotonic() - began
                    busy = _cpu_busy(cpu_before, _cpu_times())
                    # This process serves the imitation Hub (and polls the store).
                    hub_core = round(100 * (_own_cpu() - own_before) / elapsed, 1)
                    done = _count(stack, FileStatus.COMPLETED)
                finally:
                    stop_stack(stack)
                    bench.hub.latency = latency_ms / 1000
                result[key][str(workers)] = round(done / elapsed, 1)
                result.setdefault("cpu_busy_pct", {}).setdefault(key, {})[str(workers)] = busy
                result.setdefault("hub_process_cpu_pct_of_one_core", {}).setdefault(key, {})[
                    str(workers)
                ] = hub_core
                print(
                    f"  files: {key}, {workers} worker(s): {done}/{n} in {elapsed:.1f}s,"
                    f" CPU {busy}% busy, the Hub's process {hub_core}% of a core"
                )
    bench.hub.latency = 0.0
    return result


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_cpu() -> float:
    """CPU seconds (user + system) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Percent of all cores busy between two readings."""
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total else 0.0


def _count(stack: Stack, status: FileStatus) -> int:
    with stack.sessions() as s:
        return int(s.scalar(select(func.count()).where(DownloadFile.status == status)) or 0)


def _stuck(stack: Stack) -> bool:
    """True once any file failed: the run is over, the figure will show it."""
    return _count(stack, FileStatus.FAILED) > 0


# --- (b) progress latency ----------------------------------------------------------------


def part_progress(bench: Bench) -> dict[str, Any]:
    n, clients = bench.args.downloads, bench.args.clients
    size = bench.args.progress_mib * MiB
    repo = "scale/live"
    bench.hub.add_repo(
        repo, {f"live-{i:02d}.gguf": GeneratedFile(size=size, seed=500 + i) for i in range(n)}
    )
    bench.hub.faults.add(repo=repo, host="cdn", bandwidth=MiB, times=None)
    stack = bench.stack(DOWNLOAD_CONNECTIONS="2")
    try:
        stack.start_worker("w1", concurrency=(n + 1) // 2)
        stack.start_worker("w2", concurrency=(n + 1) // 2)
        url = stack.start_web(threads=128, API_TOKEN=TOKEN)
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.wsclients", url, TOKEN, str(clients)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the WebSocket clients did not connect")
        began = time.monotonic()
        job_ids = [
            stack.submit(jobs.FileSpec(repo, f"live-{i:02d}.gguf"))["jobId"] for i in range(n)
        ]
        for job_id in job_ids:
            stack.wait_job(job_id, JobStatus.COMPLETED, timeout=bench.args.timeout)
        elapsed = time.monotonic() - began
        time.sleep(1)  # the last events reach the clients
        out, _ = child.communicate("", timeout=60)
    finally:
        stop_stack(stack)
    data = json.loads(out.strip().splitlines()[-1])
    ages = data["ages_ms"]
    return {
        "p50": round(percentile(ages, 50), 1),
        "p95": round(percentile(ages, 95), 1),
        "p99": round(percentile(ages, 99), 1),
        "max": round(max(ages), 1) if ages else None,
        "samples": len(ages),
        "downloads": n,
        "clients": clients,
        "clients_connected": clients - len(data["errors"]),
        "clients_saw_every_job_complete": sum(c == n for c in data["completed_jobs"]),
        "client_resyncs": data["resyncs"],
        "client_errors": data["errors"][:5],
        "elapsed_s": round(elapsed, 1),
    }


# --- (c) API latency with a big history --------------------------------------------------


def part_api(bench: Bench, pg: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for label in ("sqlite", "postgres"):
        if label == "postgres" and pg is None:
            result[label] = None
            continue
        if label == "postgres":
            assert pg is not None
            empty_store(pg)
            db_url = pg
        else:
            db_url = f"sqlite:///{bench.tmp / 'history.db'}"
            migrate.upgrade(db_url)
        began = time.monotonic()
        ids = _fill(db_url, bench.args.jobs)
        filled = time.monotonic() - began
        stack = bench.stack(db_url)
        try:
            url = stack.start_web(threads=128, API_TOKEN=TOKEN)
            result[label] = _api_latency(url, ids, bench.args.requests)
        finally:
            stop_stack(stack)
        result[label]["jobs"] = bench.args.jobs
        result[label]["fill_s"] = round(filled, 1)
        print(f"  api: {label} {result[label]}", flush=True)
    return result


def _fill(db_url: str, count: int) -> list[str]:
    """`count` jobs of one file each, over the last 30 days, mostly finished."""
    rng = random.Random(3)
    engine = make_engine(db_url)
    now = utcnow()
    statuses = [JobStatus.COMPLETED] * 90 + [JobStatus.FAILED] * 6 + [JobStatus.CANCELLED] * 4
    file_status = {
        JobStatus.COMPLETED: FileStatus.COMPLETED,
        JobStatus.FAILED: FileStatus.FAILED,
        JobStatus.CANCELLED: FileStatus.CANCELLED,
    }
    ids: list[str] = []
    batch = 5000
    with engine.begin() as conn:
        for start in range(0, count, batch):
            job_rows, file_rows = [], []
            for i in range(start, min(count, start + batch)):
                job_id = new_id()
                ids.append(job_id)
                status = rng.choice(statuses)
                created = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
                finished = created + timedelta(seconds=rng.uniform(5, 600))
                size = rng.randrange(1, 8 << 30)
                error = "HTTP 404: file not found" if status is JobStatus.FAILED else None
                job_rows.append(
                    {
                        "id": job_id,
                        "model_id": f"model-{i % 40}" if i % 3 else None,
                        "method": "native",
                        "status": status,
                        "error": error,
                        "created_at": created,
                        "started_at": created,
                        "finished_at": finished,
                        "updated_at": finished,
                    }
                )
                file_rows.append(
                    {
                        "id": new_id(),
                        "job_id": job_id,
                        "file_index": 0,
                        "repo": f"org/repo-{i % 500}",
                        "revision": "main",
                        "file_name": f"weights-{i}.gguf",
                        "dest": f"org/repo-{i % 500}/weights-{i}.gguf",
                        "size": size,
                        "status": file_status[status],
                        "bytes_done": size if status is JobStatus.COMPLETED else size // 2,
                        "attempts": 1,
                        "error": error,
                        "created_at": created,
                        "started_at": created,
                        "finished_at": finished,
                        "published_at": created,
                        "updated_at": finished,
                    }
                )
            conn.execute(insert(DownloadJob), job_rows)
            conn.execute(insert(DownloadFile), file_rows)
    if engine.dialect.name == "postgresql":
        # What autovacuum would do a minute later: the planner needs the new row counts.
        with engine.begin() as conn:
            conn.execute(text("ANALYZE download_job"))
            conn.execute(text("ANALYZE download_file"))
    engine.dispose()
    return ids


def _api_latency(url: str, ids: list[str], count: int) -> dict[str, Any]:
    http = requests.Session()
    http.headers.update(AUTH)
    rng = random.Random(5)
    base = f"{url}/api/models/download"
    first = http.get(f"{base}/jobs", timeout=30).json()
    cursor = http.get(f"{base}/jobs", params={"cursor": first["nextCursor"]}, timeout=30).json()
    later = cursor["nextCursor"]
    routes: dict[str, Callable[[], requests.Response]] = {
        "list": lambda: http.get(f"{base}/jobs", timeout=30),
        "list_failed": lambda: http.get(f"{base}/jobs", params={"status": "failed"}, timeout=30),
        "list_page3": lambda: http.get(f"{base}/jobs", params={"cursor": later}, timeout=30),
        "status": lambda: http.get(f"{base}/status/{rng.choice(ids)}", timeout=30),
    }
    out: dict[str, Any] = {}
    for name, call in routes.items():
        for _ in range(10):  # warm the caches and the connection
            call()
        times = []
        for _ in range(count):
            began = time.perf_counter()
            resp = call()
            times.append((time.perf_counter() - began) * 1000)
            if resp.status_code != 200:
                raise RuntimeError(f"{name}: HTTP {resp.status_code} {resp.text[:200]}")
        out[name] = {
            "p50": round(percentile(times, 50), 1),
            "p95": round(percentile(times, 95), 1),
            "p99": round(percentile(times, 99), 1),
        }
    return out


# --- (d) a worker's memory on a huge file ------------------------------------------------

MEMORY_CONNECTIONS = 32  # the most the adaptive engine opens by default


def part_memory(bench: Bench) -> dict[str, Any]:
    size = bench.args.memory_mib * MiB
    repo = "scale/huge"
    bench.hub.add_repo(repo, {"huge.gguf": GeneratedFile(size=size, seed=4242)})
    stack = bench.stack(DOWNLOAD_CONNECTIONS=str(MEMORY_CONNECTIONS))
    try:
        proc = stack.start_worker("w1")
        baseline = _rss_mb(proc.pid, "VmRSS")
        began = time.monotonic()
        job = stack.submit(jobs.FileSpec(repo, "huge.gguf"))
        stack.wait_job(job["jobId"], JobStatus.COMPLETED, timeout=bench.args.timeout)
        elapsed = time.monotonic() - began
        peak = _rss_mb(proc.pid, "VmHWM")
    finally:
        stop_stack(stack)
    return {
        "file_mib": bench.args.memory_mib,
        "connections": MEMORY_CONNECTIONS,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": peak,
        "mb_per_s": round(size / elapsed / 1e6, 1),
    }


def _rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} for pid {pid}")


# --- PostgreSQL --------------------------------------------------------------------------


def postgres_url(server: str) -> str | None:
    """The bench database on `server` (created if missing), or None if unreachable."""
    try:
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname='modelpull_bench'"))
            if not exists:
                conn.execute(text("CREATE DATABASE modelpull_bench"))
        admin.dispose()
    except Exception as exc:
        print(f"  PostgreSQL unavailable ({type(exc).__name__}): its parts are skipped")
        return None
    url = server.rsplit("/", 1)[0] + "/modelpull_bench"
    migrate.upgrade(url)
    return url


# --- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the parts asked for, print the tables and write the results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short version CI runs")
    parser.add_argument("--parts", default="files,progress,api,memory")
    parser.add_argument("--pg-url", default=os.environ.get("MODELPULL_BENCH_PG", PG_DEFAULT))
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--hub-latency-ms", help="Hub latencies for the files part, e.g. 0,50 (quick 0)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args(argv)
    q = args.quick
    args.files = 100 if q else 1000
    args.latencies = (
        [int(x) for x in args.hub_latency_ms.split(",")]
        if args.hub_latency_ms
        else ([0] if q else [0, 50])
    )
    args.downloads, args.clients, args.progress_mib = (4, 10, 4) if q else (20, 50, 24)
    args.jobs, args.requests = (5_000, 50) if q else (100_000, 300)
    args.memory_mib = 256 if q else 4096
    parts = set(args.parts.split(","))
    pg = postgres_url(args.pg_url) if parts & {"files", "api"} else None
    data: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="modelpull-scale-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            if "files" in parts:
                data["files"] = part_files(bench, pg)
            if "progress" in parts:
                data["progress"] = part_progress(bench)
            if "api" in parts:
                data["api"] = part_api(bench, pg)
            if "memory" in parts:
                data["memory"] = part_memory(bench)
        finally:
            bench.close()
    results = _headline(data)
    command = "python -m bench.scale" + (" --quick" if q else "")
    if parts != {"files", "progress", "api", "memory"}:
        command += f" --parts {args.parts}"
    write_results(args.out, results, title="Scale and latency", command=command, body=_report(data))
    return 0


def _headline(data: dict[str, Any]) -> dict[str, Any]:
    """The figures the issue asks for, then the detail."""
    files = data.get("files", {})
    # Adding workers is for deployments on PostgreSQL, whose Hub is far away: that is the
    # headline when it was measured; every configuration is in the detail.
    preferred = ["postgres, hub 50 ms", "sqlite, hub 50 ms", "sqlite, hub 0 ms"]
    configs = [c for c in files if not c.endswith("_pct") and "_pct_" not in c]
    config = next((c for c in preferred if c in files), next(iter(configs), None))
    by = files.get(config) or {}
    api = data.get("api", {})
    progress = data.get("progress", {})
    return {
        "files_per_s": {k: by.get(k) for k in ("1", "2", "4")},
        "files_per_s_config": config,
        "progress_ms": {k: progress.get(k) for k in ("p50", "p95", "p99")},
        "job_list_p99_ms": {
            db: (api.get(db) or {}).get("list", {}).get("p99") for db in ("sqlite", "postgres")
        },
        "worker_peak_rss_mb": data.get("memory", {}).get("peak_rss_mb"),
        "detail": data,
    }


def _report(data: dict[str, Any]) -> str:
    parts = []
    if "files" in data:
        rows = []
        cpu = data["files"].get("cpu_busy_pct", {})
        hub_cpu = data["files"].get("hub_process_cpu_pct_of_one_core", {})
        configs = [c for c in data["files"] if "_pct" not in c]
        for config, by in data["files"].items():
            if by and config in configs:
                one = by.get("1") or 0
                busy = cpu.get(config, {})
                rows.append(
                    [config]
                    + [
                        (f"{by[w]} ({by[w] / one:.2f}x)" if one else str(by[w]))
                        + (f", CPU {busy[w]}%" if w in busy else "")
                        + (f", Hub {hub_cpu[config][w]}%" if w in hub_cpu.get(config, {}) else "")
                        for w in ("1", "2", "4")
                    ]
                )
        header = ["store, Hub latency", "1 worker", "2 workers", "4 workers"]
        parts.append(
            "Small files end to end: files/s, against one worker, how busy the machine's cores "
            "were, and how much of one core the imitation Hub's process (one Python process, "
            "so one core at most) used:\n\n" + table(header, rows)
        )
    if "progress" in data:
        p = data["progress"]
        parts.append(
            f"Progress latency, engine callback to WebSocket client ({p['downloads']} downloads, "
            f"{p['clients']} clients, {p['samples']} samples):\n\n"
            + table(
                [
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "max ms",
                    "clients connected",
                    "clients that saw every job complete",
                ],
                [
                    [
                        p["p50"],
                        p["p95"],
                        p["p99"],
                        p["max"],
                        p["clients_connected"],
                        p["clients_saw_every_job_complete"],
                    ]
                ],
            )
        )
    if "api" in data:
        rows = []
        for db, by in data["api"].items():
            if by:
                for route in ("list", "list_failed", "list_page3", "status"):
                    r = by[route]
                    rows.append([db, by["jobs"], route, r["p50"], r["p95"], r["p99"]])
        parts.append("API latency with a big history (ms):\n\n"
                     + table(["store", "jobs", "route", "p50", "p95", "p99"], rows))  # fmt: skip
    if "memory" in data:
        m = data["memory"]
        parts.append(
            "Worker memory on one big file:\n\n"
            + table(
                ["file MiB", "connections", "RSS at start MB", "peak RSS MB", "MB/s"],
                [
                    [
                        m["file_mib"],
                        m.get("connections", 8),
                        m["baseline_rss_mb"],
                        m["peak_rss_mb"],
                        m["mb_per_s"],
                    ]
                ],
            )
        )
    return "\n\n".join(parts)


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    raise SystemExit(main())
