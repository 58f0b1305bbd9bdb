"""The downloaders the throughput bench compares, each as the argv of one child process, and
how one download is run and checked.

Every Python child times its own transfer (from its first request to the file being complete)
and prints one JSON line, {"elapsed_s": ...} plus, for the native engine, "tail_s" (seconds
from the last byte written to the download's return: hashing the rest, fsync, placing) and
"connections" (the most it used at once). Wall time, CPU and peak RSS of the whole child come
from os.wait4 in a small launcher process (see LAUNCHER), so interpreter start-up is counted
too, as a user would see it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT
from bench.nginx import FILE, REPO

ADAPTIVE_MAX = 32  # the adaptive engine's ceiling
HF_TRANSFER_SPEC = "hf_transfer>=0.1.8,<1"
BOTH = ("uncapped", "capped")

NATIVE = f"""
import json, sys, time
from pathlib import Path
from worker.engine.base import DownloadRequest
from worker.engine.native import NativeEngine
url, out, conns = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if conns == "auto":
    engine = NativeEngine(None, max_connections={ADAPTIVE_MAX})
else:
    engine = NativeEngine(int(conns))
req = DownloadRequest(repo="{REPO}", file_name="{FILE}", dest="{FILE}", models_dir=out,
                      endpoint=url)
started = time.perf_counter()
result = engine.download(req)
print(json.dumps({{
    "elapsed_s": time.perf_counter() - started,
    "tail_s": getattr(result, "tail_s", None),
    "connections": getattr(result, "connections", None),
}}))
"""

# huggingface_hub 0.x called hf_transfer with these retry settings and 10 MiB chunks; the URL
# is resolved here, with one HEAD, as a client of the Hub must.
HF_TRANSFER = f"""
import json, sys, time
from urllib.parse import urljoin
import hf_transfer, requests
hub, out, conns = sys.argv[1], sys.argv[2], int(sys.argv[3])
started = time.perf_counter()
url = hub + "/{REPO}/resolve/main/{FILE}"
resp = requests.head(url, allow_redirects=False, timeout=(10, 30))
if resp.is_redirect:
    url = urljoin(url, resp.headers["Location"])
elif resp.status_code != 200:
    sys.exit(f"resolve answered {{resp.status_code}}")
hf_transfer.download(url=url, filename=out + "/{FILE}", max_files=conns,
                     chunk_size=10 * 1024 * 1024, parallel_failures=3, max_retries=5)
print(json.dumps({{"elapsed_s": time.perf_counter() - started}}))
"""

HF_HUB = f"""
import json, sys, time
from huggingface_hub import hf_hub_download
started = time.perf_counter()
hf_hub_download("{REPO}", "{FILE}", local_dir=sys.argv[2], endpoint=sys.argv[1])
print(json.dumps({{"elapsed_s": time.perf_counter() - started}}))
"""

# The plainest fast downloader Python allows: N threads, each with one keep-alive connection,
# taking 64 MiB ranges in turn and writing them with pwrite into a preallocated file. No hash,
# no fsync, no retries: a floor for what the engine's extra work costs.
THREADS = f"""
import http.client, json, os, sys, threading, time
from urllib.parse import urljoin, urlsplit
hub, out, conns = sys.argv[1], sys.argv[2], int(sys.argv[3])
PIECE, BUF = 64 << 20, 1 << 20
def connect(url):
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
started = time.perf_counter()
url = hub + "/{REPO}/resolve/main/{FILE}"
conn = connect(url)
conn.request("HEAD", urlsplit(url).path)
resp = conn.getresponse()
resp.read()
size = int(resp.headers.get("X-Linked-Size") or resp.headers["Content-Length"])
if resp.status in (301, 302, 303, 307, 308):
    url = urljoin(url, resp.headers["Location"])
