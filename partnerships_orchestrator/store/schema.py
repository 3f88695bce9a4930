"""Create and migrate the state schema once, under a lock every process and machine respects.

On PostgreSQL the lock is a transaction-level advisory lock held while the tables are created
and migrated, so two workers starting at once on two machines never race each other's DDL; on
SQLite, SQLite's own write lock (``BEGIN IMMEDIATE``) serialises the same work between processes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from partnerships_orchestrator.store import tables
from partnerships_orchestrator.store.legacy_pickles import pickles_to_json

# any fixed 64-bit number: the advisory lock that guards this product's schema changes
SCHEMA_LOCK_KEY = 0x5041_5254_4E45_5253

# the tables each engine's database was brought up to date with, in this process
_ENSURED: weakref.WeakKeyDictionary[Engine, frozenset[str]] = weakref.WeakKeyDictionary()


def ensure_schema(engine: Engine) -> None:
    """Create missing tables and run pending migrations; safe in any number of processes.

    Every table of ``tables.metadata`` is created, including those the API's stores add to it,
    so each store calls this instead of creating its own tables outside the lock. Once done for
    an engine, it is done again only when a module has added tables to the metadata since (a
    store built per webhook call or sensor tick takes no schema lock)."""
    known = frozenset(tables.metadata.tables)
    if _ENSURED.get(engine) == known:
        return
    with engine.begin() as conn:
        schema_lock(conn)
        tables.metadata.create_all(conn, checkfirst=True)
        _add_columns(conn)
        _migrate_data(conn)
    _ENSURED[engine] = known


# one-time data migrations, in order; each runs once per database, under the lock
MIGRATIONS: tuple[tuple[str, Callable[[Connection], None]], ...] = (
    ("state-json-1", pickles_to_json),
)


def _migrate_data(conn: Connection) -> None:
    done = set(conn.execute(sa.select(tables.schema_migrations.c.name)).scalars())
    for name, migrate in MIGRATIONS:
        if name in done:
            continue
        migrate(conn)
        conn.execute(
            sa.insert(tables.schema_migrations).values(name=name, applied_at=datetime.now(UTC))
        )


def _add_columns(conn: Connection) -> None:
    """Columns added to a table after it first shipped (nullable, so old rows stay valid)."""
    inspector = sa.inspect(conn)
    for table_name, names in tables.ADDED_COLUMNS.items():
        table = tables.metadata.tables[table_name]
        present = {c["name"] for c in inspector.get_columns(table_name)}
        missing = [table.c[name] for name in names if name not in present]
        for column in missing:
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {table_name} ADD COLUMN {column.name} {kind}"))
        if missing:
            for index in table.indexes:
                index.create(conn, checkfirst=True)


def schema_lock(conn: Connection) -> None:
    """Hold the schema lock until ``conn``'s transaction ends (also for warehouse DDL)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
