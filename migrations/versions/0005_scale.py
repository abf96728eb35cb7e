"""Scale (issue 14): stage summaries for the trends, backfilled and indexed by user.

`stage_summaries` is backfilled from the stored segments and pulse readings.

The backfill is one INSERT ... SELECT, portable to SQLite and PostgreSQL: the median of a stage's RR is
the middle row, or the mean of the two middle rows, of its segments ranked by rr_bpm (the rule of
backend.summaries.median, in the same float arithmetic). It is kept here, frozen, rather than imported
from the application, so this revision means the same thing whatever the code does later.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POINT_STAGE = "CASE point WHEN 'before_1' THEN 1 WHEN 'before_2' THEN 2 WHEN 'before_3' THEN 3 " \
    "WHEN 'after_3' THEN 3 WHEN 'before_4' THEN 4 WHEN 'after_4' THEN 4 END"  # fmt: skip

BACKFILL = f"""
INSERT INTO stage_summaries (workout_id, stage, user_id, segment_count, rr_median_bpm, classified_count,
                             heavy_count, pulse_before_bpm, pulse_after_bpm, pulse_bpm)
WITH pulse AS (
    SELECT workout_id, {POINT_STAGE} AS stage,
           MAX(CASE WHEN point LIKE 'before%' THEN bpm END) AS before_bpm,
           MAX(CASE WHEN point LIKE 'after%' THEN bpm END) AS after_bpm,
           AVG(bpm) AS mean_bpm
    FROM pulse_readings GROUP BY workout_id, {POINT_STAGE}
),
keys AS (
    SELECT workout_id, stage FROM stages UNION SELECT workout_id, stage FROM pulse
),
counted AS (
    SELECT st.workout_id, st.stage, COUNT(sg.id) AS n, COUNT(sg.breath_class) AS classified,
           SUM(CASE WHEN sg.breath_class = 'heavy' THEN 1 ELSE 0 END) AS heavy
    FROM stages st LEFT JOIN segments sg ON sg.stage_id = st.id
    GROUP BY st.workout_id, st.stage
),
ranked AS (
    SELECT st.workout_id, st.stage, sg.rr_bpm,
           ROW_NUMBER() OVER (PARTITION BY sg.stage_id ORDER BY sg.rr_bpm) AS rn,
           COUNT(*) OVER (PARTITION BY sg.stage_id) AS cnt
    FROM segments sg JOIN stages st ON st.id = sg.stage_id
),
medians AS (
    SELECT workout_id, stage, AVG(rr_bpm) AS rr_bpm FROM ranked
    WHERE rn = (cnt + 1) / 2 OR rn = (cnt + 2) / 2
    GROUP BY workout_id, stage
)
SELECT k.workout_id, k.stage, w.user_id, COALESCE(c.n, 0), m.rr_bpm, COALESCE(c.classified, 0),
       COALESCE(c.heavy, 0), p.before_bpm, p.after_bpm, p.mean_bpm
FROM keys k
JOIN workouts w ON w.id = k.workout_id
LEFT JOIN counted c ON c.workout_id = k.workout_id AND c.stage = k.stage
LEFT JOIN medians m ON m.workout_id = k.workout_id AND m.stage = k.stage
LEFT JOIN pulse p ON p.workout_id = k.workout_id AND p.stage = k.stage
"""


def upgrade() -> None:
    op.create_table(
        "stage_summaries",
        sa.Column("workout_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("segment_count", sa.Integer(), nullable=False),
        sa.Column("rr_median_bpm", sa.Float(), nullable=True),
        sa.Column("classified_count", sa.Integer(), nullable=False),
        sa.Column("heavy_count", sa.Integer(), nullable=False),
        sa.Column("pulse_before_bpm", sa.Float(), nullable=True),
        sa.Column("pulse_after_bpm", sa.Float(), nullable=True),
        sa.Column("pulse_bpm", sa.Float(), nullable=True),
        sa.CheckConstraint("stage BETWEEN 1 AND 4", name=op.f("ck_stage_summaries_stage")),
        sa.CheckConstraint(
            "heavy_count <= classified_count AND classified_count <= segment_count",
            name=op.f("ck_stage_summaries_counts"),
        ),
        sa.ForeignKeyConstraint(
            ["workout_id"],
            ["workouts.id"],
            name=op.f("fk_stage_summaries_workout_id_workouts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_stage_summaries_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workout_id", "stage", name=op.f("pk_stage_summaries")),
    )
    op.execute(BACKFILL)
    # After the backfill: one index build beats maintaining it row by row.
    op.create_index("ix_stage_summaries_user_workout", "stage_summaries", ["user_id", "workout_id"])


def downgrade() -> None:
    op.drop_table("stage_summaries")