fd = os.open(os.path.join(out, "{FILE}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
try:
    os.posix_fallocate(fd, 0, size)
except OSError:
    os.ftruncate(fd, size)
starts = iter(range(0, size, PIECE))
lock = threading.Lock()
errors = []
def work():
    try:
        conn = connect(url)
        parts = urlsplit(url)
        path = parts.path + ("?" + parts.query if parts.query else "")
        view = memoryview(bytearray(BUF))
        while True:
            with lock:
                start = next(starts, None)
            if start is None:
                return
            end = min(start + PIECE, size)
            conn.request("GET", path, headers={{"Range": f"bytes={{start}}-{{end - 1}}"}})
            resp = conn.getresponse()
            if resp.status != 206:
                raise RuntimeError(f"range answered {{resp.status}}")
            pos = start
            while pos < end:
                n = resp.readinto(view[: min(BUF, end - pos)])
                if not n:
                    raise RuntimeError("connection closed early")
                done = 0
                while done < n:
                    done += os.pwrite(fd, view[done:n], pos + done)
                pos += n
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=work) for _ in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
os.close(fd)
if errors:
    sys.exit("; ".join(errors))
print(json.dumps({{"elapsed_s": time.perf_counter() - started}}))
"""


@dataclass(frozen=True)
class Tool:
    """One downloader with one setting; `name` is what --tools selects."""

    name: str
    family: str  # the JSON rows' "tool"
    connections: int | None  # None: the engine chooses (adaptive)
    modes: tuple[str, ...] = BOTH
    note: str = ""

    def argv(self, hub: str, out: Path, sha256: str) -> list[str]:
        """The command that downloads the file from `hub` into `out/FILE`."""
        conns = "auto" if self.connections is None else str(self.connections)
        resolve = f"{hub}/{REPO}/resolve/main/{FILE}"
        script = {"native": NATIVE, "hf_transfer": HF_TRANSFER, "hf_hub": HF_HUB}
        script["threads"] = THREADS
        if self.family in script:
            return [sys.executable, "-c", script[self.family], hub, str(out), conns]
        if self.family == "curl":
            timing = '{"elapsed_s": %{time_total}}\\n'
            return ["curl", "-sfL", "-o", str(out / FILE), "-w", timing, resolve]
        if self.family.startswith("aria2c"):
            check = [f"--checksum=sha-256={sha256}"] if self.family.endswith("sha256") else []
            return [
                "aria2c", "-q", "--no-conf", f"-x{conns}", f"-s{conns}", "-k1M",
                "--file-allocation=falloc", "--allow-overwrite=true",
                "--auto-file-renaming=false", *check, "-d", str(out), "-o", FILE, resolve,
            ]  # fmt: skip
        raise ValueError(self.family)


TOOLS = (
    Tool("native-8", "native", 8, note="sha256 while downloading, fsync"),
    Tool("native-16", "native", 16, note="sha256 while downloading, fsync"),
    Tool("native-auto", "native", None, note=f"adaptive, at most {ADAPTIVE_MAX} connections"),
    Tool("hf_transfer-16", "hf_transfer", 16, note="no hash, no fsync"),
    Tool("hf_transfer-100", "hf_transfer", 100, note="as huggingface_hub 0.x; no hash, no fsync"),
    Tool("aria2c", "aria2c", 16, note="-k1M, --file-allocation=falloc, no hash, no fsync"),
    Tool("aria2c+sha256", "aria2c+sha256", 16, note="as aria2c, then reads the file to hash it"),
    Tool("curl", "curl", 1, ("uncapped",), note="one stream, no hash"),
    Tool("hf_hub", "hf_hub", 1, ("uncapped",), note="huggingface_hub.hf_hub_download"),
    Tool("threads", "threads", 8, note="8 threads x 64 MiB ranges, pwrite; no hash, no fsync"),
)
QUICK = ("native-8", "curl", "threads")


@dataclass(frozen=True)
class Sample:
    """One download: what os.wait4 said, what the child reported, the server's CPU."""

    wall_s: float
    cpu_s: float
    rss_mb: float
    server_cpu_s: float
    elapsed_s: float | None  # the child's own timing of its transfer
    tail_s: float | None
    connections: int | None


class ToolFailed(RuntimeError):
    """A download exited non-zero or wrote the wrong bytes."""


# Children are started by this small process, not by the bench: Linux counts the memory of
# whoever forks into the child's peak RSS (the copied address space, or with vfork the
# parent's own high-water mark), and the bench, or pytest around it, is far bigger than this.
LAUNCHER = r"""
import json, os, sys, time
for line in sys.stdin:
    job = json.loads(line)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    out, err = os.open(job["stdout"], flags, 0o644), os.open(job["stderr"], flags, 0o644)
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # not the launcher's job pipe
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.chdir(job["cwd"])
            os.execvpe(job["argv"][0], job["argv"], job["env"])
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    os.close(out)
    os.close(err)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status), "wall_s": wall,
                      "cpu_s": usage.ru_utime + usage.ru_stime,
                      "rss_mb": usage.ru_maxrss / 1024}), flush=True)
"""


@dataclass(frozen=True)
class Spawned:
    """How one child went: exit code, wall seconds, CPU seconds (user + system), peak RSS."""

    code: int
    wall_s: float
    cpu_s: float
    rss_mb: float


class Launcher:
    """A small Python process that starts each child, waits for it with os.wait4 and reports
    its figures; see LAUNCHER."""

    def __init__(self) -> None:
        argv = [sys.executable, "-I", "-S", "-c", LAUNCHER]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str], env: dict[str, str], logs: Path) -> Spawned:
        """Run `argv` from the project root, stdout and stderr into files in `logs`."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        job = {"argv": argv, "env": env, "cwd": str(ROOT)}
        job |= {"stdout": str(logs / "stdout"), "stderr": str(logs / "stderr")}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the launcher died")
        return Spawned(**json.loads(line))

    def close(self) -> None:
        """Let the launcher finish."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)


