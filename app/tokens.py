"""API tokens: created once and shown once, stored as sha256 hashes, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import NotFoundError, ValidationError
from app.models import ApiToken, utcnow

TOKEN_PREFIX = "mp_"  # noqa: S105 (a prefix, not a secret)


def hash_token(token: str) -> str:
    """The stored form: tokens are long and random, so a plain sha256 is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Who a request is: a stored token (by id) or the environment's API_TOKEN."""

    token_id: str
    name: str


ENV_IDENTITY = Identity(token_id="env", name="API_TOKEN")  # noqa: S106


def create_token(session: Session, name: str) -> tuple[ApiToken, str]:
    """A new token; the plain text is returned here and never again."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError("name", "must be 1 to 100 characters")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(plain), prefix=plain[:10])
    session.add(row)
    session.flush()
    return row, plain


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, newest first (revoked ones included, marked)."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at.desc())))


def revoke_token(session: Session, token_id_or_prefix: str) -> ApiToken:
    """Revoke a token by id or by its shown prefix."""
    rows = [
        t
        for t in list_tokens(session)
        if t.id == token_id_or_prefix or t.prefix == token_id_or_prefix
    ]
    if len(rows) != 1:
        raise NotFoundError(f"no single token matches {token_id_or_prefix!r}")
    row = rows[0]
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


def authenticate(session: Session, presented: str, env_token: str | None) -> Identity | None:
    """The identity behind a presented token, or None. Comparisons are constant-time."""
    if not presented or len(presented) > 512:
        return None
    if env_token and hmac.compare_digest(presented.encode(), env_token.encode()):
        return ENV_IDENTITY
    digest = hash_token(presented)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    # The lookup is by hash, so its timing says nothing about the token; compare anyway.
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return Identity(token_id=row.id, name=row.name)


def is_active(session: Session, token_id: str) -> bool:
    """Whether a session's token is still valid (not revoked)."""
    if token_id == ENV_IDENTITY.token_id:
        return True
    row = session.get(ApiToken, token_id)
    return row is not None and row.revoked_at is None
