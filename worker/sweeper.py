"""Finds files that would otherwise wait forever and sends them again.

- A file whose worker stopped heartbeating (killed with its machine, frozen) has a lease
  that expires: it is queued again and resumes from its partial, or failed for good once
  it has used up its attempts. Sooner when its worker is known to be gone: every worker
  process keeps a short-lived key in Redis (`modelpull:alive:<host>:<pid>`, renewed every
  second); a file whose heartbeat stopped DEAD_GRACE_S ago and whose process has no key
  is not waited for until the lease lapses. Heartbeats are stamped and judged with the job
  store's clock, so a machine whose clock is off neither loses its files nor steals others'.
- A queued file whose message never reached the broker (Redis down when the job was
  created, or the web process died before sending) is sent.
- A queued file whose message was lost inside the broker (a Redis restart without
  persistence) is sent again: at once when the broker visibly lost its data (a marker key
  the sweeper keeps there is gone), else once the queue has drained and it still waits.
- What a dead worker left on disk is deleted once nothing wrote it for two leases and the
  sweeper holds its destination's lease (a live transfer holds it): partials no unfinished
  file wants, sidecars and temporary files without their partial, and hf_hub staging
  folders (whose marker names their destination).
One worker sweeps per interval (a Redis lock); duplicates are harmless anyway, since only
one claim of a row can win.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from app import events, jobs, storage
from app.db import db_now
from app.dispatch import QUEUE, redis_client
from app.models import FileStatus, utcnow
from worker.downloadlog import fields
from worker.engine.hf_hub import STAGING_MARKER, staging_dir, staging_root
from worker.lease import DestLease, remove_partial_under_lease
from worker.runtime import Runtime

LOCK_KEY = "modelpull:sweeper"
# Kept in the broker without expiry: when it is missing, the broker restarted empty or was
# flushed, and every message it held is gone.
MARKER_KEY = "modelpull:broker-marker"
MAX_RESEND = 5000
ALIVE_PREFIX = "modelpull:alive:"
ALIVE_TTL_S = 5
ALIVE_EVERY_S = 1.0
# A transfer heartbeats its row every second; this long without one, and no live process
# behind it, means its worker died (a kill, an OOM, a crash).
DEAD_GRACE_S = 5
# An hf_hub staging folder without the marker naming its destination (an older version left
# it) is removed after this long without a write: huggingface_hub times out long before.
UNMARKED_QUIET_S = 3600
log = logging.getLogger(__name__)


def alive_key(process: str) -> str:
    """The Redis key that says a worker process (`host:pid`) is alive."""
    return ALIVE_PREFIX + process


def keep_alive(rt: Runtime, stop: threading.Event) -> None:
    """Renew this process's alive key every second until `stop` is set, then drop it."""
    key = alive_key(rt.name)
    while True:
        with contextlib.suppress(Exception):  # Redis away: the DB lease still protects
            rt.redis.set(key, "1", ex=ALIVE_TTL_S)
        if stop.wait(ALIVE_EVERY_S):
            break
    with contextlib.suppress(Exception):
        rt.redis.delete(key)


