"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from partnerships_orchestrator_tests.postgres import PostgresUnavailable, start_postgres
from partnerships_orchestrator_tests.rabbitmq import RabbitMQUnavailable, start_rabbitmq


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


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """AMQP URL of a throwaway RabbitMQ broker shared by the session (Debian's rabbitmq-server)."""
    try:
        url, stop = start_rabbitmq()
    except RabbitMQUnavailable as exc:  # `make test` installs it; a missing package is a failure
        pytest.fail(f"RabbitMQ server not found: {exc}")
    try:
        yield url
    finally:
        stop()
