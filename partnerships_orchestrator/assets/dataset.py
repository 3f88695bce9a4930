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

from partnerships_orchestrator.assets.writer import quote_ident
from partnerships_orchestrator.errors import StepError


@dataclass(frozen=True)
class DatasetResult:
    table: str
    rows: int
    columns: list[str]
    duration_seconds: float


def build_table(engine: sa.Engine, table: str, sql: str, label: str = "") -> DatasetResult:
    """Replace ``table`` with the result of ``sql`` (see the module docstring); a query the
    database refuses is a :class:`StepError` naming the dataset and the database's reason."""
    try:
        return _build(engine, table, sql)
    except engine.dialect.loaded_dbapi.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepError(
            f"dataset `{label or table}`: the warehouse refused its SQL: {reason}",
            hint="the previous table is unchanged; check that the tables it reads exist "
            "(materialize its upstream assets first) and that the SQL runs on "
            f"{engine.dialect.name}",
        ) from None


def _build(engine: sa.Engine, table: str, sql: str) -> DatasetResult:
    started = time.monotonic()
    building = f"{table}__building_{uuid.uuid4().hex[:8]}"
    statements = [
        f"CREATE TABLE {quote_ident(building)} AS {sql.strip().rstrip(';')}",
        f"DROP TABLE IF EXISTS {quote_ident(table)}",
        f"ALTER TABLE {quote_ident(building)} RENAME TO {quote_ident(table)}",
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
            cursor.execute(f"SELECT count(*) FROM {quote_ident(table)}")  # nosec B608 # table name quoted by quote_ident
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
