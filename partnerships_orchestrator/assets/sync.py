"""A CRM object landed in a warehouse table, incrementally.

:func:`run_sync` reads changes from a :class:`~partnerships_orchestrator.assets.crm_source.CrmSource`
oldest first and commits them in batches; each batch's rows and the cursor after its last change
are written in one transaction, so a process killed mid-sync leaves the table and the cursor
consistent: the next run resumes at the cursor (re-reading at most that batch, upserted by id:
nothing lost, nothing duplicated). Deleted records are marked (``is_deleted``, ``deleted_at``),
never silently kept. A full refresh reads everything again and marks as deleted every row it did
not see.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from partnerships_orchestrator.assets.crm_schema import (
    BOOKKEEPING_COLUMNS,
    ColumnType,
    CrmObject,
    convert,
)
from partnerships_orchestrator.assets.crm_source import Change, CrmSource, Cursor
from partnerships_orchestrator.assets.writer import writer_for
from partnerships_orchestrator.store.jsonable import jsonable
from partnerships_orchestrator.store.schema import schema_lock
from partnerships_orchestrator.warehouse import sync_cursors

BATCH_SIZE = 5000
PREFETCH = 20_000  # changes read ahead of the writer
SQL_TYPES: dict[ColumnType, Any] = {
    "text": sa.Text,
    "number": sa.Float,
    "integer": sa.BigInteger,
    "boolean": sa.Boolean,
    "timestamp": sa.DateTime,
    "date": sa.Date,
}
Progress = Callable[[str, int, int], None]  # (asset, records read, rows written)


@dataclass
class SyncResult:
    """What one sync did."""

    asset: str
    source: str
    sandbox: bool
    full_refresh: bool
    seen: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    cursor: str | None = None
    duration_seconds: float = 0.0
    batches: int = 0
    columns: list[tuple[str, ColumnType]] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def sync_table(
    name: str,
    columns: list[tuple[str, str, ColumnType]],
    extra: list[tuple[str, ColumnType]] | None = None,
) -> sa.Table:
    """The table of a sync asset: id, one typed column per property, the object's derived and
    linked columns (``extra``), then bookkeeping."""
    cols = [sa.Column("id", sa.String(64), primary_key=True)]
    cols += [sa.Column(c, SQL_TYPES[t]()) for c, _, t in columns if c != "id"]
    taken = {c.name for c in cols}
    cols += [sa.Column(c, SQL_TYPES[t]()) for c, t in extra or [] if c not in taken]
    cols += [
        sa.Column(c, SQL_TYPES[t](), nullable=(c != "is_deleted")) for c, t in BOOKKEEPING_COLUMNS
    ]
    return sa.Table(name, sa.MetaData(), *cols)


def ensure_table(engine: sa.Engine, table: sa.Table) -> None:
    """Create the table, or add the columns a changed document asks for (under the schema lock,
    so workers syncing at once on a shared warehouse never race each other's DDL)."""
    with engine.begin() as conn:
        schema_lock(conn)
        sync_cursors.create(conn, checkfirst=True)
        inspector = sa.inspect(conn)
        if not inspector.has_table(table.name):
            table.create(conn)
            return
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=engine.dialect)
                conn.exec_driver_sql(
                    f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'
                )


def read_cursor(conn: sa.Connection | sa.Engine, asset: str) -> Cursor | None:
    query = sa.select(sync_cursors).where(sync_cursors.c.asset == asset)
    if isinstance(conn, sa.Engine):
        with conn.connect() as c:
            row = c.execute(query).mappings().first()
    else:
        row = conn.execute(query).mappings().first()
    if row is None:
        return None
    return Cursor(row["cursor"], row["cursor_id"], json.loads(row["state"] or "{}"))


def _write_cursor(conn: sa.Connection, asset: str, cursor: Cursor) -> None:
    values = {
        "cursor": cursor.at,
        "cursor_id": cursor.last_id,
        "state": json.dumps(cursor.state, sort_keys=True),
        "updated_at": _now(),
    }
    done = conn.execute(
        sync_cursors.update().where(sync_cursors.c.asset == asset).values(**values)
    ).rowcount
    if not done:
        conn.execute(sync_cursors.insert().values(asset=asset, **values))


