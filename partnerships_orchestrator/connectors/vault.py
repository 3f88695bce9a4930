"""HashiCorp Vault over its HTTP API: KV v2 secrets, token or AppRole auth, token renewal.

:class:`VaultClient` reads and writes KV v2 secrets through the shared :class:`HttpClient`.
:class:`VaultTokenAuth` owns the token's life: it logs in with AppRole (or uses a static token),
renews the token (``renew-self``) once two thirds of its lease have passed, logs in again when
renewal stops extending it (max TTL) or fails, and re-authenticates once when Vault answers 403.
Sealed (503), quota (429) and 412 answers are retried; 200 and 204 both count as success.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from partnerships_orchestrator.connectors.errors import AuthenticationError, ResourceNotFound
from partnerships_orchestrator.connectors.http import (
    Auth,
    HttpClient,
    ResponsePolicy,
    RetrySettings,
    Timeouts,
    Verdict,
)
from partnerships_orchestrator.errors import ConfigurationError

_POLICY_HINT = "check the Vault path and policy"
_RENEW_AT = 2 / 3  # renew once this share of the lease has passed


class VaultSettings(BaseModel):
    """How to reach and log in to Vault."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    addr: str
    token: SecretStr | None = None
    role_id: SecretStr | None = None
    secret_id: SecretStr | None = None
    namespace: str | None = None
    approle_mount: str = "approle"
    renew_increment_seconds: int | None = Field(default=None, gt=0)
    timeouts: Timeouts = Timeouts(connect=5.0, read=15.0, write=15.0, pool=5.0)
    retry: RetrySettings = RetrySettings()

    @model_validator(mode="after")
    def _has_credentials(self) -> VaultSettings:
        if self.token is None and (self.role_id is None or self.secret_id is None):
            raise ValueError("needs a token, or an AppRole role_id and secret_id")
        return self

    @property
    def uses_approle(self) -> bool:
        return self.role_id is not None and self.secret_id is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VaultSettings | None:
        """Settings from ``VAULT_ADDR``, ``VAULT_TOKEN`` or ``VAULT_ROLE_ID``+``VAULT_SECRET_ID``,
        ``VAULT_NAMESPACE``; None when ``VAULT_ADDR`` is unset."""
        env = os.environ if environ is None else environ
        if not env.get("VAULT_ADDR"):
            return None
        values = {
            "addr": env["VAULT_ADDR"],
            "token": env.get("VAULT_TOKEN") or None,
            "role_id": env.get("VAULT_ROLE_ID") or None,
            "secret_id": env.get("VAULT_SECRET_ID") or None,
            "namespace": env.get("VAULT_NAMESPACE") or None,
        }
        try:
            return cls.model_validate(values)
        except ValidationError:
            raise ConfigurationError(
                "VAULT_ADDR is set but Vault has no credentials",
                "set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole",
            ) from None


class VaultPolicy(ResponsePolicy):
    """Vault's answers: 403 re-authenticates once, 404 is not found, 412/429/503 are retried."""

    retry_statuses = frozenset({408, 412, 425})

    def classify(self, response: httpx.Response) -> Verdict:
        status = response.status_code
        if status == 403:
            return Verdict.reauth(self.error_message(response), hint=_POLICY_HINT)
        if status == 404:
            return Verdict.fail(ResourceNotFound, "nothing at this path", hint=_POLICY_HINT)
        return super().classify(response)


class VaultLoginPolicy(VaultPolicy):
    """A refused login or renewal is final: the credentials themselves are wrong or spent."""

    def classify(self, response: httpx.Response) -> Verdict:
        if response.status_code in (400, 401, 403):
            hint = "check VAULT_TOKEN, or the AppRole role_id and secret_id"
            return Verdict.fail(AuthenticationError, self.error_message(response), hint=hint)
        return super().classify(response)


@dataclass
class _Lease:
    """The token in use and when it needs attention (times on the auth's clock)."""

    token: str = field(repr=False)
    renewable: bool
    issued_at: float
    ttl: float  # 0: never expires
    # the TTL granted at login: a renewal falling far short of it has reached the max TTL
    login_ttl: float = 0.0

    def __post_init__(self) -> None:
        self.login_ttl = self.login_ttl or self.ttl

    def renew_due(self, now: float) -> bool:
        return self.ttl > 0 and now >= self.issued_at + self.ttl * _RENEW_AT

    def near_max_ttl(self) -> bool:
        return self.ttl < self.login_ttl * (1 - _RENEW_AT)


