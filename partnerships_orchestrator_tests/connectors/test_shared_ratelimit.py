"""A connection's rate limit shared through PostgreSQL by several limiters (as on several workers).

Each "worker" is a thread with its own :class:`SharedRateLimiter` (its own state, as in another
process); what they share is the database. Every call is recorded on the database's clock right
after the limiter lets it through, as a vendor would count it. Assertions are counts per window
with a tolerance the algorithm gives, never wall time: a limiter allowing ``rate`` per second with
``burst`` gives at most ``window * rate + burst`` turns in any window, and each worker reserves its
next turn only after recording its previous call, so at most one call per worker had its turn
before the window it is recorded in.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from partnerships_orchestrator.connection_check import rate_limit_text
from partnerships_orchestrator.connectors.departure import Cancellation, cancellable
from partnerships_orchestrator.connectors.ratelimit import RateLimit, RateLimiter
from partnerships_orchestrator.connectors.sendgrid import SendGridEmail
from partnerships_orchestrator.connectors.shared_ratelimit import SharedRateLimiter, limiter_for
from partnerships_orchestrator.errors import ConfigurationError, ConnectorError, StepTimeout
from partnerships_orchestrator.settings import DATABASE_ENV, RATE_LIMITS_ENV
from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator_tests.postgres import create_database

WORKERS = 4


@pytest.fixture(scope="module")
def state_url(postgres_url: str) -> str:
    return create_database(postgres_url, f"limits_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def engine(state_url: str) -> Iterator[Engine]:
    engine = StateStore(state_url).engine
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS sends (bucket text, at float8)"))
    yield engine


def bucket() -> str:
    return f"vendor-{uuid.uuid4().hex[:8]}"


def record(engine: Engine, name: str) -> float:
    """Count one call of ``name`` now, on the database's clock; return that time."""
    with engine.begin() as conn:
        return float(
            conn.execute(
                sa.text(
                    "INSERT INTO sends VALUES (:b, EXTRACT(EPOCH FROM clock_timestamp())) "
                    "RETURNING at"
                ),
                {"b": name},
            ).scalar_one()
        )


def sends(engine: Engine, name: str) -> list[float]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT at FROM sends WHERE bucket = :b ORDER BY at"), {"b": name}
        )
        return [float(at) for at in rows.scalars()]


def most_in_any_window(times: list[float], window: float) -> int:
    """The most calls recorded within any ``window`` seconds (starting at some call)."""
    most, end = 0, 0
    for start, at in enumerate(times):
        while end < len(times) and times[end] - at < window:
            end += 1
        most = max(most, end - start)
    return most


def run_workers(engine: Engine, name: str, limit: RateLimit, calls: int) -> None:
    """``WORKERS`` threads, each with its own limiter on bucket ``name``, ``calls`` calls each."""
    errors: list[BaseException] = []

    def work() -> None:
        limiter = SharedRateLimiter(name, engine, limit)
        try:
            for _ in range(calls):
                limiter.acquire()
                record(engine, name)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


@pytest.mark.parametrize("burst", [1, 4])
def test_workers_sharing_a_connection_keep_under_its_ceiling_and_reach_it(
    engine: Engine, burst: int
) -> None:
    limit = RateLimit(requests=20, per_seconds=1, burst=burst)
    name = bucket()
    run_workers(engine, name, limit, calls=15)

    times = sends(engine, name)
    assert len(times) == 15 * WORKERS
    # four limiters of their own would let 4 x 20 = 80 calls through in a second
    assert most_in_any_window(times, 1.0) <= 20 + burst + WORKERS
    assert most_in_any_window(times, 0.5) <= 10 + burst + WORKERS
    # together they kept the ceiling: n calls in (n - burst) / rate seconds. Each turn is
    # reserved ahead, so a worker waking late on a loaded machine does not move the turns after
    # its own; only a late first or last call shows here (by 0.3 s to fail)
    rate = (len(times) - burst) / (times[-1] - times[0])
    assert rate >= 20 * 0.9


def now_on(engine: Engine) -> float:
    with engine.connect() as conn:
        return float(conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar())


def next_turn(engine: Engine, name: str) -> float:
    with engine.connect() as conn:
        query = sa.text("SELECT next_at FROM rate_lanes WHERE bucket = :b AND lane = ''")
        return float(conn.execute(query, {"b": name}).scalar_one())


def test_a_pause_seen_by_one_worker_holds_every_worker(engine: Engine) -> None:
    name = bucket()
    limit = RateLimit(requests=50, per_seconds=1)
    seen_429, other = (SharedRateLimiter(name, engine, limit) for _ in range(2))
    other.acquire()
    paused_at = now_on(engine)
    seen_429.pause(0.4)  # e.g. Retry-After: 0.4 on one worker's answer

    waited = other.acquire()
    sent_at = record(engine, name)
    assert waited > 0
    assert sent_at >= paused_at + 0.4


