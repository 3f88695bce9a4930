"""A Mailgun emulator: ``POST /v3/{domain}/messages`` and ``GET /v3/domains/{domain}`` (§4).

- HTTP Basic ``api:<key>``; a wrong key gets **401 with the plain-text body ``Forbidden``**
- multipart/form-data or url-encoded fields: ``from``, ``to``/``cc``/``bcc`` (repeatable or
  comma-separated), ``subject``, ``text``/``html``/``amp-html``/``template``, ``o:testmode``,
  ``v:<name>``, ``h:X-Mailgun-Variables``, ``recipient-variables`` (batch sending: one message per
  ``to``, ``%recipient.<name>%`` substituted) and ``attachment`` files
- 400 ``{"message": ...}`` in Mailgun's words for a missing ``from``, recipients or body, a bad
  address, bad ``recipient-variables`` and more than 1,000 recipients; unknown domain 404
- 200 ``{"id": "<…@domain>", "message": "Queued. Thank you."}``; test mode accepts and delivers
  nothing
- past ``limit`` requests per ``window`` seconds (default 10 a second): 429 with ``Retry-After``
- ``fail_recipient(address, times)``: the next ``times`` requests naming it answer 500

Accepted mail lands in ``state.delivered``, one :class:`DeliveredMail` per recipient.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from partnerships_orchestrator_tests.emulators.core import Decision, Emulator, RateLimiter

API_KEY = "key-emulator-s3cr3t-mailgun-value"
DOMAIN = "mg.example.org"
MAX_RECIPIENTS = 1000
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_BODY_FIELDS = ("text", "html", "amp-html", "template")
_VARIABLE = re.compile(r"%recipient\.([A-Za-z0-9_\-]+)%")

MESSAGES = {
    "from_missing": "'from' parameter is missing",
    "to_missing": 'Need at least one of "to", "cc", "bcc" fields',
    "body_missing": "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified",
    "invalid_to": "to parameter is not a valid address. please check documentation",
    "invalid_from": "from parameter is not a valid address. please check documentation",
    "recipient_variables": "recipient-variables parameter is not a valid JSON",
    "too_many_recipients": "Too many recipients: the maximum is 1000 per message",
    "domain_missing": "Domain not found: {domain}",
    "too_many_requests": "Too many requests",
    "internal": "Internal Server Error",
}


@dataclass(frozen=True)
class DeliveredMail:
    """One accepted message as one recipient would get it (after batch substitution)."""

    to: str
    kind: str
    sender: str
    subject: str | None
    text: str | None
    html: str | None
    variables: dict[str, Any]
    headers: dict[str, str]
    attachments: list[dict[str, Any]]  # filename, content_type, content (bytes)
    message_id: str
    batch: bool


@dataclass
class MailgunState:
    """Keys, domains, limits, faults by recipient, and what was delivered."""

    api_keys: set[str] = field(default_factory=lambda: {API_KEY})
    domains: set[str] = field(default_factory=lambda: {DOMAIN})
    # Mailgun's limit depends on the plan and is not published (API_CONTRACTS §4): the emulator
    # keeps the 10/s the connector assumes by default. Tests that need speed raise it.
    limit: int = 10
    window: float = 1.0
    failing_recipients: dict[str, int] = field(default_factory=dict)
    delivered: list[DeliveredMail] = field(default_factory=list)
    test_mode: list[dict[str, Any]] = field(default_factory=list)
    limiter: RateLimiter | None = None


def _message(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"message": text}, status_code=status, headers=headers)


def _addresses(values: list[str]) -> list[str]:
    """Every address in repeated and comma-separated ``to``-style fields."""
    return [address for _name, address in getaddresses(values) if address or _name]


class MailgunEmulator(Emulator[MailgunState]):
    name = "mailgun"

    def __init__(self) -> None:
        super().__init__(MailgunState)

    # -- helpers for tests (in-process) ------------------------------------------------------

    def fail_recipient(self, address: str, times: int) -> None:
        """The next ``times`` requests naming ``address`` answer 500 and deliver nothing."""
        with self.lock:
            self.state.failing_recipients[address.lower()] = times

    def delivered_counts(self) -> dict[str, int]:
        with self.lock:
            return dict(Counter(d.to for d in self.state.delivered))

    def wait_for_deliveries(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` messages were delivered (or ``timeout`` passed)."""
        return self.wait_until(lambda state: len(state.delivered) >= count, timeout)

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v3/{domain}/messages", self._send, methods=["POST"]),
            Route("/v3/domains/{domain}", self._domain, methods=["GET"]),
        ]

    async def _domain(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        name = request.path_params["domain"]
        return JSONResponse(
            {
                "domain": {"name": name, "state": "active", "type": "custom"},
                "receiving_dns_records": [],
                "sending_dns_records": [],
            }
        )

    async def _send(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        # room for 1,000+ repeated `to` fields, so the 1,000-recipient rule is Mailgun's own
        form = await request.form(max_fields=10_000, max_files=100)
        problem = _problem(form)
        if problem is not None:
            return _message(400, problem)
        recipients = {kind: _addresses(_strings(form, kind)) for kind in ("to", "cc", "bcc")}
        if self._injected_failure([a for found in recipients.values() for a in found]):
            return _message(500, MESSAGES["internal"])
        domain = request.path_params["domain"]
        message_id = f"<{time.strftime('%Y%m%d%H%M%S')}.{secrets.token_hex(6)}@{domain}>"
        answer = {"id": message_id, "message": "Queued. Thank you."}
        if str(form.get("o:testmode", "")).lower() in ("yes", "true", "1"):
            with self.lock:
                self.state.test_mode.append({"to": recipients["to"], "id": message_id})
            return JSONResponse(answer)
        self._deliver(form, recipients, message_id, await _attachments(form))
        return JSONResponse(answer)

    def _gate(self, request: Request) -> Response | None:
        """Authenticate, check the domain and count the call against the rate limit."""
        header = request.headers.get("authorization", "")
        with self.lock:
            keys = set(self.state.api_keys)
            domains = set(self.state.domains)
        if header not in {_basic(key) for key in keys}:
            return PlainTextResponse("Forbidden", status_code=401)
        domain = request.path_params["domain"]
        if domain not in domains:
            return _message(404, MESSAGES["domain_missing"].format(domain=domain))
        decision = self._hit()
        if not decision.allowed:
            retry_after = str(max(1, math.ceil(decision.retry_after)))
            return _message(429, MESSAGES["too_many_requests"], {"Retry-After": retry_after})
        return None

    def _hit(self) -> Decision:
        with self.lock:
            if self.state.limiter is None:
                self.state.limiter = RateLimiter(self.state.limit, self.state.window, self.clock)
            return self.state.limiter.hit()

    def _injected_failure(self, addresses: list[str]) -> bool:
        with self.lock:
            failing = self.state.failing_recipients
            for address in addresses:
                if failing.get(address.lower(), 0) > 0:
                    failing[address.lower()] -= 1
                    return True
        return False

    def _deliver(
        self,
        form: FormData,
        recipients: dict[str, list[str]],
        message_id: str,
        attachments: list[dict[str, Any]],
    ) -> None:
        per_recipient = json.loads(str(form.get("recipient-variables") or "{}"))
        batch = "recipient-variables" in form
        shared = _variables(form)
        headers = {k[2:]: str(v) for k, v in form.multi_items() if k.startswith("h:")}
        delivered = []
        for kind, addresses in recipients.items():
            for address in addresses:
                values = per_recipient.get(address, {}) if batch else {}

                def fill(text: str | None, values: dict[str, Any] = values) -> str | None:
                    if text is None:
                        return None
                    return _VARIABLE.sub(lambda m: str(values.get(m[1], "")), text)

                delivered.append(
                    DeliveredMail(
                        to=address,
                        kind=kind,
                        sender=str(form["from"]),
                        subject=fill(_optional(form, "subject")),
                        text=fill(_optional(form, "text")),
                        html=fill(_optional(form, "html")),
                        variables={k: fill(str(v)) for k, v in shared.items()},
                        headers=headers,
                        attachments=attachments,
                        message_id=message_id,
                        batch=batch,
                    )
                )
        with self.changed:
            self.state.delivered.extend(delivered)
            self.changed.notify_all()


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"api:{key}".encode()).decode()


def _strings(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str)]


