"""Vault KV v2 client against the Vault emulator; the emulator itself checked with ``hvac``."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import hvac
import hvac.exceptions
import pytest

from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    ResourceNotFound,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.vault import VaultClient, VaultSettings
from partnerships_orchestrator.errors import ConfigurationError
from partnerships_orchestrator_tests.emulators.vault import VaultEmulator

MakeVault = Callable[..., VaultClient]
ROLE_ID = "role-partnerships"
SECRET_ID = "secret-id-9f8e7d"
HUBSPOT = {"token": "pat-na1-hubspot-secret", "portal": "42"}


@pytest.fixture
def approle(vault: VaultEmulator) -> VaultEmulator:
    """An AppRole allowed to read and write ``secret/partnerships/*``, and one stored secret."""
    vault.add_policy("partnerships", ["secret/data/partnerships/*"])
    vault.add_approle(ROLE_ID, SECRET_ID, ["partnerships"])
    vault.put_secret("secret", "partnerships/hubspot", HUBSPOT)
    return vault


def calls(vault: VaultEmulator) -> list[str]:
    """The journal as ``METHOD path`` without the ``/v1/`` prefix."""
    return [f"{r.method} {r.path.removeprefix('/v1/')}" for r in vault.requests()]


LOGIN = "POST auth/approle/login"
READ = "GET secret/data/partnerships/hubspot"
RENEW = "POST auth/token/renew-self"


def test_static_token_reads_kv_v2_data(vault: VaultEmulator, make_vault: MakeVault) -> None:
    vault.put_secret("secret", "partnerships/hubspot", {"token": "v1"})
    vault.put_secret("secret", "partnerships/hubspot", HUBSPOT)
    token = vault.create_token()
    secret = make_vault(token=token).read_kv("secret", "partnerships/hubspot")
    assert (dict(secret.data), secret.version, secret.lease_duration) == (HUBSPOT, 2, 0)
    assert calls(vault) == ["GET auth/token/lookup-self", READ]
    assert vault.requests("/v1/secret")[0].headers["x-vault-token"] == token


def test_an_older_version_can_be_read(vault: VaultEmulator, make_vault: MakeVault) -> None:
    vault.put_secret("secret", "partnerships/hubspot", {"token": "v1"})
    vault.put_secret("secret", "partnerships/hubspot", {"token": "v2"})
    client = make_vault(token=vault.create_token())
    assert client.read_kv("secret", "partnerships/hubspot", version=1).data == {"token": "v1"}


def test_emulator_accepts_a_bearer_token(vault: VaultEmulator) -> None:
    vault.put_secret("secret", "x", {"k": "v"})
    headers = {"Authorization": f"Bearer {vault.create_token()}"}
    answer = httpx.get(f"{vault.base_url}/v1/secret/data/x", headers=headers)
    assert answer.json()["data"]["data"] == {"k": "v"}


def test_approle_login_then_read_without_leaking_credentials(
    approle: VaultEmulator, make_vault: MakeVault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_vault(role_id=ROLE_ID, secret_id=SECRET_ID)
    assert client.read_kv("secret", "partnerships/hubspot").data == HUBSPOT
    assert calls(approle) == [LOGIN, READ]
    assert approle.requests("/v1/auth")[0].json() == {"role_id": ROLE_ID, "secret_id": SECRET_ID}
    token = approle.requests("/v1/secret")[0].headers["x-vault-token"]
    for secret in (SECRET_ID, ROLE_ID, token):
        assert secret not in caplog.text


def test_token_is_renewed_after_two_thirds_of_its_ttl(
    approle: VaultEmulator, make_vault: MakeVault
) -> None:
    approle.configure(token_ttl=1200, token_max_ttl=7200)
    client = make_vault(role_id=ROLE_ID, secret_id=SECRET_ID, clock=approle.clock.now)
    client.read_kv("secret", "partnerships/hubspot")
    approle.clock.advance(700)
    client.read_kv("secret", "partnerships/hubspot")
    approle.clock.advance(200)  # 900 s > 2/3 of 1200 s
    client.read_kv("secret", "partnerships/hubspot")
    assert calls(approle) == [LOGIN, READ, READ, RENEW, READ]
    assert approle.requests("/v1/auth/token/renew-self")[0].headers["x-vault-token"]


def test_renewal_capped_by_max_ttl_leads_to_a_new_login(
    approle: VaultEmulator, make_vault: MakeVault
) -> None:
    approle.configure(token_ttl=1200, token_max_ttl=1000)
    client = make_vault(role_id=ROLE_ID, secret_id=SECRET_ID, clock=approle.clock.now)
    client.read_kv("secret", "partnerships/hubspot")
    approle.clock.advance(900)  # renewal can only add 100 s before the max TTL
    client.read_kv("secret", "partnerships/hubspot")
    assert calls(approle) == [LOGIN, READ, RENEW, LOGIN, READ]


def test_expired_token_gets_403_then_one_new_login_then_success(
    approle: VaultEmulator, make_vault: MakeVault
) -> None:
    client = make_vault(role_id=ROLE_ID, secret_id=SECRET_ID)  # real clock: it cannot foresee
    client.read_kv("secret", "partnerships/hubspot")
    approle.clock.advance(5000)  # past the token's TTL on Vault's side
    assert client.read_kv("secret", "partnerships/hubspot").data == HUBSPOT
    assert calls(approle) == [LOGIN, READ, READ, LOGIN, READ]
    assert client.http.stats.auth_refreshes == 1


def test_permission_denied_with_a_static_token_is_not_retried(
    approle: VaultEmulator, make_vault: MakeVault
) -> None:
    client = make_vault(token=approle.create_token(["other"]))
    with pytest.raises(AuthenticationError) as caught:
        client.read_kv("secret", "partnerships/hubspot")
    assert caught.value.status == 403
    assert "permission denied" in str(caught.value)
    assert caught.value.hint == "check the Vault path and policy"
    assert len(approle.requests("/v1/secret")) == 1


def test_permission_denied_with_approle_logs_in_again_once_then_fails(
    approle: VaultEmulator, make_vault: MakeVault
) -> None:
    approle.put_secret("secret", "finance/bank", {"iban": "x"})
    client = make_vault(role_id=ROLE_ID, secret_id=SECRET_ID)
    with pytest.raises(AuthenticationError):
        client.read_kv("secret", "finance/bank")
    read = "GET secret/data/finance/bank"
    assert calls(approle) == [LOGIN, read, LOGIN, read]


def test_wrong_approle_secret_is_an_authentication_error(
    approle: VaultEmulator, make_vault: MakeVault
) -> None:
    with pytest.raises(AuthenticationError) as caught:
        make_vault(role_id=ROLE_ID, secret_id="wrong-secret-id").read_kv("secret", "partnerships/x")
    assert "invalid role or secret ID" in str(caught.value)
    assert "wrong-secret-id" not in str(caught.value)
    assert calls(approle) == [LOGIN]


def test_missing_secret_is_not_found_without_retrying(
    approle: VaultEmulator, make_vault: MakeVault
) -> None:
    client = make_vault(role_id=ROLE_ID, secret_id=SECRET_ID)
    with pytest.raises(ResourceNotFound) as caught:
        client.read_kv("secret", "partnerships/nothing")
    assert caught.value.status == 404
    assert calls(approle) == [LOGIN, "GET secret/data/partnerships/nothing"]


def test_sealed_vault_503_is_retried(approle: VaultEmulator, make_vault: MakeVault) -> None:
    approle.add_fault(path="/v1/secret", status=503, body={"errors": ["Vault is sealed"]}, times=2)
    client = make_vault(role_id=ROLE_ID, secret_id=SECRET_ID)
    assert client.read_kv("secret", "partnerships/hubspot").data == HUBSPOT
    assert calls(approle) == [LOGIN, READ, READ, READ]


def test_quota_429_is_retried(approle: VaultEmulator, make_vault: MakeVault) -> None:
    body = {
        "errors": ['request path "secret/data/partnerships/hubspot": rate limit quota exceeded']
    }
    approle.add_fault(path="/v1/secret", status=429, body=body, headers={"Retry-After": "0"})
    client = make_vault(role_id=ROLE_ID, secret_id=SECRET_ID)
    assert client.read_kv("secret", "partnerships/hubspot").data == HUBSPOT
    assert client.http.stats.rate_limited == 1


def test_writes_accept_200_and_204_and_check_and_set_conflicts_are_refused(
    approle: VaultEmulator, make_vault: MakeVault
) -> None:
    client = make_vault(role_id=ROLE_ID, secret_id=SECRET_ID)
    assert client.write_kv("secret", "partnerships/slack", {"token": "xoxb-1"}, cas=0) == 1
    approle.add_fault(path="/v1/secret", method="POST", status=204)
    assert client.write_kv("secret", "partnerships/slack", {"token": "xoxb-2"}) is None
    with pytest.raises(VendorValidationError) as caught:
        client.write_kv("secret", "partnerships/slack", {"token": "xoxb-3"}, cas=0)
    assert "check-and-set parameter did not match" in str(caught.value)
    assert "xoxb" not in str(caught.value)


def test_namespace_header_is_sent(approle: VaultEmulator, make_vault: MakeVault) -> None:
    make_vault(role_id=ROLE_ID, secret_id=SECRET_ID, namespace="partners").read_kv(
        "secret", "partnerships/hubspot"
    )
    assert {r.headers.get("x-vault-namespace") for r in approle.requests()} == {"partners"}


def test_settings_from_the_environment() -> None:
    assert VaultSettings.from_env({}) is None
    approle = VaultSettings.from_env(
        {"VAULT_ADDR": "http://vault:8200", "VAULT_ROLE_ID": "r", "VAULT_SECRET_ID": "s"}
    )
    assert approle is not None and approle.uses_approle
    token = VaultSettings.from_env({"VAULT_ADDR": "http://vault:8200", "VAULT_TOKEN": "t"})
    assert token is not None and not token.uses_approle
    with pytest.raises(ConfigurationError) as caught:
        VaultSettings.from_env({"VAULT_ADDR": "http://vault:8200"})
    assert "VAULT_ROLE_ID" in (caught.value.hint or "")


def test_emulator_speaks_vault_protocol_to_the_official_hvac_client(
    approle: VaultEmulator,
) -> None:
    client = hvac.Client(url=approle.base_url)
    client.auth.approle.login(role_id=ROLE_ID, secret_id=SECRET_ID)
    assert client.is_authenticated()
    kv = client.secrets.kv.v2
    kv.create_or_update_secret("partnerships/slack", {"token": "xoxb-1"}, mount_point="secret")
    read = kv.read_secret_version(
        "partnerships/slack", mount_point="secret", raise_on_deleted_version=True
    )
    assert (read["data"]["data"], read["data"]["metadata"]["version"]) == ({"token": "xoxb-1"}, 1)
    renewed = client.auth.token.renew_self(increment="30m")
    assert renewed["auth"]["lease_duration"] == 1800
    assert client.auth.token.lookup_self()["data"]["policies"] == ["default", "partnerships"]
    kv.delete_latest_version_of_secret("partnerships/slack", mount_point="secret")
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(
            "partnerships/slack", mount_point="secret", raise_on_deleted_version=True
        )
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(
            "partnerships/none", mount_point="secret", raise_on_deleted_version=True
        )
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.read_secret_version("finance/bank", mount_point="secret", raise_on_deleted_version=True)
    approle.add_fault(path="/v1/secret", status=503, body={"errors": ["Vault is sealed"]})
    with pytest.raises(hvac.exceptions.VaultDown):
        kv.read_secret_version(
            "partnerships/hubspot", mount_point="secret", raise_on_deleted_version=True
        )
    assert not hvac.Client(url=approle.base_url, token="hvs.bogus").is_authenticated()
