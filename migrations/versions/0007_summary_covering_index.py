"""Read path at scale (issue 14): the stage summaries' user index covers what the trends read.

`ix_stage_summaries_user_workout` (user_id, workout_id) found a user's rows, but each row was then
read from the table, and a user's rows are spread over it (written as the workouts came in, among every
other user's): at 1,000 workouts a trends request read about 2,000 table pages for 4,000 rows. The
index that replaces it holds every column the trends and the workouts list read, so PostgreSQL answers
from the index alone (an index-only scan, a few dozen pages) and SQLite uses it as a covering index.
The columns are key columns rather than INCLUDE ones so that the same index works on both databases.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COVERED = (
    "user_id",
    "workout_id",
    "stage",
    "rr_median_bpm",
    "pulse_bpm",
    "pulse_after_bpm",
    "heavy_count",
    "classified_count",
)


def upgrade() -> None:
    op.create_index("ix_stage_summaries_user_covering", "stage_summaries", list(COVERED))
    op.drop_index("ix_stage_summaries_user_workout", table_name="stage_summaries")


def downgrade() -> None:
    op.create_index("ix_stage_summaries_user_workout", "stage_summaries", ["user_id", "workout_id"])
    op.drop_index("ix_stage_summaries_user_covering", table_name="stage_summaries")
