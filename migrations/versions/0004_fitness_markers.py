"""Fitness markers (resting heart rate, HRV SDNN, VO2 max, walking heart rate), the import report's
skipped records, and when samples and health-app workouts were stored (for `since` exports).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STORED_AT = ("health_samples", "health_workouts")


def upgrade() -> None:
    op.create_table(
        "fitness_markers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('resting_heart_rate', 'hrv_sdnn', 'vo2_max', 'walking_heart_rate_average')",
            name=op.f("ck_fitness_markers_kind"),
        ),
        sa.CheckConstraint("value > 0", name=op.f("ck_fitness_markers_value")),
        sa.CheckConstraint("ended_at >= started_at", name=op.f("ck_fitness_markers_times")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_fitness_markers_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fitness_markers")),
        sa.UniqueConstraint(
            "user_id",
            "kind",
            "started_at",
            "source",
            name=op.f("uq_fitness_markers_user_id_kind_started_at_source"),
        ),
    )
    op.create_index(
        "ix_fitness_markers_user_date", "fitness_markers", ["user_id", "local_date"], unique=False
    )
    with op.batch_alter_table("import_jobs") as batch:
        batch.add_column(sa.Column("skipped", sa.JSON(), nullable=True))
    op.execute("UPDATE import_jobs SET skipped = '[]'")
    with op.batch_alter_table("import_jobs") as batch:
        batch.alter_column("skipped", existing_type=sa.JSON(), nullable=False)
    # Rows stored before this revision count as stored now: a `since` export errs on sending them again.
    migrated_at = datetime.now(timezone.utc)
    if op.get_bind().dialect.name == "sqlite":
        migrated_at = migrated_at.replace(tzinfo=None)  # as backend.db.UTCDateTime stores it there
    for table in STORED_AT:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("created_at", sa.DateTime(timezone=True), nullable=True))
        op.get_bind().execute(
            sa.text(f"UPDATE {table} SET created_at = :now"),  # table: one of STORED_AT
            {"now": migrated_at},
        )
        with op.batch_alter_table(table) as batch:
            batch.alter_column("created_at", existing_type=sa.DateTime(timezone=True), nullable=False)


def downgrade() -> None:
    for table in STORED_AT:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("created_at")
    with op.batch_alter_table("import_jobs") as batch:
        batch.drop_column("skipped")
    op.drop_index("ix_fitness_markers_user_date", table_name="fitness_markers")
    op.drop_table("fitness_markers")
