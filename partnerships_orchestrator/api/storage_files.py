"""Which SQLite files the `/executions` answers are read from, for :class:`ResponseCache`
validators; ``None`` where one of them is not a SQLite file (PostgreSQL: no cheap validator)."""

from __future__ import annotations

import re

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

from partnerships_orchestrator.api.data_versions import sqlite_path
from partnerships_orchestrator.api.response_cache import Witness

# Every write to a run's record (status, timing, tags, origin) rewrites its `runs` row; other
# commits to `runs.db` (other runs, daemon heartbeats) leave these columns of it as they were
RUN_ROW = (
    "SELECT status, update_timestamp, start_time, end_time, run_body FROM runs WHERE run_id = ?"
)
RUN_ID = re.compile(r"[0-9a-fA-F-]{1,64}")  # Dagster's run ids (UUIDs); anything else is not cached


class StorageFiles:
    """The run storage (`runs.db`: runs, their tags and status), each run's event log file
    (Dagster's SQLite event log writes a run's events to `<run_id>.db` only) and the product's
    state database (deliveries, dead letters)."""

    def __init__(self, instance: dg.DagsterInstance, state_url: str) -> None:
        runs = instance.run_storage
        self.runs_db = (
            sqlite_path(runs._conn_string)  # noqa: SLF001 # the file it opens
            if type(runs) is SqliteRunStorage
            else None
        )
        events = instance.event_log_storage
        self.event_log = events if type(events) is SqliteEventLogStorage else None
        self.state_db = sqlite_path(state_url)

    def for_runs(self) -> tuple[str, ...] | None:
        """What a page of runs is read from."""
        return (self.runs_db,) if self.runs_db else None

    def for_run(self, run_id: str) -> tuple[str, ...] | None:
        """What one run's detail (status, steps, logs, messages sent, dead letters) is read from."""
        if not (self.runs_db and self.event_log and self.state_db and RUN_ID.fullmatch(run_id)):
            return None
        return (self.runs_db, self.event_log.path_for_shard(run_id), self.state_db)

    def run_witness(self, run_id: str) -> Witness:
        """What of `runs.db` (the first of :meth:`for_run`) one run's detail is read from."""
        return Witness(0, RUN_ROW, (run_id,))
