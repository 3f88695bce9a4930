"""A connection's rate limit shared by every worker, through the state database (PostgreSQL).

Each process has its own :class:`~partnerships_orchestrator.connectors.ratelimit.RateLimiter`;
on several workers (or several runs at once) each would allow the whole ceiling. When the
product's state lives in PostgreSQL, the pace is kept in the ``rate_lanes`` table instead: one row
per connection (lane ``""``) and one per sub-limit key (a Slack channel, HubSpot's search), each
holding a GCRA state, the "theoretical arrival time" of the next call (``next_at``), and a pause
deadline (``paused_until``). Times are read from the database's clock, so the machines' clocks
never need to agree; waits are slept locally as durations.

``acquire()`` runs one statement that locks the call's lanes, and if every lane allows a call
now (``next_at - tolerance <= now`` and no pause), counts it (``next_at = max(next_at, now) +
spacing``); otherwise it changes nothing and answers how long to wait. The caller sleeps that
long, holding no lock, and asks again. Nothing is reserved ahead, so a step cancelled while it
waits gives nothing up, and a busy key (one Slack channel) never holds back calls on the others.
A ``Retry-After`` pause moves ``paused_until`` forward for every worker. The vendor's quota
readings (``X-RateLimit-Remaining``) stay in each process, on top of the shared pace: each
worker reads the vendor's own, already global, counter.

On SQLite (one machine) the in-process limiter is kept: one process runs a run's steps unless a
multiprocess executor is chosen, and a table in a file every call would write to would put
SQLite's single writer lock in front of every vendor request.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text
from sqlalchemy.dialects import postgresql

from partnerships_orchestrator.connectors.departure import sleep_unless_cancelled
from partnerships_orchestrator.connectors.ratelimit import RateLimit, RateLimiter
from partnerships_orchestrator.errors import ConfigurationError
from partnerships_orchestrator.settings import DATABASE_ENV, RATE_LIMITS_ENV
from partnerships_orchestrator.store import tables
from partnerships_orchestrator.store.state import StateStore

MAIN_LANE = ""
_MODES = ("shared", "local")

# Lock the call's lanes (the connection's, then the key's: always in this order, so two calls
# never wait on each other's rows), decide on the database's clock read after the locks, count
# the call in every lane only when all of them allow it now. `wait` <= 0: the call may go.
_ADMIT = text(
    """
    WITH locked AS (
        SELECT lane, next_at - tolerance AS earliest, paused_until
        FROM rate_lanes
        WHERE bucket = :bucket AND lane = ANY(:lanes)
        ORDER BY lane
        FOR UPDATE
    ), verdict AS (
        SELECT count(*) AS lanes,
               EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now,
               GREATEST(max(earliest), max(paused_until)) AS allowed_at
        FROM locked
    ), taken AS (
        UPDATE rate_lanes AS l
        SET next_at = GREATEST(l.next_at, v.now) + l.spacing
        FROM verdict AS v
        WHERE l.bucket = :bucket AND l.lane = ANY(:lanes)
          AND v.lanes = :count
          AND (v.allowed_at IS NULL OR v.allowed_at <= v.now)
        RETURNING l.lane
    )
    SELECT lanes, COALESCE(allowed_at - now, 0.0) AS wait FROM verdict
    """
)

_PAUSE = text(
    """
    UPDATE rate_lanes
    SET paused_until = GREATEST(
        COALESCE(paused_until, 0.0), EXTRACT(EPOCH FROM clock_timestamp())::float8 + :seconds
    )
    WHERE bucket = :bucket AND lane = :lane
    """
)


class SharedRateLimiter(RateLimiter):
    """The limiter of connection ``bucket``, shared by every process using ``engine``'s database.

    ``limit`` paces the connection, ``per_key`` each key; either may be None (that lane then
    only carries pauses). ``sleep`` defaults to a sleep that ends when the step is cancelled.
    """

    def __init__(
        self,
        bucket: str,
        engine: Engine,
        limit: RateLimit | None = None,
        *,
        per_key: RateLimit | None = None,
        sleep: Callable[[float], None] = sleep_unless_cancelled,
    ) -> None:
        # the in-process lanes keep only what the vendor says (quota readings, pauses)
        super().__init__(None, sleep=sleep)
        self.limit, self.per_key = limit, per_key
        self.bucket = bucket
        self._engine = engine
        self._known: set[str] = set()

    def _admit(self, key: str | None) -> float:
        lanes = [MAIN_LANE] if key is None else [MAIN_LANE, key]
        with self._engine.begin() as conn:
            self._ensure(conn, lanes)
            found, wait = conn.execute(_ADMIT, self._params(lanes)).one()
            if found < len(lanes):  # a lane row went missing (table emptied): make it again
                self._known.difference_update(lanes)
                self._ensure(conn, lanes)
                found, wait = conn.execute(_ADMIT, self._params(lanes)).one()
        return max(0.0, float(wait))

    def _params(self, lanes: list[str]) -> dict[str, object]:
        return {"bucket": self.bucket, "lanes": lanes, "count": len(lanes)}

    def pause(self, seconds: float, key: str | None = None) -> None:
        """Hold every worker's calls (or only ``key``'s) for ``seconds``."""
        super().pause(seconds, key)
        lane = MAIN_LANE if key is None else key
        with self._lock, self._engine.begin() as conn:
            self._ensure(conn, [lane])
            conn.execute(_PAUSE, {"bucket": self.bucket, "lane": lane, "seconds": seconds})

    def _ensure(self, conn: Connection, lanes: list[str]) -> None:
        """Create the lanes this process has not used yet, with this process's limits."""
        missing = [lane for lane in lanes if lane not in self._known]
        if not missing:
            return
        rows = [self._lane_row(lane) for lane in missing]
        statement = postgresql.insert(tables.rate_lanes).values(rows)
        excluded = statement.excluded
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["bucket", "lane"],
                set_={"spacing": excluded.spacing, "tolerance": excluded.tolerance},
            )
        )
        self._known.update(missing)

    def _lane_row(self, lane: str) -> dict[str, object]:
        limit = self.limit if lane == MAIN_LANE else self.per_key
        spacing = 1 / limit.rate if limit else None
        tolerance = (limit.burst - 1) * spacing if limit and spacing else None
        return {
            "bucket": self.bucket,
            "lane": lane,
            "spacing": spacing,
            "tolerance": tolerance,
            "next_at": 0.0 if limit else None,
            "paused_until": None,
        }


def limiter_for(
    bucket: str, limit: RateLimit | None = None, *, per_key: RateLimit | None = None
) -> RateLimiter:
    """Connection ``bucket``'s limiter: shared through the state database when that is
    PostgreSQL (``PARTNERSHIPS_DATABASE_URL``), unless ``PARTNERSHIPS_RATE_LIMITS=local``;
    else this process's own."""
    mode = os.environ.get(RATE_LIMITS_ENV) or "shared"
    if mode not in _MODES:
        raise ConfigurationError(
            f"{RATE_LIMITS_ENV}={mode!r} is not a valid setting",
            f"use one of: {', '.join(_MODES)}",
        )
    url = os.environ.get(DATABASE_ENV) or ""
    if mode == "local" or not url.startswith(("postgresql", "postgres:")):
        return RateLimiter(limit, per_key=per_key)
    return SharedRateLimiter(bucket, StateStore(url).engine, limit, per_key=per_key)
