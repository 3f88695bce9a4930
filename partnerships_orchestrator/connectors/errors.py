"""Errors raised by vendor connectors: one class per way a vendor call can end badly.

::

    ConnectorError                    (partnerships_orchestrator.errors) a vendor call failed
    └── VendorError                   names the connection (``vendor``), the HTTP ``status`` and
        │                             the vendor's own error ``code`` when there is one
        ├── AuthenticationError       credentials refused, or a refresh token rejected: never retried
        ├── VendorValidationError     the vendor refused the request (4xx) with a message: never retried
        │   └── ResourceNotFound      the addressed object does not exist (404)
        ├── RateLimitExceeded         still rate limited (429 or the vendor's equivalent) after retries
        ├── QuotaExhausted            a daily or org-wide allowance is gone: stop, do not spin
        ├── VendorUnavailable         5xx, connection errors or malformed answers, after retries
        └── ConnectorTimeout          the vendor did not answer in time, after retries

``retryable`` tells a caller (e.g. a Dagster ``RetryPolicy`` decision) whether trying the whole
operation again later can help. Messages never contain a secret: the HTTP client redacts every
secret it knows before building one.
"""

from __future__ import annotations

from typing import ClassVar

from partnerships_orchestrator.errors import ConnectorError


class VendorError(ConnectorError):
    """A call to the connection ``vendor`` failed; ``status`` is the HTTP status if one came back."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        vendor: str,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.vendor = vendor
        self.status = status
        self.code = code
        self.retry_after = retry_after
        super().__init__(message, hint)


class AuthenticationError(VendorError):
    """Credentials were refused (401/403, invalid_grant): retrying cannot help."""


class VendorValidationError(VendorError):
    """The vendor refused the request as invalid; the message is the vendor's own."""


class ResourceNotFound(VendorValidationError):
    """The addressed object does not exist at the vendor (404)."""


class RateLimitExceeded(VendorError):
    """The vendor kept rate limiting after every retry; ``retry_after`` says when to come back."""

    retryable = True


class QuotaExhausted(VendorError):
    """A daily or org-wide allowance is used up: stop until it resets instead of spinning."""


class VendorUnavailable(VendorError):
    """The vendor failed (5xx, dropped connection, malformed answer) on every attempt."""

    retryable = True


class ConnectorTimeout(VendorError):
    """The vendor did not answer within the configured timeouts on every attempt."""

    retryable = True
