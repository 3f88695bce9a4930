"""Fixtures for the asset tests: CRM emulators served once per session, warehouses per test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from partnerships_orchestrator.warehouse import create_engine_for, ensure_schema
from partnerships_orchestrator_tests.connectors.conftest import emulator_fixtures
from partnerships_orchestrator_tests.emulators.hubspot import HubSpotEmulator
from partnerships_orchestrator_tests.emulators.salesforce import SalesforceEmulator
from partnerships_orchestrator_tests.postgres import create_database

hubspot_server, hubspot = emulator_fixtures("hubspot", HubSpotEmulator)
salesforce_server, salesforce = emulator_fixtures("salesforce", SalesforceEmulator)

WarehouseFactory = Callable[[], str]


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty warehouse (schema created): a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        server = request.getfixturevalue("postgres_url")
        url = create_database(server, f"wh_{uuid.uuid4().hex[:12]}")
    engine = create_engine_for(url)
    ensure_schema(engine)
    engine.dispose()
    return url


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[sa.Engine]:
    engine = create_engine_for(warehouse_url)
    yield engine
    engine.dispose()
