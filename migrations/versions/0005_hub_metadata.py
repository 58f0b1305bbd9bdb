"""hub_repo and hub_file: what the Hub last said about a repo's files, for sizes before downloading

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hub_repo",
        sa.Column("repo", sa.String(200), primary_key=True),
        sa.Column("revision", sa.String(200), primary_key=True),
        sa.Column("commit", sa.String(40), nullable=True),
        sa.Column("gated", sa.String(16), nullable=False, server_default=""),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "hub_file",
        sa.Column("repo", sa.String(200), primary_key=True),
        sa.Column("revision", sa.String(200), primary_key=True),
        sa.Column("path", sa.String(1000), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("lfs", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("hub_file")
    op.drop_table("hub_repo")
