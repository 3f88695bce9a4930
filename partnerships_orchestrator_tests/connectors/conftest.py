"""Loopback emulators for the shared connector tests: one server per session, fresh per test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from partnerships_orchestrator.connectors.http import HttpClient, RetrySettings, Timeouts
from partnerships_orchestrator.connectors.vault import VaultClient, VaultSettings
from partnerships_orchestrator_tests.emulators.core import Emulator
from partnerships_orchestrator_tests.emulators.generic import GenericEmulator
from partnerships_orchestrator_tests.emulators.hubspot import HubSpotEmulator
from partnerships_orchestrator_tests.emulators.mailgun import MailgunEmulator
from partnerships_orchestrator_tests.emulators.salesforce import SalesforceEmulator
from partnerships_orchestrator_tests.emulators.sendgrid import SendGridEmulator
from partnerships_orchestrator_tests.emulators.slack import SlackEmulator
from partnerships_orchestrator_tests.emulators.teams import TeamsEmulator
from partnerships_orchestrator_tests.emulators.twilio import TwilioEmulator
from partnerships_orchestrator_tests.emulators.vault import VaultEmulator


@pytest.fixture
def fast_retry() -> RetrySettings:
    """Production retry logic with backoffs short enough for a test suite."""
    return RetrySettings(attempts=4, backoff_initial=0.01, backoff_max=0.05)


def emulator_fixtures(name: str, factory: Callable[[], Emulator[Any]]) -> tuple[Any, Any]:
    """``<name>_server``: the emulator served once per session; ``<name>``: it, reset for a test
    (default state, no faults, an empty journal and real time)."""

    @pytest.fixture(scope="session", name=f"{name}_server")
    def server() -> Iterator[Emulator[Any]]:
        emulator = factory()
        with emulator.serve():
            yield emulator

    @pytest.fixture(name=name)
    def fresh(request: pytest.FixtureRequest) -> Emulator[Any]:
        emulator: Emulator[Any] = request.getfixturevalue(f"{name}_server")
        emulator.reset()
        return emulator

    return server, fresh


generic_server, generic = emulator_fixtures("generic", GenericEmulator)
vault_server, vault = emulator_fixtures("vault", VaultEmulator)
hubspot_server, hubspot = emulator_fixtures("hubspot", HubSpotEmulator)
salesforce_server, salesforce = emulator_fixtures("salesforce", SalesforceEmulator)
sendgrid_server, sendgrid = emulator_fixtures("sendgrid", SendGridEmulator)
mailgun_server, mailgun = emulator_fixtures("mailgun", MailgunEmulator)
twilio_server, twilio = emulator_fixtures("twilio", TwilioEmulator)
slack_server, slack = emulator_fixtures("slack", SlackEmulator)
teams_server, teams = emulator_fixtures("teams", TeamsEmulator)


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
