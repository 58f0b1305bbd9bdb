"""Chaos: many downloads through two workers while workers die, Redis restarts and the Hub
misbehaves. Nothing may be corrupt, nothing incomplete may ever be visible.

    .venv/bin/python -m bench.chaos [--quick] [--downloads N] [--max-mib M] [--seed S] [--out PATH]

A real stack: the imitation Hub (each connection capped, as a CDN would), a private Redis,
two Celery worker processes, the SQLite job store (or PostgreSQL with --db-url). At random
moments (seeded) one of:
  kill     SIGKILL a worker that holds a download, restart it a moment later;
  redis    stop Redis (losing its queue and locks: no persistence) and start it again;
  hub      make the Hub drop connections, answer 5xx or 429, or stall;
  trickle  make the CDN trickle (hundreds of bytes a second) after some bytes;
  branch   move the repo's main to a new commit where a file not finished has other bytes
           (same size): a job keeps the commit it pinned;
  control  pause a download that is under way, resume it a moment later.
Measured:
  completed           downloads whose job completed;
  corrupt             completed files whose sha256 differs from the Hub's at the commit
                      their job pinned (must be 0);
  row_disk_disagree   files whose row and destination disagree at the end: completed
                      without the right bytes there, or bytes there under another state
                      (must be 0);
  control_effect_s    per pause: from the request until the worker's own event says the
                      transfer stopped (or completed, when the finish line won);
  visible_incomplete  destinations ever seen with the wrong size, by a watcher polling
                      every destination every few ms, plus stray files (must be 0);
  bytes_ratio         bytes the CDN sent / bytes of the files: what resumes cost;
  recover_s           per kill: from SIGKILL until every file the dead worker held is
                      back in the queue or taken by a live worker (or done): once their
                      heartbeat has been quiet 5 s and the process's alive key in Redis
                      has lapsed, or at worst when the lease does (DOWNLOAD_LEASE_SECONDS,
                      --lease here). `retaken_s` adds the wait for a free worker: the time
                      until each of them is being downloaded again (or done).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from app import jobs, services
from app.digest import sha256_file
from app.errors import IllegalTransitionError
from app.models import JOB_TERMINAL, DownloadFile, FileStatus, JobStatus
from bench.common import RESULTS, percentile, table, write_results
from bench.stacks import empty_store, imitation_hub, start_stack, stop_stack
from tests.hub import GeneratedFile, ImitationHub
from tests.stack import Stack, cdn_bytes
from tests.support import MiB

REPO = "chaos/weights"
# The faults and how often each comes once every kind has come once.
KINDS = {"kill": 4, "redis": 2, "hub": 4, "trickle": 2, "branch": 1, "control": 3}


@dataclass
class Download:
    """One download of the run: a job with one file."""

    name: str
    size: int
    sha256: str
    job_id: str = ""
    file_id: str = ""


@dataclass
class Pause:
    """One pause request, and when the worker said it took effect."""

    file_id: str
    job_id: str
    at: float  # time.time() of the request
    effect_s: float | None = None


@dataclass
class Kill:
    """One SIGKILL and what it left behind."""

    worker: str
    at: float
    held: dict[str, str]  # file id -> holder at the kill
    recovered_at: dict[str, float] = field(default_factory=dict)
    retaken_at: dict[str, float] = field(default_factory=dict)

    def _span(self, at: dict[str, float]) -> float | None:
        if not self.held or len(at) < len(self.held):
            return None
        return max(at.values()) - self.at

    @property
    def recover_s(self) -> float | None:
        return self._span(self.recovered_at)

    @property
    def retaken_s(self) -> float | None:
        return self._span(self.retaken_at)


class Watcher:
    """Polls every destination: it must be absent or hold the whole file, never less."""

    def __init__(self, models: Path, sizes: dict[str, int]) -> None:
        self.models = models
        self.sizes = sizes
        self.seen_incomplete: dict[str, int] = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.polls += 1
            for name, size in self.sizes.items():
                with contextlib.suppress(FileNotFoundError):
                    got = (self.models / name).stat().st_size
                    if got != size:
                        self.seen_incomplete.setdefault(name, got)

    def strays(self) -> list[str]:
        """Files under the models dir that are not a destination (partials belong in the
        hidden work dir)."""
        found = []
        for path in self.models.rglob("*"):
            rel = path.relative_to(self.models)
            if path.is_file() and rel.parts[0] != ".modelpull" and str(rel) not in self.sizes:
                found.append(str(rel))
        return found


class Chaos:
    """The run: stack, downloads, the fault loop, the figures."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.tmp = tmp
        self.log: list[str] = []
        self.kills: list[Kill] = []
        self.counts = {kind: 0 for kind in KINDS}
        self.pauses: list[Pause] = []
        self.resume_at: dict[str, float] = {}  # job id -> when to resume it
        self.moves = 0
        self.incarnation = {"w1": 0, "w2": 0}
        self.live: dict[str, str] = {}  # logical worker -> current Stack worker name
        self.restart_at: dict[str, float] = {}
        self.started = time.monotonic()
        self.first_kinds: list[str] = []
        self.ended: set[str] = set()

    def note(self, text: str) -> None:
        line = f"{time.monotonic() - self.started:7.1f}s  {text}"
        self.log.append(line)
        if self.args.verbose:
            print(line, flush=True)

    # --- set-up ---------------------------------------------------------------------------

    def sizes(self) -> list[int]:
        top = self.args.max_mib * MiB
        sizes = [top]
        for _ in range(self.args.downloads - 1):
            mib = math_exp_uniform(self.rng, 1, max(1, self.args.max_mib // 2))
            sizes.append(mib * MiB + self.rng.randrange(0, 4096))
        return sizes

    def run(self) -> dict[str, Any]:
        hub = imitation_hub(self.tmp)
        env = {
            "DOWNLOAD_CONNECTIONS": str(self.args.connections),
            "DOWNLOAD_LEASE_SECONDS": str(self.args.lease),
            "SWEEP_INTERVAL_SECONDS": "2",
            "WORKER_CONCURRENCY": "2",
            "DOWNLOAD_TRICKLE_SECONDS": str(self.args.trickle_window),
        }
        try:
            stack = start_stack(self.tmp, hub, self.args.db_url, env)
            try:
                return self._run(stack, hub)
            finally:
                stop_stack(stack)
        finally:
            hub.stop()

    def _run(self, stack: Stack, hub: ImitationHub) -> dict[str, Any]:
        downloads = []
        files = {}
        for i, size in enumerate(self.sizes()):
            name = f"chaos-{i:02d}.gguf"
            files[name] = GeneratedFile(size=size, seed=9000 + i)
        hub.add_repo(REPO, files)
        for name, spec in files.items():
            sha = hub.file_info(REPO, name).sha256
            downloads.append(Download(name=name, size=spec.size, sha256=sha))
        needed = sum(d.size for d in downloads)
        hub.bandwidth = int(self.args.cap_mb * 1_000_000)
        self.note(
            f"{len(downloads)} downloads, {needed / MiB:.0f} MiB, "
            f"{self.args.cap_mb} MB/s per connection"
        )
        for logical in ("w1", "w2"):
            self._start_worker(stack, logical)
        watcher = Watcher(stack.models, {d.name: d.size for d in downloads})
        watcher.start()
        cdn_before = cdn_bytes(hub)
        began = time.monotonic()
        for d in downloads:
            job = stack.submit(jobs.FileSpec(REPO, d.name))
            d.job_id, d.file_id = job["jobId"], job["files"][0]["fileId"]
        next_event = time.monotonic() + self._gap()
        deadline = began + self.args.timeout
        while True:
            now = time.monotonic()
            statuses = self._statuses(stack, downloads)
            for d in downloads:
                status = statuses[d.job_id]
                if status in JOB_TERMINAL and d.job_id not in self.ended:
                    self.ended.add(d.job_id)
                    self.note(f"{d.name} {status.value} ({len(self.ended)}/{len(downloads)})")
            self._track_recovery(stack)
            self._track_pauses(stack)
            self._resume_due(stack)
            for logical, when in list(self.restart_at.items()):
                if now >= when:
                    del self.restart_at[logical]
                    self._start_worker(stack, logical)
            if all(s in JOB_TERMINAL for s in statuses.values()) and not self.restart_at:
                break
            if now > deadline:
                self.note("timeout: giving up on the rest")
                break
            if now >= next_event and any(s not in JOB_TERMINAL for s in statuses.values()):
                self._event(stack, hub, downloads)
                next_event = time.monotonic() + self._gap()
            time.sleep(0.1)
        elapsed = time.monotonic() - began
        # Let recovery tracking finish for files that completed meanwhile.
        self._track_recovery(stack)
        self._track_pauses(stack)
        watcher.stop()
        return self._figures(stack, hub, downloads, watcher, needed, cdn_before, elapsed)

    def _gap(self) -> float:
        # Quick: the first round of every kind comes fast, the rest at the usual pace.
        first_round = sum(self.counts.values()) < len(KINDS)
        low, high = self.args.every if first_round else self.args.every_after
        return self.rng.uniform(low, high)

    # --- the faults -----------------------------------------------------------------------

    def _event(self, stack: Stack, hub: ImitationHub, downloads: list[Download]) -> None:
        # Each kind once first (in a random order), then at random.
        if not self.first_kinds and sum(self.counts.values()) == 0:
            self.first_kinds = self.rng.sample(list(KINDS), len(KINDS))
        if self.first_kinds:
            kind = self.first_kinds.pop()
        else:
            kind = self.rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        if kind == "kill" and not self._kill(stack):
            kind = "hub"
        if kind == "control" and not self._pause(stack, downloads):
            kind = "hub"
        if kind == "branch" and not self._move_branch(stack, hub, downloads):
            kind = "hub"
        if kind == "redis":
            self._restart_redis(stack)
        if kind == "trickle":
            self._trickle(hub)
        if kind == "hub":
            self._hub_fault(hub)
        self.counts[kind] += 1

    def _trickle(self, hub: ImitationHub) -> None:
        rate, times = self.rng.choice([300, 1000, 4000]), self.rng.randint(1, 3)
        after = self.rng.randrange(0, 2 * MiB)
        hub.faults.add(host="cdn", trickle_after=after, trickle_rate=rate, times=times)
        self.note(f"hub trickle at {rate} B/s after {after} bytes x{times}")

    def _move_branch(self, stack: Stack, hub: ImitationHub, downloads: list[Download]) -> bool:
        """Commit other bytes (same size) for a file whose job has not ended."""
        with stack.sessions() as s:
            open_ = [d for d in downloads if not jobs.get_job(s, d.job_id).status.is_terminal]
        if not open_:
            return False
        d = self.rng.choice(open_)
        self.moves += 1
        hub.put_file(REPO, d.name, GeneratedFile(size=d.size, seed=20000 + self.moves))
        self.note(f"branch main moved: {d.name} has other bytes at {hub.commit(REPO)[:8]}")
        return True

    def _pause(self, stack: Stack, downloads: list[Download]) -> bool:
        """Pause a download under way; it is resumed 1 to 3 s later."""
        with stack.sessions() as s:
            active = [
                (d, f)
                for d in downloads
                for f in jobs.get_job(s, d.job_id).files
                if f.status is FileStatus.DOWNLOADING and d.job_id not in self.resume_at
            ]
        if not active:
            return False
        d, f = self.rng.choice(active)
        holder_pid = int((f.worker or "::0:").split(":")[-2] or 0)
        if not any(p.pid == holder_pid and p.poll() is None for p in stack.workers.values()):
            return False  # its worker is dead: nothing runs that a pause could stop
        at = time.time()
        try:
            services.control_job(stack.sessions, stack.dispatcher, d.job_id, "pause")
        except IllegalTransitionError:
            return False
        self.pauses.append(Pause(file_id=f.id, job_id=d.job_id, at=at))
        self.resume_at[d.job_id] = time.monotonic() + self.rng.uniform(1, 3)
        self.note(f"pause {d.name}")
        return True

    def _resume_due(self, stack: Stack) -> None:
        now = time.monotonic()
        for job_id, when in list(self.resume_at.items()):
            if now < when:
                continue
            del self.resume_at[job_id]
            with contextlib.suppress(IllegalTransitionError):  # it completed meanwhile
                services.control_job(stack.sessions, stack.dispatcher, job_id, "resume")
                self.note(f"resume job {job_id[:8]}")

    def _track_pauses(self, stack: Stack) -> None:
        """When the worker said a paused transfer stopped: its own event (seq > 0), paused,
        or completed when the finish line won the race, before the file's next pause."""
        pending = [p for p in self.pauses if p.effect_s is None]
        if not pending:
            return
        events = list(stack.collector.events)
        for pause in pending:
            later = [p.at for p in self.pauses if p.file_id == pause.file_id and p.at > pause.at]
            until = min(later, default=math.inf)
            for event in events:
                data = event["data"]
                sent = data.get("sentAt", 0) / 1000
                if (
                    data.get("fileId") == pause.file_id
                    and data.get("seq")
                    and data.get("status") in ("paused", "completed")
                    and pause.at <= sent < until
                ):
                    pause.effect_s = sent - pause.at
                    break

    def _kill(self, stack: Stack) -> bool:
        """SIGKILL a live worker that holds a download; False if none does."""
        holders = self._holders(stack)
        candidates = [
            logical
            for logical, name in self.live.items()
            if logical not in self.restart_at and holders.get(stack.workers[name].pid)
        ]
        if not candidates:
            return False
        logical = self.rng.choice(candidates)
        proc = stack.workers[self.live[logical]]
        held = holders[proc.pid]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.kills.append(Kill(worker=logical, at=time.monotonic(), held=held))
        self.restart_at[logical] = time.monotonic() + self.rng.uniform(1, 3)
        self.note(f"kill {logical} (pid {proc.pid}) holding {len(held)} file(s)")
        return True

    def _restart_redis(self, stack: Stack) -> None:
        down = self.rng.uniform(1, 3)
        self.note(f"redis down for {down:.1f}s (queue and locks lost)")
        stack.redis.stop()
        time.sleep(down)
        stack.redis.start()

    def _hub_fault(self, hub: ImitationHub) -> None:
        kind = self.rng.choice(["drop", "5xx", "429", "stall"])
        times = self.rng.randint(1, 4)
        if kind == "drop":
            hub.faults.add(host="cdn", drop_after=self.rng.randrange(1, 4 * MiB), times=times)
        elif kind == "5xx":
            status = self.rng.choice([500, 502, 503])
            hub.faults.add(host=self.rng.choice(["hub", "cdn"]), status=status, times=times)
        elif kind == "429":
            hub.faults.add(host="cdn", status=429, retry_after=1, times=times)
        else:
            hub.faults.add(
                host="cdn",
                stall_after=self.rng.randrange(1, 2 * MiB),
                stall_seconds=self.rng.uniform(5, 40),
                stall_then=self.rng.choice(["continue", "close"]),
                times=times,
            )
        self.note(f"hub {kind} x{times}")

    def _start_worker(self, stack: Stack, logical: str) -> None:
        self.incarnation[logical] += 1
        name = f"{logical}-{self.incarnation[logical]}"
        stack.start_worker(name)
        self.live[logical] = name
        if self.incarnation[logical] > 1:
            self.note(f"restarted {logical} as {name}")

    # --- observation ----------------------------------------------------------------------

    def _statuses(self, stack: Stack, downloads: list[Download]) -> dict[str, JobStatus]:
        with stack.sessions() as s:
            return {d.job_id: jobs.get_job(s, d.job_id).status for d in downloads}

    def _holders(self, stack: Stack) -> dict[int, dict[str, str]]:
        """pid -> {file id: holder} of files being downloaded."""
        found: dict[int, dict[str, str]] = {}
        with stack.sessions() as s:
            rows = s.scalars(
                select(DownloadFile).where(DownloadFile.status == FileStatus.DOWNLOADING)
            )
            for row in rows:
                if row.worker:
                    pid = int(row.worker.split(":")[-2])
                    found.setdefault(pid, {})[row.id] = row.worker
        return found

    def _track_recovery(self, stack: Stack) -> None:
        pending = [k for k in self.kills if len(k.retaken_at) < len(k.held)]
        if not pending:
            return
        now = time.monotonic()
        with stack.sessions() as s:
            for kill in pending:
                for file_id, holder in kill.held.items():
                    if file_id in kill.retaken_at:
                        continue
                    row = jobs.get_file(s, file_id)
                    if row.worker != holder or row.status.is_terminal:
                        kill.recovered_at.setdefault(file_id, now)
                    if row.status.is_terminal or (
                        row.status is FileStatus.DOWNLOADING and row.worker != holder
                    ):
                        kill.retaken_at[file_id] = now

    # --- figures --------------------------------------------------------------------------

    def _figures(
        self,
        stack: Stack,
        hub: ImitationHub,
        downloads: list[Download],
        watcher: Watcher,
        needed: int,
        cdn_before: int,
        elapsed: float,
    ) -> dict[str, Any]:
        completed = corrupt = disagree = 0
        rows = []
        with stack.sessions() as s:
            for d in downloads:
                job = jobs.get_job(s, d.job_id)
                f = job.files[0]
                ok = job.status is JobStatus.COMPLETED
                # What the job pinned: the branch may have moved since it began.
                want = hub.file_info(REPO, d.name, revision=f.commit).sha256 if f.commit else None
                there = _sha256(stack.models / d.name)
                good = ok and there == want
                completed += ok
                corrupt += ok and not good
                disagree += (f.status is FileStatus.COMPLETED) != (there is not None and good)
                rows.append(
                    (
                        d.name,
                        f"{d.size / MiB:.1f}",
                        job.status.value,
                        f.attempts,
                        (f.commit or "")[:8],
                        "yes" if good else ("NO" if ok else "-"),
                        (f.error or "")[:60],
                    )
                )
        strays = watcher.strays()
        recover = [k.recover_s for k in self.kills if k.recover_s is not None]
        effects = [p.effect_s for p in self.pauses if p.effect_s is not None]
        return {
            "downloads": len(downloads),
            "completed": completed,
            "corrupt": corrupt,
            "visible_incomplete": len(watcher.seen_incomplete) + len(strays),
            "row_disk_disagree": disagree,
            "control_effect_s_max": round(max(effects), 2) if effects else None,
            "control_effect_s": [round(e, 2) for e in effects],
            "controls_unmeasured": len(self.pauses) - len(effects),
            "branch_moves": self.moves,
            "bytes_ratio": round((cdn_bytes(hub) - cdn_before) / needed, 3),
            "recover_s_max": round(max(recover), 1) if recover else None,
            "recover_s": [round(r, 1) for r in recover],
            "recover_s_p50": round(percentile(recover, 50), 1) if recover else None,
            "retaken_s": [round(k.retaken_s, 1) for k in self.kills if k.retaken_s is not None],
            "events": dict(self.counts),
            "mib_needed": round(needed / MiB, 1),
            "elapsed_s": round(elapsed, 1),
            "watcher_polls": watcher.polls,
            "seen_incomplete": watcher.seen_incomplete,
            "strays": strays,
            "settings": {
                "seed": self.args.seed,
                "cap_mb_per_connection": self.args.cap_mb,
                "connections": self.args.connections,
                "lease_s": self.args.lease,
                "trickle_window_s": self.args.trickle_window,
                "workers": 2,
                "worker_concurrency": 2,
                "database": "postgresql" if self.args.db_url else "sqlite",
            },
            "files": rows,
            "timeline": self.log,
        }


def math_exp_uniform(rng: random.Random, low: int, high: int) -> int:
    """An integer drawn log-uniformly from [low, high]: many small files, a few big ones."""
    return max(low, min(high, round(math.exp(rng.uniform(math.log(low), math.log(high))))))


def _sha256(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    """Run the chaos suite, print its table and write its results."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short version CI runs")
    parser.add_argument("--downloads", type=int, help="number of downloads (20; quick 6)")
    parser.add_argument("--max-mib", type=int, help="largest file in MiB (1024; quick 48)")
    parser.add_argument("--cap-mb", type=float, help="MB/s per CDN connection (2; quick 0.5)")
    parser.add_argument("--connections", type=int, default=8, help="per file (8)")
    parser.add_argument("--lease", type=int, help="DOWNLOAD_LEASE_SECONDS (10; quick 5)")
    parser.add_argument(
        "--trickle-window", type=int, default=5, help="DOWNLOAD_TRICKLE_SECONDS (5)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after (s)")
    parser.add_argument("--db-url", help="a PostgreSQL URL instead of SQLite (emptied first)")
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos.json")
    parser.add_argument("--verbose", action="store_true", help="print the timeline as it goes")
    args = parser.parse_args(argv)
    quick = args.quick
    args.downloads = args.downloads or (6 if quick else 20)
    args.max_mib = args.max_mib or (48 if quick else 1024)
    args.cap_mb = args.cap_mb or (0.5 if quick else 2)
    args.lease = args.lease or (5 if quick else 10)
    # Quick: every kind of fault comes once while the downloads still run.
    args.every = (1.0, 2.0) if quick else (3.0, 8.0)
    args.every_after = (4.0, 8.0) if quick else args.every
    if args.db_url:
        empty_store(args.db_url)
    with tempfile.TemporaryDirectory(prefix="modelpull-chaos-") as tmp:
        data = Chaos(args, Path(tmp)).run()
    command = "python -m bench.chaos" + (" --quick" if quick else "")
    if args.seed != 1:
        command += f" --seed {args.seed}"
    if args.db_url:
        command += " --db-url postgresql+psycopg://…/modelpull_bench"
    summary = table(
        ["downloads", "completed", "corrupt", "visible incomplete", "row/disk disagree",
         "bytes ratio", "recover s (max)", "control effect s (max)", "kills",
         "redis restarts", "hub faults", "trickles", "branch moves", "pauses", "elapsed s"],
        [[data["downloads"], data["completed"], data["corrupt"], data["visible_incomplete"],
          data["row_disk_disagree"], data["bytes_ratio"], data["recover_s_max"],
          data["control_effect_s_max"], data["events"]["kill"], data["events"]["redis"],
          data["events"]["hub"], data["events"]["trickle"], data["events"]["branch"],
          data["events"]["control"], data["elapsed_s"]]],
    )  # fmt: skip
    files = table(["file", "MiB", "job", "attempts", "commit", "sha256 ok", "error"], data["files"])
    settings = ", ".join(f"{k} {v}" for k, v in data["settings"].items())
    body = "\n\n".join(
        [
            summary,
            f"Settings: {settings}.",
            files,
            "Timeline:\n\n```\n" + "\n".join(data["timeline"]) + "\n```",
        ]
    )
    write_results(args.out, data, title="Chaos suite", command=command, body=body)
    bad = (
        data["corrupt"]
        or data["visible_incomplete"]
        or data["row_disk_disagree"]
        or data["completed"] < data["downloads"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    raise SystemExit(main())
