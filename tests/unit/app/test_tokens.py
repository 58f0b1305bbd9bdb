"""API tokens in the job store: shown once, kept only as a hash, checked, revoked.
(tests/unit/app/web/test_auth.py drives the same through HTTP and the CLI.)"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.errors import NotFoundError, ValidationError
from app.models import ApiToken, utcnow
from app.tokens import (
    ENV_IDENTITY,
    Identity,
    authenticate,
    create_token,
    is_active,
    list_tokens,
    revoke_token,
)

pytestmark = pytest.mark.timeout(30)

ENV_TOKEN = "operator-secret-from-the-environment"


def new_token(factory: sessionmaker[Session], name: str = "ci") -> tuple[str, str]:
    """A committed token: (its id, the plain token shown once)."""
    with factory.begin() as s:
        row, plain = create_token(s, name)
        return row.id, plain


def stored(factory: sessionmaker[Session], token_id: str) -> ApiToken:
    with factory() as s:
        row = s.get(ApiToken, token_id)
        assert row is not None
        return row


def login(
    factory: sessionmaker[Session], presented: str, env: str | None = None
) -> Identity | None:
    """authenticate() in its own transaction, as a request makes it."""
    with factory.begin() as s:
        return authenticate(s, presented, env)


# --- create_token --------------------------------------------------------------------------


def test_a_new_token_is_shown_once_and_stored_only_as_its_hash_and_prefix(
    session_factory: sessionmaker[Session],
) -> None:
    token_id, plain = new_token(session_factory, "  laptop  ")
    assert plain.startswith("mp_") and len(plain) >= 40
    row = stored(session_factory, token_id)
    assert row.name == "laptop"  # surrounding spaces dropped
    assert row.token_hash == hashlib.sha256(plain.encode()).hexdigest()
    assert row.prefix == plain[:10]
    assert row.revoked_at is None and row.last_used_at is None
    # Nothing in the table can give the token back.
    with session_factory() as s:
        columns = s.execute(text("SELECT * FROM api_token")).one()
    assert all(plain not in str(value) for value in columns)
    # Each token is new.
    _, other = new_token(session_factory, "laptop")
    assert other != plain and other[:10] != plain[:10]


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_a_bad_name_is_refused_and_nothing_is_stored(
    session_factory: sessionmaker[Session], name: str
) -> None:
    with session_factory.begin() as s, pytest.raises(ValidationError) as refused:
        create_token(s, name)
    assert refused.value.field == "name"
    assert "1 to 100 characters" in str(refused.value)
    with session_factory() as s:
        assert s.scalars(select(ApiToken)).all() == []


def test_a_name_of_100_characters_is_accepted(session_factory: sessionmaker[Session]) -> None:
    token_id, _ = new_token(session_factory, "n" * 100)
    assert stored(session_factory, token_id).name == "n" * 100


# --- authenticate --------------------------------------------------------------------------


def test_a_stored_token_authenticates_as_itself(session_factory: sessionmaker[Session]) -> None:
    token_id, plain = new_token(session_factory, "ci")
    new_token(session_factory, "other")
    assert login(session_factory, plain) == Identity(token_id=token_id, name="ci")
    # With an API_TOKEN set as well, a stored token is still itself.
    assert login(session_factory, plain, ENV_TOKEN) == Identity(token_id=token_id, name="ci")


def test_the_environments_api_token_authenticates_as_the_operator(
    session_factory: sessionmaker[Session],
) -> None:
    assert login(session_factory, ENV_TOKEN, ENV_TOKEN) == ENV_IDENTITY
    assert Identity(token_id="env", name="API_TOKEN") == ENV_IDENTITY
    # Without API_TOKEN set nothing is the operator's, not even an empty token.
    assert login(session_factory, ENV_TOKEN, None) is None
    assert login(session_factory, "", "") is None
    assert login(session_factory, "", None) is None


@pytest.mark.parametrize(
    "presented",
    [
        "mp_not-a-token-we-gave-out",
        ENV_TOKEN + "x",
        ENV_TOKEN[:-1],
        ENV_TOKEN.upper(),
    ],
)
def test_a_wrong_token_is_refused(session_factory: sessionmaker[Session], presented: str) -> None:
    new_token(session_factory)
    assert login(session_factory, presented, ENV_TOKEN) is None


def test_a_token_longer_than_512_characters_is_refused_unchecked(
    session_factory: sessionmaker[Session],
) -> None:
    long_token = "t" * 513
    # Even one that matches API_TOKEN: nothing that long is hashed or compared.
    assert login(session_factory, long_token, long_token) is None
    assert login(session_factory, "t" * 512, "t" * 512) == ENV_IDENTITY


def test_a_revoked_token_is_refused(session_factory: sessionmaker[Session]) -> None:
    token_id, plain = new_token(session_factory)
    with session_factory.begin() as s:
        revoke_token(s, token_id)
    assert login(session_factory, plain) is None


def test_use_is_recorded_at_most_once_a_minute(session_factory: sessionmaker[Session]) -> None:
    token_id, plain = new_token(session_factory)
    before = utcnow()
    assert login(session_factory, plain) is not None
    first = stored(session_factory, token_id).last_used_at
    assert first is not None and before - timedelta(seconds=1) <= first <= utcnow()
    # Within the minute: no write per request.
    assert login(session_factory, plain) is not None
    assert stored(session_factory, token_id).last_used_at == first
    # A minute later it is written again.
    long_ago = utcnow() - timedelta(seconds=90)
    with session_factory.begin() as s:
        s.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=long_ago))
    assert login(session_factory, plain) is not None
    again = stored(session_factory, token_id).last_used_at
    assert again is not None and again > long_ago + timedelta(seconds=60)


def test_a_refused_token_records_no_use(session_factory: sessionmaker[Session]) -> None:
    token_id, plain = new_token(session_factory)
    with session_factory.begin() as s:
        revoke_token(s, token_id)
    login(session_factory, plain)
    assert stored(session_factory, token_id).last_used_at is None


# --- revoke_token --------------------------------------------------------------------------


def test_a_token_is_revoked_by_id(session_factory: sessionmaker[Session]) -> None:
    token_id, _ = new_token(session_factory)
    kept_id, _ = new_token(session_factory, "kept")
    before = utcnow()
    with session_factory.begin() as s:
        assert revoke_token(s, token_id).id == token_id
    revoked_at = stored(session_factory, token_id).revoked_at
    assert revoked_at is not None and before - timedelta(seconds=1) <= revoked_at <= utcnow()
    assert stored(session_factory, kept_id).revoked_at is None
    # Revoking again changes nothing: the first time stands.
    with session_factory.begin() as s:
        revoke_token(s, token_id)
    assert stored(session_factory, token_id).revoked_at == revoked_at


def test_a_token_is_revoked_by_the_prefix_an_operator_sees(
    session_factory: sessionmaker[Session],
) -> None:
    token_id, plain = new_token(session_factory)
    with session_factory.begin() as s:
        assert revoke_token(s, plain[:10]).id == token_id
    assert stored(session_factory, token_id).revoked_at is not None
    # It stays listed, marked revoked.
    with session_factory() as s:
        [listed] = list_tokens(s)
    assert listed.id == token_id and listed.revoked_at is not None


def test_revoking_what_matches_no_token_is_not_found(
    session_factory: sessionmaker[Session],
) -> None:
    token_id, plain = new_token(session_factory)
    with session_factory.begin() as s, pytest.raises(NotFoundError, match="mp_nothing"):
        revoke_token(s, "mp_nothing")
    # The plain token is not a way to name it (it is never stored).
    with session_factory.begin() as s, pytest.raises(NotFoundError):
        revoke_token(s, plain)
    assert stored(session_factory, token_id).revoked_at is None


def test_revoking_a_prefix_several_tokens_share_revokes_none(
    session_factory: sessionmaker[Session],
) -> None:
    first, plain = new_token(session_factory, "one")
    second, _ = new_token(session_factory, "two")
    with session_factory.begin() as s:
        s.execute(update(ApiToken).where(ApiToken.id == second).values(prefix=plain[:10]))
    with session_factory.begin() as s, pytest.raises(NotFoundError, match="no single token"):
        revoke_token(s, plain[:10])
    assert stored(session_factory, first).revoked_at is None
    assert stored(session_factory, second).revoked_at is None


# --- is_active -----------------------------------------------------------------------------


def test_is_active_until_revoked(session_factory: sessionmaker[Session]) -> None:
    token_id, _ = new_token(session_factory)
    with session_factory() as s:
        assert is_active(s, token_id)
        assert is_active(s, ENV_IDENTITY.token_id)
        assert not is_active(s, "0" * 32)
    with session_factory.begin() as s:
        revoke_token(s, token_id)
    with session_factory() as s:
        assert not is_active(s, token_id)
