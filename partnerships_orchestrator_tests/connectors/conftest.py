"""Loopback emulators for the shared connector tests: one server per session, fresh per test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from partnerships_orchestrator.connectors.http import HttpClient, RetrySettings, Timeouts
from partnerships_orchestrator.connectors.vault import VaultClient, VaultSettings
from partnerships_orchestrator_tests.emulators.generic import GenericEmulator
from partnerships_orchestrator_tests.emulators.vault import VaultEmulator


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


@pytest.fixture(scope="session")
def vault_server() -> Iterator[VaultEmulator]:
    emulator = VaultEmulator()
    with emulator.serve():
        yield emulator


@pytest.fixture
def vault(vault_server: VaultEmulator) -> VaultEmulator:
    """The Vault emulator, reset."""
    vault_server.reset()
    return vault_server


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


@pytest.fixture
def make_vault(
    vault: VaultEmulator, fast_retry: RetrySettings
) -> Iterator[Callable[..., VaultClient]]:
    """Build VaultClients against the Vault emulator (``VaultSettings`` fields as keywords)."""
    clients: list[VaultClient] = []

    def make(*, clock: Callable[[], float] | None = None, **settings: Any) -> VaultClient:
        settings.setdefault("retry", fast_retry)
        client = VaultClient(
            VaultSettings(addr=vault.base_url or "", **settings), clock=clock or time.monotonic
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