def run_once(launcher: Launcher, tool: Tool, hub: str, server_cpu: Callable[[], float],
             work: Path, sha: str, size: int, env: dict[str, str]) -> Sample:  # fmt: skip
    """Download once with `tool`, check the file, delete it; the sample."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    before = server_cpu()
    ran = launcher.run(tool.argv(hub, out, sha), env, work)
    served = server_cpu() - before
    stderr = (work / "stderr").read_text(errors="replace").strip()
    if ran.code != 0:
        raise ToolFailed(f"exited with {ran.code}: {stderr[-600:]}")
    target = out / FILE
    got = target.stat().st_size if target.exists() else 0
    if got != size:
        raise ToolFailed(f"wrote {got} bytes, expected {size}")
    with target.open("rb") as f:
        if hashlib.file_digest(f, "sha256").hexdigest() != sha:
            raise ToolFailed("wrote the right size but the wrong bytes")
    lines = (work / "stdout").read_text().strip().splitlines()
    said: dict[str, Any] = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    # Dirty pages a tool left unwritten would otherwise be flushed during the next tool's
    # run; deleting first drops most of them, sync flushes the rest (metadata, journal).
    shutil.rmtree(out)
    os.sync()
    return Sample(
        wall_s=ran.wall_s,
        cpu_s=ran.cpu_s,
        rss_mb=ran.rss_mb,
        server_cpu_s=served,
        elapsed_s=said.get("elapsed_s"),
        tail_s=said.get("tail_s"),
        connections=said.get("connections"),
    )


def ensure_aria2c() -> bool:
    """aria2c from Debian's packages, installed if missing and we may."""
    if shutil.which("aria2c"):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "aria2"], check=False)
    return shutil.which("aria2c") is not None


def ensure_hf_transfer() -> bool:
    """hf_transfer in this interpreter's environment, installed with pip if missing."""
    if importlib.util.find_spec("hf_transfer") is not None:
        return True
    pip = [sys.executable, "-m", "pip", "install", "-q", HF_TRANSFER_SPEC]
    subprocess.run(pip, check=False)
    importlib.invalidate_caches()
    return importlib.util.find_spec("hf_transfer") is not None


def available(names: list[str]) -> tuple[list[Tool], list[str]]:
    """The tools named, in the order of TOOLS, that can run here; and why others cannot."""
    unknown = sorted(set(names) - {t.name for t in TOOLS})
    if unknown:
        raise SystemExit(f"unknown tools: {', '.join(unknown)} (known: {tool_names()})")
    chosen = [t for t in TOOLS if t.name in names]
    families = {t.family for t in chosen}
    missing: dict[str, str] = {}
    if families & {"aria2c", "aria2c+sha256"} and not ensure_aria2c():
        missing |= {"aria2c": "aria2c is not installed", "aria2c+sha256": "no aria2c"}
    if "hf_transfer" in families and not ensure_hf_transfer():
        missing["hf_transfer"] = f"pip could not install {HF_TRANSFER_SPEC}"
    if "curl" in families and not shutil.which("curl"):
        missing["curl"] = "curl is not installed"
    if "hf_hub" in families and importlib.util.find_spec("huggingface_hub") is None:
        missing["hf_hub"] = "huggingface_hub is not installed"
    left_out = [f"{t.name}: {missing[t.family]}" for t in chosen if t.family in missing]
    return [t for t in chosen if t.family not in missing], left_out


def tool_names() -> str:
    """Every tool --tools knows, comma-separated."""
    return ",".join(t.name for t in TOOLS)
