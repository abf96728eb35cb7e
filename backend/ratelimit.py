"""Rate limiting of repeated authentication failures, counted where every worker and host sees them.

Only presented-but-wrong credentials count (a wrong token, a wrong password), so a client that merely
forgot its header is told so rather than locked out. Counts are kept per *bucket*:

- `addr:<client address>` for every failure (the address as `backend.proxy` resolved it, so behind a
  reverse proxy it is the real client, not the proxy: one client cannot lock out the others);
- `account:<user name>` for failed dashboard log-ins, so that guessing one account's password from
  many addresses is limited too, and a blocked guess costs no password hash at all.

Where the counts live (`RESPIRA_RATELIMIT_STORAGE_URI`):

- `database` (default): the table `auth_failures` of the app's database, shared by all workers and
  hosts with nothing else to run. A moving window: failures older than the window are deleted as new
  ones come in (any bucket's).
- `redis://host:6379/N`: Redis, through the `limits` library (moving window), for deployments that
  would rather keep this traffic off the database.
- `memory://`: per process. Only for a single-process server: with several workers each counts alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import delete, func, insert, select

from backend.db import Database, utcnow
from backend.models import AuthFailure

DATABASE = "database"
_NAMESPACE = "respira-auth-failures"


def address_bucket(address: str) -> str:
    return f"addr:{address}"


def account_bucket(name: str) -> str:
    return f"account:{name.strip().lower()[:150]}"


class _Counts(Protocol):
    def count(self, item: RateLimitItem, bucket: str) -> int: ...  # failures in the current window

    def hit(self, item: RateLimitItem, bucket: str) -> None: ...

    def retry_after_s(self, item: RateLimitItem, bucket: str) -> int: ...


class DatabaseCounts:
    """Failures as rows of `auth_failures` (see the module docstring)."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = utcnow, horizon_s: float = 3600) -> None:
        self.db, self.clock = db, clock
        self.horizon = timedelta(seconds=horizon_s)  # the longest window: older rows count for nothing

    def _since(self, item: RateLimitItem) -> datetime:
        return self.clock() - timedelta(seconds=item.get_expiry())

    def count(self, item: RateLimitItem, bucket: str) -> int:
        """Asked before every authenticated request, so it is one statement on a connection in autocommit
        (no session, no BEGIN/ROLLBACK round trips on PostgreSQL)."""
        query = select(func.count()).where(
            AuthFailure.bucket == bucket, AuthFailure.failed_at > self._since(item)
        )
        with self.db.single_statement() as conn:
            return conn.execute(query).scalar() or 0

    def hit(self, item: RateLimitItem, bucket: str) -> None:
        now = self.clock()
        with self.db.session(write=True) as session, session.begin():
            # Housekeeping as we go: rows past every window are deleted, whichever bucket they are in.
            session.execute(delete(AuthFailure).where(AuthFailure.failed_at <= now - self.horizon))
            session.execute(insert(AuthFailure).values(bucket=bucket, failed_at=now))

    def retry_after_s(self, item: RateLimitItem, bucket: str) -> int:
        """Seconds until the window holds fewer than `amount` failures again."""
        with self.db.session() as session:
            unblocking = session.scalar(
                select(AuthFailure.failed_at)
                .where(AuthFailure.bucket == bucket, AuthFailure.failed_at > self._since(item))
                .order_by(AuthFailure.failed_at.desc())
                .offset(item.amount - 1)
                .limit(1)
            )
        if unblocking is None:
            return 1
        wait = unblocking + timedelta(seconds=item.get_expiry()) - self.clock()
        return max(1, math.ceil(wait.total_seconds()))


class LimitsCounts:
    """Failures in a `limits` storage: Redis (shared) or memory (this process only)."""

    def __init__(self, storage_uri: str, prefix: str = "") -> None:
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))
        self.namespace = prefix + _NAMESPACE

    def count(self, item: RateLimitItem, bucket: str) -> int:
        _reset, remaining = self.limiter.get_window_stats(item, self.namespace, bucket)
        return item.amount - remaining

    def hit(self, item: RateLimitItem, bucket: str) -> None:
        self.limiter.hit(item, self.namespace, bucket)

    def retry_after_s(self, item: RateLimitItem, bucket: str) -> int:
        reset_at, _remaining = self.limiter.get_window_stats(item, self.namespace, bucket)
        return max(1, math.ceil(reset_at - time.time()))


class AuthFailureLimiter:
    """`blocked(address, account)` before checking credentials; `record_failure(...)` when they were wrong."""

    def __init__(
        self,
        address_limit: str = "10 per minute",
        account_limit: str = "20 per 10 minutes",
        storage_uri: str = DATABASE,
        *,
        db: Database | None = None,
        clock: Callable[[], datetime] = utcnow,
        key_prefix: str = "",
    ) -> None:
        self.address_item, self.account_item = parse(address_limit), parse(account_limit)
        if storage_uri == DATABASE:
            if db is None:
                raise ValueError("the database rate-limit storage needs the app's database")
            horizon_s = max(self.address_item.get_expiry(), self.account_item.get_expiry())
            self.counts: _Counts = DatabaseCounts(db, clock, horizon_s)
        else:
            self.counts = LimitsCounts(storage_uri, key_prefix)

    def _buckets(self, address: str, account: str | None) -> list[tuple[RateLimitItem, str]]:
        buckets = [(self.address_item, address_bucket(address))]
        if account:
            buckets.append((self.account_item, account_bucket(account)))
        return buckets

    def blocked(self, address: str, account: str | None = None) -> bool:
        """True once the address (or the account, for log-ins) has used up its failures in the window."""
        return any(self.counts.count(item, b) >= item.amount for item, b in self._buckets(address, account))

    def record_failure(self, address: str, account: str | None = None) -> None:
        for item, bucket in self._buckets(address, account):
            self.counts.hit(item, bucket)

    def retry_after_s(self, address: str, account: str | None = None) -> int:
        """Seconds until every blocked bucket of the request lets a try through again."""
        waits = [
            self.counts.retry_after_s(item, bucket)
            for item, bucket in self._buckets(address, account)
            if self.counts.count(item, bucket) >= item.amount
        ]
        return max(waits, default=1)
