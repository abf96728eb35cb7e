"""What every export format needs: the user's workouts in time order, a batch at a time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from backend.models import Stage, Workout

BATCH = 100


def iter_workouts(session: Session, user_id: int, batch: int = BATCH) -> Iterator[Workout]:
    """Oldest first, with stages, segments and pulse readings; keyset pages keep memory to one batch."""
    after: tuple[datetime, int] | None = None
    while True:
        query = select(Workout).where(Workout.user_id == user_id)
        if after is not None:
            query = query.where(
                or_(
                    Workout.started_at > after[0], and_(Workout.started_at == after[0], Workout.id > after[1])
                )
            )
        query = query.options(
            selectinload(Workout.stages).selectinload(Stage.segments), selectinload(Workout.pulse_readings)
        )
        page = list(session.scalars(query.order_by(Workout.started_at, Workout.id).limit(batch)))
        yield from page
        if len(page) < batch:
            return
        after = (page[-1].started_at, page[-1].id)
        session.expunge_all()  # let the finished page go


def on_clock(moment: datetime, offset_min: int) -> datetime:
    """An instant on the workout's own clock (its UTC offset), as the app sent it."""
    return moment.astimezone(timezone(timedelta(minutes=offset_min)))


def iso(moment: datetime | None, offset_min: int = 0) -> str | None:
    return None if moment is None else on_clock(moment, offset_min).isoformat()


def segment_times(stage: Stage, start_s: float, duration_s: float) -> tuple[datetime, datetime]:
    start = stage.started_at + timedelta(seconds=start_s)
    return start, start + timedelta(seconds=duration_s)