def _optional(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _variables(form: FormData) -> dict[str, Any]:
    """``v:`` fields plus the ``h:X-Mailgun-Variables`` JSON object."""
    found: dict[str, Any] = {}
    header = form.get("h:X-Mailgun-Variables")
    if isinstance(header, str):
        found.update(json.loads(header))
    found.update({k[2:]: v for k, v in form.multi_items() if k.startswith("v:")})
    return found


def _problem(form: FormData) -> str | None:
    """Mailgun's 400 message for ``form``, or None when it is acceptable."""
    sender = _optional(form, "from")
    if not sender:
        return MESSAGES["from_missing"]
    if not _EMAIL.match(getaddresses([sender])[0][1]):
        return MESSAGES["invalid_from"]
    recipients = [a for kind in ("to", "cc", "bcc") for a in _addresses(_strings(form, kind))]
    if not recipients:
        return MESSAGES["to_missing"]
    if any(not _EMAIL.match(address) for address in recipients):
        return MESSAGES["invalid_to"]
    if len(recipients) > MAX_RECIPIENTS:
        return MESSAGES["too_many_recipients"]
    if not any(form.get(name) for name in _BODY_FIELDS):
        return MESSAGES["body_missing"]
    variables = form.get("recipient-variables")
    if variables is not None:
        try:
            parsed = json.loads(str(variables))
        except ValueError:
            return MESSAGES["recipient_variables"]
        if not isinstance(parsed, dict):
            return MESSAGES["recipient_variables"]
    header = form.get("h:X-Mailgun-Variables")
    if header is not None:
        try:
            json.loads(str(header))
        except ValueError:
            return "h:X-Mailgun-Variables parameter is not a valid JSON"
    return None


async def _attachments(form: FormData) -> list[dict[str, Any]]:
    files = []
    for value in form.getlist("attachment"):
        if isinstance(value, UploadFile):
            files.append(
                {
                    "filename": value.filename,
                    "content_type": value.content_type,
                    "content": await value.read(),
                }
            )
    return files
