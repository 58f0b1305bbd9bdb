"""Finds files that would otherwise wait forever and sends them again.

- A file whose worker stopped heartbeating (killed with its machine, frozen) has a lease
  that expires: it is queued again and resumes from its partial, or failed for good once
  it has used up its attempts. Sooner when its worker is known to be gone: every worker
  process keeps a short-lived key in Redis (`modelpull:alive:<host>:<pid>`, renewed every
  second); a file whose heartbeat stopped DEAD_GRACE_S ago and whose process has no key
  is not waited for until the lease lapses.
- A queued file whose message never reached the broker (Redis down when the job was
  created, or the web process died before sending) is sent.
- A queued file whose message was lost inside the broker (a Redis restart without
  persistence) is sent again: at once when the broker visibly lost its data (a marker key
  the sweeper keeps there is gone), else once the queue has drained and it still waits.
One worker sweeps per interval (a Redis lock); duplicates are harmless anyway, since only
one claim of a row can win.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import datetime, timedelta

from app import events, jobs, storage
from app.dispatch import QUEUE, redis_client
from app.models import FileStatus, utcnow
from worker.downloadlog import fields
from worker.lease import remove_partial_under_lease
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
        """One pass; returns the file ids it acted on."""
        s = self.rt.settings
        now = utcnow()
        orphaned = self._orphaned(now)
        with self.rt.sessions.begin() as session:
            stale = jobs.requeue_stale(
                session,
                stale_before=now - timedelta(seconds=s.download_lease_seconds),
                max_attempts=s.download_max_attempts,
                now=now,
            )
            if orphaned:
                early = jobs.requeue_stale(
                    session,
                    stale_before=now - timedelta(seconds=DEAD_GRACE_S),
                    max_attempts=s.download_max_attempts,
                    now=now,
                    file_ids=orphaned,
                )
                stale.requeued.extend(early.requeued)
                stale.failed.extend(early.failed)
            unpublished = jobs.unpublished_files(session)
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
        cleaned = self._clean_orphans()
        return {
            "requeued": stale.requeued,
            "failed": stale.failed,
            "sent": resend,
            "cleaned": cleaned,
        }

    def _clean_orphans(self) -> list[str]:
        """Delete partials that no unfinished file wants (a job deleted after a cancel, a
        file cancelled while its worker was dead), under the destination's lease."""
        s = self.rt.settings
        work = storage.work_dir(s.models_dir)
        if not work.is_dir():
            return []
        quiet_since = time.time() - 2 * s.download_lease_seconds
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

    def _orphaned(self, now: datetime) -> list[str]:
        """Files whose heartbeat stopped a while ago and whose worker process is gone."""
        with self.rt.sessions() as session:
            quiet = jobs.quiet_holders(session, quiet_before=now - timedelta(seconds=DEAD_GRACE_S))
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
