"""The client-side limiter, on a fake clock where sleeping advances time (no real waiting)."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import ValidationError

from partnerships_orchestrator.connectors.ratelimit import RateLimit, RateLimiter


class FakeTime:
    """A monotonic clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def limiter(fake: FakeTime, limit: RateLimit | None = None, **kwargs: object) -> RateLimiter:
    return RateLimiter(limit, clock=fake.clock, sleep=fake.sleep, **kwargs)  # type: ignore[arg-type]


def grant_times(
    fake: FakeTime, gate: RateLimiter, count: int, key: str | None = None
) -> list[float]:
    times = []
    for _ in range(count):
        gate.acquire(key)
        times.append(fake.now)
    return times


def most_in_window(times: list[float], window: float) -> int:
    """The most grants inside any half-open window ``[t, t + window)``."""
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


def test_rate_limit_model_is_what_users_write() -> None:
    limit = RateLimit.model_validate({"requests": 100, "per_seconds": 10})
    assert (limit.rate, limit.burst) == (10.0, 1)
    with pytest.raises(ValidationError):
        RateLimit.model_validate({"requests": 0, "per_seconds": 10})
    with pytest.raises(ValidationError):
        RateLimit.model_validate({"requests": 100, "per_second": 10})


def test_bucket_paces_evenly_at_the_ceiling_without_a_burst() -> None:
    fake = FakeTime()
    gate = limiter(fake, RateLimit(requests=100, per_seconds=10))
    times = grant_times(fake, gate, 301)
    assert times[-1] - times[0] == pytest.approx(30.0)
    assert most_in_window(times, 10.0) == 100
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) == pytest.approx(0.1)


def test_burst_allows_that_many_back_to_back_after_idling() -> None:
    fake = FakeTime()
    gate = limiter(fake, RateLimit(requests=10, per_seconds=1, burst=3))
    times = grant_times(fake, gate, 5)
    assert times[:3] == [1000.0] * 3
    assert times[3:] == pytest.approx([1000.1, 1000.2])


def test_unlimited_limiter_never_waits() -> None:
    fake = FakeTime()
    gate = limiter(fake)
    grant_times(fake, gate, 50)
    assert fake.sleeps == []


def test_pause_holds_every_caller_until_the_deadline() -> None:
    fake = FakeTime()
    gate = limiter(fake, RateLimit(requests=10, per_seconds=1))
    gate.pause(5.0)
    assert gate.acquire() == pytest.approx(5.0)
    assert fake.now == pytest.approx(1005.0)
    gate.pause(2.0)
    gate.pause(1.0)  # a shorter pause never shortens a longer one
    gate.acquire()
    assert fake.now == pytest.approx(1007.0)


def test_remaining_quota_is_never_overdrawn_before_the_reset() -> None:
    fake = FakeTime()
    gate = limiter(fake)
    gate.observe_quota(remaining=3, reset_after=8.0)
    times = grant_times(fake, gate, 4)
    assert times[:3] == [1000.0] * 3
    assert times[3] == pytest.approx(1008.0)
    grant_times(fake, gate, 10)  # after the reset the reading no longer applies
    assert fake.now == pytest.approx(1008.0)


def test_zero_remaining_waits_for_the_reset() -> None:
    fake = FakeTime()
    gate = limiter(fake, RateLimit(requests=100, per_seconds=1))
    gate.observe_quota(remaining=0, reset_after=2.5)
    assert gate.acquire() == pytest.approx(2.5)


def test_per_key_sub_limits_pace_each_key_separately() -> None:
    fake = FakeTime()
    gate = limiter(fake, per_key=RateLimit(requests=1, per_seconds=1))
    for _ in range(3):
        gate.acquire("C1")
        gate.acquire("C2")
    # three per channel at 1/s: the two channels interleave instead of queueing behind each other
    assert fake.now == pytest.approx(1002.0)


def test_per_key_pause_leaves_other_keys_running() -> None:
    fake = FakeTime()
    gate = limiter(fake, per_key=RateLimit(requests=1, per_seconds=1))
    gate.pause(30.0, key="C1")
    assert gate.acquire("C2") == 0.0
    assert gate.acquire("C1") == pytest.approx(30.0)


def test_concurrent_callers_share_one_bucket() -> None:
    gate = RateLimiter(RateLimit(requests=200, per_seconds=1))
    granted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            gate.acquire()
            with lock:
                granted.append(1)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 40
    # 40 grants from a bucket of one at 200/s cannot take less than 39 refills
    assert time.monotonic() - started >= 39 / 200
