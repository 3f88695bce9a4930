"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from partnerships_orchestrator_tests.postgres import PostgresUnavailable, start_postgres


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLAlchemy URL of a throwaway PostgreSQL server shared by the session (trust auth)."""
    try:
        url, stop = start_postgres(tmp_path_factory.mktemp("postgres"))
    except PostgresUnavailable as exc:  # the machine's PostgreSQL server binaries are required
        pytest.fail(f"PostgreSQL server binaries not found: {exc}")
    try:
        yield url
    finally:
        stop()
