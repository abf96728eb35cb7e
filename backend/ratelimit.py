"""Rate limiting of repeated authentication failures, per client address.

Built on the `limits` library (moving window). Only presented-but-wrong credentials count, so a client
that merely forgot its header is told so rather than locked out. Storage is per process by default
(`memory://`); with several gunicorn workers set RESPIRA_RATELIMIT_STORAGE_URI (e.g. `redis://...`) so
that all workers share one count. The dashboard's login form can use the same limiter.
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

_NAMESPACE = "auth-failures"


class AuthFailureLimiter:
    def __init__(self, limit: str = "10 per minute", storage_uri: str = "memory://") -> None:
        self.item = parse(limit)
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))

    def blocked(self, client: str) -> bool:
        """True once `client` has used up its failures for the current window."""
        return not self._limiter.test(self.item, _NAMESPACE, client)

    def record_failure(self, client: str) -> None:
        self._limiter.hit(self.item, _NAMESPACE, client)

    def retry_after_s(self, client: str) -> int:
        reset_at, _remaining = self._limiter.get_window_stats(self.item, _NAMESPACE, client)
        return max(1, math.ceil(reset_at - time.time()))
