"""Loopback emulators for the shared connector tests: one server per session, fresh per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from partnerships_orchestrator.connectors.http import HttpClient, RetrySettings, Timeouts
from partnerships_orchestrator_tests.emulators.generic import GenericEmulator


@pytest.fixture
def fast_retry() -> RetrySettings:
    """Production retry logic with backoffs short enough for a test suite."""
    return RetrySettings(attempts=4, backoff_initial=0.01, backoff_max=0.05)


@pytest.fixture(scope="session")
def generic_server() -> Iterator[GenericEmulator]:
    emulator = GenericEmulator()
    with emulator.serve():
        yield emulator


@pytest.fixture
def generic(generic_server: GenericEmulator) -> GenericEmulator:
    """The generic vendor, reset: default state, no faults, empty journal, real time."""
    generic_server.reset()
    return generic_server


@pytest.fixture
def make_client(
    generic: GenericEmulator, fast_retry: RetrySettings
) -> Iterator[Callable[..., HttpClient]]:
    """Build HttpClients named ``generic`` against the generic vendor; closed after the test."""
    clients: list[HttpClient] = []

    def make(**kwargs: Any) -> HttpClient:
        kwargs.setdefault("retry", fast_retry)
        kwargs.setdefault("timeouts", Timeouts(connect=2.0, read=5.0, write=5.0, pool=2.0))
        assert generic.base_url is not None
        client = HttpClient("generic", generic.base_url, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
