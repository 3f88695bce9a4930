"""A SendGrid v3 emulator: ``POST /v3/mail/send`` and ``GET /v3/scopes`` (API_CONTRACTS §3).

Speaks the protocol closely enough for the official ``sendgrid`` SDK:

- ``Authorization: Bearer <key>``; an unknown key gets 401 with SendGrid's message, a key without
  the ``mail.send`` scope 403 ``access forbidden``
- strict validation of the mail body with SendGrid's own ``{"errors": [...]}`` messages: at least
  one and at most 1,000 personalizations, at most 1,000 recipients, each address once, a ``to``
  in every personalization, ``from``, ``subject`` and ``content`` (text/plain first), base64
  attachments; a body over ``max_body_bytes`` is 413
- 202 with an empty body and ``X-Message-Id``; sandbox mode answers 200 and delivers nothing
- ``X-RateLimit-Limit/-Remaining/-Reset`` (unix epoch) on every answer; past ``limit`` requests
  per ``window`` seconds (default 600 a minute) 429 ``too many requests``
- ``fail_recipient(address, times)``: the next ``times`` requests carrying that address answer
  500 and deliver nothing

Accepted mail lands in ``state.delivered``, one :class:`DeliveredEmail` per recipient, so a test
can count exactly what arrived for each address.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from partnerships_orchestrator_tests.emulators.core import Decision, Emulator, RateLimiter

API_KEY = "SG.emulator-key.s3cr3t-sendgrid-value"
ALL_SCOPES = frozenset({"mail.send", "scopes.read", "user.profile.read"})
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_KINDS = ("to", "cc", "bcc")

MESSAGES = {
    "bad_request": "Bad Request",
    "unauthorized": "The provided authorization grant is invalid, expired, or revoked",
    "forbidden": "access forbidden",
    "too_many": "too many requests",
    "too_large": "The JSON payload you have included in your request is too large.",
    "internal": "internal error",
    "personalizations_required": (
        "The personalizations field is required and must have at least one personalization."
    ),
    "personalizations_limit": (
        "The personalization block is limited to 1000 personalizations per API request. You have"
        " provided {n} personalizations. Please consider splitting this into multiple requests"
        " and resending your request."
    ),
    "recipients_limit": "There is a limit of 1000 total recipients (to + cc + bcc) per request.",
    "to_required": (
        "The to array is required for all personalization objects, and must have at least one"
        " email object with a valid email address."
    ),
    "invalid_address": "Does not contain a valid address.",
    "duplicate_in_block": (
        "Each email address in the personalization block should be unique between to, cc, and"
        " bcc. We found the first duplicate instance of [{email}] in the {field} field."
    ),
    "duplicate_across": (
        "Each unique email address in the personalizations array should only be included once."
        " You have included {email} more than once."
    ),
    "from_required": (
        "The from object must be provided for every email send. It is an object that requires"
        ' the email parameter, but may also contain a name parameter.  e.g. {"email" :'
        ' "example@example.com"}  or {"email" : "example@example.com", "name" : "Example'
        ' Recipient"}.'
    ),
    "subject_required": (
        "The subject is required. You can get around this requirement if you use a template"
        " with a subject defined or if every personalization has a subject defined."
    ),
    "content_required": (
        "Unless a valid template_id is provided, the content parameter is required. There must"
        " be at least one defined content block. We typically suggest both text/plain and"
        " text/html blocks are included, but only one block is required."
    ),
    "content_value": "The content value must be a string at least one character in length.",
    "content_order": (
        "If present, text/plain must be first, followed by text/html, followed by any other"
        " content."
    ),
    "attachment_base64": "The attachment content must be base64 encoded.",
    "attachment_filename": "The attachment filename parameter is required.",
}


@dataclass(frozen=True)
class DeliveredEmail:
    """One accepted message as one recipient would get it."""

    to: str
    kind: str  # to, cc or bcc
    from_email: str
    from_name: str | None
    subject: str | None
    content: dict[str, str]  # MIME type -> value
    custom_args: dict[str, str]
    attachments: list[dict[str, Any]]  # filename, type, content (decoded bytes)
    message_id: str


@dataclass
class SendGridState:
    """API keys with their scopes, limits, faults by recipient, and what was delivered."""

    api_keys: dict[str, frozenset[str]] = field(default_factory=lambda: {API_KEY: ALL_SCOPES})
    # SendGrid publishes no number for mail/send (API_CONTRACTS §3); its published per-user
    # default for rate-limited endpoints is 600 requests a minute. Tests that need speed raise it.
    limit: int = 600
    window: float = 60.0
    max_body_bytes: int = 30 * 1024 * 1024
    failing_recipients: dict[str, int] = field(default_factory=dict)
    delivered: list[DeliveredEmail] = field(default_factory=list)
    sandboxed: list[dict[str, Any]] = field(default_factory=list)
    accepted_requests: int = 0
    limiter: RateLimiter | None = None


def _error(field_name: str | None, message: str, help_anchor: str | None = None) -> dict[str, Any]:
    return {
        "message": message,
        "field": field_name,
        "help": help_anchor and f"{_HELP}#{help_anchor}",
    }


def _errors(
    status: int, *errors: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse({"errors": list(errors)}, status_code=status, headers=headers)


def _address(value: Any) -> str | None:
    """The valid email of an ``{"email", "name"}`` object, else None."""
    if not isinstance(value, dict) or not isinstance(value.get("email"), str):
        return None
    email = value["email"].strip()
    return email if _EMAIL.match(email) else None


class SendGridEmulator(Emulator[SendGridState]):
    name = "sendgrid"

    def __init__(self) -> None:
        super().__init__(SendGridState)

    # -- helpers for tests (in-process) ------------------------------------------------------

    def fail_recipient(self, address: str, times: int) -> None:
        """The next ``times`` requests naming ``address`` answer 500 and deliver nothing."""
        with self.lock:
            self.state.failing_recipients[address.lower()] = times

    def delivered_to(self, address: str) -> list[DeliveredEmail]:
        with self.lock:
            return [d for d in self.state.delivered if d.to.lower() == address.lower()]

    def delivered_counts(self) -> dict[str, int]:
        with self.lock:
            return dict(Counter(d.to for d in self.state.delivered))

    def wait_for_deliveries(self, count: int, timeout: float = 10.0) -> bool:
        """Block until at least ``count`` messages were delivered (or ``timeout`` passed)."""
        return self.wait_until(lambda state: len(state.delivered) >= count, timeout)

    # -- routes ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v3/mail/send", self._send, methods=["POST"]),
            Route("/v3/scopes", self._scopes, methods=["GET"]),
        ]

    async def _scopes(self, request: Request) -> Response:
        scopes, refused = self._authenticate(request)
        if refused is not None:
            return refused
        decision = self._hit()
        headers = _limit_headers(decision, self.clock.now())
        if not decision.allowed:
            return _errors(429, _error(None, MESSAGES["too_many"]), headers=headers)
        return JSONResponse({"scopes": sorted(scopes)}, headers=headers)

    async def _send(self, request: Request) -> Response:
        scopes, refused = self._authenticate(request)
        if refused is not None:
            return refused
        if "mail.send" not in scopes:
            return _errors(403, _error(None, MESSAGES["forbidden"]))
        decision = self._hit()
        headers = _limit_headers(decision, self.clock.now())
        if not decision.allowed:
            return _errors(429, _error(None, MESSAGES["too_many"]), headers=headers)
        raw = await request.body()
        if len(raw) > self.state.max_body_bytes:
            return _errors(413, _error(None, MESSAGES["too_large"]), headers=headers)
        try:
            mail = json.loads(raw)
        except ValueError:
            return _errors(400, _error(None, MESSAGES["bad_request"]), headers=headers)
        problems = validate_mail(mail) if isinstance(mail, dict) else []
        if not isinstance(mail, dict):
            problems = [_error(None, MESSAGES["bad_request"])]
        if problems:
            return _errors(400, *problems, headers=headers)
        if self._injected_failure(mail):
            return _errors(500, _error(None, MESSAGES["internal"]), headers=headers)
        if _sandboxed(mail):
            with self.lock:
                self.state.sandboxed.append(mail)
            return Response(status_code=200, headers=headers)
        message_id = secrets.token_urlsafe(16)[:22]
        self._deliver(mail, message_id)
        return Response(status_code=202, headers={**headers, "X-Message-Id": message_id})

    def _authenticate(self, request: Request) -> tuple[frozenset[str], Response | None]:
        header = request.headers.get("authorization", "")
        key = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        with self.lock:
            scopes = self.state.api_keys.get(key)
        if scopes is None:
            return frozenset(), _errors(401, _error(None, MESSAGES["unauthorized"]))
        return scopes, None

    def _hit(self) -> Decision:
        with self.lock:
            if self.state.limiter is None:
                self.state.limiter = RateLimiter(self.state.limit, self.state.window, self.clock)
            return self.state.limiter.hit()

    def _injected_failure(self, mail: dict[str, Any]) -> bool:
        """True (using one failure up) if a recipient of ``mail`` is set to fail."""
        with self.lock:
            failing = self.state.failing_recipients
            for email, _kind, _index in _recipients(mail):
                if failing.get(email.lower(), 0) > 0:
                    failing[email.lower()] -= 1
                    return True
        return False

    def _deliver(self, mail: dict[str, Any], message_id: str) -> None:
        sender = mail["from"]
        content = {c["type"]: c["value"] for c in mail.get("content") or []}
        attachments = [
            {
                "filename": a.get("filename"),
                "type": a.get("type"),
                "content": base64.b64decode(a["content"]),
            }
            for a in mail.get("attachments") or []
        ]
        top_args = mail.get("custom_args") or {}
        delivered = [
            DeliveredEmail(
                to=_address(recipient) or "",
                kind=kind,
                from_email=sender["email"],
                from_name=sender.get("name"),
                subject=personalization.get("subject", mail.get("subject")),
                content=content,
                custom_args={**top_args, **(personalization.get("custom_args") or {})},
                attachments=attachments,
                message_id=message_id,
            )
            for personalization in mail["personalizations"]
            for kind in _KINDS
            for recipient in personalization.get(kind) or []
        ]
        with self.changed:
            self.state.delivered.extend(delivered)
            self.state.accepted_requests += 1
            self.changed.notify_all()


def _limit_headers(decision: Decision, now: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        # the clock is read again after the decision: a millisecond's slack keeps a reset that
        # falls exactly on a second boundary from being announced a whole second late
        "X-RateLimit-Reset": str(math.ceil(now + decision.reset_after - 1e-3)),
    }


def _sandboxed(mail: dict[str, Any]) -> bool:
    settings = mail.get("mail_settings") or {}
    return bool((settings.get("sandbox_mode") or {}).get("enable"))


def _recipients(mail: dict[str, Any]) -> list[tuple[str, str, int]]:
    """``(email, kind, personalization index)`` of every well-formed recipient."""
    found = []
    for index, personalization in enumerate(mail.get("personalizations") or []):
        if not isinstance(personalization, dict):
            continue
        for kind in _KINDS:
            for recipient in personalization.get(kind) or []:
                email = _address(recipient)
                if email is not None:
                    found.append((email, kind, index))
    return found


def validate_mail(mail: dict[str, Any]) -> list[dict[str, Any]]:
    """SendGrid's 400 errors for ``mail``, in its order; empty when the mail is acceptable."""
    return [
        *_personalization_errors(mail),
        *_from_errors(mail),
        *_subject_errors(mail),
        *_content_errors(mail),
        *_attachment_errors(mail),
    ]


