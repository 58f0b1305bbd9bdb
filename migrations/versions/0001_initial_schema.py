"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "download_job",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model_id", sa.String(length=128), nullable=True),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "downloading",
                "paused",
                "completed",
                "failed",
                "cancelled",
                name="jobstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("download_job", schema=None) as batch_op:
        batch_op.create_index("ix_download_job_created", ["created_at", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_download_job_model_id"), ["model_id"], unique=False)
        batch_op.create_index(
            "ix_download_job_status_created", ["status", "created_at", "id"], unique=False
        )

    op.create_table(
        "download_file",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("file_index", sa.Integer(), nullable=False),
        sa.Column("repo", sa.String(length=200), nullable=False),
        sa.Column("revision", sa.String(length=200), nullable=False),
        sa.Column("file_name", sa.String(length=1000), nullable=False),
        sa.Column("dest", sa.String(length=1000), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("etag", sa.String(length=200), nullable=True),
        sa.Column("commit", sa.String(length=40), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "downloading",
                "verifying",
                "paused",
                "completed",
                "failed",
                "cancelled",
                name="filestatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("stderr", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["download_job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("download_file", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_download_file_dest"), ["dest"], unique=False)
        batch_op.create_index(batch_op.f("ix_download_file_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_download_file_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("download_file", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_download_file_status"))
        batch_op.drop_index(batch_op.f("ix_download_file_job_id"))
        batch_op.drop_index(batch_op.f("ix_download_file_dest"))

    op.drop_table("download_file")
    with op.batch_alter_table("download_job", schema=None) as batch_op:
        batch_op.drop_index("ix_download_job_status_created")
        batch_op.drop_index(batch_op.f("ix_download_job_model_id"))
        batch_op.drop_index("ix_download_job_created")

    op.drop_table("download_job")
