"""Interop: heart-rate and respiratory-rate samples and workouts from health apps, and import jobs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("bytes_total", sa.BigInteger(), nullable=True),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_type", sa.String(length=32), nullable=True),
        sa.Column("error_line", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('apple_health', 'health_auto_export', 'json')", name=op.f("ck_import_jobs_kind")
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed')", name=op.f("ck_import_jobs_status")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_import_jobs_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_jobs")),
        sa.UniqueConstraint("uuid", name=op.f("uq_import_jobs_uuid")),
    )
    op.create_index("ix_import_jobs_user_created", "import_jobs", ["user_id", "created_at"], unique=False)
    op.create_table(
        "health_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bpm", sa.Float(), nullable=False),
        sa.Column("bpm_min", sa.Float(), nullable=True),
        sa.Column("bpm_max", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("workout_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("kind IN ('heart_rate', 'respiratory_rate')", name=op.f("ck_health_samples_kind")),
        sa.CheckConstraint("bpm > 0", name=op.f("ck_health_samples_bpm")),
        sa.CheckConstraint("ended_at >= started_at", name=op.f("ck_health_samples_times")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_health_samples_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workout_id"],
            ["workouts.id"],
            name=op.f("fk_health_samples_workout_id_workouts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_samples")),
        sa.UniqueConstraint(
            "user_id",
            "kind",
            "started_at",
            "source",
            name=op.f("uq_health_samples_user_id_kind_started_at_source"),
        ),
    )
    op.create_index(op.f("ix_health_samples_workout_id"), "health_samples", ["workout_id"], unique=False)
    op.create_table(
        "health_workouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("activity_type", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("indoor", sa.Boolean(), nullable=True),
        sa.Column("hr_avg_bpm", sa.Float(), nullable=True),
        sa.Column("hr_min_bpm", sa.Float(), nullable=True),
        sa.Column("hr_max_bpm", sa.Float(), nullable=True),
        sa.Column("workout_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("ended_at >= started_at", name=op.f("ck_health_workouts_times")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_health_workouts_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workout_id"],
            ["workouts.id"],
            name=op.f("fk_health_workouts_workout_id_workouts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_workouts")),
        sa.UniqueConstraint(
            "user_id", "started_at", "source", name=op.f("uq_health_workouts_user_id_started_at_source")
        ),
    )
    op.create_index(op.f("ix_health_workouts_workout_id"), "health_workouts", ["workout_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_health_workouts_workout_id"), table_name="health_workouts")
    op.drop_table("health_workouts")
    op.drop_index(op.f("ix_health_samples_workout_id"), table_name="health_samples")
    op.drop_table("health_samples")
    op.drop_index("ix_import_jobs_user_created", table_name="import_jobs")
    op.drop_table("import_jobs")
