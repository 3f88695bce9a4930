"""A Twilio Messaging emulator: create a Message, fetch the Account (API_CONTRACTS §7).

Speaks the protocol closely enough for the official ``twilio`` SDK:

- HTTP Basic ``AccountSid:AuthToken``; wrong credentials get 401 code 20003 ``Authenticate``;
  another account's path 404 code 20404; errors in Twilio's classic shape
  ``{"code", "message", "more_info", "status"}``
- ``POST /2010-04-01/Accounts/{sid}/Messages.json`` (form-encoded): ``To`` required (21604) and
  E.164 (21211), ``From`` or ``MessagingServiceSid`` required (21603), ``From`` one of the
  account's numbers (21606), a known service (21701), ``Body`` or ``MediaUrl`` (21602), at most
  1,600 characters (21617); 201 with the Message resource, ``queued`` (``accepted`` through a
  Messaging Service)
- more than ``limit`` creates per ``window`` seconds (default 100 a second): 429 code 20429 (no
  rate-limit headers)
- ``GET /2010-04-01/Accounts/{sid}.json``: the Account resource (which, like Twilio's, includes
  the auth token: a connector must never echo it)
- ``send_callbacks``: after a create with ``StatusCallback``, POST ``sent`` then ``delivered`` to
  it, form-encoded, signed with ``X-Twilio-Signature`` and carrying ``I-Twilio-Idempotency-Token``
- ``fail_recipient(number, times)``: the next ``times`` creates to it answer 500

Created messages land in ``state.messages`` so tests can count what each number received.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from partnerships_orchestrator_tests.emulators.core import Emulator, RateLimiter

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f0e1d2c3b4a5s3cr3t0tw1l10t0k3n99"
FROM_NUMBER = "+15550100"
MESSAGING_SERVICE_SID = "MG" + "fedcba9876543210" * 2
API_VERSION = "2010-04-01"
MAX_BODY = 1600
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")

ERRORS = {
    20003: "Authenticate",
    20404: "The requested resource {path} was not found",
    20429: "Too Many Requests",
    21211: "The 'To' number {to} is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: (
        "The From phone number {sender} is not a valid, SMS-capable inbound phone number or"
        " short code for your account."
    ),
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21701: "The Messaging Service Sid {service} is invalid.",
}


@dataclass(frozen=True)
class TwilioMessage:
    """One created message."""

    sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status_callback: str | None
    status: str


@dataclass
class TwilioState:
    """Accounts, numbers, services, limits, faults, created messages and sent callbacks."""

    accounts: dict[str, str] = field(default_factory=lambda: {ACCOUNT_SID: AUTH_TOKEN})
    numbers: set[str] = field(default_factory=lambda: {FROM_NUMBER})
    messaging_services: set[str] = field(default_factory=lambda: {MESSAGING_SERVICE_SID})
    # Twilio limits concurrent REST requests per account (20429, API_CONTRACTS §7; commonly 100)
    # and publishes no rate: 100 creates a second stands for it. Tests that need speed raise it.
    limit: int = 100
    window: float = 1.0
    send_callbacks: bool = False
    failing_recipients: dict[str, int] = field(default_factory=dict)
    messages: list[TwilioMessage] = field(default_factory=list)
    callbacks_sent: list[dict[str, Any]] = field(default_factory=list)
    limiter: RateLimiter | None = None


def twilio_error(status: int, code: int, **values: str) -> Response:
    """Twilio's classic error body."""
    return JSONResponse(
        {
            "code": code,
            "message": ERRORS[code].format(**values),
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status_code=status,
    )


def signature(token: str, url: str, params: dict[str, str]) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1 over the URL and the sorted name+value pairs."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment).replace("-0000", "+0000")


class TwilioEmulator(Emulator[TwilioState]):
    name = "twilio"

    def __init__(self) -> None:
        super().__init__(TwilioState)

    # -- helpers for tests (in-process) ------------------------------------------------------

    def fail_recipient(self, number: str, times: int) -> None:
        with self.lock:
            self.state.failing_recipients[number] = times

    def delivered_counts(self) -> dict[str, int]:
        with self.lock:
            return dict(Counter(d.to for d in self.state.messages))

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` messages were created (or ``timeout`` passed)."""
        return self.wait_until(lambda state: len(state.messages) >= count, timeout)

    def wait_for_callbacks(self, count: int, timeout: float = 10.0) -> bool:
        return self.wait_until(lambda state: len(state.callbacks_sent) >= count, timeout)

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        base = f"/{API_VERSION}/Accounts/{{sid}}"
        return [
            Route(f"{base}/Messages.json", self._create, methods=["POST"]),
            Route(f"{base}.json", self._account, methods=["GET"]),
        ]

    async def _account(self, request: Request) -> Response:
        if (refused := self._authenticate(request)) is not None:
            return refused
        sid = request.path_params["sid"]
        created = _rfc2822(datetime(2016, 7, 26, 12, 50, 7, tzinfo=UTC))
        return JSONResponse(
            {
                "sid": sid,
                "owner_account_sid": sid,
                "friendly_name": "Partnerships emulator",
                "status": "active",
                "type": "Full",
                "auth_token": self.state.accounts[sid],
                "date_created": created,
                "date_updated": created,
                "uri": f"/{API_VERSION}/Accounts/{sid}.json",
                "subresource_uris": {"messages": f"/{API_VERSION}/Accounts/{sid}/Messages.json"},
            }
        )

    async def _create(self, request: Request) -> Response:
        if (refused := self._authenticate(request)) is not None:
            return refused
        with self.lock:
            if self.state.limiter is None:
                self.state.limiter = RateLimiter(self.state.limit, self.state.window, self.clock)
            allowed = self.state.limiter.hit().allowed
        if not allowed:
            return twilio_error(429, 20429)
        form = {k: str(v) for k, v in (await request.form()).items()}
        if (problem := self._problem(form)) is not None:
            return problem
        if self._injected_failure(form["To"]):
            return JSONResponse(
                {"code": 20500, "message": "Internal Server Error", "status": 500}, 500
            )
        message = self._store(form)
        answer = self._resource(request.path_params["sid"], message)
        task = None
        if message.status_callback and self.state.send_callbacks:
            task = BackgroundTask(self._callbacks, request.path_params["sid"], message)
        return JSONResponse(answer, status_code=201, background=task)

    def _authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        sid, token = "", ""
        if header.startswith("Basic "):
            try:
                sid, _, token = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                sid = ""
        with self.lock:
            known = self.state.accounts.get(sid)
        if known is None or not hmac.compare_digest(known, token):
            return JSONResponse(
                {
                    "code": 20003,
                    "detail": "Your AccountSid or AuthToken was incorrect.",
                    "message": ERRORS[20003],
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                    "status": 401,
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
        if request.path_params["sid"] != sid:
            return twilio_error(404, 20404, path=request.url.path)
        return None

    def _problem(self, form: dict[str, str]) -> Response | None:
        """Twilio's 400 for ``form``, or None when it is acceptable."""
        to, sender = form.get("To", ""), form.get("From")
        service = form.get("MessagingServiceSid")
        if not to:
            return twilio_error(400, 21604)
        if not sender and not service:
            return twilio_error(400, 21603)
        if not form.get("Body") and not form.get("MediaUrl"):
            return twilio_error(400, 21602)
        if not _E164.match(to):
            return twilio_error(400, 21211, to=to)
        with self.lock:
            numbers, services = set(self.state.numbers), set(self.state.messaging_services)
        if sender and sender not in numbers:
            return twilio_error(400, 21606, sender=sender)
        if service and service not in services:
            return twilio_error(400, 21701, service=service)
        if len(form.get("Body", "")) > MAX_BODY:
            return twilio_error(400, 21617)
        return None

    def _injected_failure(self, to: str) -> bool:
        with self.lock:
            failing = self.state.failing_recipients
            if failing.get(to, 0) > 0:
                failing[to] -= 1
                return True
        return False

    def _store(self, form: dict[str, str]) -> TwilioMessage:
        service = form.get("MessagingServiceSid")
        message = TwilioMessage(
            sid="SM" + secrets.token_hex(16),
            to=form["To"],
            from_=form.get("From"),
            messaging_service_sid=service,
            body=form.get("Body", ""),
            status_callback=form.get("StatusCallback"),
            status="accepted" if service else "queued",
        )
        with self.changed:
            self.state.messages.append(message)
            self.changed.notify_all()
        return message

    def _resource(self, account: str, message: TwilioMessage) -> dict[str, Any]:
        now = _rfc2822(datetime.fromtimestamp(self.clock.now(), UTC))
        uri = f"/{API_VERSION}/Accounts/{account}/Messages/{message.sid}"
        return {
            "sid": message.sid,
            "account_sid": account,
            "to": message.to,
            "from": message.from_,
            "messaging_service_sid": message.messaging_service_sid,
            "body": message.body,
            "status": message.status,
            "num_segments": str(max(1, math.ceil(len(message.body) / 153))),
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": API_VERSION,
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "uri": f"{uri}.json",
            "subresource_uris": {"media": f"{uri}/Media.json"},
        }

    async def _callbacks(self, account: str, message: TwilioMessage) -> None:
        """POST ``sent`` then ``delivered`` to the message's status callback, signed."""
        token = self.state.accounts[account]
        url = message.status_callback or ""
        async with httpx.AsyncClient(timeout=5.0) as client:
            for status in ("sent", "delivered"):
                params = {
                    "AccountSid": account,
                    "ApiVersion": API_VERSION,
                    "From": message.from_ or "",
                    "MessageSid": message.sid,
                    "MessageStatus": status,
                    "SmsSid": message.sid,
                    "SmsStatus": status,
                    "To": message.to,
                }
                headers = {
                    "X-Twilio-Signature": signature(token, url, params),
                    "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
                }
                response = await client.post(url, data=params, headers=headers)
                with self.changed:
                    self.state.callbacks_sent.append(
                        {"status": status, "answer": response.status_code, **params}
                    )
                    self.changed.notify_all()
