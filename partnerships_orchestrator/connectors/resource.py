"""What every vendor connection resource shares as a Dagster resource.

:class:`VendorResource` holds the fields every connection has (timeout, attempts, backoff),
resolves secret references (``${env:NAME}``, ``${vault:mount/path#key}``) only when a call needs
them, so configuration and run config only ever hold the reference, and owns one lazily built
:class:`~partnerships_orchestrator.connectors.http.HttpClient` per resource instance.
"""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
from pydantic import ConfigDict, Field, PrivateAttr

from partnerships_orchestrator.connectors.http import HttpClient, RetrySettings, Timeouts
from partnerships_orchestrator.connectors.secrets import SecretResolver
from partnerships_orchestrator.errors import SecretError


class VendorResource(dg.ConfigurableResource):
    """Base of the connector resources: retries, timeouts, secrets and one HTTP client."""

    # a refused configuration must not echo its values: they may be secrets
    model_config = ConfigDict(hide_input_in_errors=True)

    timeout_seconds: float = Field(default=30.0, gt=0, description="Read/write timeout per call.")
    max_attempts: int = Field(default=5, ge=1, description="Tries per call, the first included.")
    backoff_seconds: float = Field(default=0.5, ge=0, description="Backoff ceiling of retry 1.")
    backoff_max_seconds: float = Field(default=30.0, ge=0, description="Cap of any backoff.")

    _client: HttpClient | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _resolver: SecretResolver | None = PrivateAttr(default=None)

    @property
    def label(self) -> str:
        """How errors and logs name this connection."""
        raise NotImplementedError

    def http(self) -> Any:
        """The connection's HTTP client, built (and its secrets resolved) on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def close(self) -> None:
        """Close the HTTP client (a later call builds a new one)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            self._close_client(client)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

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

    def _secret(self, value: str) -> str:
        """``value`` with secret references resolved; the error names the reference only."""
        if self._resolver is None:
            self._resolver = SecretResolver.from_env()
        try:
            return self._resolver.resolve(value)
        except SecretError as exc:
            if exc.message.startswith(f"{self.label}:"):
                raise
            raise SecretError(f"{self.label}: {exc.message}", exc.hint) from None
