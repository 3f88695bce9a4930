"""A state file written by an older version (pickled scopes and item results) is migrated to
typed JSON once, on open; a blob naming anything but plain data is dropped, never run."""

from __future__ import annotations

import os
import pickle
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from partnerships_orchestrator.store import codec, tables
from partnerships_orchestrator.store.state import StateStore, _engine


class _Exploit:
    """What a hostile row could hold: unpickling it would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _old_state_file(path: Path, scopes: list[bytes | None], results: list[bytes]) -> str:
    """A state file as the previous version left it: pickles, no migration recorded."""
    url = f"sqlite:///{path}"
    engine = sa.create_engine(url)
    tables.metadata.create_all(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for i, scope in enumerate(scopes):
            conn.execute(
                sa.insert(tables.dead_letters).values(
                    playbook="pb",
                    step=f"s{i}",
                    run_id="r1",
                    action="skip",
                    error_type="StepError",
                    error="boom",
                    status="open",
                    scope=scope,
                    created_at=now,
                )
            )
        for i, result in enumerate(results):
            conn.execute(
                sa.insert(tables.item_results).values(
                    root_run_id="r1", step="send", item_key=str(i), result=result, created_at=now
                )
            )
    engine.dispose()
    return url


def test_pickled_scopes_and_item_results_become_typed_json_once(tmp_path: Path):
    scope = {
        "inputs": {"since": date(2026, 1, 1)},
        "run": {"started_at": datetime(2026, 1, 2, 9, tzinfo=UTC)},
        "steps": {"q": {"output": {"rows": [{"amount": Decimal("9.99")}], "count": 1}}},
    }
    marker = tmp_path / "ran"
    url = _old_state_file(
        tmp_path / "state.db",
        scopes=[pickle.dumps(scope), None, pickle.dumps(_Exploit(marker))],
        results=[pickle.dumps(("output", {"id": 7})), pickle.dumps(_Exploit(marker))],
    )
    _engine.cache_clear()

    state = StateStore(url)

    letters = {row["step"]: state.dead_letter(row["id"]) for row in state.dead_letters()}
    assert codec.decode(letters["s0"]["scope"]) == scope
    assert letters["s1"]["scope"] is None
    assert letters["s2"]["scope"] is None  # not plain data: dropped, so redrive says why
    assert not marker.exists()
    kept = state.item_results("r1", "send", ["0", "1"])
    assert {k: codec.decode(v) for k, v in kept.items()} == {"0": ["output", {"id": 7}]}
    with state.engine.connect() as conn:
        applied = conn.execute(sa.select(tables.schema_migrations.c.name)).scalars().all()
    assert applied == ["state-json-1"]

    _engine.cache_clear()
    StateStore(url)  # opening again changes nothing: the migration ran once
    assert codec.decode(StateStore(url).dead_letter(letters["s0"]["id"])["scope"]) == scope
