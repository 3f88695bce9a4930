"""The state schema is created once under a lock, whoever starts first, on both databases."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from partnerships_orchestrator.store import tables
from partnerships_orchestrator.store.schema import ensure_schema
from partnerships_orchestrator_tests.postgres import create_database


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_eight_workers_creating_the_schema_at_once_all_succeed(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
):
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = create_database(request.getfixturevalue("postgres_url"), f"s_{uuid.uuid4().hex[:12]}")
    # one engine each, as separate worker processes have: the lock must live in the database
    engines = [
        sa.create_engine(url, connect_args={"timeout": 30} if "sqlite" in url else {})
        for _ in range(8)
    ]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def start(engine: sa.Engine) -> None:
        barrier.wait()
        try:
            ensure_schema(engine)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors, errors
    assert set(tables.metadata.tables) <= set(sa.inspect(engines[0]).get_table_names())
    for engine in engines:
        engine.dispose()
