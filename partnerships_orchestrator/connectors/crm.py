"""What the CRM connection resources (HubSpot, Salesforce) share on top of every connector.

:class:`CRMResource` adds the connection's name (used in logs and errors), the clock that decides
access-token expiry, and the failure report of ``check()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pydantic import Field, PrivateAttr

from partnerships_orchestrator.connectors.oauth import OAuthSettings, OAuthTokenProvider
from partnerships_orchestrator.connectors.ratelimit import RateLimitConfig
from partnerships_orchestrator.connectors.resource import VendorResource

__all__ = ["CRMResource", "RateLimitConfig"]


class CRMResource(VendorResource):
    """Base of the CRM resources."""

    connection: str = Field(description="Connection name used in logs and error messages.")

    # monotonic clock deciding access-token expiry; tests replace it to expire tokens
    _clock: Callable[[], float] = PrivateAttr(default=time.monotonic)

    @property
    def label(self) -> str:
        return self.connection

    def _secret(self, value: str | None) -> str | None:  # type: ignore[override]
        """``value`` with secret references resolved (None stays None)."""
        return None if value is None else super()._secret(value)

    def _oauth_provider(
        self,
        token_url: str,
        grant: str,
        client_id: str | None,
        client_secret: str | None,
        refresh_token: str | None,
    ) -> OAuthTokenProvider:
        """An OAuth token provider for this connection (secrets resolved now, at first use)."""
        settings = OAuthSettings(
            token_url=token_url,
            grant_type=grant,
            client_id=self._secret(client_id) or "",
            client_secret=self._secret(client_secret),
            refresh_token=self._secret(refresh_token),
        )
        return OAuthTokenProvider(
            self.connection,
            settings,
            timeouts=self._timeouts(),
            retry=self._retry(),
            clock=self._clock,
        )

    def _failure_report(self, exc: Exception, **extra: Any) -> dict[str, Any]:
        """What ``check()`` returns when the connection does not work."""
        return {"ok": False, "connection": self.connection, "detail": str(exc), **extra}
