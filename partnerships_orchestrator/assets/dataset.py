"""A research dataset: its SQL materialized as a warehouse table, replaced atomically.

The query runs into a new table beside the old one, and the old table is dropped and the new one
renamed in the same transaction (SQLite and PostgreSQL both run DDL transactionally), so readers
see the previous table or the new one, never half of one; a query that fails leaves the previous
table as it was.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import sqlalchemy as sa


@dataclass(frozen=True)
class DatasetResult:
    table: str
    rows: int
    columns: list[str]
    duration_seconds: float


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def build_table(engine: sa.Engine, table: str, sql: str) -> DatasetResult:
    """Replace ``table`` with the result of ``sql`` (see the module docstring)."""
    started = time.monotonic()
    building = f"{table}__building_{uuid.uuid4().hex[:8]}"
    statements = [
        f"CREATE TABLE {_quote(building)} AS {sql.strip().rstrip(';')}",
        f"DROP TABLE IF EXISTS {_quote(table)}",
        f"ALTER TABLE {_quote(building)} RENAME TO {_quote(table)}",
    ]
    sqlite = engine.dialect.name == "sqlite"
    raw = engine.raw_connection()
    driver = raw.driver_connection
    try:
        if sqlite:  # pysqlite commits before DDL on its own: take the transaction in hand
            driver.isolation_level = None  # type: ignore[union-attr]
        cursor = raw.cursor()
        try:
            if sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            for statement in statements:
                cursor.execute(statement)
            cursor.execute(f"SELECT count(*) FROM {_quote(table)}")  # nosec B608 # table name quoted by _quote
            (rows,) = cursor.fetchone() or (0,)
            cursor.execute("COMMIT") if sqlite else raw.commit()
        except BaseException:
            if not sqlite:
                raw.rollback()
            elif driver.in_transaction:  # type: ignore[union-attr]
                cursor.execute("ROLLBACK")
            raise
        finally:
            cursor.close()
    finally:
        if sqlite:
            driver.isolation_level = ""  # type: ignore[union-attr]
        raw.close()
    columns = [c["name"] for c in sa.inspect(engine).get_columns(table)]
    return DatasetResult(table, int(rows), columns, time.monotonic() - started)
