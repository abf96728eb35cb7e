"""Initial schema: users, device tokens, workouts, stages, RR segments, pulse, idempotency records.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"], unique=False)
    op.create_table(
        "idempotency_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_idempotency_records_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_records")),
        sa.UniqueConstraint("user_id", "key", name=op.f("uq_idempotency_records_user_id_key")),
    )
    op.create_table(
        "workouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("utc_offset_min", sa.Integer(), nullable=False),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column("activity", sa.String(length=32), nullable=False),
        sa.Column("environment", sa.String(length=16), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("device", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "activity IN ('running', 'biking', 'hiit', 'calisthenics', 'fast_walking', 'incline_walking', "
            "'other')",
            name=op.f("ck_workouts_activity"),
        ),
        sa.CheckConstraint("environment IN ('indoor', 'outdoor')", name=op.f("ck_workouts_environment")),
        sa.CheckConstraint("utc_offset_min BETWEEN -1440 AND 1440", name=op.f("ck_workouts_utc_offset_min")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_workouts_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workouts")),
        sa.UniqueConstraint("user_id", "uuid", name=op.f("uq_workouts_user_id_uuid")),
    )
    op.create_index("ix_workouts_user_started", "workouts", ["user_id", "started_at", "id"], unique=False)
    op.create_table(
        "pulse_readings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workout_id", sa.Integer(), nullable=False),
        sa.Column("point", sa.String(length=16), nullable=False),
        sa.Column("bpm", sa.Float(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "point IN ('before_1', 'before_2', 'before_3', 'after_3', 'before_4', 'after_4')",
            name=op.f("ck_pulse_readings_point"),
        ),
        sa.CheckConstraint("bpm >= 25.0 AND bpm <= 250.0", name=op.f("ck_pulse_readings_bpm")),
        sa.ForeignKeyConstraint(
            ["workout_id"],
            ["workouts.id"],
            name=op.f("fk_pulse_readings_workout_id_workouts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pulse_readings")),
        sa.UniqueConstraint("workout_id", "point", name=op.f("uq_pulse_readings_workout_id_point")),
    )
    op.create_table(
        "stages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workout_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.CheckConstraint("duration_s > 0", name=op.f("ck_stages_duration_s")),
        sa.CheckConstraint("stage BETWEEN 1 AND 4", name=op.f("ck_stages_stage")),
        sa.ForeignKeyConstraint(
            ["workout_id"], ["workouts.id"], name=op.f("fk_stages_workout_id_workouts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stages")),
        sa.UniqueConstraint("workout_id", "stage", name=op.f("uq_stages_workout_id_stage")),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stage_id", sa.Integer(), nullable=False),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("rr_bpm", sa.Float(), nullable=False),
        sa.Column("respiration_count", sa.Float(), nullable=True),
        sa.Column("breath_class", sa.String(length=16), nullable=True),
        sa.Column("prob_none", sa.Float(), nullable=True),
        sa.Column("prob_normal", sa.Float(), nullable=True),
        sa.Column("prob_heavy", sa.Float(), nullable=True),
        sa.Column("noise_prob", sa.Float(), nullable=True),
        sa.CheckConstraint(
            "breath_class IN ('none', 'normal', 'heavy')", name=op.f("ck_segments_breath_class")
        ),
        sa.CheckConstraint("rr_bpm >= 0.0 AND rr_bpm <= 80.0", name=op.f("ck_segments_rr_bpm")),
        sa.CheckConstraint("start_s >= 0 AND duration_s > 0", name=op.f("ck_segments_times")),
        sa.ForeignKeyConstraint(
            ["stage_id"], ["stages.id"], name=op.f("fk_segments_stage_id_stages"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("stage_id", "start_s", name=op.f("uq_segments_stage_id_start_s")),
    )


def downgrade() -> None:
    op.drop_table("segments")
    op.drop_table("stages")
    op.drop_table("pulse_readings")
    op.drop_index("ix_workouts_user_started", table_name="workouts")
    op.drop_table("workouts")
    op.drop_table("idempotency_records")
    op.drop_index(op.f("ix_api_tokens_user_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_table("users")