class VaultTokenAuth(Auth):
    """``X-Vault-Token`` with the token kept alive: login, renew-self, re-login."""

    def __init__(
        self, settings: VaultSettings, session: HttpClient, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self._session = session
        self._clock = clock
        self._lock = threading.Lock()
        self._lease: _Lease | None = None
        self._session.redactor.add_source(self.secrets)

    def apply(self, request: httpx.Request) -> None:
        request.headers["X-Vault-Token"] = self.token()

    def refresh(self, request: httpx.Request) -> bool:
        """After a 403: log in again with AppRole (a static token cannot be replaced)."""
        if not self.settings.uses_approle:
            return False
        with self._lock:
            lease = self._lease
            if lease is None or lease.token == request.headers.get("X-Vault-Token"):
                self._lease = self._login()
        return True

    def secrets(self) -> list[str]:
        settings, lease = self.settings, self._lease
        values = [settings.token, settings.role_id, settings.secret_id]
        secrets = [v.get_secret_value() for v in values if v is not None]
        return secrets + ([lease.token] if lease else [])

    def token(self) -> str:
        """A live token: logging in, looking up or renewing first when needed."""
        with self._lock:
            if self._lease is None:
                self._lease = self._login() if self.settings.uses_approle else self._lookup()
            elif self._lease.renew_due(self._clock()):
                self._lease = self._renew(self._lease)
            return self._lease.token

    def _login(self) -> _Lease:
        settings = self.settings
        assert settings.role_id is not None and settings.secret_id is not None  # nosec B101 # invariant for mypy: AppRole login is chosen only with both set
        now = self._clock()
        body = {
            "role_id": settings.role_id.get_secret_value(),
            "secret_id": settings.secret_id.get_secret_value(),
        }
        payload = self._session.request_json(
            "POST", f"/v1/auth/{settings.approle_mount}/login", json=body
        )
        self._session.log.info(f"{self._session.name}: logged in with AppRole")
        return _lease_from_auth(payload, now)

    def _lookup(self) -> _Lease:
        """Learn the static token's remaining TTL."""
        assert self.settings.token is not None  # nosec B101 # invariant for mypy: token lookup is chosen only with a token
        token = self.settings.token.get_secret_value()
        now = self._clock()
        payload = self._session.request_json(
            "GET", "/v1/auth/token/lookup-self", headers={"X-Vault-Token": token}
        )
        data = (payload or {}).get("data") or {}
        return _Lease(token, bool(data.get("renewable")), now, float(data.get("ttl") or 0))

    def _renew(self, lease: _Lease) -> _Lease:
        """renew-self; log in again when renewal fails or no longer extends the lease."""
        if lease.renewable:
            try:
                renewed = self._renew_self(lease)
            except AuthenticationError:
                if not self.settings.uses_approle:
                    raise
            else:
                if not (renewed.near_max_ttl() and self.settings.uses_approle):
                    return renewed
        return self._login() if self.settings.uses_approle else lease

    def _renew_self(self, lease: _Lease) -> _Lease:
        now = self._clock()
        increment = self.settings.renew_increment_seconds
        body = {"increment": f"{increment}s"} if increment else {}
        payload = self._session.request_json(
            "POST",
            "/v1/auth/token/renew-self",
            json=body,
            headers={"X-Vault-Token": lease.token},
        )
        self._session.log.info(f"{self._session.name}: token renewed")
        return _lease_from_auth(payload, now, lease.token, lease.login_ttl)


def _lease_from_auth(
    payload: Any, now: float, token: str | None = None, login_ttl: float = 0.0
) -> _Lease:
    auth = (payload or {}).get("auth") or {}
    client_token = auth.get("client_token") or token
    if not client_token:
        raise AuthenticationError("Vault login answered without a token", vendor="vault")
    ttl = float(auth.get("lease_duration") or 0)
    return _Lease(client_token, bool(auth.get("renewable")), now, ttl, login_ttl)


@dataclass(frozen=True)
class KvSecret:
    """One KV v2 secret version: ``data`` is the key/value map."""

    data: Mapping[str, Any] = field(repr=False)
    version: int | None
    lease_duration: float
    metadata: Mapping[str, Any] = field(default_factory=dict)


class VaultClient:
    """KV v2 secrets over the shared HTTP client."""

    def __init__(
        self,
        settings: VaultSettings,
        *,
        name: str = "vault",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        headers = {"X-Vault-Namespace": settings.namespace} if settings.namespace else None
        common: dict[str, Any] = {
            "timeouts": settings.timeouts,
            "retry": settings.retry,
            "headers": headers,
            "sleep": sleep,
        }
        base = settings.addr.rstrip("/")
        self._session = HttpClient(name, base, policy=VaultLoginPolicy(), **common)
        self.auth = VaultTokenAuth(settings, self._session, clock)
        self.http = HttpClient(name, base, auth=self.auth, policy=VaultPolicy(), **common)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VaultClient | None:
        """A client configured from ``VAULT_*`` variables; None when ``VAULT_ADDR`` is unset."""
        settings = VaultSettings.from_env(environ)
        return cls(settings) if settings else None

    def read_kv(self, mount: str, path: str, *, version: int | None = None) -> KvSecret:
        """Read a KV v2 secret; ResourceNotFound when nothing is stored there."""
        params = {"version": version} if version is not None else None
        payload = self.http.request_json("GET", _kv_url(mount, path), params=params) or {}
        body = payload.get("data") or {}
        metadata = body.get("metadata") or {}
        return KvSecret(
            data=body.get("data") or {},
            version=metadata.get("version"),
            lease_duration=float(payload.get("lease_duration") or 0),
            metadata=metadata,
        )

    def write_kv(
        self, mount: str, path: str, data: Mapping[str, Any], *, cas: int | None = None
    ) -> int | None:
        """Write a new version of a KV v2 secret; return its version when Vault says."""
        body: dict[str, Any] = {"data": dict(data)}
        if cas is not None:
            body["options"] = {"cas": cas}
        payload = self.http.request_json("POST", _kv_url(mount, path), json=body) or {}
        return (payload.get("data") or {}).get("version")

    def lookup_self(self) -> Mapping[str, Any]:
        """The current token's properties (``ttl``, ``policies``, ``renewable``...)."""
        return (self.http.request_json("GET", "/v1/auth/token/lookup-self") or {}).get("data") or {}

    def close(self) -> None:
        self.http.close()
        self._session.close()


def _kv_url(mount: str, path: str) -> str:
    return f"/v1/{mount.strip('/')}/data/{path.strip('/')}"
