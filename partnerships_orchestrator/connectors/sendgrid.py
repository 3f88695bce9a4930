"""SendGrid v3 Mail Send as the `email` channel (API_CONTRACTS §3).

``send`` posts one message to ``/v3/mail/send``: the Markdown body as ``text/plain`` and its HTML
rendering as ``text/html``, attachments base64-encoded, the delivery's idempotency key (with run,
playbook and step) in ``custom_args`` so Event Webhook events correlate with the ledger. SendGrid
answers 202 with ``X-Message-Id`` (the receipt's ``message_id``), or 200 in sandbox mode, where
nothing is delivered.

``send_batch`` sends many messages in few requests: messages with the same subject, body and
attachments share a request, one personalization (one recipient) each, at most 1,000 per request
and each address at most once per request, as SendGrid requires.

SendGrid publishes no rate for mail/send (its 600/min v2 limit explicitly excludes it), so the
client-side default is a polite 10 requests/s (burst 10): up to 10,000 recipients a second in
batches; the ``X-RateLimit-*`` headers SendGrid returns are honoured on top of it, and a 429 waits
until ``X-RateLimit-Reset``. See ``delivery`` for what is retried and how errors map.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import Field

from partnerships_orchestrator.connectors.channel import Message, Receipt
from partnerships_orchestrator.connectors.delivery import (
    Attachment,
    EmailResource,
    HttpClient,
    RateLimitConfig,
    check_failure,
    delivery_outcome,
    html_from_markdown,
    read_attachments,
    send_in_batches,
    tracking_values,
)
from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    VendorError,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.http import BearerAuth, ResponsePolicy, Verdict
from partnerships_orchestrator.errors import DeliveryError, SecretError

MAIL_SEND = "/v3/mail/send"
MAX_PER_REQUEST = 1000
DEFAULT_RATE_LIMIT = {"requests": 10, "per_seconds": 1.0, "burst": 10}
_AUTH_HINT = "check api_key: a SendGrid API key with the mail.send scope (EU: api.eu.sendgrid.com)"


class SendGridPolicy(ResponsePolicy):
    """SendGrid's answers: ``errors[]`` messages with their field; 429 waits for the reset."""

    def classify(self, response: httpx.Response) -> Verdict:
        status = response.status_code
        if status in (401, 403):
            return Verdict.fail(AuthenticationError, self.error_message(response), hint=_AUTH_HINT)
        if status == 413:
            hint = "keep the message and its attachments under SendGrid's 30 MB"
            return Verdict.fail(VendorValidationError, self.error_message(response), hint=hint)
        if status == 429:
            wait = _reset_wait(response)
            if wait is None:
                wait = self.retry_after(response)
            return Verdict.rate_limited(self.error_message(response), retry_after=wait)
        return super().classify(response)

    def error_message(self, response: httpx.Response) -> str:
        """Every ``errors[]`` entry as ``field: message``."""
        try:
            errors = response.json().get("errors")
        except (ValueError, AttributeError):
            errors = None
        if not isinstance(errors, list):
            return super().error_message(response)
        parts = [_error_text(e) for e in errors if isinstance(e, dict) and e.get("message")]
        return "; ".join(parts) or super().error_message(response)


def _error_text(error: dict[str, Any]) -> str:
    field = error.get("field")
    return f"{field}: {error['message']}" if field else str(error["message"])


def _reset_wait(response: httpx.Response) -> float | None:
    """Seconds until ``X-RateLimit-Reset`` (a unix time), if the header is there."""
    try:
        return max(0.0, float(response.headers["X-RateLimit-Reset"]) - time.time())
    except (KeyError, ValueError):
        return None


