"""Account deletion on the task queue (issue 14): users.deletion_requested_at.

Set when a large account's deletion was handed to a queue worker (backend.accounts): the account is
locked out at once, and the mark says which accounts a worker still has to delete, so a deletion whose
task was lost is resumed. NULL for every account that exists today.

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


def downgrade() -> None:
    # Not in batch mode: SQLite (3.35 and later) drops a column in place, where a batch would copy the
    # users table and drop the old one, which ON DELETE CASCADE turns into deleting every account's rows.
    op.drop_column("users", "deletion_requested_at")
