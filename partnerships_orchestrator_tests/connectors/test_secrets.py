"""Secret references: ``${env:NAME}`` and ``${vault:mount/path#key}`` (Vault emulator)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from partnerships_orchestrator.connectors.secrets import (
    SecretReference,
    SecretResolver,
    find_references,
    has_references,
)
from partnerships_orchestrator.connectors.vault import VaultClient
from partnerships_orchestrator.errors import ConfigurationError, SecretError
from partnerships_orchestrator_tests.emulators.core import ManualClock
from partnerships_orchestrator_tests.emulators.vault import VaultEmulator

MakeVault = Callable[..., VaultClient]
HUBSPOT_REF = "${vault:secret/partnerships/hubspot#token}"
HUBSPOT_TOKEN = "pat-na1-hubspot-secret"
HUBSPOT = {"token": HUBSPOT_TOKEN, "portal": 42, "scopes": ["crm"]}


@pytest.fixture
def stored(vault: VaultEmulator) -> str:
    """A root token, with the HubSpot secret stored."""
    vault.put_secret("secret", "partnerships/hubspot", HUBSPOT)
    return vault.create_token()


@pytest.mark.parametrize(
    ("text", "references"),
    [
        ("plain text", []),
        ("${env:TOKEN}", [SecretReference("env", "TOKEN")]),
        (
            "Bearer ${env:A} and ${vault:secret/x/y#k}",
            [SecretReference("env", "A"), SecretReference("vault", "secret/x/y#k")],
        ),
        ("$${env:LITERAL} is escaped", []),
        ("${other:thing} is not a reference", []),
        ("{{ jinja }} and $HOME are not references", []),
    ],
)
def test_find_references(text: str, references: list[SecretReference]) -> None:
    assert find_references(text) == references
    assert has_references(text) is bool(references)


def test_env_references_resolve_inside_strings() -> None:
    resolver = SecretResolver(environ={"A": "alpha", "B": "beta"})
    assert resolver.resolve("${env:A}-${env:B} $${env:A}") == "alpha-beta ${env:A}"
    assert resolver.resolve("no references") == "no references"


def test_missing_env_variable_names_the_reference_and_how_to_fix_it() -> None:
    resolver = SecretResolver(environ={"OTHER": "value-that-must-not-leak"})
    with pytest.raises(SecretError) as caught:
        resolver.resolve("Bearer ${env:HUBSPOT_TOKEN}")
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert "${env:HUBSPOT_TOKEN}" in str(error)
    assert error.hint == "set the environment variable HUBSPOT_TOKEN"
    assert "value-that-must-not-leak" not in str(error)


def test_empty_env_variable_is_refused() -> None:
    with pytest.raises(SecretError, match=r"\$\{env:TOKEN\} resolves to an empty value"):
        SecretResolver(environ={"TOKEN": ""}).resolve("${env:TOKEN}")


def test_resolve_all_walks_connection_settings() -> None:
    resolver = SecretResolver(environ={"T": "tok", "K": "key"})
    settings = {"token": "${env:T}", "rate_limit": {"requests": 100}, "keys": ["${env:K}", 3]}
    assert resolver.resolve_all(settings) == {
        "token": "tok",
        "rate_limit": {"requests": 100},
        "keys": ["key", 3],
    }


def test_vault_reference_resolves_through_kv_v2(
    vault: VaultEmulator, stored: str, make_vault: MakeVault
) -> None:
    resolver = SecretResolver(environ={}, vault=make_vault(token=stored))
    assert resolver.resolve(f"Bearer {HUBSPOT_REF}") == f"Bearer {HUBSPOT_TOKEN}"
    assert resolver.resolve("${vault:secret/partnerships/hubspot#portal}") == "42"
    assert resolver.resolve("${vault:secret/partnerships/hubspot#scopes}") == '["crm"]'
    assert len(vault.requests("/v1/secret")) == 1  # one read serves every key of the path


def test_vault_reads_are_cached_for_the_ttl(
    vault: VaultEmulator, stored: str, make_vault: MakeVault
) -> None:
    clock = ManualClock()
    resolver = SecretResolver(vault=make_vault(token=stored), cache_ttl=300, clock=clock)
    resolver.resolve(HUBSPOT_REF)
    clock.now = 299
    resolver.resolve(HUBSPOT_REF)
    assert len(vault.requests("/v1/secret")) == 1
    clock.now = 301
    resolver.resolve(HUBSPOT_REF)
    assert len(vault.requests("/v1/secret")) == 2


def test_missing_vault_path_names_the_reference(stored: str, make_vault: MakeVault) -> None:
    resolver = SecretResolver(vault=make_vault(token=stored))
    with pytest.raises(SecretError) as caught:
        resolver.resolve("${vault:secret/partnerships/nothing#token}")
    assert "${vault:secret/partnerships/nothing#token}" in str(caught.value)
    assert caught.value.hint == "check the Vault path and policy"


def test_missing_vault_key_lists_the_keys_but_no_values(stored: str, make_vault: MakeVault) -> None:
    resolver = SecretResolver(vault=make_vault(token=stored))
    with pytest.raises(SecretError) as caught:
        resolver.resolve("${vault:secret/partnerships/hubspot#tokn}")
    assert caught.value.hint == "keys present: portal, scopes, token"
    assert HUBSPOT_TOKEN not in str(caught.value)


def test_vault_permission_denied_becomes_a_secret_error(
    vault: VaultEmulator, make_vault: MakeVault
) -> None:
    vault.put_secret("secret", "partnerships/hubspot", HUBSPOT)
    token = vault.create_token(["nothing"])
    resolver = SecretResolver(vault=make_vault(token=token))
    with pytest.raises(SecretError) as caught:
        resolver.resolve(HUBSPOT_REF)
    assert HUBSPOT_REF in str(caught.value)
    assert "permission denied" in str(caught.value)
    assert "check the Vault path and policy" in (caught.value.hint or "")
    assert token not in str(caught.value)


def test_unavailable_vault_becomes_a_secret_error(
    vault: VaultEmulator, stored: str, make_vault: MakeVault
) -> None:
    vault.add_fault(path="/v1/secret", status=503, body={"errors": ["Vault is sealed"]}, times=None)
    with pytest.raises(SecretError, match="Vault is unavailable"):
        SecretResolver(vault=make_vault(token=stored)).resolve(HUBSPOT_REF)


@pytest.mark.parametrize(
    "reference",
    ["${vault:hubspot#token}", "${vault:secret/partnerships/hubspot}", "${vault:secret/x#}"],
)
def test_malformed_vault_reference_says_how_to_write_one(reference: str) -> None:
    with pytest.raises(SecretError) as caught:
        SecretResolver().resolve(reference)
    assert reference in str(caught.value)
    assert "${vault:<mount>/<path>#<key>}" in (caught.value.hint or "")


def test_vault_reference_without_vault_configured() -> None:
    with pytest.raises(SecretError) as caught:
        SecretResolver.from_env({}).resolve(HUBSPOT_REF)
    assert "set VAULT_ADDR" in (caught.value.hint or "")


def test_vault_address_without_credentials() -> None:
    with pytest.raises(SecretError) as caught:
        SecretResolver.from_env({"VAULT_ADDR": "http://127.0.0.1:1"}).resolve(HUBSPOT_REF)
    assert HUBSPOT_REF in str(caught.value)
    assert "VAULT_TOKEN" in (caught.value.hint or "")


def test_from_env_configures_env_and_vault_approle(vault: VaultEmulator) -> None:
    vault.put_secret("secret", "partnerships/hubspot", HUBSPOT)
    vault.add_policy("partnerships", ["secret/data/partnerships/*"])
    vault.add_approle("role-1", "secret-id-1", ["partnerships"])
    environ = {
        "VAULT_ADDR": vault.base_url or "",
        "VAULT_ROLE_ID": "role-1",
        "VAULT_SECRET_ID": "secret-id-1",
        "SLACK_BOT_TOKEN": "xoxb-1",
    }
    resolver = SecretResolver.from_env(environ)
    try:
        resolved = resolver.resolve(f"{HUBSPOT_REF} ${{env:SLACK_BOT_TOKEN}}")
    finally:
        resolver.close()
    assert resolved == f"{HUBSPOT_TOKEN} xoxb-1"
    assert [r.path for r in vault.requests()] == [
        "/v1/auth/approle/login",
        "/v1/secret/data/partnerships/hubspot",
    ]