def _personalization_errors(mail: dict[str, Any]) -> list[dict[str, Any]]:
    personalizations = mail.get("personalizations")
    anchor = "-Personalizations-Errors"
    if not isinstance(personalizations, list) or not personalizations:
        return [_error("personalizations", MESSAGES["personalizations_required"], anchor)]
    if len(personalizations) > MAX_PERSONALIZATIONS:
        message = MESSAGES["personalizations_limit"].format(n=len(personalizations))
        return [_error("personalizations", message, anchor)]
    if len(_recipients(mail)) > MAX_RECIPIENTS:
        return [_error("personalizations", MESSAGES["recipients_limit"], anchor)]
    errors: list[dict[str, Any]] = []
    for index, personalization in enumerate(personalizations):
        errors.extend(_block_errors(index, personalization))
    return errors or _duplicates_across(mail)


def _block_errors(index: int, personalization: Any) -> list[dict[str, Any]]:
    """Problems inside one personalization: its ``to``, bad addresses, duplicates."""
    where = f"personalizations.{index}"
    if not isinstance(personalization, dict) or not personalization.get("to"):
        return [_error(f"{where}.to", MESSAGES["to_required"], "message.personalizations.to")]
    seen: set[str] = set()
    for kind in _KINDS:
        for position, recipient in enumerate(personalization.get(kind) or []):
            email = _address(recipient)
            if email is None:
                return [_error(f"{where}.{kind}.{position}.email", MESSAGES["invalid_address"])]
            if email.lower() in seen:
                message = MESSAGES["duplicate_in_block"].format(
                    email=email, field=f"{where}.{kind}"
                )
                return [_error(where, message, "message.recipient-errors")]
            seen.add(email.lower())
    return []


