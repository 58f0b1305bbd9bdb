"""One cache, many workers: a lease per destination, held in Redis.

The lease is a key with a random token and an expiry that the holder renews while the
transfer lives. Before the final rename the holder checks (fences) that the key still holds
its token: a holder that was paused past its expiry and woke up finds another token and must
not commit; when Redis cannot be asked, the fence fails closed and nothing is placed. Leases
are advisory (a Redis failover can break them); what keeps files correct is verification,
the atomic rename of verified bytes, and a writer renaming only the partial it wrote.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

from app import storage
from app.errors import DownloadError

# Renew if we hold it; take it back if a Redis restart lost it; refuse if another holds it.
_RENEW = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseLostError(DownloadError):
    """Another worker holds the destination now: this one must not commit."""

    transient = True


class DestLease:
    """The lease on one destination path under MODELS_DIR."""

    def __init__(self, redis: Any, dest: str, *, ttl_seconds: float) -> None:
        self.redis = redis
        self.dest = dest
        self.key = "modelpull:lease:" + hashlib.sha256(dest.encode()).hexdigest()[:40]
        self.token = uuid.uuid4().hex
        self.ttl_ms = int(ttl_seconds * 1000)
        self.held = False

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        self.held = bool(self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return self.held

    def renew(self) -> bool:
        """Extend the lease; False when another holder has it."""
        ok = bool(self.redis.eval(_RENEW, 1, self.key, self.token, self.ttl_ms))
        self.held = ok
        return ok

    def fence(self) -> None:
        """Raise unless this holder still owns the lease (called right before the rename)."""
        try:
            owned = self.renew()
        except Exception:
            # Redis is unreachable: we cannot tell whether another worker took the file over,
            # so we do not place it. The verified partial is kept and the file handed back.
            raise LeaseLostError(
                "cannot confirm this file's destination lease (Redis unreachable); the "
                "verified partial is kept and the file handed back",
                file=self.dest,
            ) from None
        if not owned:
            raise LeaseLostError("another worker took over this file's destination", file=self.dest)

    def release(self) -> None:
        """Give the lease up if we still hold it (best-effort)."""
        if not self.held:
            return
        try:
            self.redis.eval(_RELEASE, 1, self.key, self.token)
        except Exception:  # it expires on its own
            return
        finally:
            self.held = False


def remove_partial_under_lease(
    redis: Any, models_dir: Path, dest: str, *, ttl_seconds: float
) -> bool:
    """Delete a partial that no job wants any more, holding the destination's lease so that no
    live transfer is writing it meanwhile; False (nothing deleted) when another holds it."""
    lease = DestLease(redis, dest, ttl_seconds=ttl_seconds)
    if not lease.try_acquire():
        return False
    try:
        storage.remove_partial(models_dir, dest)
    finally:
        lease.release()
    return True