class Sweeper:
    """The periodic sweep of one worker process."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.broker = redis_client(rt.settings.celery_broker_url)

    def run(self, stop: threading.Event) -> None:
        """Sweep every interval until `stop` is set."""
        interval = self.rt.settings.sweep_interval_seconds
        while not stop.wait(interval):
            try:
                if self.rt.redis.set(LOCK_KEY, self.rt.name, nx=True, ex=max(1, interval - 1) or 1):
                    self.sweep()
            except Exception as exc:  # Redis or the DB away: try next time
                log.warning("sweep skipped: %s", type(exc).__name__)

    def sweep(self) -> dict[str, list[str]]:
        """One pass; returns the file ids it acted on, and the work it cleaned up."""
        s = self.rt.settings
        stale = self._requeue_lost()
        with self.rt.sessions() as session:
            unpublished = jobs.unpublished_files(session)
        # Messages, not leases: published_at is stamped with the sender's own clock.
        now = utcnow()
        lost: list[str] = []
        if self._broker_emptied():
            with self.rt.sessions() as session:
                lost = jobs.queued_published_before(session, now, limit=MAX_RESEND)
            if lost:
                self.rt.log.warning("broker lost its messages %s", fields(resending=len(lost)))
        elif self._queue_empty():
            with self.rt.sessions() as session:
                older = now - timedelta(seconds=max(30, 3 * s.sweep_interval_seconds))
                lost = jobs.queued_published_before(session, older)
        resend = list(dict.fromkeys([*stale.requeued, *unpublished, *lost]))
        if resend:
            self.rt.dispatcher.enqueue(self.rt.sessions, resend)
        if stale.requeued or stale.failed:
            self._announce([*stale.requeued, *stale.failed])
        quiet_since = time.time() - 2 * s.download_lease_seconds
        return {
            "requeued": stale.requeued,
            "failed": stale.failed,
            "sent": resend,
            "cleaned": self._clean_orphans(quiet_since),
            "strays": self._clean_strays(quiet_since),
            "staging": self._clean_staging(quiet_since),
        }

    def _requeue_lost(self) -> jobs.StaleResult:
        """Hand back the files whose lease expired, and sooner those whose worker process is
        gone; both judged by the job store's clock, the one heartbeats are stamped with."""
        s = self.rt.settings
        # One transaction per pass: each locks its files before their jobs (app.jobs.states),
        # and a second pass in the same transaction would lock files after jobs.
        with self.rt.sessions.begin() as session:
            now = db_now(session)
            stale = jobs.requeue_stale(
                session,
                stale_before=now - timedelta(seconds=s.download_lease_seconds),
                max_attempts=s.download_max_attempts,
                now=now,
            )
        orphaned = self._orphaned()
        if orphaned:
            with self.rt.sessions.begin() as session:
                now = db_now(session)
                early = jobs.requeue_stale(
                    session,
                    stale_before=now - timedelta(seconds=DEAD_GRACE_S),
                    max_attempts=s.download_max_attempts,
                    now=now,
                    file_ids=orphaned,
                )
            stale.requeued.extend(early.requeued)
            stale.failed.extend(early.failed)
        return stale

    def _clean_orphans(self, quiet_since: float) -> list[str]:
        """Delete partials that no unfinished file wants (a job deleted after a cancel, a
        file cancelled while its worker was dead), under the destination's lease."""
        s = self.rt.settings
        work = storage.work_dir(s.models_dir)
        if not work.is_dir():
            return []
        cleaned: list[str] = []
        for part in work.rglob(f"*{storage.PARTIAL_SUFFIX}"):
            dest = str(part.relative_to(work))[: -len(storage.PARTIAL_SUFFIX)]
            try:
                if part.stat().st_mtime > quiet_since:
                    continue  # written recently: someone may be working on it
                with self.rt.sessions() as session:
                    if jobs.dest_wanted_elsewhere(session, dest, besides=""):
                        continue
                if not remove_partial_under_lease(
                    self.rt.redis, s.models_dir, dest, ttl_seconds=s.download_lease_seconds
                ):
                    continue
            except (OSError, ValueError):
                continue
            cleaned.append(dest)
            self.rt.log.info("cleaned %s", fields(dest=dest, reason="no job wants this partial"))
        return cleaned

    def _clean_strays(self, quiet_since: float) -> list[str]:
        """Delete work files left without their partial (a sidecar, a temporary file) by a
        worker that died, quiet as long as an orphan partial and under the same lease."""
        work = storage.work_dir(self.rt.settings.models_dir)
        if not work.is_dir():
            return []
        cleaned: list[str] = []
        for path in work.rglob("*"):
            rel = str(path.relative_to(work))
            dest = _stray_dest(rel)
            try:
                if dest is None or not path.is_file() or path.stat().st_mtime > quiet_since:
                    continue
                if dest and storage.partial_path(self.rt.settings.models_dir, dest).exists():
                    continue  # beside its partial: that partial's own cleanup decides
                if not self._under_lease(dest, path.unlink):
                    continue
            except (OSError, ValueError):
                continue
            cleaned.append(rel)
            self.rt.log.info("cleaned %s", fields(path=rel, reason="work file without partial"))
        return cleaned

    def _clean_staging(self, quiet_since: float) -> list[str]:
        """Delete hf_hub staging folders a dead worker left behind, under their destination's
        lease (a live transfer holds it). huggingface_hub cannot resume from one, so nothing
        in them is worth keeping once their writer is gone."""
        models = self.rt.settings.models_dir
        root = staging_root(models)
        if not root.is_dir():
            return []
        # A folder without a marker (left by an older version) cannot be tied to a lease:
        # only a long silence says its writer is gone.
        unmarked_since = min(quiet_since, time.time() - UNMARKED_QUIET_S)
        cleaned: list[str] = []
        for folder in root.iterdir():
            try:
                if not folder.is_dir():
                    continue
                newest = _newest_mtime(folder)
                if newest > quiet_since:
                    continue  # written recently: a transfer may be running in it
                dest = _staging_dest(models, folder)
                if dest is None and newest > unmarked_since:
                    continue
                remove = functools.partial(shutil.rmtree, folder)
                if not self._under_lease(dest, remove):
                    continue
            except (OSError, ValueError):
                continue
            cleaned.append(folder.name)
            self.rt.log.info(
                "cleaned %s", fields(dest=dest, folder=folder.name, reason="staging left behind")
            )
        return cleaned

    def _under_lease(self, dest: str | None, remove: Callable[[], object]) -> bool:
        """Run `remove` holding `dest`'s lease (none when `dest` is unknown or empty); False,
        with nothing removed, when a live transfer holds it."""
        if not dest:
            remove()
            return True
        lease = DestLease(self.rt.redis, dest, ttl_seconds=self.rt.settings.download_lease_seconds)
        if not lease.try_acquire():
            return False
        try:
            remove()
        finally:
            lease.release()
        return True

    def _orphaned(self) -> list[str]:
        """Files whose heartbeat stopped a while ago and whose worker process is gone."""
        with self.rt.sessions() as session:
            quiet_before = db_now(session) - timedelta(seconds=DEAD_GRACE_S)
            quiet = jobs.quiet_holders(session, quiet_before=quiet_before)
        if not quiet:
            return []
        processes = sorted({holder.rsplit(":", 1)[0] for _, holder in quiet})
        try:
            with self.rt.redis.pipeline(transaction=False) as pipe:
                for process in processes:
                    pipe.exists(alive_key(process))
                alive = dict(zip(processes, pipe.execute(), strict=True))
        except Exception:
            return []  # cannot tell: the lease decides
        return [file_id for file_id, holder in quiet if not alive[holder.rsplit(":", 1)[0]]]

    def _broker_emptied(self) -> bool:
        """True when the broker lost its data since the last sweep (or is new)."""
        try:
            return bool(self.broker.set(MARKER_KEY, self.rt.name, nx=True))
        except Exception:
            return False

    def _queue_empty(self) -> bool:
        try:
            return int(self.broker.llen(QUEUE)) == 0
        except Exception:
            return False

    def _announce(self, file_ids: list[str]) -> None:
        with self.rt.sessions() as session:
            batch = []
            for file_id in file_ids:
                row = jobs.get_file(session, file_id)
                job = jobs.get_job(session, row.job_id)
                what = "requeued" if row.status is FileStatus.QUEUED else "failed"
                self.rt.log.warning(
                    "lease expired, %s %s",
                    what,
                    fields(
                        job=job.id,
                        file=row.id,
                        repo=row.repo,
                        name=row.file_name,
                        engine=self.rt.engine.name,
                        attempts=row.attempts,
                        error=row.error,
                    ),
                )
                batch.append(events.row_event(job, row))
                if job.status.is_terminal:
                    batch.append(events.job_event(job))
        self.rt.dispatcher.publish(batch)


def _stray_dest(rel: str) -> str | None:
    """For a work file that may be a stray (a sidecar, a temporary file), the destination it
    belongs to ("" when it cannot be told); None for anything else (a partial)."""
    tmp = rel.endswith(".tmp")
    base = rel[: -len(".tmp")] if tmp else rel
    for suffix in (storage.SIDECAR_SUFFIX, storage.PARTIAL_SUFFIX):
        if base.endswith(suffix) and (tmp or suffix == storage.SIDECAR_SUFFIX):
            return base[: -len(suffix)]
    return "" if tmp else None


def _newest_mtime(folder: Path) -> float:
    """The last time anything in `folder` (or the folder itself) was written."""
    newest = folder.lstat().st_mtime
    for parent, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
    return newest


def _staging_dest(models_dir: Path, folder: Path) -> str | None:
    """The destination a staging folder's marker names, if it is readable and belongs there."""
    try:
        dest = (folder / STAGING_MARKER).read_text(encoding="utf-8")
        storage.check_relative_path(dest)
    except (OSError, ValueError):
        return None
    return dest if staging_dir(models_dir, dest) == folder else None
