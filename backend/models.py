"""Typed SQLAlchemy 2 models: users, their device tokens, workouts with stages, RR segments and pulse.

Value ranges and vocabularies are also CHECK constraints, so data that bypasses the API (imports, SQL
consoles) still cannot hold an RR of 300 or a stage 7. Children are deleted by the database
(ON DELETE CASCADE + passive_deletes) so replacing or deleting a workout never loads its segments.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from backend.db import Base, UTCDateTime, utcnow
from backend.domain import (
    PULSE_MAX_BPM,
    PULSE_MIN_BPM,
    RR_MAX_BPM,
    RR_MIN_BPM,
    Activity,
    BreathClass,
    Environment,
    NoRateReason,
    PulsePoint,
    values,
)


def _one_of(column: str, enum_cls: type) -> str:
    quoted = ", ".join(f"'{v}'" for v in values(enum_cls))
    return f"{column} IN ({quoted})"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    # Only people who log in to the dashboard have one; device access goes through ApiToken.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set while a queue worker deletes this (large) account; it is locked out meanwhile (backend.accounts).
    deletion_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    tokens: Mapped[list[ApiToken]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )
    workouts: Mapped[list[Workout]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return self.password_hash is not None and check_password_hash(self.password_hash, password)


class ApiToken(Base):
    """A bearer token for one device. Only the SHA-256 of the token is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str | None] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell tokens apart in lists
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="tokens")


