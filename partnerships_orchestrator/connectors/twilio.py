"""Twilio Programmable Messaging as the `sms` channel (API_CONTRACTS §7).

``send`` creates a Message: a form-encoded POST to
``/2010-04-01/Accounts/{AccountSid}/Messages.json`` with HTTP Basic ``AccountSid:AuthToken``,
sent ``From`` the connection's number or through its Messaging Service (exactly one of the two),
with the optional ``StatusCallback``. Twilio answers 201 with the Message resource; its ``sid`` is
the receipt's ``message_id`` and its ``status`` (``queued``, or ``accepted`` through a Messaging
Service) goes in the receipt's detail. Twilio has no per-message metadata, so the delivery's
idempotency key is not sent; the ledger correlates by ``sid``.

Errors arrive as ``{"code", "message", "more_info", "status"}``: 20003 refused credentials,
21211 an invalid ``To`` and the other 4xx codes are final; 20429 (too many concurrent requests,
never processed) is retried with backoff, like 5xx.

A long-code number sends about one message per second, which is the client-side default; raise
``rate_limit`` for toll-free numbers, short codes or a Messaging Service with a sender pool.
Attachments are local files, and Twilio only takes public media URLs, so a message with
attachments is refused rather than sent without them.
"""

from __future__ import annotations

from typing import Any, Self

import httpx
from pydantic import Field, PrivateAttr, model_validator

from partnerships_orchestrator.connectors.channel import Message, Receipt
from partnerships_orchestrator.connectors.delivery import (
    ChannelResource,
    HttpClient,
    RateLimitConfig,
    check_failure,
    delivery_outcome,
)
from partnerships_orchestrator.connectors.errors import (
    AuthenticationError,
    ResourceNotFound,
    VendorError,
    VendorValidationError,
)
from partnerships_orchestrator.connectors.http import BasicAuth, ResponsePolicy, Verdict
from partnerships_orchestrator.errors import DeliveryError, SecretError

API_VERSION = "2010-04-01"
DEFAULT_RATE_LIMIT = {"requests": 1, "per_seconds": 1.0, "burst": 1}
_AUTH_HINT = "check account_sid and auth_token (or an API key SID and secret)"


class TwilioPolicy(ResponsePolicy):
    """Twilio's answers: the error ``code`` decides; ``more_info`` becomes the hint."""

    def classify(self, response: httpx.Response) -> Verdict:
        status = response.status_code
        if status < 400:
            return Verdict.ok()
        message, code = self.error_message(response), self.error_code(response)
        if status == 429 or code == "20429":
            retry_after = self.retry_after(response)
            return Verdict.rate_limited(message, retry_after=retry_after, code=code)
        if status == 401 or code == "20003":
            return Verdict.fail(AuthenticationError, message, code=code, hint=_AUTH_HINT)
        if status == 404:
            hint = "check account_sid"
            return Verdict.fail(ResourceNotFound, message, code=code, hint=hint)
        if 400 <= status < 500 and status not in self.retry_statuses:
            return Verdict.fail(
                VendorValidationError, message, code=code, hint=_more_info(response)
            )
        return super().classify(response)

    def error_message(self, response: httpx.Response) -> str:
        """``message``, with ``detail`` when Twilio adds one (its 401 says only "Authenticate")."""
        payload = _json(response)
        message = payload.get("message")
        if not isinstance(message, str) or not message:
            return super().error_message(response)
        detail = payload.get("detail")
        return f"{message}: {detail}" if isinstance(detail, str) and detail else message


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _more_info(response: httpx.Response) -> str | None:
    link = _json(response).get("more_info")
    return f"see {link}" if isinstance(link, str) and link else None


class TwilioSMS(ChannelResource):
    """Sends the `sms` channel's messages through Twilio's Messages API."""

    account_sid: str = Field(description="Account SID (AC…) or a secret reference.")
    auth_token: str = Field(
        description="Auth token or a secret reference such as ${env:TWILIO_TOKEN}.", repr=False
    )
    sender: str | None = Field(
        default=None, description="The From number in E.164 (`from:` in the connections document)."
    )
    messaging_service_sid: str | None = Field(
        default=None, description="A Messaging Service (MG…) to send through instead of `from`."
    )
    status_callback: str | None = Field(
        default=None, description="URL Twilio posts delivery status updates to."
    )
    base_url: str = Field(default="https://api.twilio.com", description="API host.")
    rate_limit: RateLimitConfig | None = Field(
        default=DEFAULT_RATE_LIMIT,
        validate_default=True,
        description="Client-side ceiling; default 1 message/s, a long code's throughput.",
    )

    _account: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_sender(self) -> Self:
        if bool(self.sender) == bool(self.messaging_service_sid):
            raise ValueError("set exactly one of `from` (a phone number) and messaging_service_sid")
        return self

    @property
    def provider_name(self) -> str:
        return "twilio"

    def send(self, message: Message) -> Receipt:
        """Send one SMS; raise DeliveryError, or the connector error if the outcome is unknown."""
        if message.attachments:
            raise DeliveryError(
                f"twilio: cannot send attachments to {message.to}: Twilio takes public media URLs",
                "send attachments by email, or link to them in the message body",
                retryable=False,
            )
        with delivery_outcome(self.provider_name):
            client = self.http()
            url = f"/{API_VERSION}/Accounts/{self._account}/Messages.json"
            response = client.request("POST", url, data=self._form(message))
        return self._receipt(message, response)

    def check(self) -> dict[str, Any]:
        """Fetch the Account resource: ok when it is active. Never echoes its auth token."""
        try:
            client = self.http()
            account = client.request("GET", f"/{API_VERSION}/Accounts/{self._account}.json").json()
        except (VendorError, SecretError) as exc:
            return check_failure(self.provider_name, exc)
        except ValueError:
            return check_failure(self.provider_name, ValueError("account answer is not JSON"))
        status = str(account.get("status", "unknown"))
        name = str(account.get("friendly_name", self._account))
        limit = self.rate_limit
        return {
            "ok": status == "active",
            "provider": self.provider_name,
            "detail": f"account {name!r} is {status}",
            "rate_limit": {
                "client": None
                if limit is None
                else {"requests": limit.requests, "per_seconds": limit.per_seconds}
            },
        }

    def _build_client(self) -> HttpClient:
        self._account = self._secret(self.account_sid)
        return self._client_for(
            self.base_url,
            auth=BasicAuth(self._account, self._secret(self.auth_token)),
            policy=TwilioPolicy(),
            rate_limit=self.rate_limit,
        )

    def _form(self, message: Message) -> dict[str, str]:
        form = {"To": message.to, "Body": message.body}
        if self.sender:
            form["From"] = self.sender
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        if self.status_callback:
            form["StatusCallback"] = self.status_callback
        return form

    def _receipt(self, message: Message, response: httpx.Response) -> Receipt:
        answer = _json(response)  # a 201 whose body is unreadable was still accepted
        detail = {
            name: answer[name]
            for name in ("status", "num_segments")
            if answer.get(name) is not None
        }
        return Receipt(
            self.provider_name, message.channel, message.to, answer.get("sid"), "sent", detail
        )