def _row(
    change: Change, obj: CrmObject, columns: list[tuple[str, str, ColumnType]], now: datetime
) -> dict[str, Any]:
    row: dict[str, Any] = {"id": change.id}
    for column, prop, kind in columns:
        if column != "id":
            row[column] = convert(change.values.get(prop), kind)
    kinds = dict(obj.extra_columns())
    for column, value in obj.derive(change.values, change.links).items():
        row.setdefault(column, convert(value, kinds[column]))
    row["modified_at"] = change.modified_at
    row["is_deleted"] = change.deleted
    row["deleted_at"] = change.deleted_at
    row["synced_at"] = now
    row["raw"] = json.dumps(jsonable(change.raw), sort_keys=True, default=str)
    return row


def run_sync(
    engine: sa.Engine,
    source: CrmSource,
    obj: CrmObject,
    asset: str,
    properties: list[str] | None = None,
    *,
    full_refresh: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> SyncResult:
    """Land ``obj`` from ``source`` in the table ``asset`` (see the module docstring)."""
    started = time.monotonic()
    columns = obj.columns(properties)
    table = sync_table(asset, columns, obj.extra_columns())
    ensure_table(engine, table)
    writer = writer_for(engine)
    previous = read_cursor(engine, asset) or Cursor()
    since = Cursor(None, None, previous.state) if full_refresh else previous
    result = SyncResult(asset, source.label, source.sandbox, full_refresh or previous.at is None)
    result.columns = [(c.name, _kind(c)) for c in table.columns]
    run_started = _now()
    batch: dict[str, Change] = {}
    position = since

    def commit(final: bool) -> None:
        nonlocal batch
        now = _now()
        rows = [_row(change, obj, columns, now) for change in batch.values()]
        cursor = Cursor(
            position.at, position.last_id, source.final_state(since) if final else since.state
        )
        with engine.begin() as conn:
            done = writer.upsert(conn, table, rows)
            _write_cursor(conn, asset, cursor)
        result.inserted += done.inserted
        result.updated += done.updated
        result.deleted += sum(1 for change in batch.values() if change.deleted)
        result.batches += 1
        batch = {}
        if progress:
            progress(asset, result.seen, result.inserted + result.updated)

    for change in prefetched(source.changes(obj, [p for _, p, _ in columns], since)):
        result.seen += 1
        batch.pop(change.id, None)  # a record read twice keeps its latest state, once
        batch[change.id] = change
        position = change.cursor
        if len(batch) >= batch_size:
            commit(final=False)
    commit(final=True)
    result.deleted += _mark_archived(engine, table, source.archived(obj))
    if result.full_refresh and previous.at is not None:
        result.deleted += _mark_unseen(engine, table, run_started)
    result.cursor = position.at
    result.duration_seconds = time.monotonic() - started
    return result


_DONE = object()


def prefetched(changes: Iterator[Change], depth: int = PREFETCH) -> Iterator[Change]:
    """The same changes, read ahead by a thread: the vendor's pages keep coming at its rate
    limit while a batch is being written (reading and writing no longer wait for each other).
    An error of the reader is raised here, in order; stopping early stops the reader."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for change in changes:
                while not stop.is_set():
                    try:
                        buffer.put(change, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            buffer.put(exc)

    reader = threading.Thread(target=read, name="sync-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=5)


def _kind(column: sa.Column[Any]) -> ColumnType:
    for kind, sql_type in SQL_TYPES.items():
        if type(column.type) is sql_type:
            return kind
    return "text"


def _mark_archived(
    engine: sa.Engine, table: sa.Table, archived: Iterable[tuple[str, datetime | None]]
) -> int:
    """Mark rows of records the vendor archived (each batch its own transaction)."""
    marked = 0
    chunk: list[tuple[str, datetime | None]] = []

    def flush() -> int:
        if not chunk:
            return 0
        with engine.begin() as conn:
            count = 0
            for record_id, when in chunk:
                count += conn.execute(
                    table.update()
                    .where(table.c.id == record_id, table.c.is_deleted.is_(False))
                    .values(is_deleted=True, deleted_at=when or _now(), synced_at=_now())
                ).rowcount
        chunk.clear()
        return count

    for item in archived:
        chunk.append(item)
        if len(chunk) >= 500:
            marked += flush()
    return marked + flush()


def _mark_unseen(engine: sa.Engine, table: sa.Table, since: datetime) -> int:
    """After a full refresh: rows the vendor no longer returned are deleted there."""
    with engine.begin() as conn:
        return conn.execute(
            table.update()
            .where(table.c.synced_at < since, table.c.is_deleted.is_(False))
            .values(is_deleted=True, deleted_at=_now())
        ).rowcount
