"""The warehouse schema and engines, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from partnerships_orchestrator.errors import ConfigurationError
from partnerships_orchestrator.warehouse import (
    create_engine_for,
    ensure_schema,
    mask_url,
    metadata,
    partners,
)
from partnerships_orchestrator_tests.postgres import create_database

SECRET = "s3cr3t-Pw"
WHEN = datetime(2025, 1, 1, 9, 30)
TABLE_NAMES = {
    "partners",
    "contacts",
    "deals",
    "events",
    "event_attendance",
    "activities",
    "usage_monthly",
    "sync_cursors",  # bookkeeping of the assets, committed with the rows they describe
    "metric_history",
}
FILTER_INDEXES = {
    ("partners", "ix_partners_created_at"),
    ("partners", "ix_partners_status"),
    ("deals", "ix_deals_stage"),
    ("deals", "ix_deals_updated_at"),
}


def _assert_schema(engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    assert set(inspector.get_table_names()) == TABLE_NAMES
    indexes = {(t, ix["name"]) for t in TABLE_NAMES for ix in inspector.get_indexes(t)}
    assert FILTER_INDEXES.issubset(indexes)
    assert inspector.get_pk_constraint("event_attendance")["constrained_columns"][0] == "event_id"


def test_ensure_schema_is_idempotent_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'warehouse.db'}")
    ensure_schema(engine)
    ensure_schema(engine)
    _assert_schema(engine)
    assert (tmp_path / "nested" / "dir" / "warehouse.db").exists()


def test_sqlite_engine_uses_wal_and_enforces_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'w.db'}")
    ensure_schema(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            metadata.tables["contacts"].insert(),
            {"id": "C1", "partner_id": "P404", "first_name": "A", "last_name": "B"}
            | {"email": "a@x.example.com", "is_primary": True, "created_at": WHEN},
        )


def test_check_constraints_reject_unknown_values() -> None:
    engine = create_engine_for("sqlite://")
    ensure_schema(engine)
    row: dict[str, object] = {"id": "P1", "name": "X", "tier": "platinum", "status": "active"}
    row |= {"industry": "Software", "region": "EMEA", "country": "Spain", "health_score": 50}
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(partners.insert(), row | {"created_at": WHEN, "updated_at": WHEN})


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        f"mysql://admin:{SECRET}@db.example.com/warehouse",
        f"postgresql://admin:{SECRET}@db.example.com:notaport/warehouse",
        f"postgresql+psycopg2://admin:{SECRET}@db.example.com/warehouse",
        f"https://admin:{SECRET}@db.example.com/warehouse",
    ],
)
def test_bad_url_is_a_configuration_error_with_the_password_masked(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        create_engine_for(url)
    message = str(caught.value)
    assert SECRET not in message
    assert mask_url(url) in message
    if SECRET in url:
        assert "admin:***@db.example.com" in message
    assert "sqlite:///" in message and "postgresql://" in message  # the hint lists valid forms


def test_unreachable_server_is_a_clear_configuration_error() -> None:
    url = f"postgres://admin:{SECRET}@127.0.0.1:1/warehouse"
    with pytest.raises(ConfigurationError) as caught:
        create_engine_for(url)
    message = str(caught.value)
    assert message.startswith("cannot reach the partner warehouse at")
    assert "postgres://admin:***@127.0.0.1:1/warehouse" in message
    assert SECRET not in message
    assert "server is running" in message


def test_unusable_sqlite_directory_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigurationError, match="cannot create its directory"):
        create_engine_for(f"sqlite:///{blocker / 'sub' / 'w.db'}")


def test_mask_url_hides_passwords_even_with_unescaped_at_signs() -> None:
    assert mask_url("postgres://u:p@ss@host/db") == "postgres://u:***@host/db"
    assert mask_url("postgres://u@host/db") == "postgres://u@host/db"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_postgresql_schema_is_idempotent_for_every_accepted_scheme(
    postgres_url: str, scheme: str
) -> None:
    url = create_database(postgres_url, f"wh_{uuid.uuid4().hex[:12]}")
    engine = create_engine_for(scheme + url[url.index("://") :])
    try:
        assert engine.dialect.driver == "psycopg"
        ensure_schema(engine)
        ensure_schema(engine)
        _assert_schema(engine)
    finally:
        engine.dispose()
