"""nginx as the throughput bench's Hub and CDN, so the server under test is a real static file
server written in C, not Python.

One nginx (a master and one worker, in the foreground, everything it writes inside the bench's
temporary folder) listens on four loopback ports: for each mode a "hub" that answers the
resolve URL with the Hub's 302 and metadata headers, and the "cdn" it points at, which serves
the file with sendfile, ranges and nginx's own strong ETag. The capped mode's CDN limits every
connection to the cap, as a link or a CDN limits each connection.

nginx's own `limit_rate` cannot be that cap: it limits each request, and lets every request
send one second's worth of bytes before it starts to count, so a client that asks for pieces
of less than the cap (huggingface_hub's hf_transfer asks for 10 MiB) is never limited at all.
Instead the kernel paces the connections: the capped CDN's listening socket is made here with
SO_MAX_PACING_RATE, every connection accepted on it inherits that rate, and TCP paces its
sending to it whatever the requests on it are. nginx takes the socket over through its
documented NGINX environment variable (the one its binary upgrade uses). `preflight` checks
that a short request on the capped port really is held to the cap.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

REPO = "bench/weights"
FILE = "model.gguf"
MODES = ("uncapped", "capped")
GEN_CHUNK = 8 << 20  # small on purpose: the bench's own RSS leaks into its children's peaks
NGINX_PATHS = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)  # Linux; bytes per second


@dataclass(frozen=True)
class Weights:
    """The file every tool downloads: where it is, how big, what its sha256 is, and the commit
    the hub reports it under."""

    path: Path
    size: int
    sha256: str
    commit: str


def write_weights(folder: Path, size: int, seed: int = 7) -> Weights:
    """Write `size` random bytes from a fixed seed into `folder`, named by their sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    digest = hashlib.sha256()
    part = folder / "weights.part"
    with part.open("wb") as f:
        left = size
        while left:
            block = rng.randbytes(min(GEN_CHUNK, left))
            digest.update(block)
            f.write(block)
            left -= len(block)
    sha = digest.hexdigest()
    path = folder / sha
    part.rename(path)
    # A commit id of the right shape, derived from the content so that a new size gets a new
    # commit (huggingface_hub keys its caches by commit).
    commit = hashlib.sha1(sha.encode(), usedforsecurity=False).hexdigest()
    return Weights(path=path, size=size, sha256=sha, commit=commit)


def find_nginx() -> str | None:
    """The nginx binary, or None."""
    found = shutil.which("nginx")
    if found:
        return found
    return next((p for p in NGINX_PATHS if os.access(p, os.X_OK)), None)


def _apt_get(*args: str) -> bool:
    """Run apt-get quietly; whether it succeeded."""
    done = subprocess.run(["apt-get", *args], stdout=subprocess.DEVNULL, check=False)
    return done.returncode == 0


def ensure_nginx() -> str | None:
    """nginx from Debian's packages (nginx-light), installed if missing and we may."""
    if find_nginx() is None and os.geteuid() == 0 and shutil.which("apt-get"):
        install = ("install", "-y", "-qq", "nginx-light")
        # A fresh machine may have no package lists yet.
        if not _apt_get(*install) and _apt_get("update", "-qq"):
            _apt_get(*install)
    return find_nginx()


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1 (all held open until all are picked)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def localhost_addresses() -> list[str]:
    """What `localhost` resolves to here, in the order a client would try them."""
    infos = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _hub_server(port: int, cdn_port: int, w: Weights) -> str:
    """A server block that answers like the Hub for the one file: a 302 to the CDN with the
    metadata headers, and the model info JSON."""
    info = json.dumps({"id": REPO, "sha": w.commit, "siblings": [{"rfilename": FILE}]})
    return f"""
    server {{
        listen 127.0.0.1:{port};
        location = /{REPO}/resolve/main/{FILE} {{
            add_header X-Repo-Commit {w.commit} always;
            add_header X-Linked-Etag '"{w.sha256}"' always;
            add_header X-Linked-Size {w.size} always;
            add_header ETag '"{w.sha256}"' always;
            return 302 http://localhost:{cdn_port}/cdn/{w.sha256};
        }}
        location = /api/models/{REPO}/revision/main {{
            default_type application/json;
            return 200 '{info}';
        }}
        location / {{
            add_header X-Error-Code EntryNotFound always;
            return 404;
        }}
    }}"""


def _cdn_server(port: int, folder: Path, listen_v6: bool) -> str:
    """A server block that serves the file statically."""
    v6 = f"listen [::1]:{port};" if listen_v6 else ""
    return f"""
    server {{
        listen 127.0.0.1:{port};
        {v6}
        server_name localhost;
        location /cdn/ {{
            alias {folder}/;
        }}
    }}"""


