"""Playbook steps on two Celery workers over RabbitMQ, all state in one PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from partnerships_orchestrator.store.state import StateStore
from partnerships_orchestrator_tests.scaleout.conftest import RECIPIENTS, Stack


def _recipients(stack: Stack) -> set[str]:
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("select contact_email from partners order by id limit :n"),
                {"n": RECIPIENTS},
            )
            return {r[0] for r in rows}
    finally:
        engine.dispose()


@pytest.fixture
def two_workers(stack: Stack) -> Stack:
    stack.stop_workers()
    stack.sendgrid.reset()
    stack.sendgrid.configure(limit=100_000)  # the connection (20/s per worker) sets the pace
    names = ["alpha", "beta"]
    for name in names:
        stack.start_worker(name)
    stack.await_workers(names)
    return stack


def test_fan_out_runs_on_both_workers_and_delivers_each_message_once(two_workers: Stack):
    stack = two_workers

    result = stack.execute("bulk-welcome")

    assert result.success
    ran = stack.worker_of_each_step(result.run_id)
    assert set(ran.values()) == {"alpha", "beta"}, Counter(ran.values())
    delivered = Counter(stack.sendgrid.delivered_counts())
    assert set(delivered) == _recipients(stack)
    assert set(delivered.values()) == {1}
    ledger = StateStore(stack.database_url).deliveries(result.run_id)
    assert len(ledger) == RECIPIENTS and {row["status"] for row in ledger} == {"sent"}


def test_a_worker_killed_mid_run_loses_nothing_and_sends_nothing_twice(two_workers: Stack):
    stack = two_workers
    alpha = stack.workers[0]
    before = stack.newest_run_id()
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(result=stack.execute("bulk-welcome")))
    runner.start()
    # until alpha is inside a fan-out step that has sent some of its messages
    in_flight: set[str] = set()
    deadline = time.monotonic() + 120
    run_id = before
    while not in_flight and time.monotonic() < deadline and runner.is_alive():
        stack.sendgrid.wait_for_deliveries(10, timeout=1)
        run_id = stack.newest_run_id()
        if run_id != before and len(stack.sendgrid.delivered_counts()) >= 10:
            in_flight = {s for s in stack.steps_in_flight(run_id, "alpha") if "welcome" in s}
    assert in_flight, "alpha never ran a fan-out step"

    alpha.kill()
    runner.join(timeout=300)

    assert not runner.is_alive()
    result = outcome["result"]
    assert result.run_id == run_id
    delivered = Counter(stack.sendgrid.delivered_counts())
    assert set(delivered.values()) == {1}, "a message was delivered twice"
    letters = StateStore(stack.database_url).dead_letters(run_id=run_id)
    lettered = {letter["inputs"]["recipient"]: letter for letter in letters}
    undelivered = _recipients(stack) - set(delivered)
    assert undelivered <= set(lettered), undelivered - set(lettered)
    assert all(lettered[r]["error"] for r in undelivered)
    ran = stack.worker_of_each_step(run_id)
    assert all(ran[step] == "beta" for step in in_flight), ran  # the broker handed them over
    assert result.success or undelivered, "the run failed without saying what was not sent"
