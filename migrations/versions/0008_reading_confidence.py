"""Confidence end to end (issue 19): readings without a rate, their confidence, what the summaries left out.

`segments`: `rr_bpm` becomes nullable; `rr_confidence` (0-1, NULL: not reported) and `reason`
(`no_breathing`, `too_noisy`; set exactly when `rr_bpm` is NULL) are added.
`stage_summaries`: `no_rate_count` and `low_confidence_count`, the readings a stage median left out
(backend.domain's confidence rule), and the covering index of migration 0007 grows by the counts the
trends now read.

No summary changes on the way up: every stored reading has a rate and no confidence, which the rule
counts as confident, so each median stays the median of all its stage's readings and nothing was left
out (the new counts are 0; with MIN_CONFIDENT_READINGS 1 a stage with readings keeps its median).

On the way down the old schema cannot hold a reading without a rate: those rows are deleted (clients
before issue 19 did not send them) and the confidences are dropped, so the summaries are rebuilt with
the rule of migration 0005 (the median of every reading), frozen here like 0005's own backfill.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_COVERED = (
    "user_id",
    "workout_id",
    "stage",
    "rr_median_bpm",
    "pulse_bpm",
    "pulse_after_bpm",
    "heavy_count",
    "classified_count",
)
COVERED = (*OLD_COVERED, "segment_count", "no_rate_count", "low_confidence_count")
COUNTS = ("no_rate_count", "low_confidence_count")

POINT_STAGE = "CASE point WHEN 'before_1' THEN 1 WHEN 'before_2' THEN 2 WHEN 'before_3' THEN 3 " \
    "WHEN 'after_3' THEN 3 WHEN 'before_4' THEN 4 WHEN 'after_4' THEN 4 END"  # fmt: skip

# Migration 0005's backfill (every reading counts), for the way down.
OLD_RULE_BACKFILL = f"""
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
    # SQLite rebuilds the table (batch mode, migrations/env.py); nothing refers to segments, so the copy
    # deletes nothing. PostgreSQL alters it in place.
    with op.batch_alter_table("segments") as batch:
        batch.alter_column("rr_bpm", existing_type=sa.Float(), nullable=True)
        batch.add_column(sa.Column("rr_confidence", sa.Float(), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(length=16), nullable=True))
        batch.create_check_constraint(op.f("ck_segments_reason"), "reason IN ('no_breathing', 'too_noisy')")
        batch.create_check_constraint(
            op.f("ck_segments_rate_or_reason"),
            "(rr_bpm IS NOT NULL AND reason IS NULL) OR (rr_bpm IS NULL AND reason IS NOT NULL)",
        )
        batch.create_check_constraint(
            op.f("ck_segments_rr_confidence"), "rr_confidence >= 0 AND rr_confidence <= 1"
        )
    with op.batch_alter_table("stage_summaries") as batch:
        for name in COUNTS:  # 0 for every stored row (module doc), then no default: every write sets it
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("stage_summaries") as batch:
        for name in COUNTS:
            batch.alter_column(name, existing_type=sa.Integer(), server_default=None)
        batch.create_check_constraint(
            op.f("ck_stage_summaries_left_out_counts"),
            "no_rate_count >= 0 AND low_confidence_count >= 0"
            " AND no_rate_count + low_confidence_count <= segment_count",
        )
    op.drop_index("ix_stage_summaries_user_covering", table_name="stage_summaries")
    op.create_index("ix_stage_summaries_user_covering", "stage_summaries", list(COVERED))


def downgrade() -> None:
    op.drop_index("ix_stage_summaries_user_covering", table_name="stage_summaries")
    op.create_index("ix_stage_summaries_user_covering", "stage_summaries", list(OLD_COVERED))
    with op.batch_alter_table("stage_summaries") as batch:
        batch.drop_constraint(op.f("ck_stage_summaries_left_out_counts"), type_="check")
        for name in COUNTS:
            batch.drop_column(name)
    op.execute("DELETE FROM segments WHERE rr_bpm IS NULL")
    with op.batch_alter_table("segments") as batch:
        batch.drop_constraint(op.f("ck_segments_rr_confidence"), type_="check")
        batch.drop_constraint(op.f("ck_segments_rate_or_reason"), type_="check")
        batch.drop_constraint(op.f("ck_segments_reason"), type_="check")
        batch.drop_column("reason")
        batch.drop_column("rr_confidence")
        batch.alter_column("rr_bpm", existing_type=sa.Float(), nullable=False)
    op.execute("DELETE FROM stage_summaries")
    op.execute(OLD_RULE_BACKFILL)