class Workout(Base):
    __tablename__ = "workouts"
    __table_args__ = (
        # Per user, so one person's ids reveal nothing about another's, and an export re-imports cleanly.
        UniqueConstraint("user_id", "uuid"),
        Index("ix_workouts_user_started", "user_id", "started_at", "id"),
        CheckConstraint(_one_of("activity", Activity), name="activity"),
        CheckConstraint(_one_of("environment", Environment), name="environment"),
        CheckConstraint("utc_offset_min BETWEEN -1440 AND 1440", name="utc_offset_min"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[uuid.UUID] = mapped_column(Uuid)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    utc_offset_min: Mapped[int] = mapped_column(Integer)  # the client's clock offset at started_at
    local_date: Mapped[date] = mapped_column(Date)  # calendar day on the client's clock: weeks, date filters
    activity: Mapped[str] = mapped_column(String(32))
    environment: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(100))
    device: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    user: Mapped[User] = relationship(back_populates="workouts")
    stages: Mapped[list[Stage]] = relationship(
        back_populates="workout", cascade="all, delete-orphan", passive_deletes=True, order_by="Stage.stage"
    )
    pulse_readings: Mapped[list[PulseReading]] = relationship(
        back_populates="workout",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="PulseReading.id",
    )


class Stage(Base):
    __tablename__ = "stages"
    __table_args__ = (
        UniqueConstraint("workout_id", "stage"),
        CheckConstraint("stage BETWEEN 1 AND 4", name="stage"),
        CheckConstraint("duration_s > 0", name="duration_s"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workout_id: Mapped[int] = mapped_column(ForeignKey("workouts.id", ondelete="CASCADE"))
    stage: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_s: Mapped[float] = mapped_column(Float)

    workout: Mapped[Workout] = relationship(back_populates="stages")
    segments: Mapped[list[Segment]] = relationship(
        back_populates="stage", cascade="all, delete-orphan", passive_deletes=True, order_by="Segment.start_s"
    )


RATE_OR_REASON = "(rr_bpm IS NOT NULL AND reason IS NULL) OR (rr_bpm IS NULL AND reason IS NOT NULL)"


class Segment(Base):
    """One RR estimate over a window of a stage; times are seconds from the stage start."""

    __tablename__ = "segments"
    __table_args__ = (
        # Two estimates cannot start at the same instant of a stage: a re-sent segment is a duplicate.
        UniqueConstraint("stage_id", "start_s"),
        CheckConstraint(f"rr_bpm >= {RR_MIN_BPM} AND rr_bpm <= {RR_MAX_BPM}", name="rr_bpm"),
        CheckConstraint("start_s >= 0 AND duration_s > 0", name="times"),
        CheckConstraint(_one_of("breath_class", BreathClass), name="breath_class"),
        # Issue 19: a rate, or the reason there is none; a confidence is a probability.
        CheckConstraint(_one_of("reason", NoRateReason), name="reason"),
        CheckConstraint(RATE_OR_REASON, name="rate_or_reason"),
        CheckConstraint("rr_confidence >= 0 AND rr_confidence <= 1", name="rr_confidence"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # No separate index: the unique (stage_id, start_s) index already serves lookups by stage.
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id", ondelete="CASCADE"))
    start_s: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    rr_bpm: Mapped[float | None] = mapped_column(Float)  # None: no rate, and `reason` says why
    rr_confidence: Mapped[float | None] = mapped_column(Float)  # None: not reported (before issue 19)
    reason: Mapped[str | None] = mapped_column(String(16))
    respiration_count: Mapped[float | None] = mapped_column(Float)
    breath_class: Mapped[str | None] = mapped_column(String(16))
    prob_none: Mapped[float | None] = mapped_column(
        Float
    )  # breath_probs, one column each so SQL can use them
    prob_normal: Mapped[float | None] = mapped_column(Float)
    prob_heavy: Mapped[float | None] = mapped_column(Float)
    noise_prob: Mapped[float | None] = mapped_column(Float)

    stage: Mapped[Stage] = relationship(back_populates="segments")

    @property
    def breath_probs(self) -> list[float] | None:
        probs = (self.prob_none, self.prob_normal, self.prob_heavy)
        return None if any(p is None for p in probs) else [float(p) for p in probs]  # type: ignore[arg-type]


class PulseReading(Base):
    """Apple Watch pulse at one protocol point; at most one per point and workout."""

    __tablename__ = "pulse_readings"
    __table_args__ = (
        UniqueConstraint("workout_id", "point"),
        CheckConstraint(_one_of("point", PulsePoint), name="point"),
        CheckConstraint(f"bpm >= {PULSE_MIN_BPM} AND bpm <= {PULSE_MAX_BPM}", name="bpm"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workout_id: Mapped[int] = mapped_column(ForeignKey("workouts.id", ondelete="CASCADE"))
    point: Mapped[str] = mapped_column(String(16))
    bpm: Mapped[float] = mapped_column(Float)
    measured_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    workout: Mapped[Workout] = relationship(back_populates="pulse_readings")


class StageSummary(Base):
    """What the trends need of one workout stage, kept beside the raw rows (see backend.summaries).

    One row per workout and stage that has a stored stage or a pulse reading of that stage. Written in the
    same transaction as every change to the workout's segments or pulse, so trends never re-read history.
    """

    __tablename__ = "stage_summaries"
    __table_args__ = (
        # A user's trends read their rows by this index; through workouts alone PostgreSQL would rather
        # scan every user's summaries than probe the primary key once per workout. It holds every
        # column the trends read, so they are answered from the index alone (migration 0007).
        Index(
            "ix_stage_summaries_user_covering",
            "user_id",
            "workout_id",
            "stage",
            "rr_median_bpm",
            "pulse_bpm",
            "pulse_after_bpm",
            "heavy_count",
            "classified_count",
            "segment_count",
            "no_rate_count",
            "low_confidence_count",
        ),
        CheckConstraint("stage BETWEEN 1 AND 4", name="stage"),
        CheckConstraint(
            "heavy_count <= classified_count AND classified_count <= segment_count", name="counts"
        ),
        CheckConstraint(
            "no_rate_count >= 0 AND low_confidence_count >= 0"
            " AND no_rate_count + low_confidence_count <= segment_count",
            name="left_out_counts",
        ),
    )

    workout_id: Mapped[int] = mapped_column(ForeignKey("workouts.id", ondelete="CASCADE"), primary_key=True)
    stage: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))  # the workout's owner
    segment_count: Mapped[int] = mapped_column(Integer)
    # Median of the confident readings (backend.domain's confidence rule); None with fewer than
    # MIN_CONFIDENT_READINGS of them ("not enough breathing heard" when the stage has readings at all).
    rr_median_bpm: Mapped[float | None] = mapped_column(Float)
    no_rate_count: Mapped[int] = mapped_column(Integer)  # readings without a rate (a reason instead)
    low_confidence_count: Mapped[int] = mapped_column(Integer)  # rates below RR_CONFIDENCE_MIN
    classified_count: Mapped[int] = mapped_column(Integer)  # segments with a breath_class
    heavy_count: Mapped[int] = mapped_column(Integer)  # segments classed heavy
    pulse_before_bpm: Mapped[float | None] = mapped_column(Float)  # before_N
    pulse_after_bpm: Mapped[float | None] = mapped_column(Float)  # after_N (stages 3 and 4 only)
    pulse_bpm: Mapped[float | None] = mapped_column(Float)  # mean of the stage's pulse points


class IdempotencyRecord(Base):
    """The answer to a request sent with an Idempotency-Key, replayed when the same request comes again.

    The row is inserted before the work is done, in the same transaction: a concurrent duplicate collides
    on the unique (user_id, key) and, after the winner commits, replays the stored answer.
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of method, path and canonical body
    # Filled in before the transaction commits; never visible empty to another transaction.
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# ---- interop (issue 6): samples and workouts from Apple Health / Health Auto Export, import jobs -------

SAMPLE_KINDS = ("heart_rate", "respiratory_rate")
# Fitness markers a health app computes (issue 16), each in one unit: see backend.imports.records.MARKERS.
MARKER_KINDS = ("resting_heart_rate", "hrv_sdnn", "vo2_max", "walking_heart_rate_average")
IMPORT_KINDS = ("apple_health", "health_auto_export", "json")
IMPORT_STATUSES = ("queued", "running", "succeeded", "failed")


def _in(column: str, options: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(o) for o in options)})"


class HealthSample(Base):
    """A heart-rate or respiratory-rate sample from a health app (Apple Health, Health Auto Export).

    `bpm` is per minute for both kinds: beats for heart rate, breaths for respiratory rate. A sample is
    identified by (user, kind, start, source), so re-importing a file or a re-sent sync adds nothing.
    Heart-rate samples recorded during a workout point at it (`workout_id`; see backend.imports.matching).
    """

    __tablename__ = "health_samples"
    __table_args__ = (
        # Also the index for time-range queries per user and kind (attaching, nearest-sample lookups).
        UniqueConstraint("user_id", "kind", "started_at", "source"),
        CheckConstraint(_in("kind", SAMPLE_KINDS), name="kind"),
        CheckConstraint("bpm > 0", name="bpm"),
        CheckConstraint("ended_at >= started_at", name="times"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    bpm: Mapped[float] = mapped_column(Float)
    bpm_min: Mapped[float | None] = mapped_column(Float)  # Health Auto Export sends per-minute Min/Avg/Max
    bpm_max: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(200))  # the app or device that recorded it
    workout_id: Mapped[int | None] = mapped_column(ForeignKey("workouts.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # stored: `since` exports


class FitnessMarker(Base):
    """A fitness marker a health app computed: resting heart rate, HRV (SDNN), VO2 max, walking heart rate.

    One time series per kind, each in one unit (`backend.imports.records.MARKERS`): beats/min for the
    heart rates, ms for HRV SDNN, mL/(kg·min) for VO2 max. `local_date` is the day on the clock of the
    app that recorded it, so weeks line up with the workouts' `local_date`. Identified, like samples, by
    (user, kind, start, source): re-imports add nothing.
    """

    __tablename__ = "fitness_markers"
    __table_args__ = (
        UniqueConstraint("user_id", "kind", "started_at", "source"),
        Index("ix_fitness_markers_user_date", "user_id", "local_date"),
        CheckConstraint(_in("kind", MARKER_KINDS), name="kind"),
        CheckConstraint("value > 0", name="value"),
        CheckConstraint("ended_at >= started_at", name="times"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    local_date: Mapped[date] = mapped_column(Date)
    value: Mapped[float] = mapped_column(Float)  # in the kind's unit
    source: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HealthWorkout(Base):
    """A workout session recorded by a health app (an Apple Watch workout), linked to the Respira
    workout it overlaps in time, if any. Its span widens the window in which heart-rate samples attach."""

    __tablename__ = "health_workouts"
    __table_args__ = (
        UniqueConstraint("user_id", "started_at", "source"),
        CheckConstraint("ended_at >= started_at", name="times"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(200))
    activity_type: Mapped[str] = mapped_column(String(100))  # as the app names it: "Running", "Outdoor Run"
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    indoor: Mapped[bool | None] = mapped_column(Boolean)
    hr_avg_bpm: Mapped[float | None] = mapped_column(Float)
    hr_min_bpm: Mapped[float | None] = mapped_column(Float)
    hr_max_bpm: Mapped[float | None] = mapped_column(Float)
    workout_id: Mapped[int | None] = mapped_column(ForeignKey("workouts.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # stored: `since` exports


class ImportJob(Base):
    """One import (an uploaded export, a push, a JSON restore) and how far it got.

    Large Apple Health exports are processed in batches, each in its own transaction; the job row is
    updated in the same transaction, so `bytes_done` and `counts` always describe what is stored.
    """

    __tablename__ = "import_jobs"
    __table_args__ = (
        Index("ix_import_jobs_user_created", "user_id", "created_at"),
        CheckConstraint(_in("kind", IMPORT_KINDS), name="kind"),
        CheckConstraint(_in("status", IMPORT_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)  # the public id
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    filename: Mapped[str | None] = mapped_column(String(255))
    bytes_total: Mapped[int | None] = mapped_column(BigInteger)  # of the XML (uncompressed) when known
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)  # read and stored so far
    counts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)  # the first few skipped records
    # Every record not stored, by type and reason: [{"type", "reason", "count"}] (backend.imports.report).
    skipped: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(32))  # malformed, invalid, internal, interrupted
    error_line: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last batch stored
    # "host:pid" of the process running it: when that process is gone the job is reported failed at once.
    worker: Mapped[str | None] = mapped_column(String(100))


EXPORT_FORMATS = ("json", "csv", "fhir", "omh")


class ExportJob(Base):
    """An export written to a file by a background job (a queue worker, or a thread of the web process),
    for accounts too large to stream within one request. The file lives in EXPORT_DIR as `<uuid>.<ext>`
    and is deleted with the account."""

    __tablename__ = "export_jobs"
    __table_args__ = (
        Index("ix_export_jobs_user_created", "user_id", "created_at"),
        CheckConstraint(_in("format", EXPORT_FORMATS), name="format"),
        CheckConstraint(_in("status", IMPORT_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True, default=uuid.uuid4)  # the public id
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    format: Mapped[str] = mapped_column(String(8))
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # an incremental export's start
    status: Mapped[str] = mapped_column(String(16), default="queued")
    bytes_written: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    worker: Mapped[str | None] = mapped_column(String(100))  # "host:pid" while running


# ---- security (issue 15): dashboard sessions kept on the server, and shared auth-failure counts -------


class WebSession(Base):
    """One logged-in dashboard session. The cookie carries only a random key; this row is the session.

    So logging out (the row is deleted), a new password, or "log out other sessions" ends a session for
    good, even where someone kept a copy of the cookie. Only the SHA-256 of the key is stored, as for
    device tokens. The password fingerprint ends it too when a password is changed behind our back.
    """

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    password_fingerprint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the absolute lifetime counts from here
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the idle lifetime counts from here


class AuthFailure(Base):
    """One failed authentication (a wrong token or password), counted per bucket: a client address
    (`addr:203.0.113.7`) or an account (`account:alice`). Rows older than the window are deleted as new
    ones come in; every worker and host sharing the database sees the same counts."""

    __tablename__ = "auth_failures"
    __table_args__ = (
        Index("ix_auth_failures_bucket_at", "bucket", "failed_at"),
        Index("ix_auth_failures_failed_at", "failed_at"),  # deleting expired rows
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    bucket: Mapped[str] = mapped_column(String(200))
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime)
