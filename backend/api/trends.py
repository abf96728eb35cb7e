"""Trend endpoints; the numbers are computed in backend.trends (see its docstring for the quartile rule).

Every answer carries a strong ETag, a digest of its bytes, with `Cache-Control: private, no-cache`: a
client (or the browser's private cache) keeps the last answer and revalidates it with If-None-Match;
while nothing it shows has changed the answer is 304 with no body. The digest is of the answer itself,
not of a change counter, so it cannot go stale whatever wrote the data (uploads, appends, imports,
restores, deletions, fitness markers); the server still reads and builds the answer, and saves sending it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, Response, current_app, request

from backend import trends
from backend.api.auth import current_principal
from backend.api.openapi import operation
from backend.db import get_session
from backend.schemas import RrVsPulse, RrVsPulseQuery, StageTrends, TrendsQuery, WeeklyTrends, WorkoutFilter

bp = Blueprint("trends", __name__)
TAGS = ("trends",)
NOT_MODIFIED = ("Not modified: the If-None-Match ETag is the current answer's", None)
RESOLUTION = (
    " Box statistics, `n` and Pearson's r are over every filtered workout; `resolution` (default `workout`: "
    "one point per workout; `auto`: one per workout up to `max_points` workouts, else one per ISO week) only "
    "decides how the points are sent."
)


def cacheable(document: dict[str, Any]) -> Response:
    """`document` as compact JSON with a strong ETag (a digest of the bytes), or 304 when the request's
    If-None-Match already names it."""
    body = current_app.json.dumps(document, separators=(",", ":")).encode()
    response = current_app.response_class(body, mimetype="application/json")
    response.set_etag(hashlib.blake2b(body, digest_size=16).hexdigest())
    response.headers["Cache-Control"] = "private, no-cache"  # keep it, but ask before reusing it
    response.make_conditional(request)  # 304 and no body when If-None-Match names this answer
    return response


@bp.get("/trends/stages")
@operation(
    "RR and pulse distributions per stage",
    description="Per stage, the distribution over workouts of the per-workout median RR and of the pulse at "
    "that stage's protocol points (mean when a stage has two). Quartiles: linear interpolation between "
    "order statistics (Hyndman-Fan type 7, as numpy and PostgreSQL percentile_cont); whiskers: the most "
    "extreme points within 1.5 IQR of the box (Tukey)." + RESOLUTION,
    tags=TAGS,
    query=TrendsQuery,
    responses={200: ("Four stages", StageTrends), 304: NOT_MODIFIED},
)
def stages(query: TrendsQuery) -> Response:
    user_id = current_principal().user_id
    answer = trends.stage_trends(get_session(), user_id, query, query.resolution, query.max_points)
    return cacheable(answer)


@bp.get("/trends/rr-vs-pulse")
@operation(
    "Per-workout (median RR, pulse) pairs per stage, with Pearson's r",
    description="`format=columns` sends each stage's points as aligned arrays instead of objects."
    + RESOLUTION,
    tags=TAGS,
    query=RrVsPulseQuery,
    responses={200: ("Four stages", RrVsPulse), 304: NOT_MODIFIED},
)
def rr_vs_pulse(query: RrVsPulseQuery) -> Response:
    user_id = current_principal().user_id
    answer = trends.rr_vs_pulse(
        get_session(), user_id, query, query.resolution, query.max_points, query.format
    )
    return cacheable(answer)


@bp.get("/trends/weekly")
@operation(
    "Weekly fitness: resting RR, peak RR, RR and heart-rate recovery, heavy-breathing share",
    description="Weeks are ISO weeks of each workout's local start date. Recoveries are drops, positive "
    "when RR or pulse fell from stage 3 to stage 4.",
    tags=TAGS,
    query=WorkoutFilter,
    responses={200: ("Weeks, oldest first", WeeklyTrends), 304: NOT_MODIFIED},
)
def weekly(query: WorkoutFilter) -> Response:
    return cacheable(trends.weekly(get_session(), current_principal().user_id, query))
