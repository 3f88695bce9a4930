"""A connection's rate limit shared by every worker, through the state database (PostgreSQL).

Each process has its own :class:`~partnerships_orchestrator.connectors.ratelimit.RateLimiter`;
on several workers (or several runs at once) each would allow the whole ceiling. When the
product's state lives in PostgreSQL, the pace is kept in the ``rate_lanes`` table instead: one row
per connection (lane ``""``) and one per sub-limit key (a Slack channel, HubSpot's search), each
holding a GCRA state, the "theoretical arrival time" of the next call (``next_at``), and a pause
deadline (``paused_until``). Times are read from the database's clock, so the machines' clocks
never need to agree; waits are slept locally as durations.

``acquire()`` reserves the call's turn with one statement, ``slot = max(now, next_at -
tolerance, paused_until)`` and ``next_at = max(next_at, slot) + spacing``, then sleeps until the
slot holding no lock. Reserving ahead keeps the database's round trip and a late wake-up out of
the pace: the turn after this one is already fixed, so callers on a loaded machine still reach
the ceiling. A step cancelled while it waits gives its turn up unused (nothing is sent). A call
with a key reserves only once its key's own lane is ready; until then it waits for the key
without taking the connection's next turn, so one busy Slack channel never holds back calls to
the others. A ``Retry-After`` pause moves ``paused_until`` forward for every worker; a call that
slept re-reads it before leaving, and a turn that fell inside a pause is reserved again after it.
The vendor's quota readings (``X-RateLimit-Remaining``) stay in each process, on top of the
shared pace: each worker reads the vendor's own, already global, counter.

On SQLite (one machine) the in-process limiter is kept: with the default executor a run's steps
share one process, and a table in a SQLite file would put its single writer lock and a disk write
in front of every vendor request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import OperationalError

from partnerships_orchestrator.connectors.departure import sleep_unless_cancelled
from partnerships_orchestrator.connectors.ratelimit import WAIT_EPSILON, RateLimit, RateLimiter
from partnerships_orchestrator.errors import ConfigurationError, ConnectorError
from partnerships_orchestrator.settings import DATABASE_ENV, RATE_LIMITS_ENV
from partnerships_orchestrator.store import tables
from partnerships_orchestrator.store.state import StateStore

MAIN_LANE = ""
_log = logging.getLogger("partnerships.connectors.rate_limit")
_MODES = ("shared", "local")

# Lock the call's lanes (the connection's, then the key's: always in this order, so two calls
# never wait on each other's rows) and read the database's clock after the locks. The turn is
# reserved in every lane only when the key's lane (if any) is ready by the connection's turn; else
# nothing changes and `wait` is the time until the key is ready.
_RESERVE = text(
    """
    WITH locked AS (
        SELECT lane, GREATEST(next_at - tolerance, paused_until) AS ready_at
        FROM rate_lanes
        WHERE bucket = :bucket AND lane = ANY(:lanes)
        ORDER BY lane
        FOR UPDATE
    ), verdict AS (
        SELECT count(*) AS lanes,
               EXTRACT(EPOCH FROM clock_timestamp())::float8 AS now,
               max(ready_at) FILTER (WHERE lane = '') AS connection_at,
               max(ready_at) FILTER (WHERE lane <> '') AS key_at
        FROM locked
    ), decision AS (
        SELECT lanes, now, GREATEST(now, connection_at, key_at) AS slot,
               (key_at IS NULL OR key_at <= GREATEST(now, connection_at)) AS reserved
        FROM verdict
    ), taken AS (
        UPDATE rate_lanes AS l
        SET next_at = GREATEST(l.next_at, d.slot) + l.spacing
        FROM decision AS d
        WHERE l.bucket = :bucket AND l.lane = ANY(:lanes) AND d.lanes = :count AND d.reserved
        RETURNING l.lane
    )
    SELECT lanes, reserved, slot - now AS wait FROM decision
    """
)

# how long the lanes are still paused (a Retry-After that arrived while a caller slept)
_PAUSED = text(
    """
    SELECT COALESCE(max(paused_until) - EXTRACT(EPOCH FROM clock_timestamp())::float8, 0.0)
    FROM rate_lanes
    WHERE bucket = :bucket AND lane = ANY(:lanes)
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

    def acquire(self, key: str | None = None) -> float:
        """Block until this call's turn (for ``key``'s sub-limit too); return the seconds waited."""
        lanes = [MAIN_LANE] if key is None else [MAIN_LANE, key]
        start, slept = self._clock(), False
        # first what the vendor told this process (quota readings, pauses), then the shared pace
        while (wait := self._try_take(key)) > WAIT_EPSILON:
            self._sleep(wait)
            slept = True
        while True:
            with self._database("reserve a turn"):
                reserved, wait = self._reserve(lanes)
            if wait > WAIT_EPSILON:
                self._sleep(wait)
                slept = True
            if not reserved:
                continue  # the key was busy (or its lane was made again): ask again
            if wait <= WAIT_EPSILON or not self._paused(lanes):
                return self._waited(start, slept)
            # the turn fell inside a pause another worker saw meanwhile: take a turn after it

    def _reserve(self, lanes: list[str]) -> tuple[bool, float]:
        """Reserve the next turn in ``lanes``: (reserved, seconds until the turn or the retry)."""
        params = {"bucket": self.bucket, "lanes": lanes, "count": len(lanes)}
        self._ensure(lanes)
        with self._engine.begin() as conn:
            found, reserved, wait = conn.execute(_RESERVE, params).one()
        if found < len(lanes):  # a lane row went missing (table emptied): make it again
            with self._lock:
                self._known.difference_update(lanes)
            return False, 0.0
        return bool(reserved), max(0.0, float(wait))

    def _paused(self, lanes: list[str]) -> bool:
        with self._database("read the pause"), self._engine.connect() as conn:
            left = conn.execute(_PAUSED, {"bucket": self.bucket, "lanes": lanes}).scalar_one()
        return float(left) > WAIT_EPSILON

    def pause(self, seconds: float, key: str | None = None) -> None:
        """Hold every worker's calls (or only ``key``'s) for ``seconds``."""
        super().pause(seconds, key)
        lane = MAIN_LANE if key is None else key
        try:
            self._ensure([lane])
            with self._engine.begin() as conn:
                conn.execute(_PAUSE, {"bucket": self.bucket, "lane": lane, "seconds": seconds})
        except OperationalError as exc:  # this process still pauses; the next acquire will fail
            _log.warning(
                f"{self.bucket}: the pause of {seconds:.2f} s was not shared: {_first_line(exc)}"
            )

    @contextmanager
    def _database(self, doing: str) -> Iterator[None]:
        """The state database is needed to send: its failure stops the call before it leaves."""
        try:
            yield
        except OperationalError as exc:
            raise ConnectorError(
                f"{self.bucket}: could not {doing} in the shared rate limit: {_first_line(exc)}",
                f"check that the state database ({DATABASE_ENV}) is reachable; nothing was sent",
            ) from exc

    def _ensure(self, lanes: list[str]) -> None:
        """Create the lanes this process has not used yet, with this process's limits."""
        with self._lock:
            missing = [lane for lane in lanes if lane not in self._known]
            if not missing:
                return
            statement = postgresql.insert(tables.rate_lanes).values(
                [self._lane_row(lane) for lane in missing]
            )
            excluded = statement.excluded
            with self._engine.begin() as conn:
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


def _first_line(exc: OperationalError) -> str:
    return str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc).__name__


def limiter_for(
    bucket: str, limit: RateLimit | None = None, *, per_key: RateLimit | None = None
) -> RateLimiter:
    """Connection ``bucket``'s limiter: shared through the state database when
    :func:`shared_state_url` names one, else this process's own."""
    url = shared_state_url()
    if url is None:
        return RateLimiter(limit, per_key=per_key)
    return SharedRateLimiter(bucket, StateStore(url).engine, limit, per_key=per_key)


def shared_state_url() -> str | None:
    """The state database that paces every worker's calls: ``PARTNERSHIPS_DATABASE_URL`` when it
    is PostgreSQL, unless ``PARTNERSHIPS_RATE_LIMITS=local``."""
    mode = os.environ.get(RATE_LIMITS_ENV) or "shared"
    if mode not in _MODES:
        raise ConfigurationError(
            f"{RATE_LIMITS_ENV}={mode!r} is not a valid setting",
            f"use one of: {', '.join(_MODES)}",
        )
    url = os.environ.get(DATABASE_ENV) or ""
    if mode == "local" or not url.startswith(("postgresql", "postgres:")):
        return None
    return url