def test_a_turn_reserved_before_a_pause_waits_for_its_end(engine: Engine) -> None:
    name = bucket()
    limit = RateLimit(requests=1, per_seconds=0.5)
    waiting = SharedRateLimiter(name, engine, limit)
    waiting.acquire()
    first_turn = next_turn(engine, name)
    sender = threading.Thread(target=lambda: (waiting.acquire(), record(engine, name)))
    sender.start()  # reserves the turn 0.5 s after the first call, and sleeps until it
    while next_turn(engine, name) < first_turn + 0.25:  # await the reservation
        threading.Event().wait(0.01)
    paused_at = now_on(engine)
    SharedRateLimiter(name, engine, limit).pause(1.0)  # another worker's 429
    sender.join(timeout=10)
    assert not sender.is_alive()
    assert sends(engine, name)[0] >= paused_at + 1.0


def test_a_busy_key_holds_only_its_own_calls_on_every_worker(engine: Engine) -> None:
    """Slack's pace of one message per channel per interval, on two workers."""
    name = bucket()
    per_channel = RateLimit(requests=1, per_seconds=0.3)
    one, two = (SharedRateLimiter(name, engine, None, per_key=per_channel) for _ in range(2))

    assert one.acquire("C1") == 0.0
    first = record(engine, name)
    assert two.acquire("C2") == 0.0  # another channel is not held back by C1's pace
    assert two.acquire("C1") > 0  # the same channel, from the other worker, waits its turn
    second = record(engine, name)
    assert second - first >= 0.3

    one.pause(0.3, key="C2")  # a channel-scoped Retry-After
    assert two.acquire("C3") == 0.0
    assert two.acquire("C2") > 0


def test_a_step_cancelled_while_waiting_for_its_turn_sends_nothing(engine: Engine) -> None:
    name = bucket()
    limit = RateLimit(requests=1, per_seconds=30)
    SharedRateLimiter(name, engine, limit).acquire()  # the next turn is 30 s away
    cancellation = Cancellation(reason="the step was cancelled")
    raised: list[BaseException] = []
    waiting = threading.Event()

    def step() -> None:
        limiter = SharedRateLimiter(name, engine, limit)
        with cancellable(cancellation):
            waiting.set()
            try:
                limiter.acquire()
                record(engine, name)
            except StepTimeout as exc:
                raised.append(exc)

    thread = threading.Thread(target=step)
    thread.start()
    waiting.wait()
    cancellation.cancel()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the limiter's wait did not end on cancellation"
    assert [str(e) for e in raised] == [
        "the step was cancelled (nothing more was sent after this point)"
    ]
    assert sends(engine, name) == []


def test_connections_share_their_limiter_only_when_state_is_on_postgresql(
    state_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = RateLimit(requests=5, per_seconds=1)
    monkeypatch.delenv(RATE_LIMITS_ENV, raising=False)
    monkeypatch.delenv(DATABASE_ENV, raising=False)
    assert type(limiter_for("sendgrid", limit)) is RateLimiter  # SQLite: in-process, unchanged
    monkeypatch.setenv(DATABASE_ENV, "sqlite:///state.db")
    assert type(limiter_for("sendgrid", limit)) is RateLimiter

    monkeypatch.setenv(DATABASE_ENV, state_url)
    email = SendGridEmail(
        api_key="SG.fake", sender="p@example.org", rate_limit={"requests": 5, "per_seconds": 1}
    )
    shared = email.http().limiter
    assert isinstance(shared, SharedRateLimiter)
    assert shared.bucket == "sendgrid"
    assert shared.limit is not None and shared.limit.rate == limit.rate

    assert rate_limit_text(None, email) == "5 per 1 s, shared by every worker"  # connections check

    monkeypatch.setenv(RATE_LIMITS_ENV, "local")
    assert type(limiter_for("sendgrid", limit)) is RateLimiter
    assert rate_limit_text(None, email) == "5 per 1 s"
    monkeypatch.setenv(RATE_LIMITS_ENV, "everywhere")
    with pytest.raises(
        ConfigurationError, match="PARTNERSHIPS_RATE_LIMITS='everywhere'.*shared, local"
    ):
        limiter_for("sendgrid", limit)


def test_an_unreachable_state_database_stops_the_call_before_it_leaves() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/gone")
    limiter = SharedRateLimiter("twilio", engine, RateLimit(requests=5, per_seconds=1))

    limiter.pause(1.0)  # a Retry-After it cannot share still holds this process
    assert limiter._try_take(None) > 0
    with pytest.raises(ConnectorError) as raised:
        SharedRateLimiter("twilio", engine).acquire()
    assert raised.value.message.startswith(
        "twilio: could not reserve a turn in the shared rate limit"
    )
    assert raised.value.hint is not None and "PARTNERSHIPS_DATABASE_URL" in raised.value.hint
