"""What the CRM connection resources (HubSpot, Salesforce) share as Dagster resources.

:class:`CRMResource` holds the fields every CRM connection has (timeouts, attempts, backoff),
resolves secret references (``${env:NAME}``, ``${vault:mount/path#key}``) only when a call needs
them, so configuration and run config only ever hold the reference, and owns one lazily built
:class:`HttpClient` per resource instance. :class:`RateLimitConfig` is
:class:`~partnerships_orchestrator.connectors.ratelimit.RateLimit` as Dagster config, written
``rate_limit: {requests: 100, per_seconds: 10}``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from partnerships_orchestrator.connectors.http import HttpClient, RetrySettings, Timeouts
from partnerships_orchestrator.connectors.ratelimit import RateLimit
from partnerships_orchestrator.connectors.secrets import SecretResolver
from partnerships_orchestrator.errors import SecretError


class RateLimitConfig(dg.Config, RateLimit):
    """A client-side ceiling of ``requests`` per ``per_seconds`` (a ``RateLimit``)."""


class CRMResource(dg.ConfigurableResource):
    """Base of the CRM resources: retry, timeout and secret handling, one HTTP client."""

    connection: str = Field(description="Connection name used in logs and error messages.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Read/write timeout per call.")
    max_attempts: int = Field(default=5, ge=1, description="Tries per call, the first included.")
    backoff_seconds: float = Field(default=0.5, ge=0, description="Backoff ceiling of retry 1.")
    backoff_max_seconds: float = Field(default=30.0, ge=0, description="Cap of any backoff.")

    _client: HttpClient | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _resolver: SecretResolver | None = PrivateAttr(default=None)
    # monotonic clock deciding access-token expiry; tests replace it to expire tokens
    _clock: Callable[[], float] = PrivateAttr(default=time.monotonic)

    def close(self) -> None:
        """Close the HTTP client (a later call builds a new one)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            self._close_client(client)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def http(self) -> HttpClient:
        """The connection's HTTP client, built (and its secrets resolved) on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def _build_client(self) -> HttpClient:
        raise NotImplementedError

    def _close_client(self, client: HttpClient) -> None:
        client.close()

    def _timeouts(self) -> Timeouts:
        t = self.timeout_seconds
        return Timeouts(connect=min(t, 10.0), read=t, write=t, pool=t)

    def _retry(self) -> RetrySettings:
        return RetrySettings(
            attempts=self.max_attempts,
            backoff_initial=self.backoff_seconds,
            backoff_max=max(self.backoff_max_seconds, self.backoff_seconds),
        )

    def _secret(self, value: str | None) -> str | None:
        """``value`` with secret references resolved; the error names the reference only."""
        if value is None:
            return None
        if self._resolver is None:
            self._resolver = SecretResolver.from_env()
        try:
            return self._resolver.resolve(value)
        except SecretError as exc:
            raise SecretError(f"{self.connection}: {exc.message}", exc.hint) from None

    def _failure_report(self, exc: Exception, **extra: Any) -> dict[str, Any]:
        """What ``check()`` returns when the connection does not work."""
        return {"ok": False, "connection": self.connection, "detail": str(exc), **extra}