def config(work: Path, w: Weights, ports: dict[str, tuple[int, int]]) -> str:
    """nginx.conf: every path inside `work`; `ports` maps a mode to its (hub, cdn) ports."""
    temp = work / "nginx-temp"
    temp.mkdir(exist_ok=True)
    # As root, nginx's workers would otherwise drop to `nobody`, who cannot read the
    # bench's private temporary folder.
    user = "user root;" if os.geteuid() == 0 else ""
    # Should localhost resolve to ::1 first, the CDN must answer there too.
    v6 = "::1" in localhost_addresses()
    servers = "".join(
        _hub_server(hub, cdn, w) + _cdn_server(cdn, w.path.parent, v6)
        for hub, cdn in ports.values()
    )
    temps = "\n".join(
        f"    {kind}_temp_path {temp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}
pid {work / "nginx.pid"};
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temps}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    etag on;
    keepalive_requests 1000000;
{servers}
}}
"""


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (state first), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def process_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the live processes `pids` have used so far."""
    total = 0
    for pid in pids:
        fields = _proc_stat(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Nginx:
    """A foreground nginx serving one file as hub and CDN, in both modes."""

    def __init__(self, binary: str, work: Path, weights: Weights, cap: int) -> None:
        self.binary = binary
        self.work = work
        self.weights = weights
        self.cap = cap
        hub_u, cdn_u, hub_c, cdn_c = free_ports(4)
        self.ports = {"uncapped": (hub_u, cdn_u), "capped": (hub_c, cdn_c)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work / "nginx.log"

    @property
    def version(self) -> str:
        """`nginx/1.22.1`, as the binary reports it."""
        out = subprocess.run([self.binary, "-v"], capture_output=True, text=True, check=False)
        return (out.stderr or out.stdout).strip().rsplit(" ", 1)[-1]

    def hub_url(self, mode: str) -> str:
        """The endpoint (HF_ENDPOINT) of `mode`'s hub."""
        return f"http://127.0.0.1:{self.ports[mode][0]}"

    def enter(self, mode: str) -> None:
        """Nothing to do: each mode has its own ports."""

    def start(self) -> None:
        """Start nginx and wait until every port answers."""
        conf = self.work / "nginx.conf"
        conf.write_text(config(self.work, self.weights, self.ports))
        directives = "daemon off; master_process on; worker_processes 1; error_log stderr;"
        argv = [self.binary, "-p", str(self.work), "-e", "stderr", "-c", str(conf)]
        paced = self._paced_listeners(self.ports["capped"][1])
        fds = [s.fileno() for s in paced]
        env = dict(os.environ, NGINX="".join(f"{fd};" for fd in fds))
        try:
            with self.log.open("wb") as log:
                self.proc = subprocess.Popen(
                    [*argv, "-g", directives], stdout=log, stderr=log, env=env, pass_fds=fds
                )
        finally:
            for sock in paced:
                sock.close()  # nginx holds its own copies
        deadline = time.monotonic() + 15
        for port in (p for pair in self.ports.values() for p in pair):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nginx exited: {self.log.read_text()[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"nginx did not listen on {port}") from None
                    time.sleep(0.05)

    def _paced_listeners(self, port: int) -> list[socket.socket]:
        """Listening sockets for the capped CDN whose accepted connections the kernel paces
        to the cap (SO_MAX_PACING_RATE is inherited by every accepted socket)."""
        addresses = [("127.0.0.1", socket.AF_INET)]
        if "::1" in localhost_addresses():
            addresses.append(("::1", socket.AF_INET6))
        socks = []
        for host, family in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, self.cap)
            sock.bind((host, port))
            sock.listen(511)
            sock.set_inheritable(True)
            socks.append(sock)
        return socks

    def pids(self) -> list[int]:
        """nginx's master and its workers."""
        if self.proc is None:
            return []
        master = self.proc.pid
        kids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                fields = _proc_stat(int(entry.name))
                if fields and fields[1] == str(master):
                    kids.append(int(entry.name))
        return [master, *kids]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds nginx (master and workers) has used so far."""
        return process_cpu_seconds(self.pids())

    def stop(self) -> None:
        """Stop nginx (fast shutdown), killing it if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _request(url: str, method: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    """One request on a fresh connection; the response, body read."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request(method, target, headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def check_cap(url: str, cap: int, size: int) -> float:
    """Fetch a short range (a quarter of a second's worth at the cap, well under nginx's
    per-request allowance) from the capped CDN and return its rate in bytes/s; raises if it
    ran faster than the cap allows, i.e. the connection is not really capped."""
    n = min(size, max(1, cap // 4))
    started = time.perf_counter()
    part = _request(url, "GET", {"Range": f"bytes=0-{n - 1}"})
    rate = n / (time.perf_counter() - started)
    if part.status != 206 or rate > cap * 1.3:
        raise RuntimeError(
            f"the capped CDN sent {n} bytes at {rate / 1e6:.0f} MB/s, over the cap of "
            f"{cap / 1e6:.0f} MB/s: this kernel does not pace connections"
        )
    return rate


def preflight(hub: str) -> dict[str, str]:
    """Check that `hub` speaks what the tools rely on: the resolve HEAD's 302 (or 200) with
    commit, etag and size, then a one-byte range from the file's URL answered 206 with a strong
    ETag. What it learnt: the size, sha256, download URL and that URL's ETag."""
    resolve = f"{hub}/{REPO}/resolve/main/{FILE}"
    head = _request(resolve, "HEAD", {"Accept-Encoding": "identity"})
    h = head.headers
    sha = (h.get("X-Linked-Etag") or h.get("ETag") or "").strip('"')
    size = h.get("X-Linked-Size") or h.get("Content-Length") or ""
    if head.status not in (200, 302) or not (h.get("X-Repo-Commit") and sha and size):
        raise RuntimeError(f"the hub's HEAD answered {head.status} without the Hub's headers")
    url = urljoin(resolve, h["Location"]) if head.status == 302 else resolve
    part = _request(url, "GET", {"Range": "bytes=0-0"})
    etag = part.headers.get("ETag", "")
    if part.status != 206 or part.headers.get("Content-Range") != f"bytes 0-0/{size}":
        raise RuntimeError(f"{url} answered {part.status} to a range request")
    if not etag or etag.startswith("W/"):
        raise RuntimeError(f"{url} sent no strong ETag ({etag!r})")
    return {"size": size, "sha256": sha, "url": url, "etag": etag}
