"""Mailgun's Messages API as the `email` channel (API_CONTRACTS §4).

``send`` posts one message to ``/v3/{domain}/messages`` with HTTP Basic ``api:<key>``: the
Markdown body as ``text`` and its HTML rendering as ``html``, the delivery's idempotency key (with
run, playbook and step) in ``h:X-Mailgun-Variables`` so webhook events carry it back, attachments
as multipart ``attachment`` files (without attachments the form is url-encoded, which Mailgun
equally accepts). Mailgun answers 200 ``{"id", "message"}``; the id is the receipt's
``message_id``. A bad key is a 401 whose body is the plain text ``Forbidden``.

``send_batch`` uses batch sending: up to 1,000 ``to`` addresses per request with
``recipient-variables``, so each recipient gets an individual message and its own variables
(``v:idempotency_key=%recipient.idempotency_key%``...).

Mailgun publishes no fixed rate for the Messages API (it depends on the plan), so the client-side
default is 10 requests/s (burst 10); a 429's ``Retry-After`` is honoured on top of it. A 404 may
be transient at Mailgun and is retried; see ``delivery`` for what else is retried.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from email.utils import formataddr
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
from partnerships_orchestrator.connectors.errors import AuthenticationError, VendorError
from partnerships_orchestrator.connectors.http import BasicAuth, ResponsePolicy, Verdict
from partnerships_orchestrator.errors import DeliveryError, SecretError

MAX_PER_REQUEST = 1000
DEFAULT_RATE_LIMIT = {"requests": 10, "per_seconds": 1.0, "burst": 10}
_AUTH_HINT = (
    "check api_key (a Mailgun API key or the domain's sending key) and base_url: "
    "EU domains use https://api.eu.mailgun.net"
)


class MailgunPolicy(ResponsePolicy):
    """Mailgun's answers: 401 ``Forbidden`` in plain text, ``{"message"}`` errors, 404 retried."""

    def classify(self, response: httpx.Response) -> Verdict:
        status = response.status_code
        if status == 401:
            message = f"Mailgun refused the API key (401 {self.error_message(response)})"
            return Verdict.fail(AuthenticationError, message, hint=_AUTH_HINT)
        if status == 403:
            return Verdict.fail(AuthenticationError, self.error_message(response), hint=_AUTH_HINT)
        if status == 404:
            # Mailgun documents 404 as possibly transient; a wrong domain keeps failing
            return Verdict.retry(f"{self.error_message(response)} (check domain)")
        return super().classify(response)


class MailgunEmail(EmailResource):
    """Sends the `email` channel's messages through Mailgun's Messages API."""

    api_key: str = Field(
        description="API key or a secret reference such as ${env:MAILGUN_API_KEY}.", repr=False
    )
    domain: str = Field(description="The sending domain, e.g. mg.example.org.")
    base_url: str = Field(
        default="https://api.mailgun.net",
        description="API host; domains in the EU region use https://api.eu.mailgun.net.",
    )
    test_mode: bool = Field(
        default=False, description="Mailgun accepts every message but delivers none (o:testmode)."
    )
    rate_limit: RateLimitConfig | None = Field(
        default=DEFAULT_RATE_LIMIT,
        validate_default=True,
        description="Client-side ceiling; Mailgun's depends on the plan (default 10/s).",
    )

    @property
    def provider_name(self) -> str:
        return "mailgun"

    def send(self, message: Message) -> Receipt:
        """Send one message; raise DeliveryError, or the connector error if the outcome is unknown."""
        with delivery_outcome(self.provider_name):
            files = read_attachments(self.provider_name, message.attachments)
            data = {**self._fields(message), "to": message.to}
            values = tracking_values(message)
            if values:
                data["h:X-Mailgun-Variables"] = json.dumps(values)
            response = self._post(data, files)
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
        """Probe the key and domain with ``GET /v3/domains/{domain}``. Holds no secret."""
        try:
            answer = self.http().request("GET", f"/v3/domains/{self.domain}").json()
            state = (answer.get("domain") or {}).get("state", "unknown")
        except (VendorError, SecretError) as exc:
            return check_failure(self.provider_name, exc)
        except (ValueError, AttributeError):
            return check_failure(self.provider_name, ValueError("domain answer is not JSON"))
        limit = self.rate_limit
        return {
            "ok": state == "active",
            "provider": self.provider_name,
            "detail": f"domain {self.domain} is {state}",
            "rate_limit": {
                "client": None
                if limit is None
                else {"requests": limit.requests, "per_seconds": limit.per_seconds}
            },
        }

    def _build_client(self) -> HttpClient:
        return self._client_for(
            self.base_url,
            auth=BasicAuth("api", self._secret(self.api_key)),
            policy=MailgunPolicy(),
            rate_limit=self.rate_limit,
        )

    def _send_group(self, group: list[Message]) -> list[Receipt]:
        files = read_attachments(self.provider_name, group[0].attachments)
        response = self._post(_batch_fields(group, self._fields(group[0])), files)
        return self._receipts(group, response)

    def _fields(self, message: Message) -> dict[str, Any]:
        """The form fields every message of a request shares."""
        data: dict[str, Any] = {
            "from": formataddr((self.sender_name, self.sender))
            if self.sender_name
            else self.sender,
            "text": message.body,
            "html": html_from_markdown(message.body),
        }
        if message.subject is not None:
            data["subject"] = message.subject
        if self.test_mode:
            data["o:testmode"] = "yes"
        return data

    def _post(self, data: dict[str, Any], files: list[Attachment]) -> httpx.Response:
        upload = [("attachment", (f.filename, f.content, f.content_type)) for f in files]
        url = f"/v3/{self.domain}/messages"
        return self.http().request("POST", url, data=data, files=upload or None)

    def _receipts(self, group: list[Message], response: httpx.Response) -> list[Receipt]:
        try:
            answer = response.json()
            message_id = answer.get("id") if isinstance(answer, dict) else None
        except ValueError:
            message_id = None  # accepted (200) all the same: never send it again
        detail: dict[str, Any] = {"test_mode": True} if self.test_mode else {}
        if len(group) > 1:
            detail["batch_size"] = len(group)
        return [
            Receipt(self.provider_name, m.channel, m.to, message_id, "sent", dict(detail))
            for m in group
        ]


def _batch_fields(group: list[Message], shared: dict[str, Any]) -> dict[str, Any]:
    """Batch sending: every address in ``to``, each one's values in ``recipient-variables``."""
    variables = {m.to: tracking_values(m) for m in group}
    names = sorted({name for values in variables.values() for name in values})
    data = {**shared, "to": [m.to for m in group], "recipient-variables": json.dumps(variables)}
    data.update({f"v:{name}": f"%recipient.{name}%" for name in names})
    return data