def _duplicates_across(mail: dict[str, Any]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    for email, _kind, _index in _recipients(mail):
        if email.lower() in seen:
            message = MESSAGES["duplicate_across"].format(email=email)
            return [_error("personalizations", message, "message.recipient-errors")]
        seen.add(email.lower())
    return []


def _from_errors(mail: dict[str, Any]) -> list[dict[str, Any]]:
    if _address(mail.get("from")) is None:
        return [_error("from.email", MESSAGES["from_required"], "message.from")]
    return []


def _subject_errors(mail: dict[str, Any]) -> list[dict[str, Any]]:
    if mail.get("template_id") or mail.get("subject"):
        return []
    personalizations = mail.get("personalizations") or []
    if personalizations and all(isinstance(p, dict) and p.get("subject") for p in personalizations):
        return []
    return [_error("subject", MESSAGES["subject_required"], "message.subject")]


def _content_errors(mail: dict[str, Any]) -> list[dict[str, Any]]:
    content = mail.get("content")
    if not content:
        if mail.get("template_id"):
            return []
        return [_error("content", MESSAGES["content_required"], "message.content")]
    if not isinstance(content, list):
        return [_error("content", MESSAGES["content_required"], "message.content")]
    for index, block in enumerate(content):
        value = block.get("value") if isinstance(block, dict) else None
        if not isinstance(value, str) or not value:
            return [_error(f"content.{index}.value", MESSAGES["content_value"])]
    types = [block.get("type") for block in content]
    order = [t for t in types if t in ("text/plain", "text/html")]
    expected = [t for t in ("text/plain", "text/html") if t in types]
    if order != expected or types[: len(order)] != order:
        return [_error("content", MESSAGES["content_order"], "message.content")]
    return []


def _attachment_errors(mail: dict[str, Any]) -> list[dict[str, Any]]:
    for index, attachment in enumerate(mail.get("attachments") or []):
        if not isinstance(attachment, dict) or not attachment.get("filename"):
            return [_error(f"attachments.{index}.filename", MESSAGES["attachment_filename"])]
        try:
            base64.b64decode(str(attachment.get("content", "")), validate=True)
        except (binascii.Error, ValueError):
            return [_error(f"attachments.{index}.content", MESSAGES["attachment_base64"])]
    return []
