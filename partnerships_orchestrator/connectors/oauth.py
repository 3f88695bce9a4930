"""OAuth 2.0 access tokens for connectors: fetched, cached until expiry, refreshed on demand.

:class:`OAuthTokenProvider` runs the ``client_credentials`` or ``refresh_token`` grant against a
token endpoint (form-encoded POST through the shared :class:`HttpClient`), keeps the token until
``expires_in`` minus a skew (or, when the vendor sends no ``expires_in`` as Salesforce does, until
a call is refused), stores a rotated ``refresh_token`` and exposes extra fields such as
``instance_url``. :class:`OAuthAuth` plugs a provider into an :class:`HttpClient`: on a
stale-credentials answer the client asks it to refresh once, then retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from partnerships_orchestrator.connectors.errors import AuthenticationError
from partnerships_orchestrator.connectors.http import (
    Auth,
    BasicAuth,
    HttpClient,
    ResponsePolicy,
    RetrySettings,
    Timeouts,
    Verdict,
)

_REAUTHORIZE = (
    "re-authorize the connection: the vendor refused its client credentials or refresh token"
)


class OAuthSettings(BaseModel):
    """Where and how a connection obtains access tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_url: str
    grant_type: Literal["client_credentials", "refresh_token"] = "client_credentials"
    client_id: str
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    scope: str | None = None
    client_auth: Literal["body", "basic"] = Field(
        default="body", description="Send client_id/client_secret as form fields or HTTP Basic."
    )
    extra_params: dict[str, str] = Field(default_factory=dict)
    expiry_skew_seconds: float = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _refresh_grant_needs_token(self) -> OAuthSettings:
        if self.grant_type == "refresh_token" and self.refresh_token is None:
            raise ValueError("grant_type refresh_token needs a refresh_token")
        return self


@dataclass(frozen=True)
class OAuthToken:
    """An access token and the rest of the token response (``instance_url``, ``scope``, ...)."""

    access_token: str = field(repr=False)
    expires_at: float | None
    fields: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def get(self, name: str, default: Any = None) -> Any:
        """An extra field of the token response, e.g. ``instance_url``."""
        return self.fields.get(name, default)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class TokenEndpointPolicy(ResponsePolicy):
    """A token endpoint's 400/401/403 (``invalid_grant``, ``invalid_client``...) is final."""

    def classify(self, response: httpx.Response) -> Verdict:
        if response.status_code in (400, 401, 403):
            code = self.error_code(response) or f"HTTP {response.status_code}"
            message = self.error_message(response)
            return Verdict.fail(AuthenticationError, message, code=code, hint=_REAUTHORIZE)
        return super().classify(response)


class OAuthTokenProvider:
    """Thread-safe source of access tokens for one connection."""

    def __init__(
        self,
        name: str,
        settings: OAuthSettings,
        *,
        timeouts: Timeouts | None = None,
        retry: RetrySettings | None = None,
        on_rotate: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.settings = settings
        self._on_rotate = on_rotate
        self._clock = clock
        self._lock = threading.Lock()
        self._token: OAuthToken | None = None
        secret = settings.refresh_token
        self._refresh_token = secret.get_secret_value() if secret else None
        self._http = HttpClient(
            name,
            auth=self._client_auth(),
            policy=TokenEndpointPolicy(),
            timeouts=timeouts,
            retry=retry,
            headers={"Accept": "application/json"},
        )
        self._http.redactor.add_source(self.secrets)

    @property
    def refresh_token(self) -> str | None:
        """The current refresh token (after any rotation)."""
        return self._refresh_token

    def token(self) -> OAuthToken:
        """A valid token: the cached one, or a new one when none is cached or it expired."""
        with self._lock:
            if self._token is None or self._token.expired(self._clock()):
                self._token = self._fetch()
            return self._token

    def refresh(self, stale_access_token: str | None = None) -> OAuthToken:
        """A new token; if another thread already replaced ``stale_access_token``, that one."""
        with self._lock:
            current = self._token
            if current is not None and stale_access_token not in (None, current.access_token):
                return current
            self._token = self._fetch()
            return self._token

    def invalidate(self) -> None:
        """Forget the cached access token."""
        with self._lock:
            self._token = None

    def secrets(self) -> list[str]:
        """Client secret, refresh token and access token, for redaction."""
        token = self._token
        secret = self.settings.client_secret
        return [
            s
            for s in (
                secret.get_secret_value() if secret else None,
                self._refresh_token,
                token.access_token if token else None,
            )
            if s
        ]

    def close(self) -> None:
        self._http.close()

    def _client_auth(self) -> Auth | None:
        secret = self.settings.client_secret
        if self.settings.client_auth == "basic" and secret is not None:
            return BasicAuth(self.settings.client_id, secret.get_secret_value())
        return None

    def _form(self) -> dict[str, str]:
        settings = self.settings
        form = {"grant_type": settings.grant_type, **settings.extra_params}
        if settings.scope:
            form["scope"] = settings.scope
        if settings.grant_type == "refresh_token" and self._refresh_token:
            form["refresh_token"] = self._refresh_token
        if settings.client_auth == "body":
            form["client_id"] = settings.client_id
            if settings.client_secret is not None:
                form["client_secret"] = settings.client_secret.get_secret_value()
        return form

    def _fetch(self) -> OAuthToken:
        """Run the grant (caller holds the lock)."""
        requested_at = self._clock()
        payload = self._http.request_json("POST", self.settings.token_url, data=self._form())
        if not isinstance(payload, dict) or not payload.get("access_token"):
            raise self._no_token(payload)
        new_refresh = payload.get("refresh_token")
        if new_refresh and new_refresh != self._refresh_token:
            self._refresh_token = new_refresh
            if self._on_rotate is not None:
                self._on_rotate(new_refresh)
        extra = {k: v for k, v in payload.items() if k not in ("access_token", "refresh_token")}
        self._http.log.info(f"{self.name}: obtained an access token ({self.settings.grant_type})")
        return OAuthToken(payload["access_token"], self._expiry(payload, requested_at), extra)

    def _expiry(self, payload: Mapping[str, Any], requested_at: float) -> float | None:
        """When to stop using the token: ``expires_in`` less the skew (at most half of it)."""
        try:
            lifetime = float(payload["expires_in"])
        except (KeyError, TypeError, ValueError):
            return None
        skew = min(self.settings.expiry_skew_seconds, lifetime / 2)
        return requested_at + lifetime - skew

    def _no_token(self, payload: Any) -> AuthenticationError:
        code = payload.get("error") if isinstance(payload, dict) else None
        message = f"{self.name}: the token endpoint answered without an access_token"
        if code:
            message += f" (error: {code})"
        return AuthenticationError(
            self._http.redact(message),
            _REAUTHORIZE,
            vendor=self.name,
            status=200,
            code=str(code) if code else None,
        )


class OAuthAuth(Auth):
    """``Authorization: Bearer <access token>`` from a provider; refreshed when refused."""

    def __init__(self, provider: OAuthTokenProvider) -> None:
        self.provider = provider

    def apply(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = f"Bearer {self.provider.token().access_token}"

    def refresh(self, request: httpx.Request) -> bool:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.provider.refresh(sent or None)
        return True

    def secrets(self) -> list[str]:
        return self.provider.secrets()