class SendGridEmail(EmailResource):
    """Sends the `email` channel's messages through SendGrid's v3 Mail Send API."""

    api_key: str = Field(
        description="API key or a secret reference such as ${env:SENDGRID_API_KEY}.", repr=False
    )
    base_url: str = Field(
        default="https://api.sendgrid.com",
        description="API host; EU subusers use https://api.eu.sendgrid.com.",
    )
    sandbox_mode: bool = Field(
        default=False, description="Validate every message but deliver none (SendGrid answers 200)."
    )
    rate_limit: RateLimitConfig | None = Field(
        default=DEFAULT_RATE_LIMIT,
        validate_default=True,
        description="Client-side ceiling; SendGrid publishes none for mail/send (default 10/s).",
    )

    @property
    def provider_name(self) -> str:
        return "sendgrid"

    def send(self, message: Message) -> Receipt:
        """Send one message; raise DeliveryError, or the connector error if the outcome is unknown."""
        with delivery_outcome(self.provider_name):
            files = read_attachments(self.provider_name, message.attachments)
            response = self._post([message], files)
        return self._receipts([message], response)[0]

    @property
    def max_per_request(self) -> int:
        """Messages one batch request carries at most."""
        return MAX_PER_REQUEST

    def send_batch(self, messages: Sequence[Message]) -> list[Receipt | DeliveryError]:
        """Send many messages in as few requests as the vendor allows; one outcome each.
        Raises the connector error if a request's outcome is unknown (see ``send_in_batches``)."""
        return send_in_batches(self.provider_name, messages, MAX_PER_REQUEST, self._send_group)

    def check(self) -> dict[str, Any]:
        """Probe the key with ``GET /v3/scopes``: ok when it may send mail. Holds no secret."""
        try:
            response = self.http().request("GET", "/v3/scopes")
            scopes = response.json().get("scopes") or []
        except (VendorError, SecretError) as exc:
            return check_failure(self.provider_name, exc)
        except (ValueError, AttributeError):
            return check_failure(self.provider_name, ValueError("GET /v3/scopes: not JSON"))
        ok = "mail.send" in scopes
        detail = "the API key may send mail" if ok else "the API key lacks the mail.send scope"
        return {
            "ok": ok,
            "provider": self.provider_name,
            "detail": detail,
            "rate_limit": _rate_limit_report(self.rate_limit, response),
        }

    def _build_client(self) -> HttpClient:
        limit = self.rate_limit
        return self._client_for(
            self.base_url,
            auth=BearerAuth(self._secret(self.api_key)),
            policy=SendGridPolicy(),
            rate_limit=limit,
        )

    def _send_group(self, group: list[Message]) -> list[Receipt]:
        files = read_attachments(self.provider_name, group[0].attachments)
        return self._receipts(group, self._post(group, files))

    def _post(self, group: list[Message], files: list[Attachment]) -> httpx.Response:
        return self.http().request("POST", MAIL_SEND, json=self._payload(group, files))

    def _payload(self, group: list[Message], files: list[Attachment]) -> dict[str, Any]:
        """The Mail Send body: one personalization per message of ``group`` (same content)."""
        first = group[0]
        sender: dict[str, str] = {"email": self.sender}
        if self.sender_name:
            sender["name"] = self.sender_name
        payload: dict[str, Any] = {
            "personalizations": [_personalization(m) for m in group],
            "from": sender,
            "content": [
                {"type": "text/plain", "value": first.body},
                {"type": "text/html", "value": html_from_markdown(first.body)},
            ],
        }
        if first.subject is not None:
            payload["subject"] = first.subject
        if files:
            payload["attachments"] = [_attachment(f) for f in files]
        if self.sandbox_mode:
            payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return payload

    def _receipts(self, group: list[Message], response: httpx.Response) -> list[Receipt]:
        detail: dict[str, Any] = {}
        if response.status_code == 200:
            detail["sandbox_mode"] = True
        if len(group) > 1:
            detail["batch_size"] = len(group)
        message_id = response.headers.get("X-Message-Id")
        return [
            Receipt(self.provider_name, m.channel, m.to, message_id, "sent", dict(detail))
            for m in group
        ]


def _personalization(message: Message) -> dict[str, Any]:
    personalization: dict[str, Any] = {"to": [{"email": message.to}]}
    values = tracking_values(message)
    if values:
        personalization["custom_args"] = values
    return personalization


def _attachment(file: Attachment) -> dict[str, str]:
    return {
        "content": base64.b64encode(file.content).decode("ascii"),
        "filename": file.filename,
        "type": file.content_type,
        "disposition": "attachment",
    }


def _rate_limit_report(limit: RateLimitConfig | None, response: httpx.Response) -> dict[str, Any]:
    """The client-side ceiling and SendGrid's own reading from the probe's headers."""
    vendor = {
        name.lower(): response.headers[f"X-RateLimit-{name}"]
        for name in ("Limit", "Remaining", "Reset")
        if f"X-RateLimit-{name}" in response.headers
    }
    client = (
        None if limit is None else {"requests": limit.requests, "per_seconds": limit.per_seconds}
    )
    return {"client": client, "vendor": vendor or None}
