"""Client-side rate limiting: one thread-safe limiter per connection.

A token bucket refilled at ``requests / per_seconds`` with a small capacity (``burst``, default 1)
spaces calls evenly, so a bulk send runs at the vendor's ceiling instead of bursting into a 429
and then stalling. On top of the bucket the limiter honours what the vendor says at run time:
a pause until a ``Retry-After`` deadline (for everyone, or for one key), and a "remaining quota"
reading (``remaining`` calls until ``reset``) that is never overdrawn. Optional per-key buckets
model sub-limits such as Slack's one message per second per channel.

This limiter paces the calls of one process. When the product's state is in PostgreSQL, the
connectors use :class:`~partnerships_orchestrator.connectors.shared_ratelimit.SharedRateLimiter`,
which keeps the pace in that database for every worker and this limiter's quota readings on top.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field

WAIT_EPSILON = (
    1e-9  # waits shorter than this are float noise: sleeping them would not move the clock
)


class RateLimit(BaseModel):
    """A ceiling of ``requests`` per ``per_seconds``, as written under ``rate_limit:``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: int = Field(gt=0, description="Calls allowed per window.")
    per_seconds: float = Field(gt=0, description="Length of the window in seconds.")
    burst: int = Field(
        default=1,
        ge=1,
        description="Calls that may go out back to back after an idle spell (bucket capacity).",
    )

    @property
    def rate(self) -> float:
        """Calls per second."""
        return self.requests / self.per_seconds


@dataclass
class _Bucket:
    """A token bucket; time is whatever clock the limiter uses."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, limit: RateLimit, now: float) -> _Bucket:
        return cls(limit.rate, float(limit.burst), float(limit.burst), now)

    def wait(self, now: float) -> float:
        """Seconds until one token is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1


@dataclass
class _Quota:
    """The vendor's own reading of what is left until its window resets."""

    remaining: int
    resets_at: float


@dataclass
class _Lane:
    """Everything that gates one key (or the whole connection)."""

    bucket: _Bucket | None
    paused_until: float = 0.0
    quota: _Quota | None = field(default=None)

    def wait(self, now: float) -> float:
        waits = [self.paused_until - now]
        if self.bucket is not None:
            waits.append(self.bucket.wait(now))
        if self.quota is not None:
            if now >= self.quota.resets_at:
                self.quota = None
            elif self.quota.remaining <= 0:
                waits.append(self.quota.resets_at - now)
        return max(waits)

    def take(self) -> None:
        if self.bucket is not None:
            self.bucket.take()
        if self.quota is not None:
            self.quota.remaining -= 1


class RateLimiter:
    """Gate for one connection's calls; ``acquire()`` blocks for the minimum time needed.

    ``clock`` and ``sleep`` are injectable (monotonic seconds) so tests can run on a fake clock.
    """

    def __init__(
        self,
        limit: RateLimit | None = None,
        *,
        per_key: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit = limit
        self.per_key = per_key
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        self._main = _Lane(_Bucket.full(limit, now) if limit else None)
        self._keys: dict[str, _Lane] = {}
        self.waited_seconds = 0.0

    def acquire(self, key: str | None = None) -> float:
        """Block until a call may go out (for ``key``'s sub-limit too); return the seconds waited."""
        start, slept = self._clock(), False
        while (wait := self._try_take(key)) > WAIT_EPSILON:
            self._sleep(wait)
            slept = True
        return self._waited(start, slept)

    def _try_take(self, key: str | None) -> float:
        """Count a call in every lane of ``key`` if they all allow one now (0.0), else the wait."""
        with self._lock:
            now = self._clock()
            lanes = self._lanes(key, now)
            wait = max(lane.wait(now) for lane in lanes)
            if wait > WAIT_EPSILON:
                return wait
            for lane in lanes:
                lane.take()
            return 0.0

    def _waited(self, start: float, slept: bool) -> float:
        waited = self._clock() - start if slept else 0.0
        with self._lock:
            self.waited_seconds += waited
        return waited

    def pause(self, seconds: float, key: str | None = None) -> None:
        """Hold every call (or only ``key``'s) for ``seconds``, e.g. from a ``Retry-After``."""
        with self._lock:
            now = self._clock()
            lane = self._lanes(key, now)[-1]
            lane.paused_until = max(lane.paused_until, now + seconds)

    def observe_quota(self, remaining: int, reset_after: float, key: str | None = None) -> None:
        """Record the vendor's "``remaining`` calls until the window resets in ``reset_after`` s"."""
        with self._lock:
            now = self._clock()
            lane = self._lanes(key, now)[-1]
            lane.quota = _Quota(max(0, remaining), now + max(0.0, reset_after))

    def _lanes(self, key: str | None, now: float) -> list[_Lane]:
        """The connection lane, then the key's lane when there is a key."""
        if key is None:
            return [self._main]
        lane = self._keys.get(key)
        if lane is None:
            bucket = _Bucket.full(self.per_key, now) if self.per_key else None
            lane = self._keys[key] = _Lane(bucket)
        return [self._main, lane]


class RateLimitConfig(dg.Config, RateLimit):
    """``RateLimit`` as Dagster resource config: ``rate_limit: {requests: 100, per_seconds: 10}``."""
