"""Bulk upserts into the partner warehouse, inside the caller's transaction.

- SQLite: one ``INSERT ... ON CONFLICT (id) DO UPDATE`` run with ``executemany``.
- PostgreSQL: ``COPY`` into a temporary staging table (psycopg 3), then one
  ``INSERT ... SELECT ... ON CONFLICT (id) DO UPDATE`` from it. Row-by-row ``INSERT`` (what
  ``DataFrame.to_sql`` sends) costs a round trip of parsing per chunk; COPY streams the rows
  (``benchmarks/warehouse_writer.py`` measures both).

Both run inside the connection's open transaction, so the caller commits rows and its own
bookkeeping (the sync cursor) together or not at all. Ids must be unique within one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

SQLITE_ID_CHUNK = 500  # below SQLite's bound-parameter limit


@dataclass(frozen=True)
class Upserted:
    inserted: int
    updated: int


class RowWriter(Protocol):
    def upsert(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]
    ) -> Upserted: ...


def writer_for(conn: sa.Connection | sa.Engine) -> RowWriter:
    """The writer for the connection's database."""
    return PostgresWriter() if conn.dialect.name == "postgresql" else SqliteWriter()


def quote_ident(name: str) -> str:
    """A table or column name quoted for SQL (embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


class SqliteWriter:
    """executemany of one ``INSERT ... ON CONFLICT DO UPDATE``."""

    def upsert(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]
    ) -> Upserted:
        if not rows:
            return Upserted(0, 0)
        ids = [row["id"] for row in rows]
        existing = 0
        for start in range(0, len(ids), SQLITE_ID_CHUNK):
            chunk = ids[start : start + SQLITE_ID_CHUNK]
            existing += conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.id.in_(chunk))
            ).scalar_one()
        statement = sqlite.insert(table)
        updates = {c.name: statement.excluded[c.name] for c in table.columns if c.name != "id"}
        conn.execute(statement.on_conflict_do_update(index_elements=["id"], set_=updates), rows)
        return Upserted(len(rows) - existing, existing)


class PostgresWriter:
    """COPY into a temporary staging table, then one ``INSERT ... ON CONFLICT DO UPDATE``."""

    def upsert(
        self, conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]
    ) -> Upserted:
        if not rows:
            return Upserted(0, 0)
        names = [c.name for c in table.columns]
        target, stage = quote_ident(table.name), quote_ident(f"stage_{table.name}")
        columns = ", ".join(quote_ident(n) for n in names)
        driver = conn.connection.driver_connection
        assert driver is not None  # nosec B101 # invariant for mypy: an open connection has its driver connection
        with driver.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{stage}")
            cursor.execute(
                f"CREATE TEMPORARY TABLE {stage} (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            with cursor.copy(f"COPY {stage} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row([row.get(n) for n in names])
            cursor.execute(f"SELECT count(*) FROM {stage} s JOIN {target} t ON t.id = s.id")  # nosec B608 # staging and target names quoted by quote_ident
            found = cursor.fetchone()
            existing = int(found[0]) if found else 0
            updates = ", ".join(
                f"{quote_ident(n)} = EXCLUDED.{quote_ident(n)}" for n in names if n != "id"
            )
            cursor.execute(
                f"INSERT INTO {target} ({columns}) SELECT {columns} FROM {stage} "  # nosec B608 # staging and target names and columns quoted by quote_ident
                f"ON CONFLICT (id) DO UPDATE SET {updates}"
            )
            cursor.execute(f"DROP TABLE {stage}")
        return Upserted(len(rows) - existing, existing)
