"""The delivery ledger's claim, on SQLite and on PostgreSQL: one claimer wins each message.

Every case runs on both databases. The races start 8 threads at one barrier, each with its own
connection, all claiming the same keys; whatever the interleaving, exactly one wins each key.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from partnerships_orchestrator.store.state import DeliveryKey, StateStore
from partnerships_orchestrator_tests.postgres import create_database

CLAIMERS = 8
KEYS = 40


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "sqlite":
        return StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    server = request.getfixturevalue("postgres_url")
    return StateStore(create_database(server, f"ledger_{uuid.uuid4().hex[:12]}"))


def _key(i: int, root: str = "root-1") -> DeliveryKey:
    return DeliveryKey(root_run_id=root, step="send", item_key=str(i), recipient=f"p{i}@x.test")


def _claim(state: StateStore, key: DeliveryKey, run_id: str) -> str:
    return state.claim(key, run_id=run_id, playbook="pb", channel="email", provider="sendgrid")


def _race(claim: Callable[[int, int], str]) -> dict[int, Counter[str]]:
    """Each of ``CLAIMERS`` threads claims every key (in its own order); outcomes per key."""
    barrier = threading.Barrier(CLAIMERS)
    outcomes: dict[int, Counter[str]] = {i: Counter() for i in range(KEYS)}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(worker: int) -> None:
        order = list(range(KEYS))
        random.Random(worker).shuffle(order)
        barrier.wait()
        try:
            for i in order:
                outcome = claim(worker, i)
                with lock:
                    outcomes[i][outcome] += 1
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(w,)) for w in range(CLAIMERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return outcomes


def test_first_claim_is_new_and_a_sent_message_is_never_claimed_again(state: StateStore):
    key = _key(1)
    assert _claim(state, key, "run-a") == "new"
    assert _claim(state, key, "run-a") == "pending"
    state.mark_sent(key, {"message_id": "m-1"})
    assert _claim(state, key, "run-b") == "sent"
    row = state.delivery(key)
    assert row is not None and row["receipt"] == {"message_id": "m-1"} and row["attempts"] == 1


def test_a_failed_message_may_be_claimed_again_once(state: StateStore):
    key = _key(2)
    assert _claim(state, key, "run-a") == "new"
    state.mark_failed(key, "503 from the vendor")
    assert _claim(state, key, "run-b") == "retry"
    assert _claim(state, key, "run-c") == "pending"
    row = state.delivery(key)
    assert row is not None and row["attempts"] == 2 and row["run_id"] == "run-b"


def test_concurrent_claimers_each_message_won_exactly_once(state: StateStore):
    outcomes = _race(lambda worker, i: _claim(state, _key(i), f"run-{worker}"))

    for i, counted in outcomes.items():
        assert counted["new"] == 1, (i, counted)
        assert counted["pending"] == CLAIMERS - 1, (i, counted)
    assert len(state.deliveries("root-1")) == KEYS


def test_concurrent_claimers_of_failed_messages_retry_each_exactly_once(state: StateStore):
    for i in range(KEYS):
        assert _claim(state, _key(i, "root-2"), "run-0") == "new"
        state.mark_failed(_key(i, "root-2"), "timeout before the request left")

    outcomes = _race(lambda worker, i: _claim(state, _key(i, "root-2"), f"run-{worker}"))

    for i, counted in outcomes.items():
        assert counted["retry"] == 1, (i, counted)
        assert counted["pending"] == CLAIMERS - 1, (i, counted)
    assert {row["attempts"] for row in state.deliveries("root-2")} == {2}
