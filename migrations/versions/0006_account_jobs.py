"""Account export and deletion as background jobs (issue 14): export_jobs, users.deletion_requested_at.

`export_jobs`: exports written to a file by a queue worker (or a thread of the web process).
`users.deletion_requested_at`: set when a large account's deletion was handed to a queue worker
(backend.accounts): the account is locked out at once, and the mark says which accounts a worker still
has to delete, so a deletion whose task was lost is resumed. NULL for every account that exists today.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("deletion_requested_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "export_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("bytes_written", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=100), nullable=True),
        sa.CheckConstraint("format IN ('json', 'csv', 'fhir', 'omh')", name=op.f("ck_export_jobs_format")),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')", name=op.f("ck_export_jobs_status")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_export_jobs_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_export_jobs")),
        sa.UniqueConstraint("uuid", name=op.f("uq_export_jobs_uuid")),
    )
    op.create_index("ix_export_jobs_user_created", "export_jobs", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_export_jobs_user_created", table_name="export_jobs")
    op.drop_table("export_jobs")
    # Not in batch mode: SQLite (3.35 and later) drops a column in place, where a batch would copy the
    # users table and drop the old one, which ON DELETE CASCADE turns into deleting every account's rows.
    op.drop_column("users", "deletion_requested_at")
