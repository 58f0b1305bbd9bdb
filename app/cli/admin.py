"""The database admin commands: `modelpull token create|list|revoke` and `modelpull db
upgrade`, run against the job store that DATABASE_URL names."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from app.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """token create|list|revoke, db upgrade."""
    token = sub.add_parser("token", help="API tokens (stored hashed; shown once)")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_sub.add_parser("create", help="create a token and print it once")
    create.add_argument("name", help="what the token is for, e.g. 'laptop' or 'ci'")
    token_sub.add_parser("list", help="list tokens (never their values)")
    revoke = token_sub.add_parser("revoke", help="revoke a token by id or prefix")
    revoke.add_argument("token_id")
    token.set_defaults(func=token_command)

    db = sub.add_parser("db", help="job store maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_sub.add_parser("upgrade", help="apply the schema migrations")
    upgrade.add_argument("--revision", default="head")
    upgrade.set_defaults(func=upgrade_db)


def token_command(args: argparse.Namespace) -> int:
    """`modelpull token ACTION` against the configured job store."""
    return run_token(args, load_settings())


def run_token(
    args: argparse.Namespace, settings: Settings, environ: Mapping[str, str] | None = None
) -> int:
    """`modelpull token ACTION` (the action is `args.token_command`) in one transaction,
    once the job store is known to exist (run where the service's DATA_DIR is not set, it
    says which database it looked for instead of creating an empty one)."""
    from app.cli.preflight import PreflightError, check_database
    from app.db import make_engine, make_session_factory
    from app.errors import NotFoundError, ValidationError

    action = TOKEN_ACTIONS[args.token_command]
    try:
        check_database(settings, environ)
    except PreflightError as exc:
        print(f"modelpull: {exc}", file=sys.stderr)
        return 1
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            action(session, args)
    except (NotFoundError, ValidationError) as exc:
        print(f"modelpull: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def _create_token(session: Session, args: argparse.Namespace) -> None:
    from app import tokens

    row, plain = tokens.create_token(session, args.name)
    print(plain)
    print(f"created token {row.id} ({row.name}); it is shown only now", file=sys.stderr)


def _list_tokens(session: Session, args: argparse.Namespace) -> None:
    from app import tokens

    for row in tokens.list_tokens(session):
        state = "revoked" if row.revoked_at else "active"
        used = row.last_used_at.isoformat() if row.last_used_at else "never"
        print(f"{row.id}  {row.prefix}…  {state:7}  used {used}  {row.name}")


def _revoke_token(session: Session, args: argparse.Namespace) -> None:
    from app import tokens

    row = tokens.revoke_token(session, args.token_id)
    print(f"revoked {row.id} ({row.name})")


TOKEN_ACTIONS: dict[str, Callable[[Session, argparse.Namespace], None]] = {
    "create": _create_token,
    "list": _list_tokens,
    "revoke": _revoke_token,
}


def upgrade_db(args: argparse.Namespace) -> int:
    """`modelpull db upgrade`: migrate the configured database to a revision (head)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from app import migrate
    from app.cli.preflight import database_failure

    settings = load_settings()
    try:
        migrate.upgrade(settings.database_url, args.revision)
    except (SQLAlchemyError, OSError) as exc:
        print(f"modelpull: {database_failure(settings.database_url, exc)}", file=sys.stderr)
        return 1
    shown = make_url(settings.database_url).render_as_string(hide_password=True)
    print(f"database is at revision {args.revision}: {shown}")
    return 0
