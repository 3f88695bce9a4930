"""OAuth token provider and its HttpClient auth, against the generic vendor's token endpoint."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from partnerships_orchestrator.connectors.errors import AuthenticationError
from partnerships_orchestrator.connectors.http import HttpClient, RetrySettings
from partnerships_orchestrator.connectors.oauth import (
    OAuthAuth,
    OAuthSettings,
    OAuthTokenProvider,
)
from partnerships_orchestrator_tests.emulators.core import ManualClock
from partnerships_orchestrator_tests.emulators.generic import GenericEmulator

MakeClient = Callable[..., HttpClient]
CLIENT_SECRET = "client-secret-1"


@pytest.fixture
def make_provider(
    generic: GenericEmulator, fast_retry: RetrySettings
) -> Iterator[Callable[..., OAuthTokenProvider]]:
    providers: list[OAuthTokenProvider] = []

    def make(*, on_rotate: Any = None, clock: Any = None, **settings: Any) -> OAuthTokenProvider:
        settings.setdefault("token_url", f"{generic.base_url}/oauth/token")
        settings.setdefault("client_id", "client-1")
        settings.setdefault("client_secret", CLIENT_SECRET)
        extra = {"clock": clock} if clock is not None else {}
        provider = OAuthTokenProvider(
            "generic", OAuthSettings(**settings), retry=fast_retry, on_rotate=on_rotate, **extra
        )
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider.close()


def paths(generic: GenericEmulator) -> list[str]:
    return [r.path for r in generic.requests()]


def test_client_credentials_token_is_fetched_once_and_reused(
    make_provider: Callable[..., OAuthTokenProvider],
    make_client: MakeClient,
    generic: GenericEmulator,
) -> None:
    provider = make_provider()
    client = make_client(auth=OAuthAuth(provider))
    for _ in range(3):
        assert client.request_json("GET", "/protected") == {"ok": True}
    assert paths(generic) == ["/oauth/token"] + ["/protected"] * 3
    form = generic.requests("/oauth/token")[0].form()
    assert form == {
        "grant_type": ["client_credentials"],
        "client_id": ["client-1"],
        "client_secret": [CLIENT_SECRET],
    }
    assert provider.token().get("instance_url") == generic.base_url


def test_basic_client_auth_keeps_the_secret_out_of_the_form(
    make_provider: Callable[..., OAuthTokenProvider], generic: GenericEmulator
) -> None:
    make_provider(client_auth="basic").token()
    request = generic.requests("/oauth/token")[0]
    assert request.headers["authorization"].startswith("Basic ")
    assert request.form() == {"grant_type": ["client_credentials"]}


def test_expired_token_is_refreshed_once_and_the_call_retried(
    make_provider: Callable[..., OAuthTokenProvider],
    make_client: MakeClient,
    generic: GenericEmulator,
) -> None:
    client = make_client(auth=OAuthAuth(make_provider()))
    client.request("GET", "/protected")
    generic.clock.advance(7200)  # the vendor now considers the token expired
    assert client.request_json("GET", "/protected") == {"ok": True}
    assert paths(generic) == [
        "/oauth/token",
        "/protected",
        "/protected",  # 401 EXPIRED_AUTHENTICATION
        "/oauth/token",
        "/protected",
    ]
    assert client.stats.auth_refreshes == 1


def test_token_is_renewed_from_expires_in_before_the_vendor_refuses_it(
    make_provider: Callable[..., OAuthTokenProvider],
    make_client: MakeClient,
    generic: GenericEmulator,
) -> None:
    generic.configure(expires_in=1800)
    clock = ManualClock()
    provider = make_provider(clock=clock, expiry_skew_seconds=60)
    client = make_client(auth=OAuthAuth(provider))
    client.request("GET", "/protected")
    clock.now = 1739  # still inside expires_in less the skew
    client.request("GET", "/protected")
    clock.now = 1741
    client.request("GET", "/protected")
    assert paths(generic) == [
        "/oauth/token",
        "/protected",
        "/protected",
        "/oauth/token",
        "/protected",
    ]
    assert client.stats.auth_refreshes == 0


def test_token_without_expires_in_is_kept_until_refused(
    make_provider: Callable[..., OAuthTokenProvider],
    make_client: MakeClient,
    generic: GenericEmulator,
) -> None:
    generic.configure(expires_in=None)
    clock = ManualClock()
    provider = make_provider(clock=clock)
    client = make_client(auth=OAuthAuth(provider))
    client.request("GET", "/protected")
    clock.now = 10**7
    client.request("GET", "/protected")
    assert len(generic.requests("/oauth/token")) == 1
    generic.revoke_access_tokens()  # session timeout
    client.request("GET", "/protected")
    assert len(generic.requests("/oauth/token")) == 2
    assert provider.token().expires_at is None


def test_rotated_refresh_token_is_stored_and_used_next(
    make_provider: Callable[..., OAuthTokenProvider], generic: GenericEmulator
) -> None:
    generic.configure(rotate_refresh_tokens=True)
    first = generic.issue_refresh_token()
    rotations: list[str] = []
    provider = make_provider(
        grant_type="refresh_token", refresh_token=first, on_rotate=rotations.append
    )
    provider.token()
    provider.refresh()
    sent = [r.form()["refresh_token"][0] for r in generic.requests("/oauth/token")]
    assert sent == [first, rotations[0]]
    assert len(rotations) == 2
    assert provider.refresh_token == rotations[-1] != first


def test_rejected_refresh_token_raises_authentication_error_without_secrets(
    make_provider: Callable[..., OAuthTokenProvider],
    generic: GenericEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    revoked = "refresh-revoked-secret-value"
    provider = make_provider(grant_type="refresh_token", refresh_token=revoked)
    with pytest.raises(AuthenticationError) as caught:
        provider.token()
    error = caught.value
    assert (error.vendor, error.status, error.code, error.retryable) == (
        "generic",
        400,
        "invalid_grant",
        False,
    )
    assert "generic" in str(error) and "invalid_grant" in str(error)
    assert "re-authorize" in (error.hint or "")
    for text in (str(error), caplog.text):
        assert revoked not in text
        assert CLIENT_SECRET not in text
    assert len(generic.requests("/oauth/token")) == 1


def test_a_second_401_after_refreshing_is_final(
    make_provider: Callable[..., OAuthTokenProvider],
    make_client: MakeClient,
    generic: GenericEmulator,
) -> None:
    generic.add_fault(path="/protected", status=401, body={"message": "no"}, times=None)
    client = make_client(auth=OAuthAuth(make_provider()))
    with pytest.raises(AuthenticationError):
        client.request("GET", "/protected")
    assert paths(generic) == ["/oauth/token", "/protected", "/oauth/token", "/protected"]


def test_token_endpoint_5xx_is_retried(
    make_provider: Callable[..., OAuthTokenProvider], generic: GenericEmulator
) -> None:
    generic.add_fault(path="/oauth/token", status=503)
    assert make_provider().token().access_token
    assert len(generic.requests("/oauth/token")) == 2


def test_200_without_an_access_token_is_an_authentication_error(
    make_provider: Callable[..., OAuthTokenProvider], generic: GenericEmulator
) -> None:
    generic.add_fault(
        path="/oauth/token", status=200, body={"ok": False, "error": "invalid_refresh_token"}
    )
    with pytest.raises(AuthenticationError) as caught:
        make_provider().token()
    assert caught.value.code == "invalid_refresh_token"


def test_concurrent_refreshes_of_the_same_stale_token_fetch_once(
    make_provider: Callable[..., OAuthTokenProvider], generic: GenericEmulator
) -> None:
    provider = make_provider()
    stale = provider.token().access_token
    barrier = threading.Barrier(6)

    def refresh() -> None:
        barrier.wait()
        provider.refresh(stale)

    threads = [threading.Thread(target=refresh) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(generic.requests("/oauth/token")) == 2
    assert provider.token().access_token != stale


def test_settings_refuse_a_refresh_grant_without_a_token_and_hide_secrets() -> None:
    with pytest.raises(ValidationError):
        OAuthSettings(token_url="https://x/token", client_id="c", grant_type="refresh_token")
    settings = OAuthSettings.model_validate(
        {"token_url": "https://x/token", "client_id": "c", "client_secret": "s3cr3t"}
    )
    assert "s3cr3t" not in repr(settings)
