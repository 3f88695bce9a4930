"""Connections to Dagster's SQLite storages kept open by the API process.

Dagster's SQLite run storage and event log (one file per run) make a new engine and a new
connection for every read (a NullPool, so that nothing stays open in the many short processes
that use them); SQLite then reads the database schema again and SQLAlchemy compiles the
statement again, since its compiled cache belongs to the engine. That is about 1 ms of the
1.4 ms of CPU that reading one run record costs, and most of reading a run's new event records.
The API reads both on every `/executions` call, so its instance keeps one engine with a few open
connections for the run storage, and one for each of the runs whose event log it read last
(measured here: one run record 1.44 -> 0.33 ms of CPU, a page of runs filtered by playbook
2.41 -> 1.09 ms).

What a kept connection sees is unchanged: reads run outside any transaction (the driver begins
one only to write), so each read sees every commit made before it, by any process, and a
connection goes back to its pool with its transaction ended. A run's event log file is read
this way only after Dagster itself has opened (and, if new, created) it in this process; the
files are replaced only by wiping the whole storage.

Other storages (PostgreSQL) get what Dagster does for its own long-lived webserver
(`optimize_for_webserver`: connections held open and recycled, a statement timeout), with the
webserver's default settings.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

RUN_STORAGE_POOL = 8  # connections kept open to `runs.db`; more are opened (then closed) if busy
EVENT_LOG_POOL = 2  # connections kept open to each run's event log file
EVENT_LOGS_HELD = 32  # run event log files kept open (least recently read closed first)
BUSY_TIMEOUT = 30  # seconds a read waits for a writer's lock, as the product's state store does
# `dagster-webserver`'s defaults for --db-statement-timeout, --db-pool-recycle, --db-pool-max-overflow
STATEMENT_TIMEOUT_MS = 15_000
POOL_RECYCLE_S = 3_600
POOL_MAX_OVERFLOW = 20


def keep_storage_connections(instance: dg.DagsterInstance) -> list[str]:
    """Read ``instance``'s SQLite run storage and event log through open connections, and
    let Dagster set up any other storage for a long-lived process; returns which SQLite storages
    it changed."""
    instance.optimize_for_webserver(
        statement_timeout=STATEMENT_TIMEOUT_MS,
        pool_recycle=POOL_RECYCLE_S,
        max_overflow=POOL_MAX_OVERFLOW,
    )  # a no-op for SQLite storages
    kept = []
    if type(instance.run_storage) is SqliteRunStorage:
        _keep_run_storage(instance.run_storage)
        kept.append("runs")
    if type(instance.event_log_storage) is SqliteEventLogStorage:
        _keep_event_log(instance.event_log_storage)
        kept.append("event log")
    return kept


def _engine(url: str, pool_size: int) -> Engine:
    return create_engine(
        url,
        poolclass=QueuePool,
        pool_size=pool_size,
        max_overflow=-1,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT},
    )


@contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def _keep_run_storage(storage: SqliteRunStorage) -> None:
    engine = _engine(storage._conn_string, RUN_STORAGE_POOL)  # noqa: SLF001 # the URL it opens
    setattr(storage, "connect", lambda: _transaction(engine))  # noqa: B010 # this instance only


class _EventLogEngines:
    """An engine per run event log file, for the files read most recently."""

    def __init__(self, held: int) -> None:
        self.held = held
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str) -> Engine:
        with self._lock:
            engine = self._engines.get(url)
            if engine is not None:
                self._engines.move_to_end(url)
                return engine
            engine = self._engines[url] = _engine(url, EVENT_LOG_POOL)
            while len(self._engines) > self.held:
                _, dropped = self._engines.popitem(last=False)
                dropped.dispose()  # connections in use close when they are given back
            return engine


def _keep_event_log(storage: SqliteEventLogStorage, held: int = EVENT_LOGS_HELD) -> None:
    engines = _EventLogEngines(held)
    dagster_connection: Callable[[str | None], AbstractContextManager[Connection]] = (
        storage.run_connection
    )

    def run_connection(run_id: str | None = None) -> AbstractContextManager[Connection]:
        # the run files Dagster opened (and created if new) since it last wiped or upgraded
        if run_id is None or run_id not in storage._initialized_dbs:  # noqa: SLF001
            return dagster_connection(run_id)
        return _transaction(engines.get(storage.conn_string_for_shard(run_id)))

    setattr(storage, "run_connection", run_connection)  # noqa: B010 # this instance only
