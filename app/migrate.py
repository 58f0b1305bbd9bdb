"""Run the Alembic migrations from code (`modelpull db upgrade`, `modelpull up`, tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.db import normalize_url
from app.settings import PROJECT_ROOT

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config bound to the given database, independent of the working directory."""
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["database_url"] = normalize_url(database_url)
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema up to `revision`."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Take the schema down to `revision` (`base` drops everything)."""
    command.downgrade(alembic_config(database_url), revision)


def heads(database_url: str = "sqlite://") -> list[str]:
    """The migration heads; there must be exactly one."""
    return list(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


def check(database_url: str) -> None:
    """Raise if the models and the migrated schema disagree."""
    command.check(alembic_config(database_url))
